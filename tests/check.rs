//! `reef check`: the plan against the host.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

fn reef(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reef"));
    command
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("OPENCLAW_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REEF_SCRIPT");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Two bases 130 apart in this test's own slot (tests run in parallel and some of them bind
/// ports in their footprints), in 18000..20000, which no other test binary uses (they claim
/// 2000..18000 and 20000 and up); both footprints free.
fn free_pair(slot: u16) -> (u16, u16) {
    let free = |base: u16| (base..=base + 110).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
    let base = 18_000 + slot * 270;
    assert!(
        base + 240 < 20_000,
        "slot {slot} is outside this binary's range"
    );
    assert!(
        free(base) && free(base + 130),
        "ports {base}..{} are in use by another program",
        base + 240
    );
    (base, base + 130)
}

fn topology(home: &Path, a: u16, b: u16) -> std::path::PathBuf {
    let script = home.join("reef.lua");
    std::fs::write(
        &script,
        format!("reef.gateway {{ profile = \"a\", port = {a} }}\nreef.gateway {{ profile = \"b\", port = {b} }}\n"),
    )
    .unwrap();
    script
}

fn check(home: &Path, script: &Path, json: bool) -> Output {
    let mut command = reef(home);
    command.arg("check").arg(script);
    if json {
        command.arg("--json");
    }
    command.output().unwrap()
}

#[test]
fn a_clean_host_is_ready_to_run() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(0);
    let script = topology(home.path(), a, b);
    let output = check(home.path(), &script, false);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("ready to run"));
}

#[test]
fn a_foreign_listener_on_the_gateway_port_is_an_error_and_in_the_cdp_range_a_warning() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(1);
    let script = topology(home.path(), a, b);
    let _gateway = TcpListener::bind(("127.0.0.1", a)).unwrap();
    let _cdp = TcpListener::bind(("127.0.0.1", b + 50)).unwrap();
    let output = check(home.path(), &script, false);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    let me = std::process::id().to_string();
    assert!(
        stderr.contains(&format!("error: `a`: port {a} is held by pid {me}"))
            && stderr.contains("would be blocked"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: `b`: port {} is held by pid {me}",
            b + 50
        )) && stderr.contains("CDP range"),
        "{stderr}"
    );
}

#[test]
fn configs_and_permissions_that_break_isolation_are_reported() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(2);
    let script = topology(home.path(), a, b);
    let (dir_a, dir_b) = (
        home.path().join(".openclaw-a"),
        home.path().join(".openclaw-b"),
    );
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::write(
        dir_a.join("openclaw.json"),
        "{ gateway: { port: 1 }, browser: { cdpUrl: 'http://127.0.0.1:9222' } }",
    )
    .unwrap();
    std::fs::write(
        dir_b.join("openclaw.json"),
        format!(
            "{{ browser: {{ cdpUrl: 'http://127.0.0.1:9222' }}, agents: {{ defaults: {{ workspace: '{}' }} }} }}",
            dir_a.join("workspace").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir_a, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir_a.join("openclaw.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let output = check(home.path(), &script, true);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["valid"], false);
    let kinds: Vec<(&str, &str)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["severity"].as_str().unwrap()))
        .collect();
    for expected in [
        ("config-workspace", "error"),
        ("shared-config-value", "error"),
        ("config-port", "error"),
        ("state-dir-permissions", "warning"),
        ("config-permissions", "warning"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} not in {kinds:?}");
    }
}

#[test]
fn an_invalid_config_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(3);
    let script = topology(home.path(), a, b);
    std::fs::create_dir_all(home.path().join(".openclaw-a")).unwrap();
    std::fs::write(home.path().join(".openclaw-a/openclaw.json"), "{ broken").unwrap();
    let output = check(home.path(), &script, false);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("would exit 78"),
        "{}",
        text(&output.stderr)
    );
}

fn openclaw_topology(home: &Path, a: u16, b: u16) -> std::path::PathBuf {
    let script = home.join("reef.lua");
    std::fs::write(
        &script,
        format!(
            "reef.defaults {{ runtime = \"openclaw\" }}\n\
             reef.gateway {{ profile = \"a\", port = {a} }}\n\
             reef.gateway {{ profile = \"b\", port = {b}, env = {{ BIND = \"lan\" }} }}\n"
        ),
    )
    .unwrap();
    script
}

fn findings(output: &Output) -> Vec<(String, String, String)> {
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", text(&output.stdout)));
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_gateway_the_cli_would_not_find_fails_the_check() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(5);
    let script = openclaw_topology(home.path(), a, b);
    // No config at all: `openclaw --profile a` would look on the profile's hashed port.
    let output = check(home.path(), &script, true);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let found = findings(&output);
    assert!(
        found
            .iter()
            .any(|(kind, severity, message)| kind == "config-port-missing"
                && severity == "error"
                && message.contains("there is no config")
                && message.contains("reef setup")),
        "{found:?}"
    );

    // A config whose port lives in an included file and differs from the plan.
    let dir_a = home.path().join(".openclaw-a");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::write(
        dir_a.join("openclaw.json"),
        "{ // mine\n gateway: { $include: './gateway.json5' } }",
    )
    .unwrap();
    std::fs::write(
        dir_a.join("gateway.json5"),
        "{ mode: 'local', port: 1234, auth: { token: 't' } }",
    )
    .unwrap();
    let found = findings(&check(home.path(), &script, true));
    assert!(
        found
            .iter()
            .any(|(kind, severity, message)| kind == "config-port"
                && severity == "error"
                && message.contains("pins gateway.port 1234")
                && message.contains("gateway.json5")),
        "{found:?}"
    );

    // A setting behind a variable reef cannot resolve: reported, never guessed around.
    let dir_b = home.path().join(".openclaw-b");
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::write(
        dir_b.join("openclaw.json"),
        format!("{{ gateway: {{ port: {b}, bind: '${{BIND}}', mode: '${{MODE}}' }} }}"),
    )
    .unwrap();
    let found = findings(&check(home.path(), &script, true));
    assert!(
        found
            .iter()
            .any(|(kind, severity, message)| kind == "unresolved-config"
                && severity == "error"
                && message.contains("${MODE}")),
        "{found:?}"
    );
    // The instance's env resolves it: no finding about b's config but the missing token.
    std::fs::write(
        dir_b.join("openclaw.json"),
        format!("{{ gateway: {{ port: {b}, bind: '${{BIND}}' }} }}"),
    )
    .unwrap();
    let found = findings(&check(home.path(), &script, true));
    let about_b: Vec<_> = found
        .iter()
        .filter(|(kind, _, message)| message.starts_with("`b`") && !kind.ends_with("permissions"))
        .map(|(kind, _, _)| kind.as_str())
        .collect();
    assert_eq!(about_b, ["config-token"], "{found:?}");
}

#[test]
fn ready_to_run_counts_its_warnings() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = free_pair(6);
    let script = topology(home.path(), a, b);
    let dir_a = home.path().join(".openclaw-a");
    std::fs::create_dir_all(&dir_a).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir_a, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = check(home.path(), &script, false);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout)
            .contains("2 gateways checked against this host: ready to run, with 1 warning\n"),
        "{}",
        text(&output.stdout)
    );
}
