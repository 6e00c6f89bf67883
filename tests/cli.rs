//! The `reef` binary on fixture scripts: exit codes, human output, the JSON forms, and the Lua API.
//!
//! Every child runs from the repository root (so script paths in messages read
//! `tests/fixtures/...`) with a fixed home (`/home/ada`, never touched), no `OPENCLAW_HOME`, no
//! `REEF_SCRIPT`, no `RUST_LOG` and `NO_COLOR` set. Fixtures live in `tests/fixtures/{valid,
//! violations,errors}`; JSON snapshots in `tests/snapshots/`.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};

/// The home directory every child sees.
const HOME: &str = "/home/ada";

/// Exit codes (see `reef --help`).
const EXIT_VIOLATIONS: i32 = 1;
const EXIT_SCRIPT_ERROR: i32 = 2;
const EXIT_FAILURE: i32 = 3;
const EXIT_USAGE: i32 = 64;

/// `reef`, run from the repository root in a deterministic environment.
fn reef() -> Command {
    let mut cmd =
        Command::cargo_bin("reef").expect("the reef binary is built for integration tests");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", HOME)
        .env_remove("OPENCLAW_HOME")
        .env_remove("REEF_SCRIPT")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Runs `reef <args>` and returns the exit code with the output.
fn run(args: &[&str]) -> (i32, Output) {
    let output = reef().args(args).output().expect("reef runs");
    let code = output
        .status
        .code()
        .expect("reef exits with a code, not a signal");
    (code, output)
}

/// `reef plan --json SCRIPT`: the exit code and the parsed JSON.
fn plan_json(script: &str) -> (i32, Value) {
    let (code, output) = run(&["plan", "--json", script]);
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "`reef plan --json {script}` printed no JSON ({err}); stdout:\n{}\nstderr:\n{}",
            stdout_of(&output),
            stderr_of(&output)
        )
    });
    (code, json)
}

/// The row of the plan table whose first cell is `name`, split into its cells.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for `{name}` in:\n{table}"))
}

/// The repository root as reef prints it in `files` (absolute and canonical).
fn repo_root() -> PathBuf {
    std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("the repository root exists")
}

/// `files` lists absolute paths, which depend on where the repository is checked out: rewrite
/// each as `[repo]/<path in the repository>` so that snapshots are portable.
fn redact_files(mut json: Value) -> Value {
    let root = repo_root();
    let files = json["files"]
        .as_array_mut()
        .expect("the JSON form has a `files` array");
    for file in files.iter_mut() {
        let path = PathBuf::from(file.as_str().expect("files are strings"));
        let relative = path.strip_prefix(&root).unwrap_or_else(|_| {
            panic!(
                "{} lies outside the repository {}",
                path.display(),
                root.display()
            )
        });
        *file = Value::String(format!("[repo]/{}", relative.display()));
    }
    json
}

/// The `files` array of a JSON form, as paths relative to the repository.
fn files(json: &Value) -> Vec<String> {
    redact_files(json.clone())["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| {
            file.as_str()
                .expect("string")
                .trim_start_matches("[repo]/")
                .to_owned()
        })
        .collect()
}

/// The instance named `name` in a plan's JSON form.
fn instance<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|instance| instance["name"] == name)
        .unwrap_or_else(|| panic!("no instance `{name}` in {json:#}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Valid topologies: the table and exit 0.

#[test]
fn plan_rescue_example_shows_both_gateways_with_their_ports_and_state_dirs() {
    let (code, output) = run(&["plan", "examples/rescue.lua"]);
    let stdout = stdout_of(&output);
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{}",
        stderr_of(&output)
    );
    assert_eq!(
        row(&stdout, "NAME"),
        [
            "NAME",
            "PROFILE",
            "RUNTIME",
            "PORT",
            "CONTROL",
            "CDP",
            "STATE",
            "DIR",
            "WORKSPACE"
        ]
    );
    assert_eq!(
        row(&stdout, "main"),
        [
            "main",
            "main",
            "builtin",
            "18789",
            "18791",
            "18800-18899",
            "~/.openclaw-main",
            "<state>/workspace"
        ]
    );
    assert_eq!(
        row(&stdout, "rescue"),
        [
            "rescue",
            "rescue",
            "builtin",
            "19789",
            "19791",
            "19800-19899",
            "~/.openclaw-rescue",
            "<state>/workspace"
        ]
    );
    assert_eq!(
        stdout.lines().last(),
        Some("2 gateways, ports 18789-19899: valid")
    );
    assert_eq!(
        stderr_of(&output),
        "",
        "a valid plan prints nothing on stderr"
    );
}

#[test]
fn plan_fleet_example_gives_each_team_a_pool_port_one_footprint_apart() {
    let (code, output) = run(&["plan", "examples/fleet.lua"]);
    let stdout = stdout_of(&output);
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{}",
        stderr_of(&output)
    );
    for (name, port, control, cdp) in [
        ("ops", "18789", "18791", "18800-18899"),
        ("sales", "20000", "20002", "20011-20110"),
        ("support", "20111", "20113", "20122-20221"),
        ("research", "20222", "20224", "20233-20332"),
        ("legal", "20333", "20335", "20344-20443"),
    ] {
        let cells = row(&stdout, name);
        assert_eq!(cells[3..6], [port, control, cdp], "{name}: {cells:?}");
        assert_eq!(cells[6], format!("~/.openclaw-{name}"));
    }
    assert_eq!(
        stdout.lines().last(),
        Some("5 gateways, ports 18789-20443: valid")
    );
}

#[test]
fn plan_modules_example_loads_sibling_and_shipped_modules() {
    let (code, output) = run(&["plan", "examples/modules/reef.lua"]);
    let stdout = stdout_of(&output);
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{}",
        stderr_of(&output)
    );
    for (name, port) in [
        ("main", "18789"),
        ("rescue", "19789"),
        ("lab", "21000"),
        ("lab-rescue", "21200"),
    ] {
        assert_eq!(row(&stdout, name)[3], port, "{name}");
    }
    assert_eq!(
        stdout.lines().last(),
        Some("4 gateways, ports 18789-21310: valid")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The JSON forms, snapshotted.

#[test]
fn plan_json_rescue_example_snapshot() {
    let (code, json) = plan_json("examples/rescue.lua");
    assert_eq!(code, 0);
    assert_eq!(files(&json), ["examples/rescue.lua"]);
    insta::assert_json_snapshot!("plan_json_rescue", redact_files(json));
}

#[test]
fn plan_json_fleet_example_snapshot() {
    let (code, json) = plan_json("examples/fleet.lua");
    assert_eq!(code, 0);
    assert_eq!(files(&json), ["examples/fleet.lua"]);
    insta::assert_json_snapshot!("plan_json_fleet", redact_files(json));
}

#[test]
fn plan_json_footprint_overlap_snapshot() {
    let (code, json) = plan_json("tests/fixtures/violations/footprint_overlap.lua");
    assert_eq!(code, EXIT_VIOLATIONS);
    insta::assert_json_snapshot!("plan_json_footprint_overlap", redact_files(json));
}

#[test]
fn plan_json_syntax_error_snapshot() {
    let (code, output) = run(&["plan", "--json", "tests/fixtures/errors/syntax.lua"]);
    assert_eq!(code, EXIT_SCRIPT_ERROR);
    assert_eq!(
        stderr_of(&output),
        "",
        "the JSON form of a script error goes to stdout only"
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    insta::assert_json_snapshot!("plan_json_syntax_error", redact_files(json));
}

// ---------------------------------------------------------------------------------------------
// 3. Violations: exit 1, every message names the instances and the shared value.

/// Runs `reef plan` on a violations fixture: exit 1, stderr holds every needle and the
/// `--> name at file:line` pointer of each instance involved. Then checks the JSON form:
/// `valid: false` and the first violation's kind, instances and value. Returns stderr.
fn assert_violation(
    fixture: &str,
    kind: &str,
    instances: &[&str],
    value: &str,
    needles: &[&str],
) -> String {
    let script = format!("tests/fixtures/violations/{fixture}");
    let (code, output) = run(&["plan", &script]);
    let stderr = stderr_of(&output);
    assert_eq!(
        code,
        EXIT_VIOLATIONS,
        "`reef plan {script}`\nstdout:\n{}\nstderr:\n{stderr}",
        stdout_of(&output)
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    for name in instances {
        assert!(
            stderr.contains(&format!("{name} at {script}:")),
            "stderr does not point at where `{name}` is declared:\n{stderr}"
        );
    }
    let stdout = stdout_of(&output);
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|summary| summary.contains(" violation")),
        "the summary line counts the violations:\n{stdout}"
    );

    let (code, json) = plan_json(&script);
    assert_eq!(code, EXIT_VIOLATIONS);
    assert_eq!(json["valid"], false);
    let first = &json["violations"][0];
    assert_eq!(first["kind"], kind, "{json:#}");
    assert_eq!(first["instances"], json!(instances), "{first:#}");
    assert_eq!(first["value"], value, "{first:#}");
    assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()));
    stderr
}

/// The kinds of all violations `reef plan --json` reports for a violations fixture.
fn violation_kinds(fixture: &str) -> Vec<String> {
    let (_, json) = plan_json(&format!("tests/fixtures/violations/{fixture}"));
    json["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["kind"].as_str().expect("kind").to_owned())
        .collect()
}

#[test]
fn violation_duplicate_name() {
    assert_violation(
        "duplicate_name.lua",
        "duplicate-name",
        &["bot", "bot"],
        "bot",
        &[
            "instance name `bot` is declared 2 times",
            "tests/fixtures/violations/duplicate_name.lua:2",
            "tests/fixtures/violations/duplicate_name.lua:3",
        ],
    );
    assert_eq!(violation_kinds("duplicate_name.lua"), ["duplicate-name"]);
}

#[test]
fn violation_invalid_profile() {
    assert_violation(
        "invalid_profile.lua",
        "invalid-profile",
        &["bad"],
        "main bot",
        &[
            "`bad`",
            "invalid profile name \"main bot\"",
            "`openclaw --profile` refuses it",
        ],
    );
    assert_eq!(violation_kinds("invalid_profile.lua"), ["invalid-profile"]);
}

#[test]
fn violation_shared_profile_matches_case_insensitively_and_is_reported_once() {
    let stderr = assert_violation(
        "shared_profile.lua",
        "shared-profile",
        &["one", "two"],
        "main",
        &[
            "`one` and `two` share the profile `main`",
            "case-insensitively",
        ],
    );
    // Their derived paths differ only in case: the profile violation says it all.
    assert_eq!(violation_kinds("shared_profile.lua"), ["shared-profile"]);
    // `Main` also earns the macOS warning (uppercase profile names cannot own a launchd service).
    assert!(
        stderr.contains("warning: `two`: profile `Main` cannot own a launchd service"),
        "{stderr}"
    );
}

#[test]
fn violation_shared_state_dir() {
    assert_violation(
        "shared_state_dir.lua",
        "shared-state-dir",
        &["alpha", "beta"],
        "/home/ada/.openclaw-shared",
        &[
            "`alpha` and `beta` share the state dir /home/ada/.openclaw-shared",
            "`state_dir`",
        ],
    );
    let kinds = violation_kinds("shared_state_dir.lua");
    assert_eq!(kinds[0], "shared-state-dir", "{kinds:?}");
}

#[test]
fn violation_shared_config_path() {
    assert_violation(
        "shared_config_path.lua",
        "shared-config-path",
        &["alpha", "beta"],
        "/home/ada/openclaw-shared.json",
        &[
            "`alpha` and `beta` share the config path /home/ada/openclaw-shared.json",
            "`config_path`",
        ],
    );
    assert_eq!(
        violation_kinds("shared_config_path.lua"),
        ["shared-config-path"]
    );
}

#[test]
fn violation_shared_workspace() {
    assert_violation(
        "shared_workspace.lua",
        "shared-workspace",
        &["alpha", "beta"],
        "/home/ada/work/shared",
        &[
            "`alpha` and `beta` share the workspace /home/ada/work/shared",
            "`workspace`",
        ],
    );
    assert_eq!(
        violation_kinds("shared_workspace.lua"),
        ["shared-workspace"]
    );
}

#[test]
fn violation_port_out_of_range_when_the_footprint_does_not_fit() {
    let (_, output) = run(&["plan", "tests/fixtures/violations/port_out_of_range.lua"]);
    // No footprint, so no CONTROL / CDP columns.
    assert_eq!(row(&stdout_of(&output), "high")[3..6], ["65500", "-", "-"]);
    assert_violation(
        "port_out_of_range.lua",
        "port-out-of-range",
        &["high"],
        "65500",
        &["`high`", "port 65500", "65500..65610", "1024..65535"],
    );
}

#[test]
fn violation_footprint_overlap_explains_the_old_twenty_port_advice() {
    assert_violation(
        "footprint_overlap.lua",
        "footprint-overlap",
        &["main", "rescue"],
        "18809-18899",
        &[
            "`main`",
            "`rescue`",
            "18809",
            "`rescue`'s gateway port 18809 lies inside `main`'s CDP range 18800-18899",
            "\"20 ports\" advice",
            "Move `rescue` to port 18900 or above",
        ],
    );
    assert_eq!(
        violation_kinds("footprint_overlap.lua"),
        ["footprint-overlap"]
    );
}

#[test]
fn violation_shared_cdp_port() {
    assert_violation(
        "shared_cdp_port.lua",
        "shared-cdp-port",
        &["alpha", "beta"],
        "30000",
        &["`alpha` and `beta` pin the same browser.cdp_port 30000"],
    );
    assert_eq!(violation_kinds("shared_cdp_port.lua"), ["shared-cdp-port"]);
}

#[test]
fn violation_cdp_port_in_another_footprint() {
    assert_violation(
        "cdp_port_in_footprint.lua",
        "cdp-port-in-footprint",
        &["beta", "alpha"],
        "20050",
        &[
            "`beta` pins browser.cdp_port 20050",
            "inside `alpha`'s footprint (CDP range 20011-20110)",
        ],
    );
    assert_eq!(
        violation_kinds("cdp_port_in_footprint.lua"),
        ["cdp-port-in-footprint"]
    );
}

#[test]
fn violation_shared_cdp_url_ignores_case_and_trailing_slash() {
    assert_violation(
        "shared_cdp_url.lua",
        "shared-cdp-url",
        &["alpha", "beta"],
        "http://127.0.0.1:9222",
        &["`alpha` and `beta` pin the same browser.cdp_url http://127.0.0.1:9222"],
    );
    assert_eq!(violation_kinds("shared_cdp_url.lua"), ["shared-cdp-url"]);
}

#[test]
fn violation_unknown_dependency_suggests_the_closest_name() {
    assert_violation(
        "unknown_dependency.lua",
        "unknown-dependency",
        &["rescue"],
        "mian",
        &[
            "`rescue` depends on `mian`, which is not declared",
            "(did you mean `main`?)",
        ],
    );
    assert_eq!(
        violation_kinds("unknown_dependency.lua"),
        ["unknown-dependency"]
    );
}

#[test]
fn violation_dependency_cycle_names_the_whole_cycle() {
    assert_violation(
        "dependency_cycle.lua",
        "dependency-cycle",
        &["a", "b", "c"],
        "a -> b -> c -> a",
        &["dependency cycle a -> b -> c -> a"],
    );
    assert_eq!(
        violation_kinds("dependency_cycle.lua"),
        ["dependency-cycle"]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Script errors: exit 2 and `file:line: message`.

/// Runs `reef plan` on an errors fixture: exit 2, nothing on stdout, and stderr is
/// `error: <file>:<line>: ...` holding every needle. Returns stderr.
fn assert_script_error(fixture: &str, line: u32, needles: &[&str]) -> String {
    let script = format!("tests/fixtures/errors/{fixture}");
    assert_script_error_at(&script, &script, line, needles)
}

/// Like [`assert_script_error`], for an error reported in `file` (a module of `script`).
fn assert_script_error_at(script: &str, file: &str, line: u32, needles: &[&str]) -> String {
    let (code, output) = run(&["plan", script]);
    let stderr = stderr_of(&output);
    assert_eq!(
        code,
        EXIT_SCRIPT_ERROR,
        "`reef plan {script}`\nstdout:\n{}\nstderr:\n{stderr}",
        stdout_of(&output)
    );
    assert_eq!(stdout_of(&output), "", "a script error prints no plan");
    let position = format!("error: {file}:{line}: ");
    assert!(
        stderr.starts_with(&position),
        "stderr does not start with {position:?}:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    stderr
}

/// The `error` object of `reef plan --json` on an errors fixture (exit 2).
fn script_error_json(fixture: &str) -> Value {
    let (code, json) = plan_json(&format!("tests/fixtures/errors/{fixture}"));
    assert_eq!(code, EXIT_SCRIPT_ERROR, "{json:#}");
    assert_eq!(json["valid"], false);
    json
}

#[test]
fn script_error_syntax() {
    assert_script_error("syntax.lua", 3, &["'}' expected near 'port'"]);
    let json = script_error_json("syntax.lua");
    assert_eq!(
        json["error"],
        json!({ "kind": "syntax", "file": "tests/fixtures/errors/syntax.lua", "line": 3, "message": "'}' expected near 'port'" })
    );
}

#[test]
fn script_error_runtime() {
    assert_script_error(
        "runtime.lua",
        3,
        &["reef.gatewya does not exist", "did you mean reef.gateway?"],
    );
    assert_eq!(script_error_json("runtime.lua")["error"]["kind"], "runtime");
}

#[test]
fn script_error_wrong_field_type_names_the_nested_field_path() {
    assert_script_error(
        "wrong_type.lua",
        2,
        &[
            "reef.gateway",
            "field `restart.backoff.initial`",
            "\"soon\"",
            "expected a number",
        ],
    );
    assert_eq!(
        script_error_json("wrong_type.lua")["error"]["kind"],
        "invalid-field"
    );
}

#[test]
fn script_error_unknown_field_suggests_the_closest_field() {
    assert_script_error(
        "unknown_field.lua",
        2,
        &[
            "unknown field `prot`",
            "(did you mean `port`?)",
            "known fields: name, profile, port",
        ],
    );
    assert_eq!(
        script_error_json("unknown_field.lua")["error"]["kind"],
        "unknown-field"
    );
}

#[test]
fn script_error_missing_profile() {
    assert_script_error(
        "missing_profile.lua",
        2,
        &["field `profile` is missing", "profile = \"main\""],
    );
    assert_eq!(
        script_error_json("missing_profile.lua")["error"]["kind"],
        "missing-field"
    );
}

#[test]
fn script_error_missing_port() {
    assert_script_error(
        "missing_port.lua",
        2,
        &["field `port` is missing", "port = \"auto\""],
    );
    assert_eq!(
        script_error_json("missing_port.lua")["error"]["kind"],
        "missing-field"
    );
}

#[test]
fn script_error_endless_loop_is_stopped_by_the_budget() {
    // Must terminate at all; the budget is 200 M instructions or 2 s, whichever comes first.
    assert_script_error(
        "endless_loop.lua",
        3,
        &["ran past its budget", "endless loop"],
    );
}

#[test]
fn script_error_memory_bomb_is_stopped_by_the_memory_limit() {
    assert_script_error("memory_bomb.lua", 6, &["memory limit"]);
    assert_eq!(
        script_error_json("memory_bomb.lua")["error"]["kind"],
        "memory"
    );
}

#[test]
fn script_error_missing_module_names_the_module_and_where_it_looked() {
    assert_script_error(
        "missing_module.lua",
        2,
        &[
            "module \"lib.nowhere\" not found",
            "tests/fixtures/errors/lib/nowhere.lua",
            "tests/fixtures/errors/lib/nowhere/init.lua",
            "reef.rescue",
        ],
    );
}

#[test]
fn script_error_require_cycle_names_the_cycle_and_watches_every_module() {
    assert_script_error_at(
        "tests/fixtures/errors/require_cycle.lua",
        "tests/fixtures/errors/cycle/b.lua",
        1,
        &["require cycle: cycle.a -> cycle.b -> cycle.a"],
    );
    // Files read before the failure are still listed: reload must watch them.
    let json = script_error_json("require_cycle.lua");
    assert_eq!(
        files(&json),
        [
            "tests/fixtures/errors/require_cycle.lua",
            "tests/fixtures/errors/cycle/a.lua",
            "tests/fixtures/errors/cycle/b.lua",
        ]
    );
}

#[test]
fn script_error_missing_script_file() {
    let script = "tests/fixtures/errors/does_not_exist.lua";
    reef()
        .args(["plan", script])
        .assert()
        .code(EXIT_SCRIPT_ERROR)
        .stdout("")
        .stderr(
            predicate::str::starts_with(format!("error: {script}: cannot read the script"))
                .and(predicate::str::contains("reef init")),
        );
    let (code, json) = plan_json(script);
    assert_eq!(code, EXIT_SCRIPT_ERROR);
    assert_eq!(json["error"]["kind"], "read");
    assert_eq!(json["files"], json!([]));
}

#[test]
fn script_error_exhausted_pool_says_how_many_footprints_it_holds() {
    assert_script_error(
        "pool_exhausted.lua",
        5,
        &[
            "pool:next()",
            "port pool 20000..20300 is exhausted",
            "holds 2 footprint(s)",
            "2 allocated",
        ],
    );
}

#[test]
fn script_error_writing_to_a_gateway_view() {
    reef()
        .args(["plan", "tests/fixtures/errors/read_only_view.lua"])
        .assert()
        .code(EXIT_SCRIPT_ERROR)
        .stdout("")
        .stderr(predicate::str::contains(
            "gateway `main` is read-only (tried to set port)",
        ));
}

#[test]
fn script_error_writing_to_a_gateway_view_names_file_and_line() {
    assert_script_error(
        "read_only_view.lua",
        3,
        &["gateway `main` is read-only (tried to set port)"],
    );
}

#[test]
fn script_error_fast_memory_bomb_names_file_and_line() {
    assert_script_error("memory_bomb_fast.lua", 3, &["memory limit"]);
}

// ---------------------------------------------------------------------------------------------
// 5. `reef env`.

/// `reef env` in a known environment: a caller whose shell holds another gateway's token and
/// state dir, and host variables that reef passes through.
fn reef_env_in_a_known_shell() -> Command {
    let mut cmd = reef();
    cmd.env_clear()
        .env("HOME", HOME)
        .env("NO_COLOR", "1")
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("OPENCLAW_GATEWAY_TOKEN", "another-gateways-token")
        .env("OPENCLAW_STATE_DIR", "/elsewhere")
        .env("OPENCLAW_WORKSPACE_DIR", "/elsewhere/workspace")
        .env("CLAWDBOT_GATEWAY_PORT", "1111");
    cmd
}

/// The reef binary as `reef env` prints it.
fn reef_word() -> String {
    shlex::try_quote(env!("CARGO_BIN_EXE_reef"))
        .unwrap()
        .into_owned()
}

#[test]
fn env_prints_unset_and_export_lines_for_a_manual_run() {
    // The selectors the caller holds and the launch does not set are unset (the state dir is
    // exported instead); PATH, HOME and LANG pass through unchanged and are not repeated; the
    // command is reef's own binary, run in the state dir as `reef up` runs it.
    reef_env_in_a_known_shell()
        .args(["env", "main", "examples/rescue.lua"])
        .assert()
        .success()
        .stderr("")
        .stdout(format!(
            "unset CLAWDBOT_GATEWAY_PORT OPENCLAW_GATEWAY_TOKEN OPENCLAW_WORKSPACE_DIR\n\
             export OPENCLAW_PROFILE=main\n\
             export OPENCLAW_STATE_DIR=/home/ada/.openclaw-main\n\
             export OPENCLAW_CONFIG_PATH=/home/ada/.openclaw-main/openclaw.json\n\
             export OPENCLAW_GATEWAY_PORT=18789\n\
             export OPENCLAW_DISABLE_BONJOUR=1\n\
             export OPENCLAW_NO_RESPAWN=1\n\
             # then run: (cd /home/ada/.openclaw-main && {} gateway --port 18789)\n",
            reef_word()
        ));
}

#[test]
fn env_without_foreign_selectors_unsets_nothing() {
    let output = reef()
        .env_clear()
        .env("HOME", HOME)
        .args(["env", "main", "examples/rescue.lua"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).starts_with("export OPENCLAW_PROFILE=main\n"),
        "{}",
        stdout_of(&output)
    );
}

#[test]
fn env_shows_a_passed_through_variable_the_instance_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("tz.lua");
    std::fs::write(
        &script,
        "reef.gateway { profile = \"main\", port = 18789, env = { TZ = \"UTC\", LANG = \"C.UTF-8\" } }\n",
    )
    .unwrap();
    let output = reef_env_in_a_known_shell()
        .env("TZ", "Europe/Paris")
        .arg("env")
        .arg("main")
        .arg(&script)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    // TZ differs from the caller's, so it is shown; LANG is the caller's own value.
    assert!(stdout.contains("export TZ=UTC\n"), "{stdout}");
    assert!(!stdout.contains("export LANG="), "{stdout}");
    assert!(!stdout.contains("export PATH="), "{stdout}");
    assert!(!stdout.contains("export HOME="), "{stdout}");
}

#[test]
fn env_json_is_the_launch_reef_up_spawns() {
    let output = reef_env_in_a_known_shell()
        .args(["env", "main", "examples/rescue.lua", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        json,
        json!({
            "format": 1,
            "argv": [env!("CARGO_BIN_EXE_reef"), "gateway", "--port", "18789"],
            "env": {
                "HOME": HOME,
                "LANG": "C.UTF-8",
                "OPENCLAW_CONFIG_PATH": "/home/ada/.openclaw-main/openclaw.json",
                "OPENCLAW_DISABLE_BONJOUR": "1",
                "OPENCLAW_GATEWAY_PORT": "18789",
                "OPENCLAW_NO_RESPAWN": "1",
                "OPENCLAW_PROFILE": "main",
                "OPENCLAW_STATE_DIR": "/home/ada/.openclaw-main",
                "PATH": "/usr/bin:/bin",
            },
            "cwd": "/home/ada/.openclaw-main",
        })
    );
}

#[test]
fn env_quotes_values_so_that_a_shell_reads_them_back_exactly() {
    let script = "tests/fixtures/valid/env_quoting.lua";
    let (code, output) = run(&["env", "greeter", script]);
    assert_eq!(code, 0, "{}", stderr_of(&output));
    assert!(
        stdout_of(&output).contains("export GREETING="),
        "{}",
        stdout_of(&output)
    );

    for (variable, expected) in [
        ("GREETING", "hello world's"),
        (
            "TRICKY",
            "$HOME `echo pwned` \"double\" \\ back; semi\nsecond line",
        ),
    ] {
        let output = std::process::Command::new("sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOME", HOME)
            .env_remove("OPENCLAW_HOME")
            .env_remove("REEF_SCRIPT")
            .env("NO_COLOR", "1")
            .arg("-c")
            .arg(format!(
                r#"eval "$("$0" env greeter "$1")" && printf %s "${variable}""#
            ))
            .arg(env!("CARGO_BIN_EXE_reef"))
            .arg(script)
            .output()
            .expect("sh runs");
        assert!(output.status.success(), "sh failed: {}", stderr_of(&output));
        assert_eq!(
            stdout_of(&output),
            expected,
            "{variable} did not survive eval"
        );
    }
}

#[test]
fn env_unknown_instance_fails_with_a_suggestion() {
    reef()
        .args(["env", "mian", "examples/rescue.lua"])
        .assert()
        .code(EXIT_FAILURE)
        .stdout("")
        .stderr(
            predicate::str::contains("examples/rescue.lua: no instance named `mian`")
                .and(predicate::str::contains("(did you mean `main`?)"))
                .and(predicate::str::contains("instances: main, rescue")),
        );
}

#[test]
fn env_on_a_broken_script_is_a_script_error() {
    reef()
        .args(["env", "main", "tests/fixtures/errors/syntax.lua"])
        .assert()
        .code(EXIT_SCRIPT_ERROR)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "error: tests/fixtures/errors/syntax.lua:3: ",
        ));
}

// ---------------------------------------------------------------------------------------------
// 6. `reef init`.

#[test]
fn init_writes_a_valid_starter_and_never_overwrites_it() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let script = tmp.path().join("reef.lua");

    reef()
        .arg("init")
        .current_dir(tmp.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote reef.lua"));
    let written = std::fs::read(&script).expect("reef init wrote reef.lua");

    let output = reef()
        .arg("plan")
        .current_dir(tmp.path())
        .output()
        .expect("reef runs");
    let stdout = stdout_of(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        stderr_of(&output)
    );
    assert_eq!(row(&stdout, "main")[3], "18789");
    assert_eq!(row(&stdout, "rescue")[3], "19789");

    reef()
        .arg("init")
        .current_dir(tmp.path())
        .assert()
        .code(EXIT_FAILURE)
        .stderr(predicate::str::contains("reef.lua already exists"));
    assert_eq!(
        std::fs::read(&script).expect("still there"),
        written,
        "reef init overwrote the script"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The Lua API. Fixtures `assert` in Lua: exit 0 means every assertion held.

/// `reef plan --json` on a valid fixture: exit 0 and the JSON.
fn valid(fixture: &str) -> Value {
    let script = format!("tests/fixtures/valid/{fixture}");
    let (code, output) = run(&["plan", "--json", &script]);
    assert_eq!(
        code,
        0,
        "`reef plan --json {script}`\nstdout:\n{}\nstderr:\n{}",
        stdout_of(&output),
        stderr_of(&output)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(json["valid"], true);
    json
}

fn ports(json: &Value) -> Vec<(String, i64)> {
    json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").to_owned(),
                i["port"].as_i64().expect("port"),
            )
        })
        .collect()
}

#[test]
fn lua_profile_view_resolves_openclaw_paths_and_hashed_port() {
    valid("profile_view.lua");
}

#[test]
fn lua_ports_footprint_fields() {
    let json = valid("footprint.lua");
    assert_eq!(
        instance(&json, "main")["ports"],
        json!({
            "gateway": 18789,
            "browser_control": 18791,
            "relay": { "first": 18792, "last": 18799 },
            "cdp": { "first": 18800, "last": 18899 },
            "first": 18789,
            "last": 18899,
        })
    );
}

#[test]
fn lua_auto_ports_are_one_footprint_apart_from_20000() {
    let json = valid("auto_ports.lua");
    assert_eq!(
        ports(&json),
        [("a".to_owned(), 20000), ("b".to_owned(), 20111)]
    );
}

#[test]
fn lua_auto_port_skips_a_pinned_footprint() {
    let json = valid("auto_after_pinned.lua");
    assert_eq!(
        ports(&json),
        [("pinned".to_owned(), 20000), ("auto".to_owned(), 20111)]
    );
}

#[test]
fn lua_auto_ports_are_deterministic() {
    let first = valid("auto_ports.lua");
    let second = valid("auto_ports.lua");
    assert_eq!(ports(&first), ports(&second));
}

#[test]
fn lua_defaults_apply_to_later_gateways_only() {
    let json = valid("defaults_later_only.lua");
    let before = instance(&json, "before");
    assert_eq!(before["runtime"], "builtin");
    assert_eq!(before["restart"]["policy"], "always");
    let after = instance(&json, "after");
    assert_eq!(after["runtime"], "openclaw");
    assert_eq!(after["restart"]["policy"], "never");
    let own = instance(&json, "own");
    assert_eq!(
        own["runtime"], "builtin",
        "a gateway's own field wins over the default"
    );
    assert_eq!(own["restart"]["policy"], "never");

    reef()
        .args([
            "env",
            "after",
            "tests/fixtures/valid/defaults_later_only.lua",
        ])
        .assert()
        .success()
        .stdout(predicate::str::ends_with(
            "# then run: (cd /home/ada/.openclaw-after && openclaw gateway --port 21000 --allow-unconfigured --bind loopback)\n",
        ));
}

#[test]
fn lua_env_is_read_only_and_reads_the_host_environment() {
    reef()
        .args(["plan", "tests/fixtures/valid/env_view.lua"])
        .env("REEF_TEST_MARKER", "coral")
        .env_remove("REEF_TEST_UNSET")
        .assert()
        .success();
}

#[test]
fn lua_require_loads_a_sibling_module_relative_to_the_script() {
    let json = valid("sibling_module.lua");
    assert_eq!(
        ports(&json),
        [("main".to_owned(), 18789), ("rescue".to_owned(), 19789)]
    );
    assert_eq!(
        files(&json),
        [
            "tests/fixtures/valid/sibling_module.lua",
            "tests/fixtures/valid/lib/ports.lua"
        ],
        "every file read is listed (the watch set)"
    );
}

#[test]
fn lua_require_loads_the_shipped_rescue_module() {
    let json = valid("shipped_module.lua");
    assert_eq!(
        ports(&json),
        [("primary".to_owned(), 20000), ("rescue".to_owned(), 21000)]
    );
    // Shipped modules live in the binary, not on disk: nothing to watch.
    assert_eq!(files(&json), ["tests/fixtures/valid/shipped_module.lua"]);
    // Where a gateway was declared inside a shipped module.
    assert!(
        instance(&json, "primary")["declared_at"]["file"]
            .as_str()
            .is_some_and(|file| file.starts_with("<reef>/reef/rescue.lua")),
        "{json:#}"
    );
}

#[test]
fn lua_depends_on_accepts_a_gateway_view() {
    let json = valid("depends_on_view.lua");
    assert_eq!(instance(&json, "rescue")["depends_on"], json!(["main"]));
    assert_eq!(instance(&json, "main")["depends_on"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// 8. Usage errors.

#[test]
fn usage_error_unknown_subcommand_exits_64() {
    reef()
        .arg("plna")
        .assert()
        .code(EXIT_USAGE)
        .stdout("")
        .stderr(
            predicate::str::contains("unrecognized subcommand 'plna'")
                .and(predicate::str::contains("plan")),
        );
}

#[test]
fn usage_error_missing_argument_exits_64() {
    reef().arg("env").assert().code(EXIT_USAGE).stdout("");
}

#[test]
fn help_exits_0_and_lists_the_exit_codes() {
    reef()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Exit codes: 0 ok, 1 topology violations, 2 script error",
        ));
}

#[test]
fn script_error_indexing_nil_names_file_and_line() {
    assert_script_error("nil_call.lua", 3, &["attempt to index a nil value"]);
}

#[test]
fn script_error_env_may_not_override_isolation_variables() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("reef.lua");
    std::fs::write(
        &script,
        "reef.gateway { profile = \"a\", port = 20000, env = { OPENCLAW_STATE_DIR = \"/elsewhere\" } }\n",
    )
    .unwrap();
    reef()
        .arg("plan")
        .arg(&script)
        .assert()
        .code(EXIT_SCRIPT_ERROR)
        .stderr(predicate::str::contains(
            "field `env.OPENCLAW_STATE_DIR` would override the isolation",
        ))
        .stderr(predicate::str::contains("set `state_dir` instead"));
}

#[test]
fn plan_warns_about_a_script_without_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("reef.lua");
    std::fs::write(&script, "-- nothing yet\n").unwrap();
    reef()
        .arg("plan")
        .arg(&script)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 gateways: valid"))
        .stderr(predicate::str::contains("declares no gateways"));
}

// ---------------------------------------------------------------------------------------------
// Output to a reader that went away.

/// Runs reef with stdout on a pipe whose reading end is already closed (`reef ... | true`
/// after `true` exited): every write fails with EPIPE.
fn run_into_a_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let home = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_reef"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .env_remove("OPENCLAW_HOME")
        .env_remove("REEF_SCRIPT")
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("reef runs")
}

#[test]
fn a_closed_stdout_ends_output_commands_quietly_instead_of_panicking() {
    for args in [
        &["plan", "--json", "examples/rescue.lua"][..],
        &["plan", "examples/fleet.lua"],
        &["export", "--format", "systemd", "examples/fleet.lua"],
        &["export", "--format", "kubernetes", "examples/fleet.lua"],
        &[
            "install",
            "--dry-run",
            "--target",
            "systemd",
            "examples/rescue.lua",
        ],
        &["env", "main", "examples/rescue.lua"],
        &["env", "main", "examples/rescue.lua", "--json"],
    ] {
        let output = run_into_a_closed_pipe(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "reef {}: {}",
            args.join(" "),
            stderr_of(&output)
        );
        // Warnings on stderr are fine; a panic ("failed printing to stdout: Broken pipe") or
        // an error about the pipe is not.
        let stderr = stderr_of(&output);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error") && !stderr.contains("pipe"),
            "reef {}: {stderr}",
            args.join(" ")
        );
    }
}

#[test]
fn install_into_a_closed_stdout_still_writes_every_unit() {
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reef"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("OPENCLAW_HOME")
        .args(["install", "--target", "systemd", "examples/rescue.lua"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("reef runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    for unit in [
        "openclaw-gateway-main.service",
        "openclaw-gateway-rescue.service",
    ] {
        assert!(
            home.path()
                .join(".config/systemd/user")
                .join(unit)
                .is_file(),
            "{unit} was not written"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shell completions and the man page.

#[test]
fn completions_for_every_shell_name_every_verb() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = reef().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}: {}", stderr_of(&output));
        let script = stdout_of(&output);
        for verb in [
            "plan",
            "check",
            "setup",
            "up",
            "status",
            "logs",
            "export",
            "completions",
        ] {
            assert!(script.contains(verb), "{shell} completions lack `{verb}`");
        }
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reef.bash");
    let output = reef().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&path, &output.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", stderr_of(&syntax));
}

#[test]
fn the_man_page_documents_every_verb() {
    let output = reef().arg("man").output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let page = stdout_of(&output);
    assert!(page.contains(".TH reef 1"), "{page}");
    for verb in [
        "plan",
        "check",
        "setup",
        "up",
        "status",
        "export",
        "completions",
    ] {
        assert!(
            page.contains(&format!("reef\\-{verb}")) || page.contains(verb),
            "{verb}"
        );
    }
}

#[test]
fn every_verb_has_help_that_speaks_of_itself() {
    let verbs = [
        ("plan", "--json"),
        ("check", "findings"),
        ("env", "--json"),
        ("init", "PATH"),
        ("setup", "--allow-symlinks"),
        ("up", "--no-watch"),
        ("down", "SCRIPT"),
        ("status", "--watch"),
        ("top", "Keys:"),
        ("ls", "--json"),
        ("start", "NAME"),
        ("stop", "NAME"),
        ("restart", "NAME"),
        ("reload", "SCRIPT"),
        ("diff", "CANDIDATE"),
        ("logs", "--follow"),
        ("events", "--json"),
        ("install", "--dry-run"),
        ("export", "--format"),
        ("gateway", "--port"),
        ("completions", "SHELL"),
        ("man", "Usage"),
    ];
    for (verb, mentions) in verbs {
        let output = reef().args([verb, "--help"]).output().unwrap();
        assert!(output.status.success(), "{verb}: {}", stderr_of(&output));
        let help = stdout_of(&output);
        assert!(
            help.contains(mentions),
            "`reef {verb} --help` lacks {mentions}:\n{help}"
        );
    }
    let check = stdout_of(&reef().args(["check", "--help"]).output().unwrap());
    assert!(!check.contains("Print the plan"), "{check}");
    let top = stdout_of(&reef().arg("--help").output().unwrap());
    let words = top.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("4 no reef runs the topology"), "{top}");
}
