//! Services as OpenClaw's own installer writes them, for instances with runtime openclaw.
//!
//! `openclaw --profile X gateway install` (2026.9.6; `daemon/systemd-unit.ts`, `service-env.ts`,
//! `program-args.ts`, `launchd-plist.ts` in its package) writes a unit with a fixed policy that
//! `openclaw gateway status` compares key by key (its "definition drift"), an `ExecStart` that
//! runs Node on the package's `dist/index.js`, and an environment built from the installing
//! shell. reef writes the same unit, so that OpenClaw's tools take it for their own. This module
//! holds the installer's facts and rebuilds its two inputs on this host:
//!
//! - [`Installation`]: the Node binary and the package entry behind an `openclaw` program, found
//!   the way the installer finds its own (`process.execPath` and the CLI's `dist/index.js`), plus
//!   the directories the service PATH gets from them.
//! - [`Host`]: what the installer reads from its environment and machine: HOME, TMPDIR, the
//!   user bin directories of the service PATH, CA certificates, the Node heap size.
//!
//! [`service_env`] puts them together (pure). Only [`Host::detect`] and
//! [`Installation::resolve`] read the filesystem; `reef export` and `reef install` call them
//! while building their options.
//!
//! How `openclaw` is resolved to Node and the package (the installer runs inside Node and knows
//! both; reef only has the program):
//! - `command = { NODE, SCRIPT }` (two words, the first a `node` binary): that Node, that script.
//! - one program (the instance's `command`, else `openclaw` on PATH), followed through symlinks:
//!   - a Node script (a `#!` line naming `node`, as npm's `bin/openclaw` -> `openclaw.mjs`
//!     symlink is): the script is the program as found, Node is the interpreter of the `#!`
//!     line (`/usr/bin/env node`: `node` on PATH);
//!   - a shell wrapper (a `#!` line naming a shell) with an `exec "NODE" "SCRIPT" ...` line, as
//!     `tools/install-openclaw.sh` writes: the first two double-quoted words of that line, which
//!     must be literal paths (no `$`);
//!   - anything else is not resolved.
//! - Node's path has its symlinks resolved (`process.execPath` does); the entry is the first of
//!   `dist/index.js`, `dist/index.mjs`, `dist/entry.js`, `dist/entry.mjs` next to the script's
//!   directory or its parent, for the script with and without symlinks resolved (the
//!   installer's candidates, in its order).
//!
//! Not reproduced (each only changes what the installer would write in a case reef does not
//! create): `OPENCLAW_WRAPPER` and `--runtime bun`, Homebrew's stable Node paths, a version-managed
//! Node swapped for a supported system Node (that needs running Node to probe it), the heap size
//! and environment an existing unit already carries, and variables from the state dir's `.env`
//! and the config's `env`, which the installer copies into the unit.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::{Options, one_line};
use crate::topology::{Backoff, Instance, OPENCLAW_STOP_TIMEOUT, RestartPolicy};

/// `OPENCLAW_SERVICE_MARKER`: how OpenClaw tells its own services from others.
pub const SERVICE_MARKER: &str = "openclaw";
/// `OPENCLAW_SERVICE_KIND` of a gateway (the other kind is `node`).
pub const SERVICE_KIND: &str = "gateway";
/// OpenClaw's restart delay (`RestartSec=5`).
pub const RESTART_SEC: f64 = 5.0;
/// OpenClaw's stop budget (`TimeoutStopSec=330`): what reef's topology defaults runtime openclaw to.
pub const STOP_TIMEOUT: f64 = OPENCLAW_STOP_TIMEOUT;
/// The launchd agent's `ExitTimeOut` and `ThrottleInterval` (`LAUNCH_AGENT_POLICY`).
pub const LAUNCHD_EXIT_TIMEOUT: u64 = 20;
pub const LAUNCHD_THROTTLE_INTERVAL: u64 = 10;
/// The launchd agent's `Umask` (0o077) and `ProcessType`.
pub const LAUNCHD_UMASK: u64 = 63;
pub const LAUNCHD_PROCESS_TYPE: &str = "Interactive";
/// The file in the state dir whose variables the unit reads (`EnvironmentFile=-...`): the one
/// OpenClaw's installer writes its own secrets to, and the only one its audit accepts.
pub const SYSTEMD_ENV_FILE: &str = "gateway.systemd.env";

/// The bundles the installer points `NODE_EXTRA_CA_CERTS` at for a version-managed Node on Linux.
const LINUX_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];
/// Path parts of a Node that a version manager installed (`version-manager-path.ts`).
const VERSION_MANAGER_MARKERS: &[&str] = &[
    "/.nvm/",
    "/.fnm/",
    "/.local/share/fnm/",
    "/.volta/",
    "/.asdf/",
    "/.n/",
    "/.nodenv/",
    "/.nodebrew/",
    "/nvs/",
    "/.local/share/mise/",
    "/.nvs/",
];
/// The system part of a service PATH on Linux and on macOS, in the installer's order.
const LINUX_SYSTEM_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];
const DARWIN_SYSTEM_PATH: &[&str] = &[
    "/opt/homebrew/bin",
    "/opt/homebrew/sbin",
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/sbin",
    "/sbin",
];
/// The entries the installer looks for in a `dist` directory, in its order.
const DIST_ENTRIES: &[&str] = &["index.js", "index.mjs", "entry.js", "entry.mjs"];
/// The heap the installer gives the gateway: half the memory, at least 2 GiB, at most 8 GiB (or a
/// quarter of the memory when that is more) and never more than three quarters of it.
const HEAP_FLOOR_MIB: u64 = 2048;
const HEAP_CAP_MIB: u64 = 8192;
/// The largest integer a JavaScript number holds exactly: a memory limit above it (cgroups'
/// "unlimited") is no limit to Node.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Which service manager the environment is for: the installer builds it per platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

/// The Node binary and the package entry behind an `openclaw` program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// Node, symlinks resolved (as `process.execPath`).
    pub node: PathBuf,
    /// The CLI entry the service runs: the package's `dist/index.js`.
    pub entry: PathBuf,
    /// What the service PATH gets from the installation, first: Node's directory, then the
    /// directories on PATH whose `openclaw` runs this package.
    pub bin_dirs: Vec<String>,
}

/// What the installer reads from its environment and machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `HOME`.
    pub home: Option<String>,
    /// `TMPDIR` as trimmed, else Node's `os.tmpdir()` (`TMP`, `TEMP`, `/tmp`).
    pub tmpdir: String,
    /// `NODE_EXTRA_CA_CERTS` when set to something.
    pub extra_ca_certs: Option<String>,
    /// `NODE_USE_SYSTEM_CA` as set (launchd only).
    pub use_system_ca: Option<String>,
    /// Whether `NVM_DIR` is set: the installer then points Node at the system's CA bundle.
    pub nvm: bool,
    /// The first readable system CA bundle, for that case.
    pub ca_bundle: Option<String>,
    /// The user directories of a Linux service PATH (`~/.local/bin`, `~/.npm-global/bin`,
    /// `~/bin`, `~/.nix-profile/bin`, and the package managers' that exist or are configured).
    pub user_bin_dirs: Vec<String>,
    /// `--max-old-space-size` in MiB for this machine's memory; none when it is unknown.
    pub heap_mib: Option<u64>,
}

impl Host {
    /// What the installer would read here, from `env` (the caller's environment) and this
    /// machine (directories that exist, the CA bundle, the memory, the working directory).
    pub fn detect(env: &BTreeMap<String, String>) -> Host {
        let var = |key: &str| env.get(key).map(String::as_str);
        let cwd = std::env::current_dir().ok();
        let home = var("HOME").map(str::to_owned);
        Host {
            tmpdir: tmpdir(env),
            extra_ca_certs: non_blank(var("NODE_EXTRA_CA_CERTS")),
            use_system_ca: var("NODE_USE_SYSTEM_CA").map(str::to_owned),
            nvm: non_blank(var("NVM_DIR")).is_some(),
            ca_bundle: LINUX_CA_BUNDLES
                .iter()
                .find(|bundle| std::fs::File::open(bundle).is_ok())
                .map(|bundle| (*bundle).to_owned()),
            user_bin_dirs: home
                .as_deref()
                .map(|home| user_bin_dirs(home, env, cwd.as_deref(), &|dir| dir.exists()))
                .unwrap_or_default(),
            heap_mib: heap_limit_mib(constrained_memory(), physical_memory()),
            home,
        }
    }

    /// `NODE_EXTRA_CA_CERTS` of the service for a unit running `node`: the caller's, else on
    /// Linux the system bundle when Node comes from a version manager (whose own CA store may
    /// lack the system's), else none; on macOS `/etc/ssl/cert.pem`.
    pub fn node_extra_ca_certs(&self, node: Option<&Path>, manager: Manager) -> Option<String> {
        if let Some(set) = &self.extra_ca_certs {
            return Some(set.clone());
        }
        match manager {
            Manager::Launchd => Some("/etc/ssl/cert.pem".to_owned()),
            Manager::Systemd => {
                let managed = node.is_some_and(|node| {
                    let node = node.display().to_string();
                    VERSION_MANAGER_MARKERS
                        .iter()
                        .any(|marker| node.contains(marker))
                });
                if self.nvm || managed {
                    self.ca_bundle.clone()
                } else {
                    None
                }
            }
        }
    }
}

/// The value of a variable when it holds more than whitespace.
fn non_blank(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty()).map(str::to_owned)
}

/// The service's TMPDIR on Linux: `TMPDIR` trimmed, else what Node's `os.tmpdir()` answers.
fn tmpdir(env: &BTreeMap<String, String>) -> String {
    if let Some(set) = env
        .get("TMPDIR")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        return set.to_owned();
    }
    let mut dir = ["TMPDIR", "TMP", "TEMP"]
        .iter()
        .find_map(|key| env.get(*key).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| "/tmp".to_owned());
    if dir.len() > 1 && dir.ends_with('/') {
        dir.pop();
    }
    dir
}

/// A path as Node's `path.posix.normalize` writes it: `.` and `..` folded, no doubled or
/// trailing `/`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !path.starts_with('/') {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// `base/sub`, unless `base` already ends with it (`appendSubdir`).
fn append_subdir(base: &str, sub: &str) -> String {
    if base.ends_with(&format!("/{sub}")) {
        base.to_owned()
    } else {
        normalize(&format!("{base}/{sub}"))
    }
}

/// The user directories of a Linux service PATH, as `resolveUserBinDirs` lists them: those the
/// environment configures (pnpm, npm, Bun, Volta, asdf, nvm, fnm, Nix), the defaults under
/// home, and the package managers' that `exists`. A configured directory inside the working
/// directory (a checkout's `node_modules/.bin`, say) or `/proc` is left out.
fn user_bin_dirs(
    home: &str,
    env: &BTreeMap<String, String>,
    cwd: Option<&Path>,
    exists: &dyn Fn(&Path) -> bool,
) -> Vec<String> {
    let var = |key: &str| env.get(key).map(String::as_str).filter(|v| !v.is_empty());
    let mut dirs = Vec::new();
    let configured = |dir: Option<String>, dirs: &mut Vec<String>| {
        let Some(dir) = dir
            .map(|d| d.trim().to_owned())
            .filter(|d| d.starts_with('/'))
        else {
            return;
        };
        let dir = normalize(&dir);
        if !is_workspace_derived(&dir, home, cwd) {
            dirs.push(dir);
        }
    };
    let pnpm = var("PNPM_HOME");
    configured(pnpm.map(str::to_owned), &mut dirs);
    configured(pnpm.map(|p| append_subdir(p, "bin")), &mut dirs);
    configured(
        var("NPM_CONFIG_PREFIX").map(|p| append_subdir(p, "bin")),
        &mut dirs,
    );
    configured(
        var("BUN_INSTALL").map(|p| append_subdir(p, "bin")),
        &mut dirs,
    );
    configured(
        var("VOLTA_HOME").map(|p| append_subdir(p, "bin")),
        &mut dirs,
    );
    configured(
        var("ASDF_DATA_DIR").map(|p| append_subdir(p, "shims")),
        &mut dirs,
    );
    configured(
        var("NVM_DIR").map(|p| append_subdir(p, "current/bin")),
        &mut dirs,
    );
    configured(
        var("FNM_DIR").map(|p| append_subdir(p, "aliases/default/bin")),
        &mut dirs,
    );
    configured(
        var("FNM_DIR").map(|p| append_subdir(p, "current/bin")),
        &mut dirs,
    );
    for default in [".local/bin", ".npm-global/bin", "bin"] {
        dirs.push(format!("{home}/{default}"));
    }
    for existing in [".volta/bin", ".asdf/shims", ".bun/bin"] {
        let dir = format!("{home}/{existing}");
        if exists(Path::new(&dir)) {
            dirs.push(dir);
        }
    }
    match env
        .get("NIX_PROFILES")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        Some(profiles) => {
            for profile in profiles.split_whitespace().rev() {
                configured(Some(append_subdir(profile, "bin")), &mut dirs);
            }
        }
        None => dirs.push(format!("{home}/.nix-profile/bin")),
    }
    for manager in [
        ".nvm/current/bin",
        ".local/share/fnm/aliases/default/bin",
        ".local/share/fnm/current/bin",
        ".fnm/aliases/default/bin",
        ".fnm/current/bin",
        ".local/share/pnpm/bin",
        ".local/share/pnpm",
    ] {
        let dir = format!("{home}/{manager}");
        if exists(Path::new(&dir)) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Whether a configured bin directory comes from the working directory (or `/proc`), which a
/// service must not depend on; the home directory as working directory is fine.
fn is_workspace_derived(dir: &str, home: &str, cwd: Option<&Path>) -> bool {
    let inside = |candidate: &str, parent: &str| {
        candidate == parent || candidate.starts_with(&format!("{parent}/"))
    };
    if inside(dir, "/proc") {
        return true;
    }
    let Some(cwd) = cwd.map(|c| normalize(&c.display().to_string())) else {
        return false;
    };
    if cwd == normalize(home) {
        return false;
    }
    if inside(dir, &cwd) {
        return true;
    }
    let real = |path: &str| {
        std::fs::canonicalize(path)
            .ok()
            .map(|p| p.display().to_string())
    };
    match (real_existing(dir), real(&cwd)) {
        (Some(real_dir), Some(real_cwd)) => {
            real(home).as_deref() != Some(real_cwd.as_str()) && inside(&real_dir, &real_cwd)
        }
        _ => false,
    }
}

/// `path` with the symlinks of its longest existing prefix resolved (`realpathExistingServicePathDir`).
fn real_existing(path: &str) -> Option<String> {
    let mut rest: Vec<&str> = Vec::new();
    let mut current = Path::new(path);
    loop {
        if let Ok(real) = std::fs::canonicalize(current) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out.display().to_string());
        }
        rest.push(current.file_name()?.to_str()?);
        current = current.parent()?;
    }
}

/// The cgroup memory limit of this process, as libuv reads it for `process.constrainedMemory()`:
/// the lower of `memory.max` and `memory.high` (cgroup v2) or of `memory.limit_in_bytes` and
/// `memory.soft_limit_in_bytes` (v1). None when there is none or it cannot be read.
fn constrained_memory() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read =
        |path: String| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let v1 = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let limits = match v1 {
        Some(path) => [
            read(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")),
            read(format!(
                "/sys/fs/cgroup/memory{path}/memory.soft_limit_in_bytes"
            )),
        ],
        None => {
            let path = cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
            [
                read(format!("/sys/fs/cgroup{path}/memory.max")),
                read(format!("/sys/fs/cgroup{path}/memory.high")),
            ]
        }
    };
    limits.into_iter().flatten().min()
}

/// The machine's memory (`MemTotal`), as `os.totalmem()` reads it.
fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The installer's `--max-old-space-size` for this much memory (`resolveGatewayHeapLimit`):
/// the constrained memory when it is a real limit below the physical memory, else the
/// physical memory; none below 2 MiB or when both are unknown.
pub fn heap_limit_mib(constrained: Option<u64>, physical: Option<u64>) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let physical = physical.filter(|&bytes| bytes > 0 && bytes <= MAX_SAFE_INTEGER);
    let bytes = match constrained {
        Some(limit)
            if limit > 0
                && limit <= MAX_SAFE_INTEGER
                && physical.is_none_or(|physical| limit <= physical) =>
        {
            limit
        }
        _ => physical?,
    };
    if bytes < 2 * MIB {
        return None;
    }
    let available = bytes / MIB;
    let cap = HEAP_CAP_MIB.max(available / 4);
    let headroom = available * 3 / 4;
    Some(cap.min(HEAP_FLOOR_MIB.max(available / 2)).min(headroom))
}

impl Installation {
    /// Finds Node and the package entry behind the `openclaw` an instance runs: its `command`,
    /// else `on_path` (`openclaw` found on PATH). `env` is the caller's environment (PATH).
    /// The rules are in the module's documentation; the error says why none was found.
    pub fn resolve(
        command: Option<&[String]>,
        on_path: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Installation, String> {
        let path_var = env.get("PATH").map(String::as_str).unwrap_or("");
        let (node, script) = match command {
            Some([node, script]) => {
                let node = Path::new(node);
                let named_node = node
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("node"));
                if !named_node {
                    return Err(format!(
                        "its command's first word {} is not a Node binary",
                        node.display()
                    ));
                }
                (find_program(node, path_var)?, absolute(Path::new(script))?)
            }
            Some([program]) => script_of(&find_program(Path::new(program), path_var)?, path_var)?,
            Some(words) => {
                return Err(format!(
                    "its command has {} words; reef follows one program or `node SCRIPT`",
                    words.len()
                ));
            }
            None => {
                let program = on_path.ok_or("no `openclaw` on PATH")?;
                script_of(program, path_var)?
            }
        };
        let node = std::fs::canonicalize(&node)
            .map_err(|err| format!("Node at {} cannot be resolved: {err}", node.display()))?;
        let entry = entry_of(&script).ok_or_else(|| {
            format!(
                "no dist/index.js (or index.mjs, entry.js, entry.mjs) beside {}",
                script.display()
            )
        })?;
        let mut bin_dirs = Vec::new();
        if let Some(dir) = node.parent() {
            bin_dirs.push(dir.display().to_string());
        }
        for dir in openclaw_bin_dirs(&script, path_var) {
            if !bin_dirs.contains(&dir) {
                bin_dirs.push(dir);
            }
        }
        Ok(Installation {
            node,
            entry,
            bin_dirs,
        })
    }

    /// The start of `ExecStart` / `ProgramArguments`: Node, the heap size for this host, the
    /// entry. The gateway's own words (`gateway --port B` ...) follow.
    pub fn program(&self, host: &Host) -> Vec<String> {
        let mut words = vec![self.node.display().to_string()];
        words.extend(
            host.heap_mib
                .map(|mib| format!("--max-old-space-size={mib}")),
        );
        words.push(self.entry.display().to_string());
        words
    }
}

/// `path` made absolute against the working directory, `..` folded as `path.resolve` does.
fn absolute(path: &Path) -> Result<PathBuf, String> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|err| format!("no working directory to resolve {}: {err}", path.display()))?
            .join(path)
    };
    Ok(PathBuf::from(normalize(&joined.display().to_string())))
}

/// A program as the shell finds it: a path as is (made absolute), a bare name on `path_var`.
fn find_program(program: &Path, path_var: &str) -> Result<PathBuf, String> {
    if program.components().count() > 1 || program.is_absolute() {
        return absolute(program);
    }
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("no `{}` on PATH", program.display()))
}

/// Node and the CLI script behind one program: a Node script (npm's bin symlink) or a shell
/// wrapper that execs Node on the script.
fn script_of(program: &Path, path_var: &str) -> Result<(PathBuf, PathBuf), String> {
    let real = std::fs::canonicalize(program)
        .map_err(|err| format!("{} cannot be resolved: {err}", program.display()))?;
    let mut head = Vec::with_capacity(4096);
    {
        use std::io::Read;
        std::fs::File::open(&real)
            .and_then(|file| file.take(64 * 1024).read_to_end(&mut head))
            .map_err(|err| format!("{} cannot be read: {err}", real.display()))?;
    }
    let text = String::from_utf8_lossy(&head);
    let shebang = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("#!"))
        .map(str::trim)
        .ok_or_else(|| {
            format!(
                "{} is neither a Node script nor a shell wrapper (no #! line)",
                real.display()
            )
        })?;
    let mut interpreter = shebang.split_whitespace();
    let first = interpreter.next().unwrap_or("");
    let named = if Path::new(first)
        .file_name()
        .is_some_and(|name| name == "env")
    {
        interpreter
            .find(|word| !word.starts_with('-'))
            .unwrap_or("")
    } else {
        first
    };
    let named_file = Path::new(named)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    if named_file.starts_with("node") {
        let node = if named.contains('/') {
            PathBuf::from(named)
        } else {
            find_program(Path::new(named), path_var)?
        };
        return Ok((node, program.to_path_buf()));
    }
    if matches!(named_file, "sh" | "bash" | "dash" | "ksh" | "zsh") {
        return wrapper_exec(&text).ok_or_else(|| {
            format!(
                "{} is a shell wrapper without an `exec \"NODE\" \"SCRIPT\"` line",
                real.display()
            )
        });
    }
    Err(format!(
        "{} runs {named}, neither Node nor a shell",
        real.display()
    ))
}

/// The `exec "NODE" "SCRIPT" ...` line of a wrapper: its first two double-quoted words, when
/// both are literal absolute paths.
fn wrapper_exec(text: &str) -> Option<(PathBuf, PathBuf)> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("exec ") || line.starts_with("exec\t"))
        .find_map(|line| {
            let mut quoted = line.split('"').skip(1).step_by(2);
            let node = quoted.next()?;
            let script = quoted.next()?;
            let literal = |word: &str| word.starts_with('/') && !word.contains(['$', '`', '\\']);
            (literal(node) && literal(script)).then(|| (PathBuf::from(node), PathBuf::from(script)))
        })
}

/// The entry the installer runs for a CLI started as `script` (`resolveCliEntrypointPathForService`):
/// the script itself when it is a `dist` entry, else the first existing `dist` entry beside the
/// script's directory or in it, for the script with and without symlinks resolved.
fn entry_of(script: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(script).unwrap_or_else(|_| script.to_path_buf());
    let is_dist_entry = |path: &Path| {
        path.parent()
            .and_then(Path::file_name)
            .is_some_and(|dir| dir == "dist")
            && path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| DIST_ENTRIES.contains(&name))
    };
    if is_dist_entry(&real) {
        return Some(real);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for input in [real.as_path(), script] {
        let Some(base) = input.parent() else { continue };
        for dir in [base.join(".."), base.to_path_buf()] {
            for entry in DIST_ENTRIES {
                let candidate = PathBuf::from(normalize(
                    &dir.join("dist").join(entry).display().to_string(),
                ));
                if !candidates.contains(&candidate) {
                    candidates.push(candidate);
                }
            }
        }
        // npm's `node_modules/.bin/openclaw`: the package of that name beside `.bin`.
        let parts: Vec<Component<'_>> = input.components().collect();
        if let Some(bin) = parts.iter().rposition(|c| c.as_os_str() == ".bin")
            && bin > 0
            && parts[bin - 1].as_os_str() == "node_modules"
            && let Some(name) = input.file_name()
        {
            let package: PathBuf = parts[..bin].iter().collect::<PathBuf>().join(name);
            for entry in DIST_ENTRIES {
                let candidate = package.join("dist").join(entry);
                if !candidates.contains(&candidate) {
                    candidates.push(candidate);
                }
            }
        }
    }
    candidates.into_iter().find(|candidate| candidate.exists())
}

/// The directory of the `openclaw` package a path lies in: the nearest ancestor (at most 12
/// up, not past a `node_modules`) whose `package.json` is named `openclaw`.
fn package_root_from(start: &Path) -> Option<PathBuf> {
    let mut current = Some(start);
    for _ in 0..12 {
        let dir = current?;
        let named_openclaw = std::fs::read_to_string(dir.join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|package| package["name"] == "openclaw");
        if named_openclaw {
            return Some(dir.to_path_buf());
        }
        if dir.file_name().is_some_and(|name| name == "node_modules") {
            return None;
        }
        current = dir.parent();
    }
    None
}

/// The `openclaw` package a CLI path belongs to (`resolveOpenClawPackageRootSync`).
fn package_root(argv1: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(argv1).ok();
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(dir) = real
        .as_deref()
        .filter(|r| *r != argv1)
        .and_then(Path::parent)
    {
        starts.push(dir.to_path_buf());
    }
    if let Some(dir) = argv1.parent() {
        starts.push(dir.to_path_buf());
    }
    starts.iter().find_map(|start| package_root_from(start))
}

/// The directories the service PATH gets for `openclaw` (`resolveDaemonOpenClawBinDir`): the
/// script's own directory when it is named `openclaw`, then every PATH directory whose
/// `openclaw` is the same file or runs the same package.
fn openclaw_bin_dirs(script: &Path, path_var: &str) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    if script.file_name().is_some_and(|name| name == "openclaw")
        && let Some(dir) = script.parent()
    {
        dirs.push(dir.display().to_string());
    }
    let script_real = std::fs::canonicalize(script).ok();
    for segment in path_var.split(':').map(str::trim) {
        if !segment.starts_with('/') || dirs.iter().any(|d| d == segment) {
            continue;
        }
        let candidate = Path::new(segment).join("openclaw");
        if !candidate.exists() {
            continue;
        }
        let candidate_real = std::fs::canonicalize(&candidate).ok();
        if let (Some(script_real), Some(candidate_real)) = (&script_real, &candidate_real)
            && script_real != candidate_real
        {
            let active = package_root(script_real);
            if active.is_none() || package_root(candidate_real) != active {
                continue;
            }
        }
        dirs.push(segment.to_owned());
    }
    dirs
}

/// The service PATH: the installation's directories, the system's, then (Linux) the user's;
/// each once, in that order.
fn service_path(installation: Option<&Installation>, host: &Host, manager: Manager) -> String {
    let system = match manager {
        Manager::Systemd => LINUX_SYSTEM_PATH,
        Manager::Launchd => DARWIN_SYSTEM_PATH,
    };
    let user: &[String] = match manager {
        Manager::Systemd => &host.user_bin_dirs,
        Manager::Launchd => &[],
    };
    let mut dirs: Vec<&str> = Vec::new();
    let installed = installation.map(|i| i.bin_dirs.as_slice()).unwrap_or(&[]);
    for dir in installed
        .iter()
        .map(String::as_str)
        .chain(system.iter().copied())
        .chain(user.iter().map(String::as_str))
    {
        let dir = dir.trim();
        if !dir.is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.join(":")
}

/// The environment the installer writes for `instance`, in its order (`buildServiceEnvironment`):
/// values trimmed, empty ones left out except `NODE_OPTIONS` (set empty, so a caller's
/// `NODE_OPTIONS` never reaches the service). For launchd, as on macOS: the state dir's `tmp`,
/// the system CA store, the label.
pub fn service_env(
    instance: &Instance,
    installation: Option<&Installation>,
    host: &Host,
    manager: Manager,
) -> Vec<(String, String)> {
    let state_dir = instance.state_dir.display().to_string();
    let tmpdir = match manager {
        Manager::Systemd => host.tmpdir.clone(),
        Manager::Launchd => format!("{}/tmp", state_dir.trim_end_matches('/')),
    };
    let node = installation.map(|i| i.node.as_path());
    let windows_task = if crate::profile::is_default(&instance.profile) {
        "OpenClaw Gateway".to_owned()
    } else {
        format!("OpenClaw Gateway ({})", instance.profile)
    };
    let entries: Vec<(&str, Option<String>)> = vec![
        ("HOME", host.home.clone()),
        ("TMPDIR", Some(tmpdir)),
        (
            "NODE_EXTRA_CA_CERTS",
            host.node_extra_ca_certs(node, manager),
        ),
        (
            "NODE_USE_SYSTEM_CA",
            match manager {
                Manager::Systemd => None,
                Manager::Launchd => Some(host.use_system_ca.clone().unwrap_or_else(|| "1".into())),
            },
        ),
        ("OPENCLAW_STATE_DIR", Some(state_dir)),
        (
            "OPENCLAW_CONFIG_PATH",
            Some(instance.config_path.display().to_string()),
        ),
        ("PATH", Some(service_path(installation, host, manager))),
        ("NODE_OPTIONS", Some(String::new())),
        ("OPENCLAW_PROFILE", Some(instance.profile.clone())),
        ("OPENCLAW_GATEWAY_PORT", Some(instance.port.to_string())),
        (
            "OPENCLAW_LAUNCHD_LABEL",
            (manager == Manager::Launchd).then(|| instance.launchd_label.clone()),
        ),
        ("OPENCLAW_SYSTEMD_UNIT", Some(instance.systemd_unit.clone())),
        ("OPENCLAW_WINDOWS_TASK_NAME", Some(windows_task)),
        ("OPENCLAW_WINDOWS_TASK_HIDDEN_LAUNCHER", Some("1".into())),
        ("OPENCLAW_SERVICE_MARKER", Some(SERVICE_MARKER.into())),
        ("OPENCLAW_SERVICE_KIND", Some(SERVICE_KIND.into())),
    ];
    entries
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value?.trim().to_owned();
            (!value.is_empty() || key == "NODE_OPTIONS").then(|| (key.to_owned(), value))
        })
        .collect()
}

/// The environment of an OpenClaw unit or agent: the installer's, in its order, then the
/// launch's own variables (`OPENCLAW_DISABLE_BONJOUR`, a custom workspace, the instance's
/// `env`), each replacing the installer's value of the same name in place, so no variable is
/// defined twice. `OPENCLAW_NO_RESPAWN` only when the unit does not always restart: under a
/// service manager that does, the gateway's full restarts are exits the manager answers, as
/// with OpenClaw's own unit.
pub fn environment(
    instance: &Instance,
    launch_env: &BTreeMap<String, String>,
    options: &Options,
    manager: Manager,
) -> Vec<(String, String)> {
    let installation = options
        .openclaw_installs
        .get(&instance.name)
        .and_then(|found| found.as_ref().ok());
    let mut env = service_env(instance, installation, &options.openclaw_host, manager);
    for (key, value) in launch_env {
        if key == "OPENCLAW_NO_RESPAWN" && instance.restart.policy == RestartPolicy::Always {
            continue;
        }
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env
}

/// The program words of an OpenClaw service: Node, the heap size and the package entry as the
/// installer writes them; else (not resolved) the launch's own program, with a warning.
pub fn program_words(
    instance: &Instance,
    launch_argv: &[String],
    options: &Options,
    warnings: &mut Vec<String>,
) -> (Vec<String>, usize) {
    let program_len = instance
        .command
        .as_ref()
        .map_or(1, Vec::len)
        .min(launch_argv.len());
    match options.openclaw_installs.get(&instance.name) {
        Some(Ok(installation)) => (installation.program(&options.openclaw_host), program_len),
        found => {
            let reason = match found {
                Some(Err(reason)) => reason.as_str(),
                _ => "it was not looked for",
            };
            warnings.push(format!(
                "`{}`: cannot find the Node and OpenClaw package behind {} ({}); its service runs `{}` as `reef up` does, \
                 not Node on the package's dist/index.js as `openclaw gateway install` writes it",
                one_line(&instance.name),
                one_line(&launch_argv[..program_len].join(" ")),
                one_line(reason),
                one_line(&launch_argv.join(" "))
            ));
            (launch_argv[..program_len].to_vec(), program_len)
        }
    }
}

/// Warnings for where the topology asks for something else than OpenClaw's service does: the
/// service carries the topology's value, and OpenClaw's own status reports the difference.
pub fn differences(instance: &Instance, manager: Manager, warnings: &mut Vec<String>) {
    let name = one_line(&instance.name);
    let service = match manager {
        Manager::Systemd => "unit",
        Manager::Launchd => "agent",
    };
    let drift = "`openclaw gateway status` reports the difference";
    if instance.restart.policy != RestartPolicy::Always {
        let setting = match (manager, instance.restart.policy) {
            (Manager::Systemd, RestartPolicy::OnFailure) => {
                "Restart=on-failure, not Restart=always"
            }
            (Manager::Systemd, _) => "Restart=no, not Restart=always",
            (Manager::Launchd, RestartPolicy::OnFailure) => {
                "KeepAlive only after a failed exit, not always"
            }
            (Manager::Launchd, _) => "KeepAlive false, not true",
        };
        warnings.push(format!(
            "`{name}`: restart policy {}: its {service} says {setting} as OpenClaw's does, and sets \
             OPENCLAW_NO_RESPAWN=1 so the gateway restarts itself in-process rather than by exiting; {drift}",
            policy_name(instance.restart.policy)
        ));
    }
    if instance.restart.backoff != Backoff::default() {
        let initial = instance.restart.backoff.initial;
        let setting = match manager {
            Manager::Systemd => format!("RestartSec={}, not {RESTART_SEC}", initial.max(0.1)),
            Manager::Launchd => format!(
                "ThrottleInterval {}, not {LAUNCHD_THROTTLE_INTERVAL}",
                initial.ceil().max(1.0) as u64
            ),
        };
        warnings.push(format!(
            "`{name}`: restart.backoff.initial {initial} s: its {service} says {setting} as OpenClaw's does; {drift}"
        ));
    }
    if instance.stop.timeout != STOP_TIMEOUT {
        let timeout = instance.stop.timeout;
        let setting = match manager {
            Manager::Systemd => format!("TimeoutStopSec={timeout}, not {STOP_TIMEOUT}"),
            Manager::Launchd => format!(
                "ExitTimeOut {}, not {LAUNCHD_EXIT_TIMEOUT}",
                timeout.ceil() as u64
            ),
        };
        warnings.push(format!(
            "`{name}`: stop.timeout {timeout} s: its {service} says {setting} as OpenClaw's does (the gateway \
             may drain for up to 315 s before it exits); {drift}"
        ));
    }
    if instance.stop.signal != "SIGTERM" {
        let signal = &instance.stop.signal;
        warnings.push(match manager {
            Manager::Systemd => format!(
                "`{name}`: stop signal {signal}: its unit says KillSignal={signal}, which OpenClaw's does not set; {drift}"
            ),
            Manager::Launchd => format!(
                "`{name}`: stop signal {signal} is not expressed: launchd stops an agent with SIGTERM"
            ),
        });
    }
}

/// A restart policy as the topology names it.
fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}

/// The unit's `Description=` (and the agent's `Comment`), as the installer words it.
pub fn description(profile: &str) -> String {
    if crate::profile::is_default(profile) {
        "OpenClaw Gateway".to_owned()
    } else {
        format!("OpenClaw Gateway (profile: {profile})")
    }
}

/// Where the launchd agent logs, as on macOS: `~/Library/Logs/openclaw/gateway[-PROFILE].log`.
pub fn launchd_log(host: &Host, profile: &str) -> String {
    let suffix = if crate::profile::is_default(profile) {
        String::new()
    } else {
        format!("-{profile}")
    };
    format!(
        "{}/Library/Logs/openclaw/gateway{suffix}.log",
        host.home.as_deref().unwrap_or("").trim_end_matches('/')
    )
}

/// Host facts for tests: a home under /home/ada, nothing configured, 8 GiB of heap.
#[cfg(test)]
pub(crate) fn test_host() -> Host {
    Host {
        home: Some("/home/ada".into()),
        tmpdir: "/tmp".into(),
        extra_ca_certs: None,
        use_system_ca: None,
        nvm: false,
        ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
        user_bin_dirs: [".local/bin", ".npm-global/bin", "bin", ".nix-profile/bin"]
            .iter()
            .map(|dir| format!("/home/ada/{dir}"))
            .collect(),
        heap_mib: Some(8192),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_heap_follows_the_installers_formula() {
        const GIB: u64 = 1 << 30;
        // 24 GiB: half is 12 GiB, capped at 8 GiB.
        assert_eq!(heap_limit_mib(None, Some(24 * GIB)), Some(8192));
        // 6 GiB: half.
        assert_eq!(heap_limit_mib(None, Some(6 * GIB)), Some(3072));
        // 2 GiB: the 2 GiB floor, but never past three quarters.
        assert_eq!(heap_limit_mib(None, Some(2 * GIB)), Some(1536));
        // 64 GiB: a quarter is more than 8 GiB.
        assert_eq!(heap_limit_mib(None, Some(64 * GIB)), Some(16384));
        // A cgroup limit below the machine's memory wins; "unlimited" does not.
        assert_eq!(heap_limit_mib(Some(4 * GIB), Some(24 * GIB)), Some(2048));
        assert_eq!(heap_limit_mib(Some(u64::MAX), Some(24 * GIB)), Some(8192));
        assert_eq!(
            heap_limit_mib(Some(9_223_372_036_854_771_712), Some(24 * GIB)),
            Some(8192)
        );
        assert_eq!(heap_limit_mib(None, None), None);
    }

    #[test]
    fn tmpdir_is_trimmed_or_nodes_default() {
        assert_eq!(tmpdir(&env(&[])), "/tmp");
        assert_eq!(tmpdir(&env(&[("TMPDIR", " /var/tmp ")])), "/var/tmp");
        assert_eq!(tmpdir(&env(&[("TMP", "/scratch/")])), "/scratch");
        assert_eq!(tmpdir(&env(&[("TMPDIR", ""), ("TEMP", "/t")])), "/t");
    }

    #[test]
    fn user_bin_dirs_follow_the_installers_order() {
        let configured = env(&[
            ("PNPM_HOME", "/opt/pnpm"),
            ("NPM_CONFIG_PREFIX", "/opt/npm/"),
            ("NVM_DIR", "/home/ada/.nvm"),
            (
                "NIX_PROFILES",
                "/nix/var/profiles/default /home/ada/.nix-profile",
            ),
        ]);
        let exists = |dir: &Path| dir.ends_with(".bun/bin");
        assert_eq!(
            user_bin_dirs(
                "/home/ada",
                &configured,
                Some(Path::new("/home/ada")),
                &exists
            ),
            [
                "/opt/pnpm",
                "/opt/pnpm/bin",
                "/opt/npm/bin",
                "/home/ada/.nvm/current/bin",
                "/home/ada/.local/bin",
                "/home/ada/.npm-global/bin",
                "/home/ada/bin",
                "/home/ada/.bun/bin",
                "/home/ada/.nix-profile/bin",
                "/nix/var/profiles/default/bin",
            ]
        );
        // A configured directory inside the working directory is left out.
        let inside = env(&[("PNPM_HOME", "/srv/checkout/.pnpm")]);
        let dirs = user_bin_dirs(
            "/home/ada",
            &inside,
            Some(Path::new("/srv/checkout")),
            &|_| false,
        );
        assert!(!dirs.iter().any(|d| d.starts_with("/srv")), "{dirs:?}");
    }

    #[test]
    fn paths_normalize_as_node_does() {
        assert_eq!(normalize("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(append_subdir("/x/bin", "bin"), "/x/bin");
        assert_eq!(append_subdir("/x/", "bin"), "/x/bin");
    }

    #[test]
    fn a_wrapper_names_node_and_the_script_in_its_exec_line() {
        let wrapper = "#!/bin/sh\n# comment\nPATH=\"/n/bin:$PATH\"\nexport PATH\nexec \"/n/node\" \"/p/openclaw.mjs\" \"$@\"\n";
        assert_eq!(
            wrapper_exec(wrapper),
            Some(("/n/node".into(), "/p/openclaw.mjs".into()))
        );
        assert_eq!(
            wrapper_exec("#!/bin/sh\nexec \"$NODE\" \"/p/x.mjs\"\n"),
            None
        );
        assert_eq!(wrapper_exec("#!/bin/sh\nnode /p/x.mjs\n"), None);
    }

    /// An npm-style install in a temporary prefix: `bin/openclaw` -> the package's
    /// `openclaw.mjs`, `node` elsewhere on PATH.
    #[test]
    fn an_npm_bin_symlink_resolves_to_node_on_path_and_the_dist_entry() {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let package = root_path.join("lib/node_modules/openclaw");
        std::fs::create_dir_all(package.join("dist")).unwrap();
        std::fs::write(package.join("package.json"), r#"{"name":"openclaw"}"#).unwrap();
        std::fs::write(package.join("openclaw.mjs"), "#!/usr/bin/env node\n").unwrap();
        std::fs::write(package.join("dist/index.js"), "").unwrap();
        std::fs::create_dir_all(root_path.join("bin")).unwrap();
        std::os::unix::fs::symlink(
            "../lib/node_modules/openclaw/openclaw.mjs",
            root_path.join("bin/openclaw"),
        )
        .unwrap();
        std::fs::create_dir_all(root_path.join("node/bin")).unwrap();
        std::fs::write(root_path.join("node/bin/node"), "").unwrap();
        let path = format!("{0}/bin:{0}/node/bin:/usr/bin", root_path.display());
        let environment = env(&[("PATH", &path)]);
        let program = root_path.join("bin/openclaw");
        let found = Installation::resolve(None, Some(&program), &environment).unwrap();
        assert_eq!(found.node, root_path.join("node/bin/node"));
        assert_eq!(found.entry, package.join("dist/index.js"));
        assert_eq!(
            found.bin_dirs,
            [
                root_path.join("node/bin").display().to_string(),
                root_path.join("bin").display().to_string()
            ]
        );
        let host = test_host();
        assert_eq!(
            found.program(&host),
            [
                root_path.join("node/bin/node").display().to_string(),
                "--max-old-space-size=8192".to_owned(),
                package.join("dist/index.js").display().to_string()
            ]
        );
        // The same through `command = { NODE, SCRIPT }`.
        let pinned = [
            root_path.join("node/bin/node").display().to_string(),
            package.join("openclaw.mjs").display().to_string(),
        ];
        let by_command = Installation::resolve(Some(&pinned), None, &environment).unwrap();
        assert_eq!(
            (by_command.node, by_command.entry),
            (found.node, found.entry)
        );
        // Not resolvable: said why.
        let err = Installation::resolve(None, None, &environment).unwrap_err();
        assert!(err.contains("no `openclaw` on PATH"), "{err}");
        let binary = root_path.join("node/bin/node");
        let err = Installation::resolve(None, Some(&binary), &environment).unwrap_err();
        assert!(err.contains("no #! line"), "{err}");
    }

    #[test]
    fn the_service_environment_is_the_installers_in_its_order() {
        let instance = crate::export::testing::instance(|spec| {
            spec.runtime = Some(crate::topology::Runtime::Openclaw);
        });
        let installation = Installation {
            node: "/opt/node/bin/node".into(),
            entry: "/opt/openclaw/dist/index.js".into(),
            bin_dirs: vec!["/opt/node/bin".into()],
        };
        let env = service_env(
            &instance,
            Some(&installation),
            &test_host(),
            Manager::Systemd,
        );
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "HOME",
                "TMPDIR",
                "OPENCLAW_STATE_DIR",
                "OPENCLAW_CONFIG_PATH",
                "PATH",
                "NODE_OPTIONS",
                "OPENCLAW_PROFILE",
                "OPENCLAW_GATEWAY_PORT",
                "OPENCLAW_SYSTEMD_UNIT",
                "OPENCLAW_WINDOWS_TASK_NAME",
                "OPENCLAW_WINDOWS_TASK_HIDDEN_LAUNCHER",
                "OPENCLAW_SERVICE_MARKER",
                "OPENCLAW_SERVICE_KIND",
            ]
        );
        let value = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(
            value("PATH"),
            Some(
                "/opt/node/bin:/usr/local/bin:/usr/bin:/bin:/home/ada/.local/bin:/home/ada/.npm-global/bin:/home/ada/bin:/home/ada/.nix-profile/bin"
            )
        );
        assert_eq!(
            value("OPENCLAW_WINDOWS_TASK_NAME"),
            Some("OpenClaw Gateway (main)")
        );
        assert_eq!(value("NODE_OPTIONS"), Some(""));
        // A version-managed Node gets the system's CA bundle.
        let nvm = Installation {
            node: "/home/ada/.nvm/versions/node/v24/bin/node".into(),
            ..installation
        };
        let env = service_env(&instance, Some(&nvm), &test_host(), Manager::Systemd);
        assert!(env.contains(&(
            "NODE_EXTRA_CA_CERTS".into(),
            "/etc/ssl/certs/ca-certificates.crt".into()
        )));
        let agent = service_env(&instance, Some(&nvm), &test_host(), Manager::Launchd);
        assert!(agent.contains(&("OPENCLAW_LAUNCHD_LABEL".into(), "ai.openclaw.main".into())));
        assert!(agent.contains(&("TMPDIR".into(), "/home/ada/.openclaw-main/tmp".into())));
        assert_eq!(description("main"), "OpenClaw Gateway (profile: main)");
        assert_eq!(description("Default"), "OpenClaw Gateway");
    }
}
