//! `reef export` and `reef install`: snapshots of every format for the example topologies, real
//! validators on the output, and the install's file handling.
//!
//! Validators (`systemd-analyze`, `docker-compose`, `kubernetes-validate`, Python's `hcl2`) run
//! when installed; with `REEF_REQUIRE_VALIDATORS=1` (as `.ci/run` sets after installing them) a
//! missing one fails the test instead of skipping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLES: &[&str] = &[
    "examples/rescue.lua",
    "examples/fleet.lua",
    "examples/modules/reef.lua",
    "examples/rescue-failover.lua",
];
const FORMATS: &[&str] = &["systemd", "launchd", "compose", "kubernetes", "nomad"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reef(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reef"));
    command
        .current_dir(repo())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("PATH", "/usr/bin:/bin")
        .env_remove("OPENCLAW_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("REEF_SCRIPT");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Machine-specific paths out, so snapshots hold on any checkout.
fn portable(output: &str) -> String {
    output
        .replace(env!("CARGO_BIN_EXE_reef"), "[reef]")
        .replace(&repo().display().to_string(), "[repo]")
}

fn export(format: &str, example: &str, home: &Path) -> Output {
    reef(home)
        .args(["export", "--format", format, example])
        .output()
        .expect("run reef export")
}

#[test]
fn every_format_of_every_example_is_pinned() {
    // Exports only compute paths: a fixed home keeps the snapshots the same everywhere.
    let home = Path::new("/home/ada");
    for example in EXAMPLES {
        for format in FORMATS {
            let output = export(format, example, home);
            assert!(
                output.status.success(),
                "{format} {example}: {}",
                text(&output.stderr)
            );
            let name = format!(
                "{format}-{}",
                example.trim_end_matches(".lua").replace('/', "-")
            );
            insta::assert_snapshot!(
                name,
                format!(
                    "{}\n--- warnings ---\n{}",
                    portable(&text(&output.stdout)),
                    portable(&text(&output.stderr))
                )
            );
        }
    }
}

#[test]
fn exports_are_deterministic() {
    let home = tempfile::tempdir().unwrap();
    for format in FORMATS {
        let first = export(format, "examples/fleet.lua", home.path());
        let second = export(format, "examples/fleet.lua", home.path());
        assert_eq!(first.stdout, second.stdout, "{format}");
    }
}

#[test]
fn no_token_is_ever_written_into_an_export() {
    let home = tempfile::tempdir().unwrap();
    // A config with a token, as `reef setup` writes it: exports must not copy it anywhere.
    let status = reef(home.path())
        .args(["setup", "examples/rescue.lua"])
        .status()
        .unwrap();
    assert!(status.success());
    let config = std::fs::read_to_string(home.path().join(".openclaw-main/openclaw.json")).unwrap();
    let token: serde_json::Value = serde_json::from_str(&config).unwrap();
    let token = token["gateway"]["auth"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for format in FORMATS {
        let output = export(format, "examples/rescue.lua", home.path());
        assert!(
            !text(&output.stdout).contains(&token),
            "{format} leaks the token"
        );
    }
}

/// Runs a validator if present; `None` when it is missing and not required.
fn validator(program: &str) -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    if std::env::var("REEF_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
        panic!("{program} is required (REEF_REQUIRE_VALIDATORS=1) but not installed");
    }
    eprintln!("skipped: {program} is not installed");
    None
}

fn export_into(format: &str, example: &str, dir: &Path, home: &Path) {
    let output = reef(home)
        .args(["export", "--format", format, example, "--output"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{format} {example}: {}",
        text(&output.stderr)
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if validator("systemd-analyze").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        export_into("systemd", example, dir.path(), home.path());
        let units: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!units.is_empty());
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        // systemd-analyze exits 0 on mere warnings: any output is a finding.
        let complaints: Vec<String> = text(&output.stderr)
            .lines()
            .filter(|line| !line.contains("RuntimeDirectory") && !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert!(
            output.status.success() && complaints.is_empty(),
            "{example}: {complaints:#?}"
        );
    }
}

#[test]
fn compose_files_pass_docker_compose_config() {
    if validator("docker-compose").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        export_into("compose", example, dir.path(), home.path());
        let output = Command::new("docker-compose")
            .args(["-f", "compose.yaml", "config", "-q"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{example}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn kubernetes_manifests_pass_schema_validation() {
    if validator("kubernetes-validate").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        export_into("kubernetes", example, dir.path(), home.path());
        for manifest in std::fs::read_dir(dir.path()).unwrap() {
            let output = Command::new("kubernetes-validate")
                .args(["--strict", "-k", "1.30.0"])
                .arg(manifest.unwrap().path())
                .output()
                .unwrap();
            let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
            assert!(
                output.status.success() && !all.contains("ERROR"),
                "{example}: {all}"
            );
        }
    }
}

#[test]
fn nomad_jobs_parse_as_hcl() {
    if validator("python3").is_none() {
        return;
    }
    let have_hcl2 = Command::new("python3")
        .args(["-c", "import hcl2"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_hcl2 {
        if std::env::var("REEF_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
            panic!("python-hcl2 is required (REEF_REQUIRE_VALIDATORS=1) but not installed");
        }
        eprintln!("skipped: python-hcl2 is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        export_into("nomad", example, dir.path(), home.path());
        for job in std::fs::read_dir(dir.path()).unwrap() {
            let job = job.unwrap().path();
            let check = "import hcl2, sys\n\
                 job = hcl2.load(open(sys.argv[1]))['job'][0]\n\
                 name, body = next(iter(job.items()))\n\
                 groups = body['group']\n\
                 assert groups, 'no groups'\n\
                 for group in groups:\n\
                 \x20   (gname, g), = group.items()\n\
                 \x20   task = g['task'][0]\n\
                 \x20   (tname, t), = task.items()\n\
                 \x20   assert t['driver'].strip('\"') == 'docker', t['driver']\n\
                 \x20   assert g['network'][0]['port'][0]\n\
                 print(len(groups))\n";
            let output = Command::new("python3")
                .arg("-c")
                .arg(check)
                .arg(&job)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{example}: {}",
                text(&output.stderr)
            );
        }
    }
}

#[test]
fn install_dry_run_prints_units_and_commands_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let output = reef(home.path())
        .args([
            "install",
            "--dry-run",
            "--target",
            "systemd",
            "examples/rescue.lua",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for needle in [
        "openclaw-gateway-main.service",
        "openclaw-gateway-rescue.service",
        "Environment=\"OPENCLAW_PROFILE=main\"",
        "Environment=\"OPENCLAW_STATE_DIR=",
        "Environment=\"OPENCLAW_CONFIG_PATH=",
        "Environment=\"OPENCLAW_GATEWAY_PORT=18789\"",
        "Restart=always",
        "RestartPreventExitStatus=78",
        "KillMode=mixed",
        "WantedBy=default.target",
        "systemctl --user enable --now openclaw-gateway-main.service openclaw-gateway-rescue.service",
    ] {
        assert!(stdout.contains(needle), "lacks {needle:?}:\n{stdout}");
    }
    assert!(
        !home.path().join(".config").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn install_writes_units_and_never_overwrites_foreign_ones_without_force() {
    let home = tempfile::tempdir().unwrap();
    let units = home.path().join(".config/systemd/user");
    let run = |extra: &[&str]| {
        reef(home.path())
            .args(["install", "--target", "systemd", "examples/rescue.lua"])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let main = units.join("openclaw-gateway-main.service");
    assert!(
        std::fs::read_to_string(&main)
            .unwrap()
            .contains("Written by reef")
    );
    // Ours: a second install rewrites it.
    assert!(run(&[]).status.success());

    // Someone else's (say `openclaw gateway install`): refused without --force.
    std::fs::write(&main, "[Service]\nExecStart=/usr/bin/openclaw gateway\n").unwrap();
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stderr).contains("--force"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        "[Service]\nExecStart=/usr/bin/openclaw gateway\n"
    );
    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(
        std::fs::read_to_string(&main)
            .unwrap()
            .contains("Written by reef")
    );
}

#[test]
fn supervisor_mode_runs_reef_up_and_leaves_gateways_to_it() {
    let home = tempfile::tempdir().unwrap();
    let output = reef(home.path())
        .args([
            "install",
            "--dry-run",
            "--mode",
            "supervisor",
            "--target",
            "systemd",
            "examples/rescue.lua",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains(" up "), "{stdout}");
    assert!(stdout.contains("KillMode=process"), "{stdout}");
    assert!(
        stdout.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{stdout}"
    );
}

#[test]
fn exports_refuse_a_topology_with_violations() {
    let home = tempfile::tempdir().unwrap();
    let output = reef(home.path())
        .args([
            "export",
            "--format",
            "compose",
            "tests/fixtures/violations/footprint_overlap.lua",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}

#[test]
fn launchd_agents_are_well_formed_property_lists() {
    if validator("python3").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    for example in EXAMPLES {
        let dir = tempfile::tempdir().unwrap();
        export_into("launchd", example, dir.path(), home.path());
        for plist in std::fs::read_dir(dir.path()).unwrap() {
            let plist = plist.unwrap().path();
            let check = "import plistlib, sys\n\
                 agent = plistlib.load(open(sys.argv[1], 'rb'))\n\
                 assert agent['Label'].startswith('ai.openclaw.'), agent['Label']\n\
                 assert agent['ProgramArguments'], 'no program'\n\
                 assert agent['EnvironmentVariables']['OPENCLAW_STATE_DIR']\n";
            let output = Command::new("python3")
                .arg("-c")
                .arg(check)
                .arg(&plist)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                plist.display(),
                text(&output.stderr)
            );
        }
    }
}

#[test]
fn launchd_supervisor_mode_runs_reef_up() {
    let home = tempfile::tempdir().unwrap();
    let output = reef(home.path())
        .args([
            "install",
            "--dry-run",
            "--mode",
            "supervisor",
            "--target",
            "launchd",
            "examples/rescue.lua",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("<string>up</string>"), "{stdout}");
    assert!(
        stdout.contains("LaunchAgents/dev.reef.rescue.plist"),
        "{stdout}"
    );
    assert!(stdout.contains("launchctl bootstrap"), "{stdout}");
    assert!(
        !home.path().join("Library").exists(),
        "a dry run writes nothing"
    );
}

/// One gateway per runtime: builtin, openclaw with no config, with a config that has
/// `gateway.mode` only, with one that has mode and bind, and an explicit command; values a
/// shell or systemd must quote.
const EVERY_RUNTIME: &str = r#"
reef.gateway { profile = "builtin", port = 18789, env = { NOTE = "a b $c %d 'e' \"f\"" } }
reef.gateway { profile = "bare", port = 19789, runtime = "openclaw" }
reef.gateway { profile = "partial", port = 20789, runtime = "openclaw", args = { "--verbose" } }
reef.gateway { profile = "configured", port = 21789, runtime = "openclaw", env = { TZ = "UTC" } }
reef.gateway {
  profile = "custom", port = 22789,
  command = { "/opt/gw bin/run", "--limit=100%", "it's" }, args = { "$HOME" },
}
"#;

/// Undoes systemd's quoting: words split on spaces outside double quotes, C escapes (`\n`,
/// `\t`, `\r`, `\xNN`, `\uNNNN`, `\\`, `\"`) inside them. Specifiers (`%%`) and, in ExecStart,
/// `$$` are left to the caller.
fn unit_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.push(c_escape(&mut chars)),
                    '"' => break,
                    other => word.push(other),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    words
}

/// The character of a C escape (systemd's, HCL's), its backslash read.
fn c_escape(chars: &mut impl Iterator<Item = char>) -> char {
    let digits = match chars.next().expect("an escaped character") {
        'n' => return '\n',
        't' => return '\t',
        'r' => return '\r',
        'x' => 2,
        'u' => 4,
        'U' => 8,
        other => return other,
    };
    let hex: String = chars.by_ref().take(digits).collect();
    char::from_u32(u32::from_str_radix(&hex, 16).expect("hex digits")).expect("a character")
}

/// A unit's ExecStart argv, Environment and WorkingDirectory, read back.
fn unit_launch(unit: &str) -> (Vec<String>, BTreeMap<String, String>, PathBuf) {
    let mut argv = Vec::new();
    let mut env = BTreeMap::new();
    let mut cwd = PathBuf::new();
    for line in unit.lines() {
        if let Some(exec) = line.strip_prefix("ExecStart=") {
            argv = unit_words(exec)
                .iter()
                .map(|word| word.replace("$$", "$").replace("%%", "%"))
                .collect();
        } else if let Some(quoted) = line.strip_prefix("Environment=") {
            let assignment = unit_words(quoted).concat().replace("%%", "%");
            let (key, value) = assignment.split_once('=').expect("KEY=VALUE");
            env.insert(key.to_owned(), value.to_owned());
        } else if let Some(dir) = line.strip_prefix("WorkingDirectory=-") {
            cwd = PathBuf::from(dir.replace("%%", "%"));
        }
    }
    (argv, env, cwd)
}

/// `reef up`, `reef env` and the systemd export all take an instance's launch from
/// `supervisor::launch`: for every runtime, `reef env --json` prints exactly `launch()` (what the
/// supervisor spawns), its text form evaluates to that environment, and a unit's ExecStart,
/// Environment and WorkingDirectory are the same launch with `openclaw` resolved on PATH and
/// only the gateway's own variables.
#[test]
fn env_and_systemd_export_print_the_launch_reef_up_spawns_for_every_runtime() {
    use reef::supervisor::launch::{self, Binaries};

    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("runtimes.lua");
    std::fs::write(&script, EVERY_RUNTIME).unwrap();
    for (profile, config) in [
        ("partial", "{ gateway: { mode: 'local' } }"),
        (
            "configured",
            "// as reef setup writes it, less the token\n{ gateway: { mode: 'local', bind: 'loopback' } }",
        ),
    ] {
        let dir = home.path().join(format!(".openclaw-{profile}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("openclaw.json"), config).unwrap();
    }
    // An `openclaw` on PATH: units name it absolutely, `reef up` leaves it to the PATH.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let openclaw = bin.join("openclaw");
    std::fs::write(&openclaw, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &openclaw,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let environment: BTreeMap<String, String> = [
        ("HOME", home.path().to_str().unwrap().to_owned()),
        ("PATH", format!("{}:/usr/bin:/bin", bin.display())),
        ("LANG", "C.UTF-8".to_owned()),
        ("TZ", "Europe/Paris".to_owned()),
        ("NO_COLOR", "1".to_owned()),
        (
            "OPENCLAW_GATEWAY_TOKEN",
            "another-gateways-token".to_owned(),
        ),
        ("OPENCLAW_STATE_DIR", "/elsewhere".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let reef_in = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_reef"))
            .env_clear()
            .envs(&environment)
            .current_dir(home.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "reef {}: {}",
            args.join(" "),
            text(&output.stderr)
        );
        output
    };

    let host = reef::lua::Host::from_env(environment.clone()).unwrap();
    let plan = reef::plan::plan(&script, &host, reef::lua::Limits::default())
        .result
        .expect("the script evaluates");
    assert_eq!(plan.topology.instances.len(), 5);

    let units = tempfile::tempdir().unwrap();
    let exported = reef_in(&[
        "export",
        "--format",
        "systemd",
        "runtimes.lua",
        "--output",
        units.path().to_str().unwrap(),
    ]);

    let reef_binary = Path::new(env!("CARGO_BIN_EXE_reef"));
    for instance in &plan.topology.instances {
        let config = launch::read_config(instance, &environment);
        // What the supervisor spawns.
        let up = launch::launch(instance, reef_binary, &environment, config.as_ref());

        let mut json: serde_json::Value = serde_json::from_slice(
            &reef_in(&["env", &instance.name, "runtimes.lua", "--json"]).stdout,
        )
        .unwrap();
        assert_eq!(json["format"], 1);
        json.as_object_mut().unwrap().remove("format");
        assert_eq!(
            json,
            serde_json::to_value(&up).unwrap(),
            "{}",
            instance.name
        );

        // The text form, evaluated by a shell that starts with the caller's environment.
        let shell = Command::new("sh")
            .env_clear()
            .envs(&environment)
            .current_dir(home.path())
            .arg("-c")
            .arg(r#"eval "$("$0" env "$1" runtimes.lua)" && env -0"#)
            .arg(reef_binary)
            .arg(&instance.name)
            .output()
            .unwrap();
        assert!(shell.status.success(), "{}", text(&shell.stderr));
        let evaluated: BTreeMap<String, String> = text(&shell.stdout)
            .split('\0')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (key, value) in &up.env {
            assert_eq!(evaluated.get(key), Some(value), "{}: {key}", instance.name);
        }
        assert!(!evaluated.contains_key("OPENCLAW_GATEWAY_TOKEN"));
        let script_text = text(&reef_in(&["env", &instance.name, "runtimes.lua"]).stdout);
        let command = script_text
            .lines()
            .find_map(|line| line.strip_prefix("# then run: (cd "))
            .and_then(|line| line.strip_suffix(')'))
            .expect("a command line");
        let words = shlex::split(command).expect("shell words");
        assert_eq!(words[0], up.cwd.to_str().unwrap());
        assert_eq!(words[1], "&&");
        assert_eq!(words[2..], up.argv, "{}", instance.name);

        // The unit: the same launch, `openclaw` resolved on PATH, only the gateway's variables.
        let binaries =
            Binaries::resolving_openclaw(reef_binary, environment.get("PATH").map(String::as_str));
        assert_eq!(binaries.openclaw.as_deref(), Some(openclaw.as_path()));
        let hosted = launch::describe(instance, &binaries, &BTreeMap::new(), config.as_ref());
        let unit = std::fs::read_to_string(units.path().join(&instance.systemd_unit)).unwrap();
        let (argv, env, cwd) = unit_launch(&unit);
        // This `openclaw` is a shell script that execs no Node: the unit runs it as `reef up`
        // does (with a warning), in the unit OpenClaw's installer writes.
        assert_eq!(argv, hosted.argv, "{}", instance.name);
        if instance.runtime == reef::topology::Runtime::Openclaw {
            assert!(
                text(&exported.stderr).contains(&format!(
                    "`{}`: cannot find the Node and OpenClaw package",
                    instance.name
                )),
                "{}",
                text(&exported.stderr)
            );
            // OpenClaw's variables, then the launch's own; no working directory (OpenClaw sets
            // none on Linux); no OPENCLAW_NO_RESPAWN under a manager that always restarts.
            for (key, value) in hosted
                .env
                .iter()
                .filter(|(k, _)| *k != "OPENCLAW_NO_RESPAWN")
            {
                assert_eq!(env.get(key), Some(value), "{}: {key}", instance.name);
            }
            assert!(!env.contains_key("OPENCLAW_NO_RESPAWN"));
            assert_eq!(env["OPENCLAW_SERVICE_MARKER"], "openclaw");
            assert_eq!(env["OPENCLAW_SERVICE_KIND"], "gateway");
            assert_eq!(env["OPENCLAW_SYSTEMD_UNIT"], instance.systemd_unit);
            assert_eq!(env["HOME"], home.path().to_str().unwrap());
            assert_eq!(env["NODE_OPTIONS"], "");
            assert_eq!(cwd, PathBuf::new(), "{}", instance.name);
            continue;
        }
        assert_eq!(env, hosted.env, "{}", instance.name);
        assert_eq!(cwd, hosted.cwd, "{}", instance.name);
        assert_eq!(env, launch::gateway_env(instance));
        assert_eq!(hosted.cwd, up.cwd);
        assert_eq!(hosted.argv[1..], up.argv[1..], "{}", instance.name);
        for (key, value) in &up.env {
            assert!(
                env.get(key) == Some(value) || launch::is_passed_through(key),
                "{}: {key} differs between the unit and reef up",
                instance.name
            );
        }
    }

    // The flags reef adds for what each config lacks, as the supervisor does.
    let argv_of = |name: &str| {
        let instance = plan.topology.instance(name).unwrap();
        launch::launch(
            instance,
            reef_binary,
            &environment,
            launch::read_config(instance, &environment).as_ref(),
        )
        .argv
    };
    assert_eq!(
        argv_of("bare")[1..],
        [
            "gateway",
            "--port",
            "19789",
            "--allow-unconfigured",
            "--bind",
            "loopback"
        ]
    );
    assert_eq!(
        argv_of("partial")[1..],
        [
            "gateway",
            "--port",
            "20789",
            "--bind",
            "loopback",
            "--verbose"
        ]
    );
    assert_eq!(argv_of("configured")[1..], ["gateway", "--port", "21789"]);
    assert_eq!(
        argv_of("custom"),
        ["/opt/gw bin/run", "--limit=100%", "it's", "$HOME"]
    );
}

/// Values that a format which does not quote them turns into structure: a systemd directive of
/// its own, YAML keys and list items, comments, specifiers, variables and templates.
const HOSTILE: &[(&str, &str)] = &[
    ("EVIL", "x\nExecStartPre=/bin/sh"),
    ("EXPANDED", "%h $HOME ${X} $(Y) %{z} $$"),
    ("QUOTED", "say \"hi\" \\ back\\slash\ttab\rreturn"),
    ("ESCAPE", "\u{1b}[31mred"),
    (
        "YAML",
        "a: b # c\n- d\n*e &f !g {h} [i] |j >k 'l' @m `n` ---",
    ),
    ("EDGES", " lead and trail\\"),
];

/// Names of variables only containers take (systemd ignores them, with a warning).
const HOSTILE_NAMES: &[(&str, &str)] = &[("on", "yes"), ("a.b: #c", "- v")];

/// A Lua string literal for any text: printable ASCII as is, every other byte escaped.
fn lua_string(text: &str) -> String {
    let mut out = String::from('"');
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

/// One gateway, `hostile`, that passes every value as an argument (in `command` and
/// in `args`) and as a variable; `state_dir` where given.
fn hostile_script(values: &[(&str, &str)], state_dir: Option<&str>) -> String {
    let words: Vec<String> = values.iter().map(|(_, v)| lua_string(v)).collect();
    let env: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_string(v)))
        .collect();
    let state_dir = state_dir
        .map(|dir| format!("  state_dir = {},\n", lua_string(dir)))
        .unwrap_or_default();
    format!(
        "reef.gateway {{\n  name = \"hostile\", profile = \"hostile\", port = 18789,\n{state_dir}  command = {{ \"/bin/true\", {} }},\n  args = {{ {} }},\n  env = {{ {} }},\n}}\n",
        words.join(", "),
        words.join(", "),
        env.join(", ")
    )
}

/// Exports the hostile gateway as `format` into a fresh directory: the directory, the
/// file named `file` in it, and the warnings.
fn export_hostile(
    format: &str,
    values: &[(&str, &str)],
    file: &str,
) -> (tempfile::TempDir, String, String) {
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("hostile.lua");
    std::fs::write(&script, hostile_script(values, None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = reef(home.path())
        .args(["export", "--format", format])
        .arg(&script)
        .arg("--output")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{format}: {}",
        text(&output.stderr)
    );
    let content = std::fs::read_to_string(dir.path().join(file)).unwrap();
    (dir, content, text(&output.stderr))
}

/// The hostile values as argv: `/bin/true`, then each value twice (command, then args).
fn hostile_argv(values: &[(&str, &str)]) -> Vec<String> {
    let words = values.iter().map(|(_, v)| (*v).to_owned());
    std::iter::once("/bin/true".to_owned())
        .chain(words.clone())
        .chain(words)
        .collect()
}

/// Checks that `env` holds `values` and, besides them, only reef's own OPENCLAW_ variables:
/// no value became a variable of its own.
fn assert_only_gateway_vars_besides(env: &BTreeMap<String, String>, values: &[(&str, &str)]) {
    for key in env.keys() {
        assert!(
            key.starts_with("OPENCLAW_") || values.iter().any(|(name, _)| name == key),
            "an unexpected variable {key:?}: {env:#?}"
        );
    }
    assert_eq!(
        env.keys()
            .filter(|key| !key.starts_with("OPENCLAW_"))
            .count(),
        values.len()
    );
}

/// Runs a Python snippet on `path` that prints JSON; `None` without Python or its `module`.
fn python_json(module: &str, snippet: &str, path: &Path) -> Option<serde_json::Value> {
    validator("python3")?;
    let have = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        if std::env::var("REEF_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1") {
            panic!("python3 {module} is required (REEF_REQUIRE_VALIDATORS=1) but not installed");
        }
        eprintln!("skipped: python3 {module} is not installed");
        return None;
    }
    let output = Command::new("python3")
        .arg("-c")
        .arg(format!("import json, sys, {module}\n{snippet}"))
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

/// Issue "no script can wedge reef": an env value `x\nExecStartPre=/bin/sh` put the directive
/// on a line of its own. Every value now reads back as written, and no line is added.
#[test]
fn hostile_values_read_back_exactly_from_a_systemd_unit_and_add_no_directive() {
    let (dir, unit, _) = export_hostile("systemd", HOSTILE, "openclaw-gateway-hostile.service");
    let settings = [
        "Description",
        "After",
        "Wants",
        "Type",
        "ExecStart",
        "Environment",
        "WorkingDirectory",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "KillMode",
        "KillSignal",
        "TimeoutStopSec",
        "WantedBy",
    ];
    for line in unit.lines() {
        let structural = line.is_empty()
            || line.starts_with('#')
            || line.starts_with('[')
            || line
                .split_once('=')
                .is_some_and(|(key, _)| settings.contains(&key));
        assert!(structural, "an injected line: {line:?}\n{unit}");
    }
    let (argv, env, _) = unit_launch(&unit);
    assert_eq!(argv, hostile_argv(HOSTILE));
    for (key, value) in HOSTILE {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    let environment_lines = unit
        .lines()
        .filter(|l| l.starts_with("Environment="))
        .count();
    assert_eq!(environment_lines, env.len(), "{unit}");
    assert_only_gateway_vars_besides(&env, HOSTILE);
    if validator("systemd-analyze").is_some() {
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("openclaw-gateway-hostile.service"))
            .output()
            .unwrap();
        let complaints: Vec<String> = text(&output.stderr)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert!(
            output.status.success() && complaints.is_empty(),
            "{complaints:#?}"
        );
    }
}

/// Reads a property list as reef writes it: ProgramArguments and EnvironmentVariables, one
/// element a line, entities decoded.
fn plist_launch(plist: &str) -> (Vec<String>, BTreeMap<String, String>) {
    fn element<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
        line.trim()
            .strip_prefix(&format!("<{tag}>"))?
            .strip_suffix(&format!("</{tag}>"))
    }
    fn decode(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            let end = rest[at..].find(';').expect("an entity's end") + at;
            out.push(match &rest[at + 1..end] {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "quot" => '"',
                "apos" => '\'',
                number => {
                    char::from_u32(number.strip_prefix('#').unwrap().parse().unwrap()).unwrap()
                }
            });
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
    let lines: Vec<&str> = plist.lines().collect();
    let start = |key: &str| {
        lines
            .iter()
            .position(|line| line.trim() == format!("<key>{key}</key>"))
            .unwrap()
            + 2
    };
    let argv = lines[start("ProgramArguments")..]
        .iter()
        .map_while(|line| element(line, "string"))
        .map(decode)
        .collect();
    let env = lines[start("EnvironmentVariables")..]
        .chunks(2)
        .map_while(|pair| {
            Some((
                decode(element(pair[0], "key")?),
                decode(element(pair.get(1)?, "string")?),
            ))
        })
        .collect();
    (argv, env)
}

#[test]
fn hostile_values_read_back_exactly_from_a_launchd_agent() {
    // XML 1.0 cannot hold ESC at all: everything else must come back as written.
    let holdable: Vec<(&str, &str)> = HOSTILE
        .iter()
        .copied()
        .filter(|(key, _)| *key != "ESCAPE")
        .collect();
    let (dir, plist, _) = export_hostile("launchd", &holdable, "ai.openclaw.hostile.plist");
    let (argv, env) = plist_launch(&plist);
    assert_eq!(argv, hostile_argv(&holdable), "{plist}");
    for (key, value) in &holdable {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    let parsed = python_json(
        "plistlib",
        "agent = plistlib.load(open(sys.argv[1], 'rb'))\n\
         print(json.dumps([agent['ProgramArguments'], agent['EnvironmentVariables']]))",
        &dir.path().join("ai.openclaw.hostile.plist"),
    );
    if let Some(parsed) = parsed {
        assert_eq!(parsed[0], serde_json::json!(hostile_argv(&holdable)));
        for (key, value) in &holdable {
            assert_eq!(parsed[1][key], *value, "{key}");
        }
    }
}

/// Undoes a YAML double-quoted scalar.
fn yaml_unquote(scalar: &str) -> String {
    let inner = scalar
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not double-quoted: {scalar}"));
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut rest = chars.clone();
                out.push(match rest.next().expect("an escape") {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'e' => '\u{1b}',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    _ => {
                        out.push(c_escape(&mut chars));
                        continue;
                    }
                });
                chars = rest;
            }
            '"' => panic!("an unescaped quote inside {scalar}"),
            c => out.push(c),
        }
    }
    out
}

/// What Compose and Kubernetes make of `$$`: one `$`.
fn unexpanded(text: &str) -> String {
    text.replace("$$", "$")
}

#[test]
fn hostile_values_read_back_exactly_from_a_compose_file() {
    let values: Vec<(&str, &str)> = HOSTILE.iter().chain(HOSTILE_NAMES).copied().collect();
    let (dir, compose, _) = export_hostile("compose", &values, "compose.yaml");
    // Line by line: every variable is one `NAME: "VALUE"` line of the environment mapping.
    let lines: Vec<&str> = compose.lines().collect();
    let start = lines.iter().position(|l| *l == "    environment:").unwrap() + 1;
    let end = lines.iter().position(|l| *l == "    env_file:").unwrap();
    let mut env = BTreeMap::new();
    for line in &lines[start..end] {
        let entry = line
            .strip_prefix("      ")
            .expect("an entry of the mapping");
        let (name, value) = match entry.strip_prefix('"') {
            Some(quoted) => {
                let close = quoted.find("\": ").expect("a quoted name");
                (yaml_unquote(&entry[..close + 2]), &quoted[close + 3..])
            }
            None => {
                let (name, value) = entry.split_once(": ").unwrap();
                (name.to_owned(), value)
            }
        };
        env.insert(name, unexpanded(&yaml_unquote(value)));
    }
    for (key, value) in &values {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    assert_only_gateway_vars_besides(&env, &values);

    let parsed = python_json(
        "yaml",
        "compose = yaml.safe_load(open(sys.argv[1]))\n\
         (service,) = compose['services'].values()\n\
         print(json.dumps(service['environment']))",
        &dir.path().join("compose.yaml"),
    );
    if let Some(parsed) = parsed {
        for (key, value) in &values {
            assert_eq!(
                parsed[key].as_str().map(unexpanded).as_deref(),
                Some(*value),
                "{key}"
            );
        }
    }
    if validator("docker-compose").is_some() {
        let output = Command::new("docker-compose")
            .args(["-f", "compose.yaml", "config", "-q"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
}

#[test]
fn hostile_values_read_back_exactly_from_kubernetes_manifests() {
    let values: Vec<(&str, &str)> = HOSTILE.iter().chain(HOSTILE_NAMES).copied().collect();
    let (dir, manifests, _) = export_hostile("kubernetes", &values, "hostile.k8s.yaml");
    // Line by line: every variable is a `- name:` line and a `value:` line.
    let lines: Vec<&str> = manifests.lines().collect();
    let start = lines.iter().position(|l| *l == "          env:").unwrap() + 1;
    let mut env = BTreeMap::new();
    for pair in lines[start..].chunks(2) {
        let Some(name) = pair[0].strip_prefix("            - name: ") else {
            break;
        };
        let Some(value) = pair[1].strip_prefix("              value: ") else {
            break; // the token's valueFrom
        };
        let name = if name.starts_with('"') {
            yaml_unquote(name)
        } else {
            name.to_owned()
        };
        env.insert(name, unexpanded(&yaml_unquote(value)));
    }
    for (key, value) in &values {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    assert_only_gateway_vars_besides(&env, &values);

    let parsed = python_json(
        "yaml",
        "docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
         (deployment,) = [d for d in docs if d['kind'] == 'Deployment']\n\
         (container,) = deployment['spec']['template']['spec']['containers']\n\
         print(json.dumps({e['name']: e.get('value') for e in container['env']}))",
        &dir.path().join("hostile.k8s.yaml"),
    );
    if let Some(parsed) = parsed {
        for (key, value) in &values {
            assert_eq!(
                parsed[key].as_str().map(unexpanded).as_deref(),
                Some(*value),
                "{key}"
            );
        }
    }
}

/// Undoes an HCL quoted template without interpolations.
fn hcl_unquote(literal: &str) -> String {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not quoted: {literal}"));
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(c_escape(&mut chars)),
            '"' => panic!("an unescaped quote inside {literal}"),
            '$' | '%' if chars.peek() == Some(&'{') => panic!("a template in {literal}"),
            '$' | '%' if chars.peek() == Some(&c) => {
                let mut ahead = chars.clone();
                ahead.next();
                if ahead.peek() == Some(&'{') {
                    chars.next(); // `$${` is a literal `${`
                }
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[test]
fn hostile_values_read_back_exactly_from_a_nomad_job() {
    let values: Vec<(&str, &str)> = HOSTILE.iter().chain(HOSTILE_NAMES).copied().collect();
    let (dir, job, warnings) = export_hostile("nomad", &values, "hostile.nomad.hcl");
    // Names that are not identifiers: the map form, every name quoted.
    let lines: Vec<&str> = job.lines().collect();
    let start = lines.iter().position(|l| *l == "      env = {").unwrap() + 1;
    let mut env = BTreeMap::new();
    for line in lines[start..].iter().take_while(|l| **l != "      }") {
        let entry = line.strip_prefix("        ").expect("an entry of the map");
        let close = entry[1..].find("\" = \"").expect("a quoted name") + 1;
        env.insert(
            hcl_unquote(&entry[..=close]),
            hcl_unquote(&entry[close + 4..]),
        );
    }
    for (key, value) in &values {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    assert_only_gateway_vars_besides(&env, &values);
    assert!(warnings.contains("env.EXPANDED"), "{warnings}");

    let parsed = python_json(
        "hcl2",
        "job = hcl2.load(open(sys.argv[1]))['job'][0]\n\
         (body,) = job.values()\n\
         (group,) = body['group']\n\
         (g,) = group.values()\n\
         (task,) = g['task']\n\
         (t,) = task.values()\n\
         print(json.dumps(len(t['env'])))",
        &dir.path().join("hostile.nomad.hcl"),
    );
    if let Some(parsed) = parsed {
        assert_eq!(parsed, serde_json::json!(env.len()));
    }
}

/// Runs `reef` on the hostile gateway and returns its failure's message.
fn hostile_failure(args: &[&str], values: &[(&str, &str)], state_dir: Option<&str>) -> String {
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("hostile.lua");
    std::fs::write(&script, hostile_script(values, state_dir)).unwrap();
    let output = reef(home.path()).args(args).arg(&script).output().unwrap();
    // 3: reef's failure exit, as for any error at the top.
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(
        !home.path().join(".config").exists(),
        "nothing is installed"
    );
    text(&output.stderr)
}

#[test]
fn values_a_format_cannot_hold_fail_the_export_naming_instance_and_field() {
    // systemd cannot quote a path: a newline would start a directive.
    for args in [
        &["export", "--format", "systemd"][..],
        &["install", "--target", "systemd"][..],
    ] {
        let stderr = hostile_failure(args, &[], Some("/tmp/x\nExecStartPre=/bin/sh"));
        assert!(
            stderr.contains("`hostile`") && stderr.contains("state_dir"),
            "{stderr}"
        );
        assert!(!stderr.contains("\nExecStartPre"), "{stderr}");
    }
    // XML 1.0 cannot hold ESC; the first place it is in is the command's second word.
    let stderr = hostile_failure(
        &["export", "--format", "launchd"],
        &[("ESCAPE", "\u{1b}[31mred")],
        None,
    );
    assert!(
        stderr.contains("`hostile`") && stderr.contains("command[2]"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "raw ESC on the terminal: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Runtime openclaw and secrets (issue 12: "Services exactly as OpenClaw installs them",
// "Exports keep secrets out and cannot be injected").

/// A host for runtime openclaw, in a temporary directory: a home, and an npm-style OpenClaw
/// install (`prefix/bin/openclaw` -> the package's `openclaw.mjs`, `node` elsewhere on PATH), so
/// units can run Node on `dist/index.js` as OpenClaw's installer writes them. reef runs there with
/// nothing inherited but HOME, PATH and NO_COLOR.
struct OpenclawHost {
    root: tempfile::TempDir,
    home: PathBuf,
    path: String,
    node: PathBuf,
    entry: PathBuf,
}

impl OpenclawHost {
    fn new() -> OpenclawHost {
        let root = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(root.path()).unwrap();
        let package = base.join("prefix/lib/node_modules/openclaw");
        std::fs::create_dir_all(package.join("dist")).unwrap();
        std::fs::write(package.join("package.json"), r#"{"name":"openclaw"}"#).unwrap();
        std::fs::write(package.join("openclaw.mjs"), "#!/usr/bin/env node\n").unwrap();
        std::fs::set_permissions(
            package.join("openclaw.mjs"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(package.join("dist/index.js"), "").unwrap();
        std::fs::create_dir_all(base.join("prefix/bin")).unwrap();
        std::os::unix::fs::symlink(
            "../lib/node_modules/openclaw/openclaw.mjs",
            base.join("prefix/bin/openclaw"),
        )
        .unwrap();
        let node = base.join("node/bin/node");
        std::fs::create_dir_all(node.parent().unwrap()).unwrap();
        std::fs::write(&node, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let home = base.join("home");
        std::fs::create_dir_all(&home).unwrap();
        OpenclawHost {
            path: format!("{0}/prefix/bin:{0}/node/bin:/usr/bin:/bin", base.display()),
            entry: package.join("dist/index.js"),
            node,
            home,
            root,
        }
    }

    /// `reef ARGS` with this host's home and PATH, in its home directory.
    fn reef(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_reef"))
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .env("NO_COLOR", "1")
            .current_dir(&self.home)
            .args(args)
            .output()
            .unwrap()
    }

    /// Writes `script` as `name` in the home directory.
    fn script(&self, name: &str, script: &str) -> String {
        std::fs::write(self.home.join(name), script).unwrap();
        name.to_owned()
    }

    /// Machine-specific parts out: the temporary directory, reef's binary, the heap size (it
    /// follows this machine's memory, as OpenClaw's installer's does).
    fn portable(&self, output: &str) -> String {
        let base = std::fs::canonicalize(self.root.path()).unwrap();
        let out = portable(output).replace(&base.display().to_string(), "[tmp]");
        let flag = "--max-old-space-size=";
        let mut pieces = out.split(flag);
        let mut heapless = pieces.next().unwrap_or("").to_owned();
        for piece in pieces {
            heapless.push_str(flag);
            heapless.push_str("[heap]");
            heapless.push_str(piece.trim_start_matches(|c: char| c.is_ascii_digit()));
        }
        heapless
    }
}

/// Two real gateways (one with its own restart, stop and dependency, and the token in its env)
/// and a built-in one, each with a secret.
const SECRETS: &str = r#"
reef.gateway {
  profile = "main", port = 18789, runtime = "openclaw",
  env = { ANTHROPIC_API_KEY = "sk-ant-main-value", TZ = "UTC" },
}
reef.gateway {
  profile = "rescue", port = 19789, runtime = "openclaw", depends_on = "main",
  restart = { policy = "on-failure", backoff = { initial = 2 } },
  stop = { signal = "SIGINT", timeout = 60 },
  env = { OPENCLAW_GATEWAY_TOKEN = "tok-rescue-value" },
}
reef.gateway { profile = "ops", port = 20789, env = { DB_PASSWORD = "pw-ops-value", TEAM = "ops" } }
"#;

/// The secret values of [`SECRETS`].
const SECRET_VALUES: &[&str] = &["sk-ant-main-value", "tok-rescue-value", "pw-ops-value"];

/// What stdout shows instead of a secret's value.
const PLACEHOLDER: &str = "<secret>";

#[test]
fn runtime_openclaw_and_secrets_are_pinned_in_every_format() {
    let host = OpenclawHost::new();
    let script = host.script("secrets.lua", SECRETS);
    for format in FORMATS {
        let output = host.reef(&["export", "--format", format, &script]);
        assert!(
            output.status.success(),
            "{format}: {}",
            text(&output.stderr)
        );
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        for secret in SECRET_VALUES {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{format} prints {secret}"
            );
        }
        let shown = if *format == "launchd" {
            "&lt;secret&gt;"
        } else {
            PLACEHOLDER
        };
        assert!(stdout.contains(shown), "{format}: no placeholder\n{stdout}");
        insta::assert_snapshot!(
            format!("openclaw-secrets-{format}"),
            format!(
                "{}\n--- warnings ---\n{}",
                host.portable(&stdout),
                host.portable(&stderr)
            )
        );
    }
}

#[test]
fn openclaw_units_run_node_on_the_package_entry_as_openclaws_installer_writes() {
    let host = OpenclawHost::new();
    let script = host.script("secrets.lua", SECRETS);
    let output = host.reef(&["export", "--format", "systemd", &script]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let unit = stdout
        .split("# ==> ")
        .find(|part| part.starts_with("openclaw-gateway-main.service"))
        .unwrap();
    let (argv, env, cwd) = unit_launch(unit);
    assert_eq!(argv[0], host.node.to_str().unwrap());
    assert!(argv[1].starts_with("--max-old-space-size="), "{argv:?}");
    assert_eq!(argv[2], host.entry.to_str().unwrap());
    assert_eq!(
        argv[3..],
        [
            "gateway",
            "--port",
            "18789",
            "--allow-unconfigured",
            "--bind",
            "loopback"
        ]
    );
    // The installer's variables and order, then reef's own and the topology's.
    let keys: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|l| l.trim_start_matches('"').split('=').next().unwrap())
        .collect();
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
            "OPENCLAW_DISABLE_BONJOUR",
            "TZ",
        ]
    );
    let base = std::fs::canonicalize(host.root.path()).unwrap();
    assert_eq!(
        env["PATH"],
        format!(
            "{0}/node/bin:{0}/prefix/bin:/usr/local/bin:/usr/bin:/bin:{1}/.local/bin:{1}/.npm-global/bin:{1}/bin:{1}/.nix-profile/bin",
            base.display(),
            host.home.display()
        )
    );
    assert_eq!(env["TMPDIR"], "/tmp");
    assert_eq!(
        cwd,
        PathBuf::new(),
        "OpenClaw's unit sets no working directory on Linux"
    );
    for line in [
        "Description=OpenClaw Gateway (profile: main)",
        "StartLimitBurst=10",
        "StartLimitIntervalSec=300",
        "Restart=always",
        "RestartSec=5",
        "RestartPreventExitStatus=78",
        "TimeoutStopSec=330",
        "TimeoutStartSec=30",
        "SuccessExitStatus=0 143",
        "OOMPolicy=continue",
        "KillMode=mixed",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "lacks {line:?}:\n{unit}");
    }
    assert!(!unit.contains("KillSignal="), "{unit}");
    // The rescue gateway's own policies are kept, and said.
    let rescue = stdout
        .split("# ==> ")
        .find(|part| part.starts_with("openclaw-gateway-rescue.service"))
        .unwrap();
    for line in [
        "After=network-online.target openclaw-gateway-main.service",
        "Restart=on-failure",
        "RestartSec=2",
        "TimeoutStopSec=60",
        "KillSignal=SIGINT",
        "Environment=OPENCLAW_NO_RESPAWN=1",
    ] {
        assert!(
            rescue.lines().any(|l| l == line),
            "lacks {line:?}:\n{rescue}"
        );
    }
    let stderr = text(&output.stderr);
    for warning in [
        "`rescue`: restart policy on-failure",
        "`rescue`: restart.backoff.initial 2 s",
        "`rescue`: stop.timeout 60 s: its unit says TimeoutStopSec=60, not 330",
        "`rescue`: stop signal SIGINT",
        "`rescue`: depends_on main becomes After=/Wants= openclaw-gateway-main.service",
        "not once its gateway is ready",
        "systemd 252 has no growing restart delay",
    ] {
        assert!(stderr.contains(warning), "lacks {warning:?}:\n{stderr}");
    }
    assert_eq!(
        stderr.matches("systemd 252").count(),
        1,
        "once per topology:\n{stderr}"
    );
}

/// Files of `dir` by name, with their modes and contents.
fn files_in(dir: &Path) -> BTreeMap<String, (u32, String)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                (mode, std::fs::read_to_string(&path).unwrap()),
            )
        })
        .collect()
}

/// The variables a systemd env file defines, read as systemd does (double quotes with `\`
/// escaping `"`, `\`, `` ` `` and `$`; `#` comments).
fn systemd_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains('='))
        .map(|line| {
            let (key, raw) = line.split_once('=').unwrap();
            let value = match raw.strip_prefix('"') {
                Some(quoted) => {
                    let mut out = String::new();
                    let mut chars = quoted.chars();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                let next = chars.next().unwrap();
                                if !matches!(next, '"' | '\\' | '`' | '$') {
                                    out.push('\\');
                                }
                                out.push(next);
                            }
                            '"' => break,
                            c => out.push(c),
                        }
                    }
                    out
                }
                None => raw.trim_end().to_owned(),
            };
            (key.to_owned(), value)
        })
        .collect()
}

/// The variables a Compose env file defines: `KEY=value` or `KEY='value'`.
fn compose_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains('='))
        .map(|line| {
            let (key, raw) = line.split_once('=').unwrap();
            let value = raw
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(raw);
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Keys defined more than once.
fn twice(keys: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    keys.iter()
        .filter(|key| !seen.insert(key.as_str()))
        .cloned()
        .collect()
}

#[test]
fn secrets_go_only_to_private_files_and_every_variable_is_defined_once() {
    let host = OpenclawHost::new();
    let script = host.script("secrets.lua", SECRETS);
    for format in FORMATS {
        let dir = tempfile::tempdir().unwrap();
        let output = host.reef(&[
            "export",
            "--format",
            format,
            &script,
            "--output",
            dir.path().to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{format}: {}",
            text(&output.stderr)
        );
        let files = files_in(dir.path());
        let holders: Vec<&str> = match *format {
            "systemd" => vec![
                "openclaw-gateway-main.env",
                "openclaw-gateway-rescue.env",
                "openclaw-gateway-ops.env",
            ],
            "launchd" => vec![
                "ai.openclaw.main.plist",
                "ai.openclaw.rescue.plist",
                "ai.openclaw.ops.plist",
            ],
            "compose" => vec!["main.env", "rescue.env", "ops.env"],
            "kubernetes" => vec!["secrets.secrets.k8s.yaml"],
            _ => vec!["secrets.nv.hcl"],
        };
        for (name, (mode, content)) in &files {
            let secrets: Vec<&&str> = SECRET_VALUES
                .iter()
                .filter(|v| content.contains(**v))
                .collect();
            if holders.contains(&name.as_str()) {
                assert_eq!(*mode, 0o600, "{format}: {name} holds secrets");
            } else {
                assert!(secrets.is_empty(), "{format}: {name} holds {secrets:?}");
            }
        }
        for secret in SECRET_VALUES {
            assert!(
                holders
                    .iter()
                    .any(|name| files.get(*name).is_some_and(|(_, c)| c.contains(secret))),
                "{format}: {secret} is nowhere"
            );
        }
        // No variable is defined twice, openly or as a secret.
        match *format {
            "systemd" => {
                for instance in ["main", "rescue", "ops"] {
                    let unit = &files[&format!("openclaw-gateway-{instance}.service")].1;
                    let mut keys: Vec<String> = unit
                        .lines()
                        .filter_map(|l| l.strip_prefix("Environment="))
                        .map(|l| unit_words(l).concat())
                        .map(|a| a.split('=').next().unwrap().to_owned())
                        .collect();
                    let env_file = &files[&format!("openclaw-gateway-{instance}.env")].1;
                    keys.extend(systemd_env_file(env_file).into_iter().map(|(k, _)| k));
                    assert_eq!(twice(&keys), Vec::<String>::new(), "{instance}: {keys:?}");
                    assert!(
                        unit.contains(&format!(
                            "EnvironmentFile=-{}/.openclaw-{instance}/gateway.systemd.env",
                            host.home.display()
                        )),
                        "{unit}"
                    );
                }
            }
            "launchd" => {
                for (name, (mode, plist)) in &files {
                    assert_eq!(*mode, 0o600, "{name}");
                    let keys: Vec<String> = plist
                        .lines()
                        .skip_while(|l| !l.contains("<key>EnvironmentVariables</key>"))
                        .skip(2)
                        .take_while(|l| *l != "  </dict>")
                        .filter_map(|l| l.trim().strip_prefix("<key>"))
                        .map(str::to_owned)
                        .collect();
                    assert_eq!(twice(&keys), Vec::<String>::new(), "{name}: {keys:?}");
                    assert_eq!(keys.len(), plist_launch(plist).1.len(), "{name}");
                }
            }
            "compose" => {
                let compose = &files["compose.yaml"].1;
                for service in ["main", "rescue", "ops"] {
                    let block = compose.split(&format!("\n  {service}:\n")).nth(1).unwrap();
                    let mut keys: Vec<String> = block
                        .lines()
                        .skip_while(|l| *l != "    environment:")
                        .skip(1)
                        .take_while(|l| l.starts_with("      "))
                        .map(|l| l.trim().split(':').next().unwrap().to_owned())
                        .collect();
                    let env_file = &files[&format!("{service}.env")].1;
                    keys.extend(compose_env_file(env_file).into_iter().map(|(k, _)| k));
                    assert_eq!(twice(&keys), Vec::<String>::new(), "{service}: {keys:?}");
                }
                assert!(
                    files["main.env"].1.contains("# OPENCLAW_GATEWAY_TOKEN="),
                    "the token's line to fill in"
                );
                assert!(
                    !files["rescue.env"].1.contains("# OPENCLAW_GATEWAY_TOKEN="),
                    "rescue's token is the topology's"
                );
            }
            "kubernetes" => {
                let manifests = &files["secrets.k8s.yaml"].1;
                for deployment in manifests.split("kind: Deployment").skip(1) {
                    let names: Vec<String> = deployment
                        .lines()
                        .filter_map(|l| l.strip_prefix("            - name: "))
                        .map(str::to_owned)
                        .collect();
                    assert_eq!(twice(&names), Vec::<String>::new(), "{names:?}");
                }
                assert!(
                    manifests.contains(
                        "- name: ANTHROPIC_API_KEY\n              valueFrom:\n                secretKeyRef:\n                  name: \"secrets-main-env\""
                    ),
                    "{manifests}"
                );
            }
            _ => {
                let job = &files["secrets.nomad.hcl"].1;
                for group in job.split("  group ").skip(1) {
                    let mut keys: Vec<String> = group
                        .lines()
                        .skip_while(|l| *l != "      env {")
                        .skip(1)
                        .take_while(|l| *l != "      }")
                        .map(|l| l.trim().split(' ').next().unwrap().to_owned())
                        .collect();
                    let data = group
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("data        = "))
                        .unwrap();
                    let template = hcl_unquote(data);
                    keys.extend(
                        template
                            .trim_start_matches(|c| c != '}')
                            .split('\n')
                            .filter_map(|l| l.trim_start_matches('}').split('=').next())
                            .map(str::to_owned),
                    );
                    assert_eq!(twice(&keys), Vec::<String>::new(), "{keys:?}");
                }
            }
        }
        // A second export keeps what the owner filled in, and says what it lacks.
        if let Some(name) = holders.first().filter(|_| *format != "launchd") {
            let path = dir.path().join(name);
            std::fs::write(&path, "# emptied by its owner\n").unwrap();
            let again = host.reef(&[
                "export",
                "--format",
                format,
                &script,
                "--output",
                dir.path().to_str().unwrap(),
            ]);
            assert!(again.status.success());
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                "# emptied by its owner\n"
            );
            let report = text(&again.stdout);
            assert!(
                report.contains(&format!("kept the existing {}", path.display()))
                    && report.contains("it lacks"),
                "{format}: {report}"
            );
        }
    }
}

#[test]
fn install_writes_private_units_and_env_files_and_keeps_filled_in_ones() {
    use std::os::unix::fs::MetadataExt;
    let host = OpenclawHost::new();
    let script = host.script("secrets.lua", SECRETS);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o777;

    let dry = host.reef(&["install", "--target", "systemd", "--dry-run", &script]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let printed = text(&dry.stdout);
    for secret in SECRET_VALUES {
        assert!(!printed.contains(secret), "the dry run prints {secret}");
    }
    let env_file = host.home.join(".openclaw-main/gateway.systemd.env");
    assert!(printed.contains(&format!("# ==> {} (secrets, 0600", env_file.display())));
    assert!(
        printed.contains(&format!("# ANTHROPIC_API_KEY={PLACEHOLDER}")),
        "{printed}"
    );
    assert!(!host.home.join(".config").exists() && !env_file.exists());

    let installed = host.reef(&["install", "--target", "systemd", &script]);
    assert!(installed.status.success(), "{}", text(&installed.stderr));
    let units = host.home.join(".config/systemd/user");
    for unit in ["main", "rescue", "ops"] {
        let path = units.join(format!("openclaw-gateway-{unit}.service"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(
            SECRET_VALUES.iter().all(|s| !content.contains(s)),
            "{content}"
        );
    }
    assert_eq!(mode(&env_file), 0o600);
    assert_eq!(mode(env_file.parent().unwrap()), 0o700);
    assert_eq!(
        systemd_env_file(&std::fs::read_to_string(&env_file).unwrap()),
        [(
            "ANTHROPIC_API_KEY".to_owned(),
            "sk-ant-main-value".to_owned()
        )]
    );
    // The owner's edits stay; a unit reef wrote is rewritten, still 0600.
    std::fs::write(&env_file, "ANTHROPIC_API_KEY=rotated\n").unwrap();
    let unit = units.join("openclaw-gateway-main.service");
    std::fs::set_permissions(&unit, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let again = host.reef(&["install", "--target", "systemd", &script]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "ANTHROPIC_API_KEY=rotated\n"
    );
    assert!(
        text(&again.stdout).contains(&format!("kept the existing {}", env_file.display())),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(mode(&unit), 0o600);

    // launchd reads no env file: the agent keeps the secret, 0600, and says so.
    let agents = host.reef(&["install", "--target", "launchd", &script]);
    assert!(agents.status.success(), "{}", text(&agents.stderr));
    let plist = host
        .home
        .join("Library/LaunchAgents/ai.openclaw.main.plist");
    assert_eq!(mode(&plist), 0o600);
    assert!(
        std::fs::read_to_string(&plist)
            .unwrap()
            .contains("sk-ant-main-value")
    );
    assert!(
        text(&agents.stderr).contains("`main`: launchd reads no env file"),
        "{}",
        text(&agents.stderr)
    );
}

/// Secret values that turn into structure where they are not escaped: a directive, quotes,
/// templates, specifiers, YAML.
const HOSTILE_SECRETS: &[(&str, &str)] = &[
    ("EVIL_TOKEN", "x\nExecStartPre=/bin/sh"),
    ("QUOTED_SECRET", "say \"hi\" 'q' \\ back\ttab"),
    ("EXPANDED_KEY", "${X} $HOME $(Y) %h %{z} $$ `id`"),
    ("YAML_PASSWORD", "a: b # c\n- d &e *f"),
];

/// A runtime-openclaw gateway `hostile` with `secrets` and the plain [`HOSTILE`] values as env
/// and as arguments.
fn hostile_openclaw_script(secrets: &[(&str, &str)]) -> String {
    let env: Vec<String> = HOSTILE
        .iter()
        .chain(secrets)
        .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_string(v)))
        .collect();
    let args: Vec<String> = HOSTILE.iter().map(|(_, v)| lua_string(v)).collect();
    format!(
        "reef.gateway {{\n  name = \"hostile\", profile = \"hostile\", port = 18789, runtime = \"openclaw\",\n  args = {{ {} }},\n  env = {{ {} }},\n}}\n",
        args.join(", "),
        env.join(", ")
    )
}

/// Exports the hostile openclaw gateway with `secrets` as `format` into a directory.
fn export_hostile_openclaw(
    host: &OpenclawHost,
    format: &str,
    secrets: &[(&str, &str)],
) -> (tempfile::TempDir, Output) {
    let script = host.script("hostile.lua", &hostile_openclaw_script(secrets));
    let dir = tempfile::tempdir().unwrap();
    let output = host.reef(&[
        "export",
        "--format",
        format,
        &script,
        "--output",
        dir.path().to_str().unwrap(),
    ]);
    (dir, output)
}

#[test]
fn hostile_values_and_secrets_read_back_exactly_from_an_openclaw_unit() {
    let host = OpenclawHost::new();
    // A line break cannot be in a systemd env file: refused, naming the field, not the value.
    let (_, refused) = export_hostile_openclaw(&host, "systemd", HOSTILE_SECRETS);
    assert_eq!(refused.status.code(), Some(3));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("`hostile`") && stderr.contains("env.EVIL_TOKEN"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ExecStartPre"),
        "the value is shown: {stderr}"
    );

    let secrets: Vec<(&str, &str)> = HOSTILE_SECRETS[1..3].to_vec();
    let (dir, output) = export_hostile_openclaw(&host, "systemd", &secrets);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let unit =
        std::fs::read_to_string(dir.path().join("openclaw-gateway-hostile.service")).unwrap();
    let settings = [
        "Description",
        "After",
        "Wants",
        "StartLimitBurst",
        "StartLimitIntervalSec",
        "ExecStart",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "TimeoutStopSec",
        "TimeoutStartSec",
        "SuccessExitStatus",
        "OOMPolicy",
        "KillMode",
        "EnvironmentFile",
        "Environment",
        "WantedBy",
    ];
    for line in unit.lines() {
        let structural = line.is_empty()
            || line.starts_with('#')
            || line.starts_with('[')
            || line
                .split_once('=')
                .is_some_and(|(key, _)| settings.contains(&key));
        assert!(structural, "an injected line: {line:?}\n{unit}");
    }
    let (argv, env, _) = unit_launch(&unit);
    let args: Vec<&str> = HOSTILE.iter().map(|(_, v)| *v).collect();
    assert_eq!(argv[argv.len() - args.len()..], args);
    for (key, value) in HOSTILE {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    for (key, _) in &secrets {
        assert!(!env.contains_key(*key), "{key} in the unit");
    }
    let env_file =
        std::fs::read_to_string(dir.path().join("openclaw-gateway-hostile.env")).unwrap();
    let read: BTreeMap<String, String> = systemd_env_file(&env_file).into_iter().collect();
    for (key, value) in &secrets {
        assert_eq!(read.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    if validator("systemd-analyze").is_some() {
        let verified = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("openclaw-gateway-hostile.service"))
            .output()
            .unwrap();
        let complaints: Vec<String> = text(&verified.stderr)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert!(
            verified.status.success() && complaints.is_empty(),
            "{complaints:#?}"
        );
    }
}

#[test]
fn hostile_secrets_read_back_exactly_from_compose_env_files() {
    let host = OpenclawHost::new();
    // A line break, a quote, a backslash and `${` cannot be in every Compose's env file.
    for refused in HOSTILE_SECRETS {
        let (_, output) = export_hostile_openclaw(&host, "compose", &[*refused]);
        assert_eq!(output.status.code(), Some(3), "{}", refused.0);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(&format!("env.{}", refused.0)), "{stderr}");
        assert!(!stderr.contains(refused.1), "the value is shown: {stderr}");
    }
    let secrets = [
        ("EXPANDED_KEY", "$HOME $(Y) %h %{z} $$ `id` \"q\""),
        ("PLAIN_TOKEN", "a: b # c &e *f"),
    ];
    let (dir, output) = export_hostile_openclaw(&host, "compose", &secrets);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let env_file = std::fs::read_to_string(dir.path().join("hostile.env")).unwrap();
    let read: BTreeMap<String, String> = compose_env_file(&env_file).into_iter().collect();
    for (key, value) in &secrets {
        assert_eq!(read.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    if validator("docker-compose").is_some() {
        let config = Command::new("docker-compose")
            .args(["-f", "compose.yaml", "config"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(config.status.success(), "{}", text(&config.stderr));
        let resolved = dir.path().join("resolved.yaml");
        std::fs::write(&resolved, &config.stdout).unwrap();
        let parsed = python_json(
            "yaml",
            "compose = yaml.safe_load(open(sys.argv[1]))\n\
             print(json.dumps(compose['services']['hostile']['environment']))",
            &resolved,
        );
        if let Some(parsed) = parsed {
            for (key, value) in secrets.iter().chain(HOSTILE) {
                if *key == "ESCAPE" {
                    continue; // docker-compose v1 prints ESC in a form YAML reads differently
                }
                assert_eq!(
                    parsed[key].as_str().map(unexpanded).as_deref(),
                    Some(*value),
                    "{key}"
                );
            }
        }
    }
}

#[test]
fn hostile_secrets_read_back_exactly_from_kubernetes_secrets() {
    let host = OpenclawHost::new();
    let (dir, output) = export_hostile_openclaw(&host, "kubernetes", HOSTILE_SECRETS);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let manifests = dir.path().join("hostile.k8s.yaml");
    let secrets = dir.path().join("hostile.secrets.k8s.yaml");
    let parsed = python_json(
        "yaml",
        "docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
         (secret,) = [d for d in docs if d and d['kind'] == 'Secret']\n\
         print(json.dumps(secret['stringData']))",
        &secrets,
    );
    if let Some(parsed) = parsed {
        for (key, value) in HOSTILE_SECRETS {
            assert_eq!(parsed[key], *value, "{key}");
        }
    }
    let references = python_json(
        "yaml",
        "docs = list(yaml.safe_load_all(open(sys.argv[1])))\n\
         (deployment,) = [d for d in docs if d['kind'] == 'Deployment']\n\
         (container,) = deployment['spec']['template']['spec']['containers']\n\
         print(json.dumps({e['name']: e for e in container['env']}))",
        &manifests,
    );
    if let Some(references) = references {
        for (key, _) in HOSTILE_SECRETS {
            assert!(references[key].get("value").is_none(), "{key} has a value");
            assert_eq!(
                references[key]["valueFrom"]["secretKeyRef"]["name"], "hostile-hostile-env",
                "{key}"
            );
        }
    }
    if validator("kubernetes-validate").is_some() {
        for file in [&manifests, &secrets] {
            let checked = Command::new("kubernetes-validate")
                .args(["--strict", "-k", "1.30.0"])
                .arg(file)
                .output()
                .unwrap();
            let all = format!("{}{}", text(&checked.stdout), text(&checked.stderr));
            assert!(checked.status.success() && !all.contains("ERROR"), "{all}");
        }
    }
}

#[test]
fn hostile_secrets_read_back_exactly_from_a_nomad_variable_specification() {
    let host = OpenclawHost::new();
    let (dir, output) = export_hostile_openclaw(&host, "nomad", HOSTILE_SECRETS);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let specification = std::fs::read_to_string(dir.path().join("hostile.nv.hcl")).unwrap();
    let items: BTreeMap<String, String> = specification
        .lines()
        .skip_while(|l| *l != "items {")
        .skip(1)
        .take_while(|l| *l != "}")
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| {
            let (key, value) = l.trim().split_once(" = ").unwrap();
            (key.to_owned(), hcl_unquote(value))
        })
        .collect();
    for (key, value) in HOSTILE_SECRETS {
        assert_eq!(
            items.get(&format!("hostile_{key}")).map(String::as_str),
            Some(*value),
            "{key}"
        );
    }
    // The job reads them through the template, never as env values.
    let job = std::fs::read_to_string(dir.path().join("hostile.nomad.hcl")).unwrap();
    for (key, value) in HOSTILE_SECRETS {
        assert!(
            job.contains(&format!(
                "{key}={{{{ index . \\\"hostile_{key}\\\" | toJSON }}}}"
            )),
            "{key}:\n{job}"
        );
        assert!(
            !job.contains(&format!("\n        {key} = ")),
            "{key} in env"
        );
        assert!(!job.contains(value), "{key}'s value in the job");
    }
    // python-hcl2 keeps string literals as written: the items, unquoted, are the values.
    let parsed = python_json(
        "hcl2",
        "spec = hcl2.load(open(sys.argv[1]))\n\
         (items,) = spec['items']\n\
         print(json.dumps({k: v for k, v in items.items() if not k.startswith('__')}))",
        &dir.path().join("hostile.nv.hcl"),
    );
    if let Some(parsed) = parsed {
        let parsed = parsed.as_object().unwrap();
        assert_eq!(parsed.len(), HOSTILE_SECRETS.len(), "{parsed:?}");
        for (key, value) in HOSTILE_SECRETS {
            let literal = parsed[&format!("hostile_{key}")].as_str().unwrap();
            assert_eq!(hcl_unquote(literal), *value, "{key}");
        }
    }
}

#[test]
fn hostile_secrets_read_back_exactly_from_a_launchd_agent() {
    let host = OpenclawHost::new();
    let (dir, output) = export_hostile_openclaw(&host, "launchd", HOSTILE_SECRETS);
    // XML 1.0 cannot hold ESC (one of the plain values): refused.
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    drop(dir);
    let script = hostile_openclaw_script(HOSTILE_SECRETS).replace("\\027[31mred", "red");
    let script = host.script("hostile.lua", &script);
    let dir = tempfile::tempdir().unwrap();
    let output = host.reef(&[
        "export",
        "--format",
        "launchd",
        &script,
        "--output",
        dir.path().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let path = dir.path().join("ai.openclaw.hostile.plist");
    let (_, env) = plist_launch(&std::fs::read_to_string(&path).unwrap());
    for (key, value) in HOSTILE_SECRETS {
        assert_eq!(env.get(*key).map(String::as_str), Some(*value), "{key}");
    }
    let parsed = python_json(
        "plistlib",
        "agent = plistlib.load(open(sys.argv[1], 'rb'))\n\
         print(json.dumps([agent['ExitTimeOut'], agent['ThrottleInterval'], agent['Umask'], agent['ProcessType'], agent['EnvironmentVariables']]))",
        &path,
    );
    if let Some(parsed) = parsed {
        assert_eq!(parsed[0], 20);
        assert_eq!(parsed[1], 10);
        assert_eq!(parsed[2], 63);
        assert_eq!(parsed[3], "Interactive");
        for (key, value) in HOSTILE_SECRETS {
            assert_eq!(parsed[4][key], *value, "{key}");
        }
    }
}
