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

/// Undoes systemd's quoting: words split on spaces outside double quotes, `\\` and `\"`
/// inside them. Specifiers (`%%`) and, in ExecStart, `$$` are left to the caller.
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
                    '\\' => word.push(chars.next().expect("an escaped character")),
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
    reef_in(&[
        "export",
        "--format",
        "systemd",
        "runtimes.lua",
        "--output",
        units.path().to_str().unwrap(),
    ]);

    let reef_binary = Path::new(env!("CARGO_BIN_EXE_reef"));
    for instance in &plan.topology.instances {
        let config = launch::read_config(&instance.config_path);
        // What the supervisor spawns.
        let up = launch::launch(instance, reef_binary, &environment, config.as_ref());

        let json: serde_json::Value = serde_json::from_slice(
            &reef_in(&["env", &instance.name, "runtimes.lua", "--json"]).stdout,
        )
        .unwrap();
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
        assert_eq!(argv, hosted.argv, "{}", instance.name);
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
            launch::read_config(&instance.config_path).as_ref(),
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
