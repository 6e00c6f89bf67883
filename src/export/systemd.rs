//! systemd user units: one per instance, named as `openclaw gateway install` names its own (for
//! runtime openclaw, exactly the unit it writes: [`super::openclaw`]), or one unit that runs
//! `reef up` itself. Every unit is written 0600, as OpenClaw writes its own; secrets go to the
//! instance's env file, never into the unit.
//!
//! systemd 252 cannot express two things reef does, and the export says so: a growing restart
//! delay (units restart after a flat `RestartSec=`), and waiting for a dependency to be ready
//! (`depends_on` becomes `After=`/`Wants=`, start order only).
//!
//! Quoting follows systemd.syntax(7): `Environment=` assignments and `ExecStart=` words are
//! double-quoted with C escapes, `%` doubled (specifiers) and, in `ExecStart=`, `$` doubled
//! (variables). Other settings cannot be quoted: a control character there, whitespace at an
//! end or a trailing backslash (a line continuation) is refused, never written.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{
    Export, ExportError, File, Format, Options, PRIVATE, Problem, SecretFile, argv_field,
    check_chars, check_env, env_field, host_launch, is_identifier, one_line, openclaw, secrets,
};
use crate::topology::{Backoff, Instance, RestartPolicy, Runtime};

/// The first line of every unit reef writes.
const MARKER: &str = "# Written by reef";

/// Prefixes systemd reads off the first word of `ExecStart=`, quoted or not.
const EXEC_PREFIXES: &[char] = &['-', '@', ':', '+', '!', '|'];

/// A double-quoted string as systemd unquotes it: `"`, `\` and control characters as C
/// escapes. What systemd expands afterwards (`%`, `$`) is the caller's to escape.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quotes one word for `ExecStart=`: `$` and `%` are escaped; a word with spaces, quotes,
/// backslashes, control characters or `;` (a command separator) is quoted.
fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped.is_empty()
        || escaped.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '\'' | ';')
        })
    {
        quoted(&escaped)
    } else {
        escaped
    }
}

/// An `Environment=` line: the assignment quoted, specifiers escaped.
fn environment(key: &str, value: &str) -> String {
    format!(
        "Environment={}",
        quoted(&format!("{key}={value}").replace('%', "%%"))
    )
}

/// Checks the program of `ExecStart=`: systemd takes a leading `-@:+!|` for a prefix and
/// refuses quotes, backslashes and control characters in it; its `$` would not be expanded
/// while the argv[0] it passes would be, so `$` is refused too.
fn check_program(
    program: &str,
    refuse: impl Fn(Problem) -> ExportError,
) -> Result<(), ExportError> {
    check_chars(program, |_| true, &refuse)?;
    let first = program.chars().next().filter(|c| EXEC_PREFIXES.contains(c));
    let unsafe_char = program
        .chars()
        .find(|&c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '$'));
    match first.or(unsafe_char) {
        Some(c) => Err(refuse(Problem::Executable(c))),
        None => Ok(()),
    }
}

/// Checks a value for a setting systemd takes unquoted (a path): no control character, no
/// whitespace at either end (stripped), no trailing backslash (it continues the line).
fn check_unquoted(value: &str, refuse: impl Fn(Problem) -> ExportError) -> Result<(), ExportError> {
    check_chars(value, |c| !c.is_control(), &refuse)?;
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(refuse(Problem::EdgeWhitespace));
    }
    if value.ends_with('\\') {
        return Err(refuse(Problem::TrailingBackslash));
    }
    Ok(())
}

/// The words of `ExecStart=` for `argv`, each checked; `refuse` names word `index` in errors.
fn exec_line(
    argv: &[String],
    refuse: impl Fn(usize, &str, Problem) -> ExportError,
) -> Result<String, ExportError> {
    let mut words = Vec::with_capacity(argv.len());
    for (index, word) in argv.iter().enumerate() {
        if index == 0 {
            check_program(word, |problem| refuse(index, word, problem))?;
        } else {
            check_chars(word, |_| true, |problem| refuse(index, word, problem))?;
        }
        words.push(exec_word(word));
    }
    Ok(words.join(" "))
}

/// systemd's word for a restart policy.
pub(crate) fn restart(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "no",
    }
}

/// One unit per instance, named as OpenClaw names its own (`openclaw-gateway-PROFILE.service`):
/// for runtime openclaw the unit OpenClaw's installer writes ([`openclaw_unit`]), for the others
/// reef's own ([`reef_unit`]). Secrets go to the instance's env file, `gateway.systemd.env` in
/// its state dir (where OpenClaw's installer keeps its own), referenced by `EnvironmentFile=`.
pub fn per_instance(
    instances: &[&Instance],
    options: &Options,
    export: &mut Export,
) -> Result<(), ExportError> {
    for instance in instances {
        for key in instance.env.keys().filter(|key| !is_identifier(key)) {
            export.warnings.push(format!(
                "`{}`: systemd ignores {}: it takes variable names of letters, digits and '_' only",
                one_line(&instance.name),
                one_line(&env_field(key))
            ));
        }
        let dependencies = dependency_units(instance, instances);
        if !dependencies.is_empty() {
            let name = one_line(&instance.name);
            let one = dependencies.len() == 1;
            export.warnings.push(format!(
                "`{name}`: depends_on {} becomes After=/Wants= {}: systemd starts `{name}` as soon as {} started, \
                 not once {} ready (healthy) as `reef up` does",
                one_line(&instance.depends_on.join(", ")),
                dependencies.join(" "),
                if one { "that unit has" } else { "those units have" },
                if one { "its gateway is" } else { "their gateways are" },
            ));
        }
        let secrets = env_file(instance, &host_launch(instance, options).env)?;
        let content = match instance.runtime {
            Runtime::Openclaw => openclaw_unit(
                instance,
                &dependencies,
                secrets.as_ref(),
                options,
                &mut export.warnings,
            )?,
            Runtime::Builtin | Runtime::Command => {
                reef_unit(instance, &dependencies, secrets.as_ref(), options)?
            }
        };
        export
            .files
            .push(File::new(instance.systemd_unit.clone(), content, PRIVATE));
        export.secret_files.extend(secrets);
    }
    if instances
        .iter()
        .any(|i| i.restart.policy != RestartPolicy::Never)
    {
        export.warnings.push(
            "systemd 252 has no growing restart delay (RestartSteps= needs systemd 254): the units restart \
             after a flat RestartSec=, so reef's backoff (doubling from restart.backoff.initial up to \
             restart.backoff.max) is not expressed"
                .to_owned(),
        );
    }
    Ok(())
}

/// The units of the instance's dependencies among those exported.
fn dependency_units(instance: &Instance, all: &[&Instance]) -> Vec<String> {
    instance
        .depends_on
        .iter()
        .filter_map(|name| all.iter().find(|i| &i.name == name))
        .map(|i| i.systemd_unit.clone())
        .collect()
}

/// The instance's env file for the secrets of `env`, if it has any: `gateway.systemd.env` in
/// its state dir, 0600.
fn env_file(
    instance: &Instance,
    env: &BTreeMap<String, String>,
) -> Result<Option<SecretFile>, ExportError> {
    let (_, secrets) = secrets::split(env);
    if secrets.is_empty() {
        return Ok(None);
    }
    let path = instance.state_dir.join(openclaw::SYSTEMD_ENV_FILE);
    let comment = [
        format!(
            "Written by reef: the secret variables of gateway `{}` ({}).",
            instance.name,
            secrets::fields(&secrets)
        ),
        format!(
            "Its unit {} reads this file ({}); keep it private (0600).",
            instance.systemd_unit,
            path.display()
        ),
    ];
    Ok(Some(SecretFile {
        name: format!(
            "{}.env",
            instance
                .systemd_unit
                .strip_suffix(".service")
                .unwrap_or(&instance.systemd_unit)
        ),
        host_path: Some(path),
        content: secrets::systemd_env_file(instance, &secrets, &comment)?,
        printed: secrets::systemd_env_file(instance, &secrets::redacted(&secrets), &comment)?,
        keys: secrets.keys().cloned().collect(),
    }))
}

/// `EnvironmentFile=` for the instance's env file: optional (`-`), the path's glob characters
/// escaped and specifiers doubled, exactly as OpenClaw's installer writes it (its audit
/// compares the line).
fn environment_file(instance: &Instance, file: &SecretFile) -> Result<String, ExportError> {
    let path = file
        .host_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    check_unquoted(&path, |problem| {
        ExportError::new(Format::Systemd, Some(instance), "state_dir", &path, problem)
    })?;
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '?' | '*' | '(' | ')' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    Ok(format!("EnvironmentFile=-{}", escaped.replace('%', "%%")))
}

/// The lines every unit starts with: reef's marker (what `reef install` overwrites) and advice.
fn heading(instance: &Instance, options: &Options, what: &str) -> String {
    format!(
        "{MARKER} from {}; instance `{}`{what}.\n\
         # Change the topology and run `reef install` again rather than editing this file.\n",
        one_line(&options.script.display().to_string()),
        one_line(&instance.name)
    )
}

/// reef's own unit (runtime builtin or command): the launch `reef up` runs, its working
/// directory, the topology's restart and stop policies.
fn reef_unit(
    instance: &Instance,
    dependencies: &[String],
    secrets: Option<&SecretFile>,
    options: &Options,
) -> Result<String, ExportError> {
    let refuse = |field: String, value: &str, problem| {
        ExportError::new(Format::Systemd, Some(instance), field, value, problem)
    };
    let launch = host_launch(instance, options);
    let exec = exec_line(&launch.argv, |index, word, problem| {
        refuse(argv_field(instance, &launch.argv, index), word, problem)
    })?;
    let (plain, _) = secrets::split(&launch.env);
    check_env(Format::Systemd, instance, &plain, |_| true)?;
    check_chars(
        &instance.name,
        |c| !c.is_control(),
        |problem| refuse("name".into(), &instance.name, problem),
    )?;
    let cwd = launch.cwd.display().to_string();
    check_unquoted(&cwd, |problem| refuse("state_dir".into(), &cwd, problem))?;
    let ordered: String = dependencies.iter().map(|d| format!(" {d}")).collect();
    let mut unit = heading(instance, options, "");
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description=OpenClaw gateway {} (profile {}, port {})",
        instance.name.replace('%', "%%"),
        instance.profile,
        instance.port
    );
    let _ = writeln!(unit, "After=network-online.target{ordered}");
    let _ = writeln!(unit, "Wants=network-online.target{ordered}");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "Type=simple");
    let _ = writeln!(unit, "ExecStart={exec}");
    if let Some(file) = secrets {
        let _ = writeln!(unit, "{}", environment_file(instance, file)?);
    }
    for (key, value) in &plain {
        let _ = writeln!(unit, "{}", environment(key, value));
    }
    // `-`: a state dir that does not exist yet is no error; the gateway creates it.
    let _ = writeln!(unit, "WorkingDirectory=-{}", cwd.replace('%', "%%"));
    let _ = writeln!(unit, "Restart={}", restart(instance.restart.policy));
    let _ = writeln!(
        unit,
        "RestartSec={}",
        instance.restart.backoff.initial.max(0.1)
    );
    let _ = writeln!(
        unit,
        "# 78 is a configuration error: restarting would only loop."
    );
    let _ = writeln!(unit, "RestartPreventExitStatus=78");
    let _ = writeln!(unit, "KillMode=mixed");
    let _ = writeln!(unit, "KillSignal={}", instance.stop.signal);
    let _ = writeln!(unit, "TimeoutStopSec={}", instance.stop.timeout);
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Install]");
    let _ = writeln!(unit, "WantedBy=default.target");
    Ok(unit)
}

/// An `Environment=` line as OpenClaw's installer writes it: the assignment bare when systemd
/// reads it back unchanged, else quoted with C escapes; specifiers doubled either way.
fn openclaw_environment(key: &str, value: &str) -> String {
    let assignment = format!("{key}={value}").replace('%', "%%");
    let bare = !assignment
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '\''));
    if bare {
        format!("Environment={assignment}")
    } else {
        format!("Environment={}", quoted(&assignment))
    }
}

/// The unit `openclaw gateway install` writes for the instance's profile (OpenClaw 2026.9.6,
/// `systemd-unit.ts`): its fixed policy in its order, Node on the package's entry, the
/// installer's environment plus the launch's own variables, no working directory. Where the
/// topology sets a restart policy, backoff, stop timeout or signal of its own, the unit carries
/// the topology's value and a warning says so.
fn openclaw_unit(
    instance: &Instance,
    dependencies: &[String],
    secrets: Option<&SecretFile>,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Result<String, ExportError> {
    let refuse = |field: String, value: &str, problem| {
        ExportError::new(Format::Systemd, Some(instance), field, value, problem)
    };
    let launch = host_launch(instance, options);
    let (program, program_len) = openclaw::program_words(instance, &launch.argv, options, warnings);
    let argv: Vec<String> = program
        .iter()
        .chain(&launch.argv[program_len..])
        .cloned()
        .collect();
    let words = program.len();
    let exec = exec_line(&argv, |index, word, problem| {
        let field = if index < words && words != program_len {
            "the OpenClaw installation's path".to_owned()
        } else {
            argv_field(instance, &launch.argv, index + program_len - words)
        };
        refuse(field, word, problem)
    })?;
    let env: Vec<(String, String)> =
        openclaw::environment(instance, &launch.env, options, openclaw::Manager::Systemd)
            .into_iter()
            .filter(|(key, _)| !secrets::is_secret(key))
            .collect();
    let plain: BTreeMap<String, String> = env.iter().cloned().collect();
    check_env(Format::Systemd, instance, &plain, |_| true)?;
    openclaw::differences(instance, openclaw::Manager::Systemd, warnings);

    let ordered: String = dependencies.iter().map(|d| format!(" {d}")).collect();
    let restart_sec = if instance.restart.backoff == Backoff::default() {
        openclaw::RESTART_SEC
    } else {
        instance.restart.backoff.initial.max(0.1)
    };
    let mut unit = heading(
        instance,
        options,
        ": the unit `openclaw gateway install` writes for its profile",
    );
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description={}",
        openclaw::description(&instance.profile).replace('%', "%%")
    );
    let _ = writeln!(unit, "After=network-online.target{ordered}");
    let _ = writeln!(unit, "Wants=network-online.target{ordered}");
    let _ = writeln!(unit, "StartLimitBurst=10");
    let _ = writeln!(unit, "StartLimitIntervalSec=300");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "ExecStart={exec}");
    let _ = writeln!(unit, "Restart={}", restart(instance.restart.policy));
    let _ = writeln!(unit, "RestartSec={restart_sec}");
    let _ = writeln!(unit, "RestartPreventExitStatus=78");
    let _ = writeln!(unit, "TimeoutStopSec={}", instance.stop.timeout);
    let _ = writeln!(unit, "TimeoutStartSec=30");
    let _ = writeln!(unit, "SuccessExitStatus=0 143");
    let _ = writeln!(unit, "OOMPolicy=continue");
    let _ = writeln!(unit, "KillMode=mixed");
    if instance.stop.signal != "SIGTERM" {
        let _ = writeln!(unit, "KillSignal={}", instance.stop.signal);
    }
    if let Some(file) = secrets {
        let _ = writeln!(unit, "{}", environment_file(instance, file)?);
    }
    for (key, value) in &env {
        let _ = writeln!(unit, "{}", openclaw_environment(key, value));
    }
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Install]");
    let _ = writeln!(unit, "WantedBy=default.target");
    Ok(unit)
}

/// The name of the unit that runs `reef up` for a topology.
pub fn supervisor_unit_name(topology: &str) -> String {
    format!("reef-{}.service", super::dns_label(topology))
}

/// One unit that runs `reef up` on the script. `KillMode=process`: systemd signals only reef,
/// which stops its gateways itself on SIGTERM; if reef crashes, systemd restarts it and the
/// new reef adopts the gateways that kept running.
pub fn supervisor(options: &Options) -> Result<File, ExportError> {
    let script = options.script.display().to_string();
    let reef = options.binaries.reef.display().to_string();
    let refuse = |field: &str, value: &str, problem| {
        ExportError::new(Format::Systemd, None, field, value, problem)
    };
    let exec = exec_line(
        &[reef, "up".into(), script.clone()],
        |index, word, problem| {
            let field = if index == 0 {
                "reef's binary"
            } else {
                "the script's path"
            };
            refuse(field, word, problem)
        },
    )?;
    check_chars(
        &options.topology,
        |c| !c.is_control(),
        |problem| refuse("the topology's name", &options.topology, problem),
    )?;
    let mut unit = String::new();
    let _ = writeln!(
        unit,
        "{MARKER} from {}; runs `reef up` on it.",
        one_line(&script)
    );
    let _ = writeln!(
        unit,
        "# Change the topology and run `reef install --mode supervisor` again rather than editing this file."
    );
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description=reef: OpenClaw gateways of {}",
        options.topology.replace('%', "%%")
    );
    let _ = writeln!(unit, "After=network-online.target");
    let _ = writeln!(unit, "Wants=network-online.target");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "Type=simple");
    let _ = writeln!(unit, "ExecStart={exec}");
    let _ = writeln!(unit, "ExecReload=/bin/kill -HUP $MAINPID");
    let _ = writeln!(unit, "Restart=always");
    let _ = writeln!(unit, "RestartSec=1");
    let _ = writeln!(
        unit,
        "# Only reef is signalled: it stops its gateways itself, and after a crash the next reef adopts them."
    );
    let _ = writeln!(unit, "KillMode=process");
    let _ = writeln!(unit, "TimeoutStopSec=120");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Install]");
    let _ = writeln!(unit, "WantedBy=default.target");
    Ok(File::new(
        supervisor_unit_name(&options.topology),
        unit,
        PRIVATE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testing::{export, instance, options};
    use crate::topology::OneOrMany;

    #[test]
    fn exec_words_are_quoted_and_escaped() {
        assert_eq!(exec_word("/usr/bin/reef"), "/usr/bin/reef");
        assert_eq!(exec_word("a b"), "\"a b\"");
        assert_eq!(exec_word("100%"), "100%%");
        assert_eq!(exec_word("$HOME"), "$$HOME");
        assert_eq!(
            environment("A", "x \"y\" 5%"),
            "Environment=\"A=x \\\"y\\\" 5%%\""
        );
    }

    /// The bug: `x\nExecStartPre=/bin/evil` in an env value or argument put a directive on a
    /// line of its own.
    #[test]
    fn a_newline_in_a_value_is_escaped_not_a_new_directive() {
        assert_eq!(
            environment("EVIL", "x\nExecStartPre=/bin/sh"),
            r#"Environment="EVIL=x\nExecStartPre=/bin/sh""#
        );
        assert_eq!(
            exec_word("x\nExecStartPre=/bin/sh"),
            r#""x\nExecStartPre=/bin/sh""#
        );
        assert_eq!(exec_word("%h $HOME ${X}"), r#""%%h $$HOME $${X}""#);
        assert_eq!(
            exec_word("\"q\" \\ \t\r\u{1b}\u{7f}\u{85}"),
            r#""\"q\" \\ \t\r\x1b\x7f\u0085""#
        );
        assert_eq!(exec_word(""), r#""""#);
        assert_eq!(exec_word(";"), r#"";""#);
    }

    #[test]
    fn paths_systemd_cannot_quote_are_refused_with_instance_and_field() {
        for (path, problem) in [
            ("/tmp/a\nExecStartPre=/bin/sh", Problem::Character('\n')),
            ("/tmp/a\u{1b}", Problem::Character('\u{1b}')),
            ("/tmp/a ", Problem::EdgeWhitespace),
            ("/tmp/a\\", Problem::TrailingBackslash),
        ] {
            let hostile = instance(|spec| {
                spec.name = Some("hostile".into());
                spec.state_dir = Some(path.into());
            });
            let err = export(Format::Systemd, &[&hostile]).unwrap_err();
            assert_eq!(err.instance.as_deref(), Some("hostile"));
            assert_eq!(err.field, "state_dir");
            assert_eq!(err.problem, problem, "{path:?}");
            let message = err.to_string();
            assert!(message.contains("`hostile`") && message.contains("state_dir"));
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn programs_systemd_would_misread_are_refused() {
        for (program, refused) in [
            ("-/bin/true", '-'),
            ("@/bin/true", '@'),
            ("/bin/$x", '$'),
            ("/bin/a\"b", '"'),
            ("/bin/a\nb", '\n'),
        ] {
            let hostile = instance(|spec| {
                spec.command = Some(OneOrMany::Many(vec![program.into(), "-v".into()]));
            });
            let err = export(Format::Systemd, &[&hostile]).unwrap_err();
            assert_eq!(err.field, "command[1]");
            assert_eq!(err.problem, Problem::Executable(refused), "{program:?}");
        }
        // Past the program, anything but a NUL is quoted.
        let hostile = instance(|spec| {
            spec.command = Some(OneOrMany::Many(vec!["/bin/true".into(), "-@$\n".into()]));
        });
        assert!(export(Format::Systemd, &[&hostile]).is_ok());
    }

    #[test]
    fn a_name_is_escaped_in_the_description_or_refused() {
        let percent = instance(|spec| spec.name = Some("50% off".into()));
        let unit = &export(Format::Systemd, &[&percent]).unwrap().files[0].content;
        assert!(unit.contains("\nDescription=OpenClaw gateway 50%% off (profile main"));
        let newline = instance(|spec| spec.name = Some("a\nExecStartPre=/bin/sh".into()));
        let err = export(Format::Systemd, &[&newline]).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.problem),
            ("name", Problem::Character('\n'))
        );
    }

    #[test]
    fn the_supervisor_unit_quotes_the_script_path() {
        let mut options = options();
        options.script = "/srv/a b\n%h$x.lua".into();
        let unit = supervisor(&options).unwrap().content;
        assert!(
            unit.contains("\nExecStart=/usr/bin/reef up \"/srv/a b\\n%%h$$x.lua\"\n"),
            "{unit}"
        );
        assert!(unit.starts_with("# Written by reef from /srv/a b\\n%h$x.lua;"));
    }
}
