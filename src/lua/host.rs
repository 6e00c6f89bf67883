//! `reef.env`, `reef.home`, `reef.script_dir`, `reef.version`: what a script may know of the host.

use std::path::Path;

use mlua::{Lua, Table};

use super::{Host, read_only};

pub(super) fn register(
    lua: &Lua,
    reef: &Table,
    host: &Host,
    script_dir: &Path,
) -> mlua::Result<()> {
    let env = lua.create_table()?;
    for (key, value) in &host.env {
        env.set(key.as_str(), value.as_str())?;
    }
    reef.set("env", read_only(lua, env, "reef.env")?)?;
    reef.set("home", host.home.display().to_string())?;
    reef.set("script_dir", script_dir.display().to_string())?;
    reef.set("version", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
