//! A gateway's own config file (`openclaw.json`), read the way OpenClaw reads it and edited the
//! way a person would: comments, layout and every other value stay as they are.
//!
//! [`resolve`] follows OpenClaw 2026.9.6's loader (shared/OPENCLAW.md, "Config file"): JSON5;
//! `$include` (a path or a list of paths, relative to the including file, anywhere in the
//! tree; sibling keys override what the include brings; objects merge, lists concatenate;
//! nested up to 10 files deep; no cycles; only inside the config's directory or the
//! `OPENCLAW_INCLUDE_ROOTS` the gateway gets); then the config's own `env` block fills the
//! environment; then `${VAR}` in strings is substituted (`$${VAR}` is a literal `${VAR}`).
//! What reef cannot resolve (a variable the gateway's environment lacks, which OpenClaw may
//! still find in a `.env` file) is kept as written and listed in [`Resolved::unresolved`], so a
//! caller that needs that key says so instead of guessing.
//!
//! [`locate`] finds the file and the place in it where a key lives (an included file too), and
//! [`set`] writes a new value there through a concrete syntax tree, keeping the user's
//! comments, quotes and order, with a backup and an atomic replace. reef uses it to keep a
//! gateway's `gateway.port` equal to the plan's (so `openclaw --profile X health` finds the
//! gateway) and for `reef setup`'s missing keys.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use serde_json::Value;

/// The key that pulls another file in.
const INCLUDE_KEY: &str = "$include";
/// OpenClaw refuses a chain of includes deeper than this.
const MAX_INCLUDE_DEPTH: usize = 10;
/// OpenClaw refuses an included file larger than this.
const MAX_INCLUDE_BYTES: u64 = 2 * 1024 * 1024;
/// A config larger than this is no config reef reads.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// The suffix of the copy reef keeps of a file before it edits it.
pub const BACKUP_SUFFIX: &str = ".reef-backup";

/// A config, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub value: Value,
    /// The config file, then every file it includes, in the order they were read.
    pub files: Vec<PathBuf>,
    /// `${VAR}` references left as written: the variable is not in the gateway's environment.
    pub unresolved: Vec<Unresolved>,
}

/// A `${VAR}` reef could not substitute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Where it is, as a dotted key path (`gateway.port`).
    pub key: String,
    pub var: String,
}

impl Resolved {
    /// The resolved value at a dotted key path (`gateway.port`), if there is one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        key.split('.')
            .try_fold(&self.value, |value, part| value.as_object()?.get(part))
    }

    /// The value at `key`, or why reef cannot tell it: a `${VAR}` it could not substitute.
    pub fn setting(&self, key: &str) -> Result<Option<&Value>, ConfigError> {
        let prefix = format!("{key}.");
        if let Some(missing) = self
            .unresolved
            .iter()
            .find(|u| u.key == key || u.key.starts_with(&prefix))
        {
            return Err(ConfigError::Unresolved {
                file: self.files[0].clone(),
                key: missing.key.clone(),
                var: missing.var.clone(),
            });
        }
        Ok(self.get(key))
    }
}

/// Why a config cannot be resolved or edited. Each names the file, and the key or line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Read {
        file: PathBuf,
        reason: String,
    },
    Parse {
        file: PathBuf,
        reason: String,
    },
    /// A `$include` OpenClaw would refuse (escapes the config's directory, a cycle, too deep,
    /// not a path, too large).
    Include {
        file: PathBuf,
        reason: String,
    },
    /// The top level, or an object a key path goes through, is something else.
    NotAnObject {
        file: PathBuf,
        key: String,
    },
    /// A key reef needs holds `${VAR}` and the gateway's environment has no VAR.
    Unresolved {
        file: PathBuf,
        key: String,
        var: String,
    },
    /// A key reef would edit is written as `${VAR}`: the value comes from the environment.
    FromEnvironment {
        file: PathBuf,
        key: String,
        written: String,
    },
    /// The edit did not give what it should have (checked by reading the file back), or the
    /// file is not one reef may write.
    Unsafe {
        file: PathBuf,
        reason: String,
    },
    /// A key holds a value of the wrong kind.
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, reason } => {
                write!(f, "cannot read {}: {reason}", file.display())
            }
            ConfigError::Parse { file, reason } => {
                write!(f, "{} is not valid JSON5: {reason}", file.display())
            }
            ConfigError::Include { file, reason } => {
                write!(f, "{}: {reason}", file.display())
            }
            ConfigError::NotAnObject { file, key } if key.is_empty() => {
                write!(f, "{}: the top level is not an object", file.display())
            }
            ConfigError::NotAnObject { file, key } => {
                write!(f, "{}: `{key}` is not an object", file.display())
            }
            ConfigError::Unresolved { file, key, var } => write!(
                f,
                "{}: `{key}` refers to ${{{var}}}, which the gateway's environment does not set \
                 (reef reads the launch environment and the config's `env` block, not .env files); \
                 set {var} in the instance's `env` or write the value in the file",
                file.display()
            ),
            ConfigError::FromEnvironment { file, key, written } => write!(
                f,
                "{}: `{key}` is written as {written:?}, a value from the environment; reef does \
                 not edit it: write the plan's value there yourself",
                file.display()
            ),
            ConfigError::Unsafe { file, reason } => {
                write!(
                    f,
                    "{}: reef left the file as it was: {reason}",
                    file.display()
                )
            }
            ConfigError::Invalid { file, key, reason } => {
                write!(f, "{}: `{key}` {reason}", file.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// JSON5 as OpenClaw accepts it (comments, trailing commas, single quotes, unquoted keys, hex,
/// Infinity), but no missing commas.
fn parse_options() -> ParseOptions {
    ParseOptions {
        allow_missing_commas: false,
        ..ParseOptions::default()
    }
}

fn parse(file: &Path, text: &str) -> Result<Value, ConfigError> {
    // A byte order mark is fine for OpenClaw's JSON5 reader.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    jsonc_parser::parse_to_serde_value::<Value>(text, &parse_options()).map_err(|err| {
        ConfigError::Parse {
            file: file.to_owned(),
            reason: err.to_string(),
        }
    })
}

fn read(file: &Path, limit: u64) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |reason: String| ConfigError::Read {
        file: file.to_owned(),
        reason,
    };
    let opened = std::fs::File::open(file).map_err(|err| read_error(err.to_string()))?;
    let meta = opened
        .metadata()
        .map_err(|err| read_error(err.to_string()))?;
    if !meta.is_file() {
        return Err(read_error("not a regular file".into()));
    }
    if meta.len() > limit {
        return Err(read_error(format!(
            "{} bytes, more than the {limit} a config may have",
            meta.len()
        )));
    }
    let mut text = String::new();
    opened
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|err| read_error(err.to_string()))?;
    Ok(text)
}

/// Reads and resolves the config at `config_path` for a gateway whose environment is `env`.
/// `Ok(None)`: there is no file (the gateway starts without one).
pub fn resolve(
    config_path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Option<Resolved>, ConfigError> {
    let text = match read(config_path, MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(_) if !config_path.exists() && config_path.symlink_metadata().is_err() => {
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let raw = parse(config_path, &text)?;
    let mut includes = Includes::new(config_path, env);
    let merged = includes.process(raw, config_path, 0, &[config_path.to_owned()])?;
    if !merged.is_object() {
        return Err(ConfigError::NotAnObject {
            file: config_path.to_owned(),
            key: String::new(),
        });
    }
    let mut env = env.clone();
    for (key, value) in config_env_vars(&merged) {
        if env
            .get(&key)
            .is_none_or(|current| current.trim().is_empty())
        {
            env.insert(key, value);
        }
    }
    let mut unresolved = Vec::new();
    let value = substitute(merged, &env, "", &mut unresolved);
    Ok(Some(Resolved {
        value,
        files: includes.files,
        unresolved,
    }))
}

/// The variables a config's `env` block sets: `env.vars.*` and `env.*` strings (not `shellEnv`).
fn config_env_vars(config: &Value) -> Vec<(String, String)> {
    let Some(block) = config.get("env").and_then(Value::as_object) else {
        return Vec::new();
    };
    let strings = |object: &serde_json::Map<String, Value>| {
        object
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .filter(|(_, value)| !value.trim().is_empty())
            .collect::<Vec<_>>()
    };
    // `env.X` wins over `env.vars.X`; a value that is itself a reference is not applied.
    let mut vars: BTreeMap<String, String> = block
        .get("vars")
        .and_then(Value::as_object)
        .map(strings)
        .unwrap_or_default()
        .into_iter()
        .collect();
    vars.extend(
        strings(block)
            .into_iter()
            .filter(|(key, _)| key != "vars" && key != "shellEnv"),
    );
    vars.into_iter()
        .filter(|(_, value)| !value.contains("${"))
        .collect()
}

/// The `$include` walk, with what it needs to refuse what OpenClaw refuses.
struct Includes {
    /// Directories an include may come from: the config's, then `OPENCLAW_INCLUDE_ROOTS`.
    roots: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Includes {
    fn new(config_path: &Path, env: &BTreeMap<String, String>) -> Includes {
        let mut roots = vec![normalize(config_path.parent().unwrap_or(Path::new("/")))];
        if let Some(extra) = env.get("OPENCLAW_INCLUDE_ROOTS") {
            let home = env.get("HOME").map(PathBuf::from);
            for entry in extra.split(':').map(str::trim).filter(|e| !e.is_empty()) {
                let path = match (entry.strip_prefix("~/"), &home) {
                    (Some(rest), Some(home)) => home.join(rest),
                    _ => PathBuf::from(entry),
                };
                if path.is_absolute() {
                    roots.push(normalize(&path));
                }
            }
        }
        Includes {
            roots,
            files: vec![config_path.to_owned()],
        }
    }

    /// `value` (read from `file`, `depth` includes down, through `chain`) with its includes
    /// resolved.
    fn process(
        &mut self,
        value: Value,
        file: &Path,
        depth: usize,
        chain: &[PathBuf],
    ) -> Result<Value, ConfigError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .map(|item| self.process(item, file, depth, chain))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(mut object) => {
                let include = object.remove(INCLUDE_KEY);
                let mut rest = serde_json::Map::new();
                for (key, child) in object {
                    rest.insert(key, self.process(child, file, depth, chain)?);
                }
                let Some(include) = include else {
                    return Ok(Value::Object(rest));
                };
                let included = self.include(&include, file, depth, chain)?;
                if rest.is_empty() {
                    return Ok(included);
                }
                if !included.is_object() {
                    return Err(ConfigError::Include {
                        file: file.to_owned(),
                        reason: "keys beside $include need the included content to be an object"
                            .into(),
                    });
                }
                Ok(deep_merge(included, Value::Object(rest)))
            }
            other => Ok(other),
        }
    }

    fn include(
        &mut self,
        include: &Value,
        file: &Path,
        depth: usize,
        chain: &[PathBuf],
    ) -> Result<Value, ConfigError> {
        match include {
            Value::String(path) => self.load(path, file, depth, chain),
            Value::Array(paths) => {
                let mut merged = Value::Object(serde_json::Map::new());
                for path in paths {
                    let Value::String(path) = path else {
                        return Err(ConfigError::Include {
                            file: file.to_owned(),
                            reason: format!("$include lists {path}, which is not a path"),
                        });
                    };
                    merged = deep_merge(merged, self.load(path, file, depth, chain)?);
                }
                Ok(merged)
            }
            other => Err(ConfigError::Include {
                file: file.to_owned(),
                reason: format!("$include must be a path or a list of paths, not {other}"),
            }),
        }
    }

    fn load(
        &mut self,
        path: &str,
        file: &Path,
        depth: usize,
        chain: &[PathBuf],
    ) -> Result<Value, ConfigError> {
        let refuse = |reason: String| ConfigError::Include {
            file: file.to_owned(),
            reason,
        };
        let target = include_target(file, path).map_err(refuse)?;
        let canonical = target.canonicalize().unwrap_or_else(|_| target.clone());
        let inside = |candidate: &Path| {
            self.roots.iter().any(|root| {
                let real_root = root.canonicalize().unwrap_or_else(|_| root.clone());
                candidate.starts_with(root) || candidate.starts_with(&real_root)
            })
        };
        if !inside(&target) || !inside(&canonical) {
            return Err(refuse(format!(
                "$include {path:?} is outside the config's directory ({}); OpenClaw refuses it \
                 unless OPENCLAW_INCLUDE_ROOTS allows it",
                self.roots[0].display()
            )));
        }
        if chain.contains(&target) {
            let cycle: Vec<String> = chain
                .iter()
                .chain(std::iter::once(&target))
                .map(|p| p.display().to_string())
                .collect();
            return Err(refuse(format!("circular $include: {}", cycle.join(" -> "))));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(refuse(format!(
                "$include {path:?} goes deeper than OpenClaw's {MAX_INCLUDE_DEPTH} levels"
            )));
        }
        let text = read(&target, MAX_INCLUDE_BYTES)
            .map_err(|err| refuse(format!("$include {path:?}: {err}")))?;
        let parsed = parse(&target, &text)?;
        self.files.push(target.clone());
        let mut deeper = chain.to_vec();
        deeper.push(target.clone());
        self.process(parsed, &target, depth + 1, &deeper)
    }
}

/// Where `$include: path` written in `file` points, normalized, as OpenClaw resolves it.
fn include_target(file: &Path, path: &str) -> Result<PathBuf, String> {
    if path.contains('\0') {
        return Err("an $include path holds a NUL".into());
    }
    if path.len() >= 4096 {
        return Err("an $include path is 4096 characters or more".into());
    }
    let base = file.parent().unwrap_or(Path::new("/"));
    Ok(normalize(&base.join(path)))
}

/// `path` with `.` and `..` worked out lexically (as Node's `path.normalize`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// OpenClaw's merge: objects key by key, lists concatenated, anything else: `source` wins.
fn deep_merge(target: Value, source: Value) -> Value {
    match (target, source) {
        (Value::Object(mut target), Value::Object(source)) => {
            for (key, value) in source {
                let merged = match target.remove(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => value,
                };
                target.insert(key, merged);
            }
            Value::Object(target)
        }
        (Value::Array(mut target), Value::Array(source)) => {
            target.extend(source);
            Value::Array(target)
        }
        (_, source) => source,
    }
}

/// `${VAR}` substituted in every string below `value` (at key path `key`).
fn substitute(
    value: Value,
    env: &BTreeMap<String, String>,
    key: &str,
    unresolved: &mut Vec<Unresolved>,
) -> Value {
    let child_key = |child: &str| {
        if key.is_empty() {
            child.to_owned()
        } else {
            format!("{key}.{child}")
        }
    };
    match value {
        Value::String(text) => Value::String(substitute_string(&text, env, key, unresolved)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    substitute(item, env, &child_key(&index.to_string()), unresolved)
                })
                .collect(),
        ),
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(k, v)| {
                    let v = substitute(v, env, &child_key(&k), unresolved);
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// An upper-case variable name, as OpenClaw matches them: `[A-Z_][A-Z0-9_]*`.
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A `${NAME}` (or `$${NAME}` when `escaped`) starting at `text[at..]`: the name and where the
/// reference ends.
fn reference_at(text: &str, at: usize, escaped: bool) -> Option<(&str, usize)> {
    let open = if escaped { "$${" } else { "${" };
    let start = at + open.len();
    if !text[at..].starts_with(open) {
        return None;
    }
    let end = start + text[start..].find('}')?;
    let name = &text[start..end];
    is_var_name(name).then_some((name, end + 1))
}

fn substitute_string(
    text: &str,
    env: &BTreeMap<String, String>,
    key: &str,
    unresolved: &mut Vec<Unresolved>,
) -> String {
    if !text.contains('$') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        if let Some((name, end)) = reference_at(text, at, true) {
            out.push_str(&format!("${{{name}}}"));
            at = end;
        } else if let Some((name, end)) = reference_at(text, at, false) {
            match env.get(name).filter(|value| !value.is_empty()) {
                Some(value) => out.push_str(value),
                None => {
                    unresolved.push(Unresolved {
                        key: key.to_owned(),
                        var: name.to_owned(),
                    });
                    out.push_str(&text[at..end]);
                }
            }
            at = end;
        } else {
            let c = text[at..].chars().next().expect("in bounds");
            out.push(c);
            at += c.len_utf8();
        }
    }
    out
}

/// Where a key is written, or would be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file that holds it (the config or an included file).
    pub file: PathBuf,
    /// The key path inside that file.
    pub path: Vec<String>,
    /// Whether the key is written there already (else it would be added).
    pub exists: bool,
}

/// Where `key` (a dotted path) of the config at `config_path` is written: the file whose value
/// wins, following `$include`s; for a key written nowhere, the object it would join, beside
/// the section's `$include` (sibling keys win), never inside an included file.
pub fn locate(config_path: &Path, key: &str) -> Result<Location, ConfigError> {
    let keys: Vec<String> = key.split('.').map(str::to_owned).collect();
    let text = read(config_path, MAX_CONFIG_BYTES)?;
    let root = match parse(config_path, &text)? {
        // An empty file: the key goes into a new top-level object.
        Value::Null => Value::Object(serde_json::Map::new()),
        root => root,
    };
    locate_in(config_path, &root, Vec::new(), &keys, 0)?.ok_or_else(|| ConfigError::NotAnObject {
        file: config_path.to_owned(),
        key: String::new(),
    })
}

/// `Some(location)`; `None` when `object` is not an object at all.
fn locate_in(
    file: &Path,
    object: &Value,
    path: Vec<String>,
    keys: &[String],
    depth: usize,
) -> Result<Option<Location>, ConfigError> {
    let Some(map) = object.as_object() else {
        return Ok(None);
    };
    let (key, rest) = keys.split_first().expect("a key to find");
    let mut here = path.clone();
    here.push(key.clone());
    if let Some(child) = map.get(key) {
        if rest.is_empty() {
            return Ok(Some(Location {
                file: file.to_owned(),
                path: here,
                exists: true,
            }));
        }
        return match locate_in(file, child, here.clone(), rest, depth)? {
            Some(found) => Ok(Some(found)),
            None => Err(ConfigError::NotAnObject {
                file: file.to_owned(),
                key: here.join("."),
            }),
        };
    }
    let includes: Vec<&str> = match map.get(INCLUDE_KEY) {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if depth < MAX_INCLUDE_DEPTH {
        // The last include that has the key wins the merge.
        let mut loaded = Vec::new();
        for include in &includes {
            let target = include_target(file, include).map_err(|reason| ConfigError::Include {
                file: file.to_owned(),
                reason,
            })?;
            let text = read(&target, MAX_INCLUDE_BYTES)?;
            loaded.push((parse(&target, &text)?, target));
        }
        for (content, target) in loaded.iter().rev() {
            if let Some(found) = locate_in(target, content, Vec::new(), keys, depth + 1)?
                && found.exists
            {
                return Ok(Some(found));
            }
        }
    }
    // Written nowhere: beside the `$include` (sibling keys win), never into an included file
    // that other gateways may share.
    let mut missing = path;
    missing.extend(keys.iter().cloned());
    Ok(Some(Location {
        file: file.to_owned(),
        path: missing,
        exists: false,
    }))
}

/// What [`set`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub file: PathBuf,
    /// The copy of the file as it was before reef first edited it (kept, never overwritten).
    pub backup: PathBuf,
    /// The value written there before, if any.
    pub previous: Option<Value>,
}

/// Writes `value` at `key` (a dotted path) of the config at `config_path`, in the file where
/// the key lives ([`locate`]), keeping everything else of that file as it was. The file is
/// copied to `<file>.reef-backup` first and replaced atomically with its mode kept; the result
/// is read back and must resolve to `value` with nothing else changed, or the file is left as
/// it was.
pub fn set(config_path: &Path, key: &str, value: &Value) -> Result<Edit, ConfigError> {
    let location = locate(config_path, key)?;
    let file = &writable_target(config_path, &location.file)?;
    let text = read(file, MAX_CONFIG_BYTES)?;
    let before = match parse(file, &text)? {
        Value::Null => Value::Object(serde_json::Map::new()),
        before => before,
    };
    let previous = location
        .path
        .iter()
        .try_fold(&before, |v, k| v.as_object()?.get(k))
        .cloned();
    if let Some(Value::String(written)) = &previous
        && written.contains("${")
    {
        return Err(ConfigError::FromEnvironment {
            file: file.clone(),
            key: key.to_owned(),
            written: written.clone(),
        });
    }
    let edited = edit_text(file, &text, &location.path, value)?;
    let unsafe_edit = |reason: String| ConfigError::Unsafe {
        file: file.clone(),
        reason,
    };
    // Read back: the key holds the value and nothing else moved.
    let after = parse(file, &edited).map_err(|err| unsafe_edit(err.to_string()))?;
    let mut expected = before.clone();
    put(&mut expected, &location.path, value.clone());
    if after != expected {
        return Err(unsafe_edit(format!(
            "the edit of `{key}` would have changed more than that key"
        )));
    }
    let backup = backup_path(file);
    replace_file(file, &text, &edited, &backup)?;
    Ok(Edit {
        file: file.clone(),
        backup,
        previous,
    })
}

/// The real file to write for `file` (a link is written through, so it stays a link), as long
/// as it lies inside the config's own directory: an included file elsewhere may be shared by
/// other gateways (what OpenClaw's own writer refuses too).
fn writable_target(config_path: &Path, file: &Path) -> Result<PathBuf, ConfigError> {
    let real = file.canonicalize().map_err(|err| ConfigError::Read {
        file: file.to_owned(),
        reason: err.to_string(),
    })?;
    let dir = config_path.parent().unwrap_or(Path::new("/"));
    let real_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if real.parent() != Some(real_dir.as_path()) && !real.starts_with(&real_dir) {
        return Err(ConfigError::Unsafe {
            file: file.to_owned(),
            reason: format!(
                "it is {}, outside the config's directory {} (a file other gateways may share); \
                 write the key there yourself",
                real.display(),
                real_dir.display()
            ),
        });
    }
    Ok(real)
}

fn backup_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(BACKUP_SUFFIX);
    file.with_file_name(name)
}

/// `value` at `path` in `target`, creating objects on the way.
fn put(target: &mut Value, path: &[String], value: Value) {
    let (last, parents) = path.split_last().expect("a key path");
    let mut here = target;
    for key in parents {
        if !here.is_object() {
            *here = Value::Object(serde_json::Map::new());
        }
        here = here
            .as_object_mut()
            .expect("an object")
            .entry(key.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    if let Some(object) = here.as_object_mut() {
        object.insert(last.clone(), value);
    }
}

fn input_value(value: &Value) -> CstInputValue {
    match value {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(input_value).collect()),
        Value::Object(map) => CstInputValue::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), input_value(v)))
                .collect(),
        ),
    }
}

/// `text` with `value` at `path`, through the concrete syntax tree (comments and layout kept).
fn edit_text(
    file: &Path,
    text: &str,
    path: &[String],
    value: &Value,
) -> Result<String, ConfigError> {
    let (bom, text) = match text.strip_prefix('\u{feff}') {
        Some(body) => ("\u{feff}", body),
        None => ("", text),
    };
    let root = CstRootNode::parse(text, &parse_options()).map_err(|err| ConfigError::Parse {
        file: file.to_owned(),
        reason: err.to_string(),
    })?;
    let not_object = |key: &[String]| ConfigError::NotAnObject {
        file: file.to_owned(),
        key: key.join("."),
    };
    let mut object: CstObject = match root.value() {
        None => root.object_value_or_set(),
        Some(_) => root.object_value().ok_or_else(|| not_object(&[]))?,
    };
    let (last, parents) = path.split_last().expect("a key path");
    for (depth, key) in parents.iter().enumerate() {
        object = match object.get(key) {
            Some(prop) => prop
                .object_value()
                .ok_or_else(|| not_object(&path[..=depth]))?,
            None => object.object_value_or_set(key),
        };
    }
    match object.get(last) {
        Some(prop) => prop.set_value(input_value(value)),
        None => {
            object.append(last, input_value(value));
        }
    }
    Ok(format!("{bom}{root}"))
}

/// Keeps `old` as `backup`, then puts `new` in place of `file` atomically, with `file`'s mode.
fn replace_file(file: &Path, old: &str, new: &str, backup: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let write_error = |what: &Path, err: std::io::Error| ConfigError::Unsafe {
        file: file.to_owned(),
        reason: format!("cannot write {}: {err}", what.display()),
    };
    let mode = std::fs::metadata(file)
        .map(|meta| meta.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    let write_new = |path: &Path, content: &str| -> std::io::Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        out.write_all(content.as_bytes())?;
        out.sync_all()
    };
    // The first backup is the file as the user left it: later edits never overwrite it.
    if backup.symlink_metadata().is_err() {
        write_new(backup, old).map_err(|err| write_error(backup, err))?;
    }
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(format!(
        ".reef-{}",
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let temporary = PathBuf::from(temporary);
    write_new(&temporary, new).map_err(|err| write_error(&temporary, err))?;
    if let Err(err) = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&temporary, file))
    {
        let _ = std::fs::remove_file(&temporary);
        return Err(write_error(file, err));
    }
    // The rename itself is durable once the directory is.
    if let Some(dir) = file.parent() {
        let _ = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
    }
    Ok(())
}

/// Brings the config's `gateway.port` in line with the plan's `port`, so that
/// `openclaw --profile X health` and every other client that reads the file finds the gateway.
/// `settings` is the config as resolved now (`None`: no file, nothing to edit; an error: the
/// gateway reports its config itself). `Ok(None)`: nothing to change.
///
/// A config OpenClaw itself is told never to write (`OPENCLAW_CONFIG_READONLY=1`,
/// `OPENCLAW_NIX_MODE=1` in the gateway's environment `env`) is not written either: a port
/// that differs is an error that says so.
pub fn keep_port(
    config_path: &Path,
    port: i64,
    settings: Option<&Result<GatewaySettings, ConfigError>>,
    env: &BTreeMap<String, String>,
) -> Result<Option<Edit>, ConfigError> {
    match settings {
        Some(Ok(settings)) if settings.port != Some(port) => {
            if let Some(var) = ["OPENCLAW_CONFIG_READONLY", "OPENCLAW_NIX_MODE"]
                .into_iter()
                .find(|var| env.get(*var).is_some_and(|value| value == "1"))
            {
                return Err(ConfigError::Unsafe {
                    file: config_path.to_owned(),
                    reason: format!(
                        "{var}=1 says the config is managed elsewhere; set gateway.port {port} in it yourself"
                    ),
                });
            }
            set(config_path, "gateway.port", &Value::from(port)).map(Some)
        }
        _ => Ok(None),
    }
}

/// The keys of a config a gateway needs, resolved: what reef adds flags for, probes on, and
/// keeps in step with the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySettings {
    pub mode: Option<String>,
    pub bind: Option<String>,
    pub custom_bind_host: Option<String>,
    pub port: Option<i64>,
    /// A token is set (written as `${VAR}` counts: the gateway may find VAR in a `.env`).
    pub has_token: bool,
    /// A password is set: the gateway uses password auth, and reef adds no token.
    pub has_password: bool,
}

impl GatewaySettings {
    /// The settings of a resolved config; an error names a key reef needs but cannot resolve
    /// (the mode, the bind and its custom address, the port: each decides a flag or an edit).
    pub fn of(resolved: &Resolved) -> Result<GatewaySettings, ConfigError> {
        let text = |key: &str| -> Result<Option<String>, ConfigError> {
            Ok(resolved
                .setting(key)?
                .and_then(Value::as_str)
                .map(str::to_owned))
        };
        let port = match resolved.setting("gateway.port")? {
            None | Some(Value::Null) => None,
            Some(value) => Some(port_number(value).ok_or_else(|| ConfigError::Invalid {
                file: resolved.files[0].clone(),
                key: "gateway.port".into(),
                reason: format!("is {value}, not a port number"),
            })?),
        };
        let bind = text("gateway.bind")?;
        let custom_bind_host = if bind.as_deref() == Some("custom") {
            text("gateway.customBindHost")?
        } else {
            resolved
                .get("gateway.customBindHost")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let present = |key: &str| resolved.get(key).is_some_and(|value| !value.is_null());
        Ok(GatewaySettings {
            mode: text("gateway.mode")?,
            bind,
            custom_bind_host,
            port,
            has_token: present("gateway.auth.token"),
            has_password: present("gateway.auth.password"),
        })
    }

    /// The address a probe reaches the gateway on: loopback, unless its config binds it to
    /// one custom address only (OpenClaw's own service probe does the same).
    pub fn probe_host(&self) -> std::net::IpAddr {
        let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        match (self.bind.as_deref(), &self.custom_bind_host) {
            (Some("custom"), Some(host)) => host
                .trim()
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_unspecified())
                .map(std::net::IpAddr::V4)
                .unwrap_or(loopback),
            _ => loopback,
        }
    }
}

/// A port written as a number or a numeric string (as OpenClaw coerces it).
fn port_number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_config_is_none_and_json5_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openclaw.json");
        assert_eq!(resolve(&path, &env(&[])).unwrap(), None);
        write(
            dir.path(),
            "openclaw.json",
            "{ gateway: { mode: 'local', port: 0x4000, }, // c\n }",
        );
        let resolved = resolve(&path, &env(&[])).unwrap().unwrap();
        assert_eq!(
            resolved.value,
            json!({ "gateway": { "mode": "local", "port": 16384 } })
        );
        write(dir.path(), "openclaw.json", "{ gateway: ");
        let err = resolve(&path, &env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("openclaw.json"), "{err}");
    }

    #[test]
    fn includes_merge_as_openclaw_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "openclaw.json",
            r#"{
              // the gateway section lives in its own file
              gateway: { $include: "./gateway.json5", port: 19000 },
              list: { $include: ["./a.json5", "./b.json5"] },
            }"#,
        );
        write(
            dir.path(),
            "gateway.json5",
            "{ mode: 'local', bind: 'custom', customBindHost: '127.0.0.2', port: 1, auth: { $include: './sub/auth.json5' } }",
        );
        write(
            dir.path(),
            "sub/auth.json5",
            "{ mode: 'token', token: 'abc' }",
        );
        write(dir.path(), "a.json5", "{ items: [1], x: 'a' }");
        write(dir.path(), "b.json5", "{ items: [2], x: 'b' }");
        let resolved = resolve(&path, &env(&[])).unwrap().unwrap();
        assert_eq!(
            resolved.value,
            json!({
                "gateway": {
                    "mode": "local", "bind": "custom", "customBindHost": "127.0.0.2",
                    "port": 19000, "auth": { "mode": "token", "token": "abc" }
                },
                "list": { "items": [1, 2], "x": "b" }
            })
        );
        assert_eq!(resolved.files.len(), 5);
        let settings = GatewaySettings::of(&resolved).unwrap();
        assert_eq!(settings.port, Some(19000));
        assert!(settings.has_token);
        assert_eq!(settings.probe_host().to_string(), "127.0.0.2");
    }

    #[test]
    fn includes_openclaw_refuses_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = write(&state, "openclaw.json", "{ $include: '../outside.json5' }");
        write(dir.path(), "outside.json5", "{}");
        let err = resolve(&path, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("outside the config's directory"), "{err}");
        // Allowed by OPENCLAW_INCLUDE_ROOTS, as for the gateway.
        let roots = env(&[("OPENCLAW_INCLUDE_ROOTS", dir.path().to_str().unwrap())]);
        assert!(resolve(&path, &roots).is_ok());

        write(&state, "openclaw.json", "{ $include: './a.json5' }");
        write(&state, "a.json5", "{ $include: './openclaw.json' }");
        let err = resolve(&path, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("circular"), "{err}");

        write(&state, "openclaw.json", "{ $include: './missing.json5' }");
        let err = resolve(&path, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("missing.json5"), "{err}");

        write(
            &state,
            "openclaw.json",
            "{ gateway: { $include: './s.json5', port: 1 } }",
        );
        write(&state, "s.json5", "[1]");
        let err = resolve(&path, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("beside $include"), "{err}");
    }

    #[test]
    fn variables_are_substituted_from_the_environment_and_the_env_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "openclaw.json",
            r#"{ env: { vars: { BIND: "lan" } },
                 gateway: { bind: "${BIND}", auth: { token: "${TOKEN}" }, mode: "$${LITERAL}",
                            customBindHost: "${lower}", port: "${PORT}" } }"#,
        );
        let resolved = resolve(&path, &env(&[("TOKEN", "t0k")])).unwrap().unwrap();
        assert_eq!(resolved.get("gateway.bind"), Some(&json!("lan")));
        assert_eq!(resolved.get("gateway.auth.token"), Some(&json!("t0k")));
        assert_eq!(resolved.get("gateway.mode"), Some(&json!("${LITERAL}")));
        assert_eq!(
            resolved.get("gateway.customBindHost"),
            Some(&json!("${lower}"))
        );
        assert_eq!(
            resolved.unresolved,
            [Unresolved {
                key: "gateway.port".into(),
                var: "PORT".into()
            }]
        );
        let err = GatewaySettings::of(&resolved).unwrap_err().to_string();
        assert!(err.contains("`gateway.port` refers to ${PORT}"), "{err}");
        // The environment wins over the env block.
        let resolved = resolve(
            &path,
            &env(&[("BIND", "loopback"), ("PORT", "19000"), ("TOKEN", "t")]),
        )
        .unwrap()
        .unwrap();
        let settings = GatewaySettings::of(&resolved).unwrap();
        assert_eq!(settings.bind.as_deref(), Some("loopback"));
        assert_eq!(settings.port, Some(19000));
    }

    #[test]
    fn a_set_keeps_comments_and_writes_where_the_key_lives() {
        let dir = tempfile::tempdir().unwrap();
        let main = "{\n  // my gateway\n  gateway: { $include: './gateway.json5' },\n  other: 'kept', /* here */\n}\n";
        let path = write(dir.path(), "openclaw.json", main);
        let included = "{\n  // bound to one address\n  mode: 'local',\n  bind: 'custom',\n  port: 19000, // old\n}\n";
        let gateway = write(dir.path(), "gateway.json5", included);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gateway, std::fs::Permissions::from_mode(0o640)).unwrap();

        let edit = set(&path, "gateway.port", &json!(19100)).unwrap();
        assert_eq!(edit.file, gateway);
        assert_eq!(edit.previous, Some(json!(19000)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), main);
        let now = std::fs::read_to_string(&gateway).unwrap();
        assert_eq!(now, included.replace("19000", "19100"));
        assert_eq!(std::fs::read_to_string(&edit.backup).unwrap(), included);
        let mode = std::fs::metadata(&gateway).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let resolved = resolve(&path, &env(&[])).unwrap().unwrap();
        assert_eq!(resolved.get("gateway.port"), Some(&json!(19100)));
    }

    #[test]
    fn a_missing_key_is_added_beside_its_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "openclaw.json", "{\n  // nothing yet\n}\n");
        set(&path, "gateway.port", &json!(19100)).unwrap();
        set(&path, "gateway.mode", &json!("local")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("// nothing yet"), "{text}");
        let resolved = resolve(&path, &env(&[])).unwrap().unwrap();
        assert_eq!(
            resolved.value,
            json!({ "gateway": { "port": 19100, "mode": "local" } })
        );

        let empty = write(dir.path(), "empty.json", "");
        set(&empty, "gateway.port", &json!(1)).unwrap();
        assert_eq!(
            resolve(&empty, &env(&[])).unwrap().unwrap().value,
            json!({ "gateway": { "port": 1 } })
        );
    }

    #[test]
    fn edits_reef_cannot_make_safely_are_refused_and_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{ gateway: { port: '${PORT}' } }";
        let path = write(dir.path(), "openclaw.json", text);
        let err = set(&path, "gateway.port", &json!(1)).unwrap_err();
        assert!(matches!(err, ConfigError::FromEnvironment { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        let text = "{ gateway: 'loopback' }";
        write(dir.path(), "openclaw.json", text);
        let err = set(&path, "gateway.port", &json!(1)).unwrap_err();
        assert!(
            err.to_string().contains("`gateway` is not an object"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert!(!backup_path(&path).exists());
    }

    #[test]
    fn a_linked_config_stays_a_link_and_shared_files_are_not_edited() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let real = write(&state, "real.json5", "{ gateway: { port: 1 } }");
        let link = state.join("openclaw.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        set(&link, "gateway.port", &json!(2)).unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&real).unwrap().contains("port: 2"));

        // An included file outside the config's directory (shared by gateways) is left alone.
        let shared = write(dir.path(), "shared/gateway.json5", "{ port: 1 }");
        std::fs::remove_file(&link).unwrap();
        write(
            &state,
            "openclaw.json",
            &format!("{{ gateway: {{ $include: '{}' }} }}", shared.display()),
        );
        let err = set(&link, "gateway.port", &json!(2)).unwrap_err();
        assert!(
            err.to_string().contains("outside the config's directory"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&shared).unwrap(), "{ port: 1 }");
        // A key written nowhere goes beside the include, in the config itself.
        set(&link, "gateway.mode", &json!("local")).unwrap();
        assert_eq!(std::fs::read_to_string(&shared).unwrap(), "{ port: 1 }");
        assert!(std::fs::read_to_string(&link).unwrap().contains("local"));
    }

    #[test]
    fn the_backup_is_the_file_before_reefs_first_edit() {
        let dir = tempfile::tempdir().unwrap();
        let original = "\u{feff}{ gateway: { port: 1 } } // mine\n";
        let path = write(dir.path(), "openclaw.json", original);
        set(&path, "gateway.port", &json!(2)).unwrap();
        let edit = set(&path, "gateway.port", &json!(3)).unwrap();
        assert_eq!(std::fs::read_to_string(&edit.backup).unwrap(), original);
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.starts_with('\u{feff}') && now.contains("port: 3"),
            "{now}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".reef-") && !name.ends_with(BACKUP_SUFFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn env_entries_win_over_env_vars_as_in_openclaw() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "openclaw.json",
            "{ env: { vars: { BIND: 'lan', HOST: '${OTHER}' }, BIND: 'loopback' }, \
               gateway: { bind: '${BIND}', customBindHost: '${HOST}' } }",
        );
        let resolved = resolve(&path, &env(&[])).unwrap().unwrap();
        assert_eq!(resolved.get("gateway.bind"), Some(&json!("loopback")));
        // HOST is not applied (its value is a reference), so customBindHost stays unresolved.
        assert!(
            resolved
                .unresolved
                .iter()
                .any(|u| u.key == "gateway.customBindHost" && u.var == "HOST"),
            "{:?}",
            resolved.unresolved
        );
    }
}
