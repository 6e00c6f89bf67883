//! `require`: sibling modules next to the script, then the modules shipped in `scripts/`.
//!
//! `require "lib.ports"` loads `<script dir>/lib/ports.lua` (or `lib/ports/init.lua`); if there
//! is none, a module shipped inside the binary (e.g. `reef.rescue`) answers. Every file read is
//! recorded before it runs, so a module that fails is still watched. `require "reef"` returns the
//! API table itself.

use std::path::{Path, PathBuf};

use mlua::{Lua, Table, Value};

use super::{ScriptError, ScriptErrorKind, state};

/// Lua modules shipped with reef: (module name, source). Not on disk, so never watched.
pub const SHIPPED_MODULES: &[(&str, &str)] =
    &[("reef.rescue", include_str!("../../scripts/reef/rescue.lua"))];

pub(super) fn register(lua: &Lua, reef: Table) -> mlua::Result<()> {
    let globals = lua.globals();
    let package: Table = lua.create_table()?;
    let loaded: Table = lua.create_table()?;
    for library in ["string", "table", "math", "utf8", "coroutine", "os"] {
        loaded.set(library, globals.get::<Value>(library)?)?;
    }
    loaded.set("_G", globals.clone())?;
    loaded.set("reef", reef.clone())?;
    package.set("loaded", loaded)?;
    globals.set("package", package)?;
    globals.set("reef", reef)?;
    globals.set("require", lua.create_function(require)?)?;
    Ok(())
}

fn require(lua: &Lua, name: Value) -> mlua::Result<Value> {
    let Value::String(name) = name else {
        return Err(ScriptError::raise(
            lua,
            ScriptErrorKind::Runtime,
            format!(
                "require expects a module name (a string), got {}",
                name.type_name()
            ),
        ));
    };
    let name = name.to_str()?.to_owned();
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    let cached: Value = loaded.get(name.as_str())?;
    if !cached.is_nil() {
        return Ok(cached);
    }
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') || name.contains("..")
    {
        return Err(ScriptError::raise(
            lua,
            ScriptErrorKind::Runtime,
            format!("require {name:?}: module names are dotted, like \"lib.ports\", not paths"),
        ));
    }

    let (source, chunk_name) = {
        let mut state = state(lua);
        if let Some(start) = state.loading.iter().position(|loading| *loading == name) {
            let mut cycle = state.loading[start..].to_vec();
            cycle.push(name.clone());
            drop(state);
            return Err(ScriptError::raise(
                lua,
                ScriptErrorKind::Runtime,
                format!(
                    "require cycle: {}; move what both need into a third module",
                    cycle.join(" -> ")
                ),
            ));
        }
        let relative = PathBuf::from(name.replace('.', "/"));
        let candidates = [relative.with_extension("lua"), relative.join("init.lua")];
        let found = candidates
            .iter()
            .find(|candidate| state.script_dir.join(candidate).is_file());
        match found {
            Some(relative) => {
                let absolute = state.script_dir.join(relative);
                let display = state.script_dir_display.join(relative);
                if !state.files.contains(&absolute) {
                    state.files.push(absolute.clone());
                }
                match std::fs::read(&absolute) {
                    Ok(source) => (source, format!("@{}", display.display())),
                    Err(err) => {
                        drop(state);
                        return Err(mlua::Error::external(ScriptError::read(&display, &err)));
                    }
                }
            }
            None => match SHIPPED_MODULES.iter().find(|(shipped, _)| *shipped == name) {
                Some((_, source)) => (
                    source.as_bytes().to_vec(),
                    format!("@<reef>/{}.lua", name.replace('.', "/")),
                ),
                None => {
                    // Watch where the module would be, so that creating it reloads.
                    for candidate in &candidates {
                        let absolute = state.script_dir.join(candidate);
                        if !state.files.contains(&absolute) {
                            state.files.push(absolute);
                        }
                    }
                    let looked: Vec<String> = candidates
                        .iter()
                        .map(|c| display_join(&state.script_dir_display, c))
                        .collect();
                    drop(state);
                    let shipped: Vec<&str> =
                        SHIPPED_MODULES.iter().map(|(name, _)| *name).collect();
                    return Err(ScriptError::raise(
                        lua,
                        ScriptErrorKind::Runtime,
                        format!(
                            "module {name:?} not found: looked for {} and among the modules shipped with reef ({})",
                            looked.join(" and "),
                            shipped.join(", ")
                        ),
                    ));
                }
            },
        }
    };

    state(lua).loading.push(name.clone());
    let result = lua
        .load(source)
        .set_name(chunk_name)
        .set_mode(mlua::chunk::ChunkMode::Text)
        .call::<Value>((name.as_str(), Value::Nil));
    state(lua).loading.pop();
    let value = match result? {
        Value::Nil => Value::Boolean(true),
        value => value,
    };
    loaded.set(name.as_str(), value.clone())?;
    Ok(value)
}

fn display_join(dir: &Path, relative: &Path) -> String {
    dir.join(relative).display().to_string()
}
