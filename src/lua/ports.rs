//! `reef.ports.footprint(base)` and `reef.ports.pool{ from, to, spacing }`.

use mlua::{Lua, Table, UserData, UserDataFields, UserDataMethods, Value};

use super::{ScriptError, ScriptErrorKind, describe, read_only, state};
use crate::ports::{Footprint, Pool};

pub(super) fn register(lua: &Lua, reef: &Table) -> mlua::Result<()> {
    let ports = lua.create_table()?;
    ports.set("footprint", lua.create_function(footprint)?)?;
    ports.set("pool", lua.create_function(pool)?)?;
    ports.set("FOOTPRINT_SIZE", crate::ports::FOOTPRINT_SIZE)?;
    reef.set("ports", ports)?;
    Ok(())
}

fn footprint(lua: &Lua, base: Value) -> mlua::Result<Table> {
    let base = integer(lua, "reef.ports.footprint", "base", &base)?;
    let footprint = Footprint::new(base).map_err(|err| {
        ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!("reef.ports.footprint: {err}"),
        )
    })?;
    footprint_table(lua, &footprint)
}

/// A read-only table describing a footprint.
pub(super) fn footprint_table(lua: &Lua, footprint: &Footprint) -> mlua::Result<Table> {
    let range = |first: u16, last: u16| -> mlua::Result<Table> {
        let table = lua.create_table()?;
        table.set("first", first)?;
        table.set("last", last)?;
        Ok(table)
    };
    let data = lua.create_table()?;
    data.set("gateway", footprint.gateway)?;
    data.set("browser_control", footprint.browser_control)?;
    data.set("relay", range(footprint.relay.first, footprint.relay.last)?)?;
    data.set("cdp", range(footprint.cdp.first, footprint.cdp.last)?)?;
    data.set("cdp_first", footprint.cdp.first)?;
    data.set("cdp_last", footprint.cdp.last)?;
    data.set("first", footprint.first)?;
    data.set("last", footprint.last)?;
    read_only(lua, data, "a footprint")
}

fn pool(lua: &Lua, spec: Value) -> mlua::Result<LuaPool> {
    const USAGE: &str = "reef.ports.pool{ from = 20000, to = 29999, spacing = 111 }";
    let Value::Table(spec) = spec else {
        return Err(ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!("reef.ports.pool expects a table, e.g. {USAGE}"),
        ));
    };
    for pair in spec.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let key = describe(&key);
        if !["from", "to", "spacing"].contains(&key.as_str()) {
            let hint = crate::suggest::did_you_mean(&key, ["from", "to", "spacing"])
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(ScriptError::raise(
                lua,
                ScriptErrorKind::UnknownField,
                format!(
                    "reef.ports.pool: unknown field `{key}`{hint}; known fields: from, to, spacing"
                ),
            ));
        }
    }
    let field = |name: &str| -> mlua::Result<Option<i64>> {
        match spec.get::<Value>(name)? {
            Value::Nil => Ok(None),
            value => integer(lua, "reef.ports.pool", name, &value).map(Some),
        }
    };
    let missing = |name: &str| {
        ScriptError::raise(
            lua,
            ScriptErrorKind::MissingField,
            format!("reef.ports.pool: field `{name}` is missing; e.g. {USAGE}"),
        )
    };
    let from = field("from")?.ok_or_else(|| missing("from"))?;
    let to = field("to")?.ok_or_else(|| missing("to"))?;
    let pool = Pool::new(from, to, field("spacing")?).map_err(|err| {
        ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!("reef.ports.pool: {err}"),
        )
    })?;
    Ok(LuaPool(pool))
}

fn integer(lua: &Lua, function: &str, field: &str, value: &Value) -> mlua::Result<i64> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Ok(*n as i64),
        other => Err(ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!(
                "{function}: `{field}` must be an integer port, got {}",
                describe(other)
            ),
        )),
    }
}

/// A pool as Lua sees it: `pool:next()` hands out base ports that avoid every footprint
/// declared or handed out so far in this evaluation.
pub(super) struct LuaPool(Pool);

impl UserData for LuaPool {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("from", |_, this| Ok(this.0.from()));
        fields.add_field_method_get("to", |_, this| Ok(this.0.to()));
        fields.add_field_method_get("spacing", |_, this| Ok(this.0.spacing()));
        fields.add_field_method_get("capacity", |_, this| Ok(this.0.capacity()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("next", |lua, this, ()| {
            let mut state = state(lua);
            match this.0.next(&state.reserved) {
                Ok(base) => {
                    let footprint =
                        Footprint::new(i64::from(base)).expect("pools only yield fitting bases");
                    state.reserved.push(footprint.range());
                    Ok(i64::from(base))
                }
                Err(err) => {
                    drop(state);
                    Err(ScriptError::raise(
                        lua,
                        ScriptErrorKind::Runtime,
                        format!("pool:next(): {err}"),
                    ))
                }
            }
        });
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!(
                "port pool {}..{} (spacing {})",
                this.0.from(),
                this.0.to(),
                this.0.spacing()
            ))
        });
    }
}
