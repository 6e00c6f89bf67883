//! Reading sources, and `require`: sibling modules next to the script, then the modules
//! shipped in `scripts/`.
//!
//! The script and every module are read by [`read_source`]: only regular files of at most
//! [`MAX_SCRIPT_BYTES`]. A path is looked at before it is opened and opened without blocking,
//! then what was opened is checked again, so a FIFO, a device (`/dev/zero` behind a symlink), a
//! directory or a socket is refused by name, never waited on or read without end. Every file
//! read is kept (`EvalState::sources`); an evaluation from a snapshot reads from those bytes
//! alone, never the disk.
//!
//! `require "lib.ports"` loads `<script dir>/lib/ports.lua` (or `lib/ports/init.lua`); if there
//! is none, a module shipped inside the binary (e.g. `reef.rescue`) answers. Every file read is
//! recorded before it runs, so a module that fails is still watched. `require "reef"` returns the
//! API table itself.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mlua::{Lua, Table, Value};

use super::{ScriptError, ScriptErrorKind, Sources, state};

/// Lua modules shipped with reef: (module name, source). Not on disk, so never watched.
pub const SHIPPED_MODULES: &[(&str, &str)] =
    &[("reef.rescue", include_str!("../../scripts/reef/rescue.lua"))];

/// The largest script or module reef reads: 4 MiB. A topology script is a few kilobytes; a
/// file past this is not one (a log, an image, a device behind a symlink), and reading it whole
/// would only spend the evaluation's memory before the VM could refuse it.
pub const MAX_SCRIPT_BYTES: u64 = 4 << 20;

/// Reads the script or module at `path`: a regular file of at most [`MAX_SCRIPT_BYTES`],
/// without ever blocking on it. FIFOs, devices, directories, sockets, symlink loops and larger
/// files are refused with a message that says which.
pub fn read_source(path: &Path) -> Result<Vec<u8>, ScriptError> {
    read_from_disk(path).map_err(|unreadable| unreadable.into_error(path, "script"))
}

/// Why a source could not be read.
pub(super) enum Unreadable {
    /// Nothing there (or a parent is not a directory): a module candidate to pass over.
    Missing(io::Error),
    /// Not a regular file, too large, or a symlink loop: the message says which.
    Refused(String),
    /// There, but reading it failed.
    Failed(io::Error),
}

impl Unreadable {
    fn from_io(err: io::Error) -> Unreadable {
        match err.raw_os_error() {
            _ if err.kind() == io::ErrorKind::NotFound => Unreadable::Missing(err),
            Some(libc::ENOTDIR) => Unreadable::Missing(err),
            Some(libc::ELOOP) => Unreadable::Refused(
                "is a symlink loop (too many levels of symbolic links): point it at the file \
                 itself"
                    .into(),
            ),
            _ => Unreadable::Failed(err),
        }
    }

    /// The error for the `what` ("script" or "module") at `path` (as the user wrote it).
    pub(super) fn into_error(self, path: &Path, what: &str) -> ScriptError {
        match self {
            Unreadable::Missing(err) if what == "script" => ScriptError::read(path, &err),
            Unreadable::Missing(err) | Unreadable::Failed(err) => {
                ScriptError::unreadable(path, format!("cannot read the {what}: {err}"))
            }
            Unreadable::Refused(message) => ScriptError::unreadable(path, message),
        }
    }
}

/// Reads `path` from `snapshot` when there is one (where a path it lacks does not exist),
/// else from the disk.
pub(super) fn fetch(snapshot: Option<&Sources>, path: &Path) -> Result<Vec<u8>, Unreadable> {
    match snapshot {
        Some(snapshot) => snapshot.get(path).cloned().ok_or_else(|| {
            Unreadable::Missing(io::Error::new(
                io::ErrorKind::NotFound,
                "not among the files of the evaluation it is run again from",
            ))
        }),
        None => read_from_disk(path),
    }
}

fn read_from_disk(path: &Path) -> Result<Vec<u8>, Unreadable> {
    // Looked at before opening: opening a device can have effects of its own.
    let metadata = std::fs::metadata(path).map_err(Unreadable::from_io)?;
    refuse_unless_regular(&metadata)?;
    // O_NONBLOCK: should the path have become a FIFO since, opening it does not wait for a
    // writer. O_NOCTTY: nor does a terminal become reef's. (std adds O_CLOEXEC.)
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(Unreadable::from_io)?;
    // What was opened is what counts.
    refuse_unless_regular(&file.metadata().map_err(Unreadable::from_io)?)?;
    read_at_most(file)
}

/// Reads at most one byte past the limit, whatever the size the file claims (files in `/proc`
/// say 0).
fn read_at_most(file: File) -> Result<Vec<u8>, Unreadable> {
    let mut bytes = Vec::new();
    file.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::from_io)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(Unreadable::Refused(format!(
            "is larger than {} MiB, the most reef reads for a script or a module; a topology \
             script is a few kilobytes: is this the right file?",
            MAX_SCRIPT_BYTES >> 20
        )));
    }
    Ok(bytes)
}

fn refuse_unless_regular(metadata: &Metadata) -> Result<(), Unreadable> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(Unreadable::Refused(format!(
        "is {what}, not a file: reef reads scripts from regular files"
    )))
}

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
        let mut found = None;
        for candidate in &candidates {
            let absolute = state.script_dir.join(candidate);
            match fetch(state.snapshot.as_ref(), &absolute) {
                Ok(source) => {
                    found = Some((candidate, absolute, source));
                    break;
                }
                Err(Unreadable::Missing(_)) => {}
                Err(unreadable) => {
                    // Watched, so that fixing it reloads.
                    if !state.files.contains(&absolute) {
                        state.files.push(absolute);
                    }
                    let display = state.script_dir_display.join(candidate);
                    drop(state);
                    // Placed at the `require`, naming the file.
                    let refused = unreadable.into_error(&display, "module");
                    return Err(ScriptError::raise(
                        lua,
                        ScriptErrorKind::Read,
                        format!(
                            "require {name:?}: {}: {}",
                            display.display(),
                            refused.message
                        ),
                    ));
                }
            }
        }
        match found {
            Some((relative, absolute, source)) => {
                let display = state.script_dir_display.join(relative);
                if !state.files.contains(&absolute) {
                    state.files.push(absolute.clone());
                }
                state.sources.insert(absolute, source.clone());
                (source, format!("@{}", display.display()))
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Reads on another thread, so that a read that blocks fails the test instead of hanging it.
    fn read_promptly(path: &Path) -> Result<Vec<u8>, ScriptError> {
        let (done, result) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = done.send(read_source(&path));
        });
        result
            .recv_timeout(Duration::from_secs(5))
            .expect("read_source blocked")
    }

    fn refusal(path: &Path) -> String {
        let err = read_promptly(path).unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Read);
        assert_eq!(err.file.as_deref(), Some(path.to_str().unwrap()));
        err.message
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("reef.lua");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            refusal(&fifo),
            "is a FIFO (named pipe), not a file: reef reads scripts from regular files"
        );
    }

    #[test]
    fn dev_zero_behind_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("reef.lua");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(refusal(&link).starts_with("is a character device, not a file"));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refusal(dir.path()).starts_with("is a directory, not a file"));
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("reef.lua");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(refusal(&socket).starts_with("is a socket, not a file"));
    }

    #[test]
    fn a_symlink_loop_is_called_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.lua"), dir.path().join("b.lua"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(
            refusal(&a).starts_with("is a symlink loop"),
            "{}",
            refusal(&a)
        );
    }

    #[test]
    fn files_past_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let largest = dir.path().join("largest.lua");
        std::fs::write(&largest, vec![b' '; MAX_SCRIPT_BYTES as usize]).unwrap();
        assert_eq!(
            read_promptly(&largest).unwrap().len() as u64,
            MAX_SCRIPT_BYTES
        );
        let larger = dir.path().join("larger.lua");
        std::fs::write(&larger, vec![b' '; MAX_SCRIPT_BYTES as usize + 1]).unwrap();
        assert!(refusal(&larger).starts_with("is larger than 4 MiB"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_claims_no_size_is_read_all_the_same() {
        let status = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(status).unwrap().len(), 0);
        assert!(!read_promptly(status).unwrap().is_empty());
    }

    #[test]
    fn a_missing_script_says_how_to_start() {
        let err = read_source(Path::new("/nonexistent/reef.lua")).unwrap_err();
        assert!(err.message.starts_with("cannot read the script"), "{err}");
        assert!(err.message.contains("reef init"), "{err}");
    }
}
