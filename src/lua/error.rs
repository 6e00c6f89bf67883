//! Script errors: what went wrong, where (file and line), and what to do.

use std::fmt;
use std::path::Path;

use mlua::Lua;
use serde::{Deserialize, Serialize};

use super::Limits;
use super::sandbox::SANDBOX_CHUNK;
use crate::topology::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptErrorKind {
    /// The script or a module could not be read.
    Read,
    /// Lua could not parse it.
    Syntax,
    /// It raised an error while running.
    Runtime,
    /// A `reef.*` call got a field it does not know.
    UnknownField,
    /// A `reef.*` call lacks a field it needs.
    MissingField,
    /// A field has the wrong type or an impossible value.
    InvalidField,
    /// It ran past its instruction or time budget.
    Budget,
    /// It allocated past its memory limit.
    Memory,
}

/// An evaluation that failed, with the place in the script it failed at when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ScriptError {
    pub kind: ScriptErrorKind,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl ScriptError {
    pub fn plain(kind: ScriptErrorKind, message: impl Into<String>) -> ScriptError {
        ScriptError {
            kind,
            file: None,
            line: None,
            message: message.into(),
        }
    }

    pub fn at(
        kind: ScriptErrorKind,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> ScriptError {
        let (file, line) = match location {
            Some(Location { file, line }) => (Some(file), Some(line)),
            None => (None, None),
        };
        ScriptError {
            kind,
            file,
            line,
            message: message.into(),
        }
    }

    pub fn read(path: &Path, err: &std::io::Error) -> ScriptError {
        // Only for a file missing on disk (not one missing from a snapshot).
        let hint = match err.kind() {
            std::io::ErrorKind::NotFound if err.raw_os_error().is_some() => {
                "; give a script path, or run `reef init` to write a starter reef.lua"
            }
            _ => "",
        };
        ScriptError {
            kind: ScriptErrorKind::Read,
            file: Some(path.display().to_string()),
            line: None,
            message: format!("cannot read the script: {err}{hint}"),
        }
    }

    pub(crate) fn over_budget(limits: Limits, location: Option<Location>) -> ScriptError {
        ScriptError::at(
            ScriptErrorKind::Budget,
            location,
            format!(
                "the script ran past its budget ({} VM instructions or {:.1} s) and was stopped; \
                 is there an endless loop?",
                match limits.instructions {
                    n if n >= 1_000_000 => format!("{} million", n / 1_000_000),
                    n => n.to_string(),
                },
                limits.time.as_secs_f64()
            ),
        )
    }

    /// Raised from a `reef.*` function: the error points at the Lua line that called it.
    pub(crate) fn raise(
        lua: &Lua,
        kind: ScriptErrorKind,
        message: impl Into<String>,
    ) -> mlua::Error {
        mlua::Error::external(ScriptError::at(
            kind,
            super::caller_location(lua, 1),
            message,
        ))
    }

    /// Ran out of the VM's memory limit at `location` (where the script was when it did).
    pub(crate) fn out_of_memory(location: Option<Location>) -> ScriptError {
        ScriptError::at(
            ScriptErrorKind::Memory,
            location,
            "the script ran out of its memory limit and was stopped; is a table or string \
             growing without end, or a function calling itself without end?",
        )
    }

    /// A file the script or a module is read from that reef refuses or cannot read.
    pub(crate) fn unreadable(path: &Path, message: impl Into<String>) -> ScriptError {
        ScriptError {
            kind: ScriptErrorKind::Read,
            file: Some(path.display().to_string()),
            line: None,
            message: message.into(),
        }
    }

    /// Turns whatever Lua returned into a script error. `near` is where the script last was,
    /// for errors Lua reports without a position (memory, a C stack overflow, `error(x, 0)`).
    pub(crate) fn from_lua(err: &mlua::Error, near: Option<Location>) -> ScriptError {
        if let Some(own) = err.downcast_ref::<ScriptError>() {
            return own.clone();
        }
        match innermost(err) {
            mlua::Error::SyntaxError { message, .. } => {
                with_position(ScriptErrorKind::Syntax, message, None)
            }
            mlua::Error::MemoryError(_) => ScriptError::out_of_memory(near),
            // A memory error re-raised as a value (`coroutine.wrap` does) is still one.
            mlua::Error::RuntimeError(message) if message == MEMORY_MESSAGE => {
                ScriptError::out_of_memory(near)
            }
            mlua::Error::RuntimeError(message) => {
                with_position(ScriptErrorKind::Runtime, message, near)
            }
            other => with_position(ScriptErrorKind::Runtime, &other.to_string(), near),
        }
    }
}

/// What Lua says, as an error value, when an allocation fails.
pub(crate) const MEMORY_MESSAGE: &str = "not enough memory";

fn innermost(err: &mlua::Error) -> &mlua::Error {
    match err {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            innermost(cause)
        }
        other => other,
    }
}

/// Splits Lua's `file:line: message` (dropping any traceback) into its parts; a message
/// without a position is placed `near`.
fn with_position(kind: ScriptErrorKind, raw: &str, near: Option<Location>) -> ScriptError {
    let first = raw
        .split("\nstack traceback:")
        .next()
        .unwrap_or(raw)
        .trim_end();
    if first.starts_with("table: 0x") || first.starts_with("userdata: 0x") {
        return ScriptError::at(
            kind,
            near,
            "the script raised an error value that is not a string (a table?); raise a message, e.g. error(\"what went wrong\")",
        );
    }
    let (location, message) = match split_position(first) {
        // Raised by a C function the sandbox wraps: the script's line is where it was called.
        Some((SANDBOX_CHUNK, _, message)) => (near, message),
        Some((file, line, message)) => (
            Some(Location {
                file: file.to_owned(),
                line,
            }),
            message,
        ),
        None => (near, first),
    };
    let hint = if message.ends_with("stack overflow") {
        "; is a function calling itself without end?"
    } else {
        ""
    };
    ScriptError::at(kind, location, format!("{message}{hint}"))
}

fn split_position(text: &str) -> Option<(&str, u32, &str)> {
    let mut search_from = 0;
    while let Some(offset) = text[search_from..].find(':') {
        let colon = search_from + offset;
        let rest = &text[colon + 1..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(": ") && colon > 0 {
            let line = rest[..digits].parse().ok()?;
            return Some((&text[..colon], line, &rest[digits + 2..]));
        }
        search_from = colon + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_split_off() {
        assert_eq!(
            split_position("examples/a.lua:12: attempt to call a nil value"),
            Some(("examples/a.lua", 12, "attempt to call a nil value"))
        );
        assert_eq!(
            split_position("C:/x.lua:3: boom"),
            Some(("C:/x.lua", 3, "boom"))
        );
        assert_eq!(split_position("no position here"), None);
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    /// The evaluator's child sends errors to its parent as JSON.
    #[test]
    fn errors_round_trip_through_json() {
        for kind in [
            ScriptErrorKind::Read,
            ScriptErrorKind::Syntax,
            ScriptErrorKind::Runtime,
            ScriptErrorKind::UnknownField,
            ScriptErrorKind::MissingField,
            ScriptErrorKind::InvalidField,
            ScriptErrorKind::Budget,
            ScriptErrorKind::Memory,
        ] {
            for error in [
                ScriptError::plain(kind, "plain"),
                ScriptError::at(
                    kind,
                    Some(Location {
                        file: "dir/reef.lua".into(),
                        line: 12,
                    }),
                    "placed: \"quoted\"\n\ttabbed ✓",
                ),
                ScriptError {
                    kind,
                    file: Some("only/a/file.lua".into()),
                    line: None,
                    message: String::new(),
                },
            ] {
                let json = serde_json::to_string(&error).unwrap();
                assert_eq!(serde_json::from_str::<ScriptError>(&json).unwrap(), error);
            }
        }
        assert_eq!(
            serde_json::to_string(&ScriptErrorKind::UnknownField).unwrap(),
            "\"unknown-field\""
        );
    }
}
