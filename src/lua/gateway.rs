//! `reef.gateway{...}`, `reef.defaults{...}` and `reef.profile(name)`.

use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::de::DeserializeOwned;

use super::{ScriptError, ScriptErrorKind, caller_location, read_only, state};
use crate::profile::{self, ProfilePaths};
use crate::suggest::did_you_mean;
use crate::topology::{GATEWAY_FIELDS, GatewaySpec, Instance, Location, NESTED_FIELDS, PortSpec};

pub(super) fn register(lua: &Lua, reef: &Table) -> mlua::Result<()> {
    reef.set("gateway", lua.create_function(declare_gateway)?)?;
    reef.set("defaults", lua.create_function(set_defaults)?)?;
    reef.set("profile", lua.create_function(profile_view)?)?;
    Ok(())
}

fn declare_gateway(lua: &Lua, table: Value) -> mlua::Result<Table> {
    let location = caller_location(lua, 1);
    let spec: GatewaySpec = parse_spec(lua, "reef.gateway", table, &location)?;
    let field_error = |kind, message: String| {
        mlua::Error::external(ScriptError::at(
            kind,
            location.clone(),
            format!("reef.gateway: {message}"),
        ))
    };

    let mut state = state(lua);
    let spec = spec.merged_over(&state.defaults);
    let port = match spec.port {
        Some(PortSpec::Number(port)) => port,
        Some(PortSpec::Auto) => {
            let reserved = std::mem::take(&mut state.reserved);
            let allocated = state.auto_pool.next(&reserved);
            state.reserved = reserved;
            let base = allocated.map_err(|err| {
                field_error(
                    ScriptErrorKind::InvalidField,
                    format!("port = \"auto\": {err}"),
                )
            })?;
            i64::from(base)
        }
        None => {
            return Err(field_error(
                ScriptErrorKind::MissingField,
                "field `port` is missing: pin a base port (e.g. port = 18789), take one from a \
                 reef.ports.pool, or write port = \"auto\""
                    .into(),
            ));
        }
    };
    let declared_at = location.clone().unwrap_or_else(|| Location {
        file: "?".into(),
        line: 0,
    });
    let instance = spec
        .resolve(port, &state.home, &state.script_dir, declared_at)
        .map_err(|err| {
            let kind = if err.message.starts_with("is missing") {
                ScriptErrorKind::MissingField
            } else {
                ScriptErrorKind::InvalidField
            };
            field_error(kind, err.to_string())
        })?;
    if let Ok(footprint) = instance.footprint() {
        state.reserved.push(footprint.range());
    }
    state.instances.push(instance.clone());
    drop(state);
    instance_view(lua, &instance)
}

fn set_defaults(lua: &Lua, table: Value) -> mlua::Result<()> {
    let location = caller_location(lua, 1);
    let spec: GatewaySpec = parse_spec(lua, "reef.defaults", table, &location)?;
    spec.check_as_defaults().map_err(|err| {
        mlua::Error::external(ScriptError::at(
            ScriptErrorKind::InvalidField,
            location,
            format!("reef.defaults: {err}"),
        ))
    })?;
    state(lua).defaults = spec;
    Ok(())
}

fn profile_view(lua: &Lua, name: Value) -> mlua::Result<Table> {
    let Value::String(name) = name else {
        return Err(ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!(
                "reef.profile expects a profile name (a string), got {}",
                name.type_name()
            ),
        ));
    };
    let name = name.to_str()?.to_owned();
    profile::check_name(&name).map_err(|err| {
        ScriptError::raise(
            lua,
            ScriptErrorKind::InvalidField,
            format!("reef.profile: {err}"),
        )
    })?;
    let home = state(lua).home.clone();
    let paths = ProfilePaths::resolve(&name, &home);
    let data = lua.to_value(&paths)?;
    let Value::Table(data) = data else {
        unreachable!("a struct serializes to a table")
    };
    data.set("hashed_port", profile::hashed_port(&name))?;
    read_only(lua, data, "a profile view")
}

/// The table `reef.gateway` returns: the resolved instance, read-only.
fn instance_view(lua: &Lua, instance: &Instance) -> mlua::Result<Table> {
    let data = lua.create_table()?;
    data.set("name", instance.name.as_str())?;
    data.set("profile", instance.profile.as_str())?;
    data.set("port", instance.port)?;
    data.set("runtime", instance.runtime.to_string())?;
    data.set("state_dir", instance.state_dir.display().to_string())?;
    data.set("config_path", instance.config_path.display().to_string())?;
    data.set("workspace", instance.workspace.display().to_string())?;
    data.set("systemd_unit", instance.systemd_unit.as_str())?;
    data.set("launchd_label", instance.launchd_label.as_str())?;
    if let Ok(footprint) = instance.footprint() {
        data.set("ports", super::ports::footprint_table(lua, &footprint)?)?;
    }
    read_only(lua, data, &format!("gateway `{}`", instance.name))
}

/// Checks a spec table's keys (with "did you mean" hints), then deserializes it, naming the
/// offending field on any type error.
fn parse_spec<T: DeserializeOwned>(
    lua: &Lua,
    function: &str,
    value: Value,
    location: &Option<Location>,
) -> mlua::Result<T> {
    let error = |kind, message: String| {
        mlua::Error::external(ScriptError::at(
            kind,
            location.clone(),
            format!("{function}: {message}"),
        ))
    };
    let Value::Table(table) = value else {
        return Err(error(
            ScriptErrorKind::InvalidField,
            format!(
                "expects a table of fields, e.g. {function}{{ profile = \"main\", port = 18789 }}; got {}",
                value.type_name()
            ),
        ));
    };
    check_keys(&table, "", GATEWAY_FIELDS).map_err(|(kind, message)| error(kind, message))?;
    let table = normalize_spec(lua, &table).map_err(|message| {
        super::check_budget(lua)
            .err()
            .unwrap_or_else(|| error(ScriptErrorKind::InvalidField, message))
    })?;
    // Metamethods of the script's tables ran above, and an error they raised may have been
    // taken for a bad value: a spent budget says what really happened.
    super::check_budget(lua)?;
    let deserializer = mlua::serde::Deserializer::new(Value::Table(table));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = friendly_serde_message(&err.inner().to_string());
        error(
            ScriptErrorKind::InvalidField,
            format!("field `{path}`: {inner}"),
        )
    })
}

/// Refuses unknown keys, recursing into the nested tables listed in `NESTED_FIELDS`.
fn check_keys(
    table: &Table,
    prefix: &str,
    known: &[&str],
) -> Result<(), (ScriptErrorKind, String)> {
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|err| (ScriptErrorKind::InvalidField, err.to_string()))?;
        let Value::String(key) = key else {
            return Err((
                ScriptErrorKind::InvalidField,
                format!(
                    "{}takes named fields only (found a positional value); write e.g. profile = \"main\"",
                    if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("field `{}` ", prefix.trim_end_matches('.'))
                    }
                ),
            ));
        };
        let key = key.to_string_lossy();
        let path = format!("{prefix}{key}");
        if !known.contains(&key.as_str()) {
            let hint = did_you_mean(&key, known.iter().copied())
                .map(|s| format!(" (did you mean `{prefix}{s}`?)"))
                .unwrap_or_default();
            return Err((
                ScriptErrorKind::UnknownField,
                format!(
                    "unknown field `{path}`{hint}; known fields: {}",
                    known.join(", ")
                ),
            ));
        }
        if let (Value::Table(nested), Some((_, fields))) =
            (&value, NESTED_FIELDS.iter().find(|(name, _)| *name == path))
        {
            check_keys(nested, &format!("{path}."), fields)?;
        }
    }
    Ok(())
}

/// Copies the spec table, turning `depends_on` views and names into a list of names and
/// numbers in `env` into strings (as a shell would).
fn normalize_spec(lua: &Lua, table: &Table) -> Result<Table, String> {
    let copy = lua.create_table().map_err(|e| e.to_string())?;
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        copy.raw_set(key, value).map_err(|e| e.to_string())?;
    }
    if let Value::Table(env) = table.raw_get::<Value>("env").map_err(|e| e.to_string())? {
        let strings = lua.create_table().map_err(|e| e.to_string())?;
        for pair in env.pairs::<Value, Value>() {
            let (key, value) = pair.map_err(|e| e.to_string())?;
            let value = match value {
                Value::Integer(_) | Value::Number(_) => Value::String(
                    lua.create_string(value.to_string().map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?,
                ),
                other => other,
            };
            strings.raw_set(key, value).map_err(|e| e.to_string())?;
        }
        copy.raw_set("env", strings).map_err(|e| e.to_string())?;
    }
    let depends_on: Value = table.raw_get("depends_on").map_err(|e| e.to_string())?;
    let names = match depends_on {
        Value::Nil => return Ok(copy),
        Value::String(name) => vec![name.to_string_lossy()],
        Value::Table(list) => match dependency_name(&Value::Table(list.clone())) {
            Some(name) => vec![name],
            None => {
                let mut names = Vec::new();
                for (index, item) in list.sequence_values::<Value>().enumerate() {
                    let item = item.map_err(|e| e.to_string())?;
                    names.push(dependency_name(&item).ok_or_else(|| {
                        format!(
                            "field `depends_on[{}]`: expected a gateway or its name, got {}",
                            index + 1,
                            item.type_name()
                        )
                    })?);
                }
                names
            }
        },
        other => {
            return Err(format!(
                "field `depends_on`: expected a gateway, a name or a list of them, got {}",
                other.type_name()
            ));
        }
    };
    copy.raw_set("depends_on", names)
        .map_err(|e| e.to_string())?;
    Ok(copy)
}

/// The name of a dependency given as a string or as a gateway view.
fn dependency_name(value: &Value) -> Option<String> {
    match value {
        Value::String(name) => Some(name.to_string_lossy()),
        Value::Table(view) => match view.get::<Value>("name").ok()? {
            Value::String(name) if view.get::<Value>("port").ok().is_some_and(|p| !p.is_nil()) => {
                Some(name.to_string_lossy())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Serde speaks Rust; scripts speak Lua.
fn friendly_serde_message(message: &str) -> String {
    message
        .trim_start_matches("deserialize error: ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number (seconds)")
        .replace("expected a boolean", "expected true or false")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: list")
}
