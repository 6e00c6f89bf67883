//! launchd agents for macOS: one per instance, labelled as OpenClaw labels its own
//! (`ai.openclaw.PROFILE`); for runtime openclaw, the agent OpenClaw's installer writes. launchd
//! reads no env file, so an agent holding secrets keeps them itself: it is written 0600, printed
//! with placeholders, and a warning says so. Every agent is written 0600.
//!
//! A property list is XML 1.0: markup characters are escaped, tab, newline and carriage
//! return written as character references (a reader would fold a raw `\r`), and the other
//! control characters, which XML 1.0 cannot hold at all, refused.

use std::fmt::Write;

use super::{
    Export, ExportError, File, Format, Options, PRIVATE, argv_field, check_chars, check_env,
    host_launch, one_line, openclaw, secrets,
};
use crate::topology::{Backoff, Instance, RestartPolicy, Runtime};

/// Whether XML 1.0 can hold `c` (its `Char` production).
fn xml_holds(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Element content; the caller has checked every character with [`xml_holds`].
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Text inside `<!-- -->`: one line, and no `--`, which ends nothing but is forbidden there.
fn xml_comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in one_line(text).chars() {
        if c == '-' && out.ends_with('-') {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub fn per_instance(
    instances: &[&Instance],
    options: &Options,
    export: &mut Export,
) -> Result<(), ExportError> {
    for instance in instances {
        if let Some(problem) = crate::profile::macos_service_problem(&instance.profile) {
            export.warnings.push(format!(
                "`{}`: launchd refuses profile `{}` ({problem}); its agent will not load",
                one_line(&instance.name),
                instance.profile
            ));
        }
        if !instance.depends_on.is_empty() {
            export.warnings.push(format!(
                "`{}`: launchd has no start order; depends_on {:?} is not expressed",
                one_line(&instance.name),
                instance.depends_on
            ));
        }
        if instance.restart.policy != RestartPolicy::Never {
            export.warnings.push(format!(
                "`{}`: launchd cannot spare exit 78 (configuration error) from KeepAlive; it is throttled, not stopped",
                one_line(&instance.name)
            ));
        }
        let agent = match instance.runtime {
            Runtime::Openclaw => openclaw_agent(instance, options, &mut export.warnings)?,
            Runtime::Builtin | Runtime::Command => reef_agent(instance, options)?,
        };
        let (_, secret_env) = secrets::split(&agent.env.iter().cloned().collect());
        let name = format!("{}.plist", instance.launchd_label);
        let content = agent.render(&agent.env);
        if secret_env.is_empty() {
            export.files.push(File::new(name, content, PRIVATE));
        } else {
            export.warnings.push(format!(
                "`{}`: launchd reads no env file: its agent holds {} itself, so it is written 0600; \
                 keep it out of backups and version control",
                one_line(&instance.name),
                secrets::fields(&secret_env)
            ));
            export.files.push(File {
                name,
                printed: Some(agent.render(&secrets::redacted_pairs(&agent.env))),
                content,
                mode: PRIVATE,
            });
        }
    }
    Ok(())
}

/// An agent's keys, with its environment apart: it is rendered once with the secrets' values
/// (written) and once with placeholders (printed).
struct Agent {
    /// The XML up to `EnvironmentVariables`.
    head: String,
    /// The variables in the order they are written.
    env: Vec<(String, String)>,
    /// The keys after `EnvironmentVariables`.
    tail: String,
}

impl Agent {
    fn render(&self, env: &[(String, String)]) -> String {
        let mut out = self.head.clone();
        let _ = writeln!(out, "  <key>EnvironmentVariables</key>\n  <dict>");
        for (key, value) in env {
            let _ = writeln!(
                out,
                "    <key>{}</key>\n    <string>{}</string>",
                xml(key),
                xml(value)
            );
        }
        let _ = writeln!(out, "  </dict>");
        out.push_str(&self.tail);
        let _ = writeln!(out, "</dict>");
        let _ = writeln!(out, "</plist>");
        out
    }
}

/// The XML prologue and the opening `<dict>` of an agent, with reef's marker comment.
fn opening(options: &Options, what: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">"#
    );
    let _ = writeln!(
        out,
        "<!-- Written by reef from {}; {}. -->",
        xml_comment(&options.script.display().to_string()),
        xml_comment(what)
    );
    let _ = writeln!(out, r#"<plist version="1.0">"#);
    let _ = writeln!(out, "<dict>");
    out
}

/// Checks what an agent writes against what XML 1.0 can hold: its program's words (named by
/// `field`), its environment, its state dir.
fn check_agent(
    instance: &Instance,
    argv: &[String],
    field: impl Fn(usize) -> String,
    env: &[(String, String)],
) -> Result<(), ExportError> {
    for (index, word) in argv.iter().enumerate() {
        check_chars(word, xml_holds, |problem| {
            ExportError::new(Format::Launchd, Some(instance), field(index), word, problem)
        })?;
    }
    check_env(
        Format::Launchd,
        instance,
        &env.iter().cloned().collect(),
        xml_holds,
    )?;
    let state_dir = instance.state_dir.display().to_string();
    check_chars(&state_dir, xml_holds, |problem| {
        ExportError::new(
            Format::Launchd,
            Some(instance),
            "state_dir",
            &state_dir,
            problem,
        )
    })
}

/// `<key>` and a `<string>`, `<integer>` or boolean.
fn entry(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "  <key>{key}</key>\n  {value}");
}

fn string(text: &str) -> String {
    format!("<string>{}</string>", xml(text))
}

fn program_arguments(out: &mut String, argv: &[String]) {
    let _ = writeln!(out, "  <key>ProgramArguments</key>\n  <array>");
    for word in argv {
        let _ = writeln!(out, "    {}", string(word));
    }
    let _ = writeln!(out, "  </array>");
}

/// The `KeepAlive` of a restart policy: always, after a failure (a non-zero exit), never.
fn keep_alive(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "<true/>",
        RestartPolicy::OnFailure => {
            "<dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>"
        }
        RestartPolicy::Never => "<false/>",
    }
}

/// reef's own agent (runtime builtin or command): the launch `reef up` runs, logs in the state
/// dir, the topology's policies.
fn reef_agent(instance: &Instance, options: &Options) -> Result<Agent, ExportError> {
    let launch = host_launch(instance, options);
    let env: Vec<(String, String)> = launch.env.clone().into_iter().collect();
    check_agent(
        instance,
        &launch.argv,
        |index| argv_field(instance, &launch.argv, index),
        &env,
    )?;
    let mut head = opening(options, &format!("instance `{}`", instance.name));
    entry(&mut head, "Label", &string(&instance.launchd_label));
    program_arguments(&mut head, &launch.argv);
    let mut out = String::new();
    entry(
        &mut out,
        "WorkingDirectory",
        &string(&launch.cwd.display().to_string()),
    );
    entry(&mut out, "RunAtLoad", "<true/>");
    entry(&mut out, "KeepAlive", keep_alive(instance.restart.policy));
    entry(
        &mut out,
        "ThrottleInterval",
        &format!(
            "<integer>{}</integer>",
            instance.restart.backoff.initial.ceil().max(1.0) as u64
        ),
    );
    entry(
        &mut out,
        "ExitTimeOut",
        &format!("<integer>{}</integer>", instance.stop.timeout.ceil() as u64),
    );
    // The working directory and the logs are in the state dir.
    let log = instance.state_dir.join("logs").join("launchd.log");
    let log = string(&log.display().to_string());
    entry(&mut out, "StandardOutPath", &log);
    entry(&mut out, "StandardErrorPath", &log);
    Ok(Agent {
        head,
        env,
        tail: out,
    })
}

/// The agent `openclaw gateway install` writes on macOS (OpenClaw 2026.9.6, `launchd-plist.ts`):
/// its policy (`ExitTimeOut` 20, `ThrottleInterval` 10, `ProcessType` Interactive, `Umask` 077,
/// stdin from /dev/null), Node on the package's entry by absolute paths, the state dir as working
/// directory, logs under `~/Library/Logs/openclaw`, the installer's environment plus the launch's
/// own variables. The topology's own restart policy, backoff, stop timeout or signal replace
/// OpenClaw's, with a warning. (On macOS the installer moves the variables into a wrapper's env
/// file; reef keeps them in the agent.)
fn openclaw_agent(
    instance: &Instance,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Result<Agent, ExportError> {
    let launch = host_launch(instance, options);
    let (program, program_len) = openclaw::program_words(instance, &launch.argv, options, warnings);
    let argv: Vec<String> = program
        .iter()
        .chain(&launch.argv[program_len..])
        .cloned()
        .collect();
    let words = program.len();
    let env = openclaw::environment(instance, &launch.env, options, openclaw::Manager::Launchd);
    check_agent(
        instance,
        &argv,
        |index| {
            if index < words && words != program_len {
                "the OpenClaw installation's path".to_owned()
            } else {
                argv_field(instance, &launch.argv, index + program_len - words)
            }
        },
        &env,
    )?;
    openclaw::differences(instance, openclaw::Manager::Launchd, warnings);
    let exit_timeout = if instance.stop.timeout == openclaw::STOP_TIMEOUT {
        openclaw::LAUNCHD_EXIT_TIMEOUT
    } else {
        instance.stop.timeout.ceil() as u64
    };
    let throttle = if instance.restart.backoff == Backoff::default() {
        openclaw::LAUNCHD_THROTTLE_INTERVAL
    } else {
        instance.restart.backoff.initial.ceil().max(1.0) as u64
    };
    let mut out = opening(
        options,
        &format!(
            "instance `{}`: the agent `openclaw gateway install` writes for its profile",
            instance.name
        ),
    );
    entry(&mut out, "Label", &string(&instance.launchd_label));
    entry(
        &mut out,
        "Comment",
        &string(&openclaw::description(&instance.profile)),
    );
    entry(&mut out, "RunAtLoad", "<true/>");
    entry(&mut out, "KeepAlive", keep_alive(instance.restart.policy));
    entry(
        &mut out,
        "ExitTimeOut",
        &format!("<integer>{exit_timeout}</integer>"),
    );
    entry(
        &mut out,
        "ProcessType",
        &string(openclaw::LAUNCHD_PROCESS_TYPE),
    );
    entry(
        &mut out,
        "ThrottleInterval",
        &format!("<integer>{throttle}</integer>"),
    );
    entry(
        &mut out,
        "Umask",
        &format!("<integer>{}</integer>", openclaw::LAUNCHD_UMASK),
    );
    entry(&mut out, "StandardInPath", &string("/dev/null"));
    program_arguments(&mut out, &argv);
    entry(
        &mut out,
        "WorkingDirectory",
        &string(&instance.state_dir.display().to_string()),
    );
    let log = string(&openclaw::launchd_log(
        &options.openclaw_host,
        &instance.profile,
    ));
    entry(&mut out, "StandardOutPath", &log);
    entry(&mut out, "StandardErrorPath", &log);
    Ok(Agent {
        head: out,
        env,
        tail: String::new(),
    })
}

/// The label of the agent that runs `reef up` for a topology.
pub fn supervisor_label(topology: &str) -> String {
    format!("dev.reef.{}", super::dns_label(topology))
}

/// One agent that runs `reef up` on the script, kept alive by launchd. On SIGTERM reef stops
/// its gateways; if reef crashes, launchd starts it again and it adopts them.
pub fn supervisor(options: &Options) -> Result<File, ExportError> {
    let label = supervisor_label(&options.topology);
    let words = [
        ("reef's binary", options.binaries.reef.display().to_string()),
        ("", "up".to_owned()),
        ("the script's path", options.script.display().to_string()),
    ];
    for (field, word) in &words {
        check_chars(word, xml_holds, |problem| {
            ExportError::new(Format::Launchd, None, *field, word, problem)
        })?;
    }
    let mut out = opening(options, "runs `reef up` on it");
    let _ = writeln!(
        out,
        "  <key>Label</key>\n  <string>{}</string>",
        xml(&label)
    );
    let _ = writeln!(out, "  <key>ProgramArguments</key>\n  <array>");
    for (_, word) in &words {
        let _ = writeln!(out, "    <string>{}</string>", xml(word));
    }
    let _ = writeln!(out, "  </array>");
    let _ = writeln!(out, "  <key>RunAtLoad</key>\n  <true/>");
    let _ = writeln!(out, "  <key>KeepAlive</key>\n  <true/>");
    let _ = writeln!(out, "  <key>ExitTimeOut</key>\n  <integer>120</integer>");
    let _ = writeln!(out, "</dict>");
    let _ = writeln!(out, "</plist>");
    Ok(File::new(format!("{label}.plist"), out, PRIVATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Problem;
    use crate::export::testing::{export, instance, options};

    #[test]
    fn markup_and_line_breaks_are_escaped() {
        assert_eq!(
            xml("<a href=\"x\">&'b'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;b&apos;&lt;/a&gt;"
        );
        assert_eq!(xml("a\nb\tc\rd"), "a&#10;b&#9;c&#13;d");
        assert_eq!(xml_comment("a--b---c\n"), "a- -b- - -c\\n");
    }

    #[test]
    fn characters_xml_cannot_hold_are_refused_with_instance_and_field() {
        let hostile = instance(|spec| {
            spec.name = Some("hostile".into());
            spec.env = Some([("ESC".into(), "\u{1b}[31m".into())].into());
        });
        let err = export(Format::Launchd, &[&hostile]).unwrap_err();
        assert_eq!(err.instance.as_deref(), Some("hostile"));
        assert_eq!(err.field, "env.ESC");
        assert_eq!(err.problem, Problem::Character('\u{1b}'));
        assert!(err.to_string().contains("XML 1.0"), "{err}");

        let mut options = options();
        options.script = "/srv/a\u{1}.lua".into();
        let err = supervisor(&options).unwrap_err();
        assert_eq!(
            (err.instance, err.field.as_str()),
            (None, "the script's path")
        );
    }

    #[test]
    fn tabs_and_newlines_are_kept_as_character_references() {
        let spaced = instance(|spec| {
            spec.env = Some([("V".into(), "a\nb\tc\r<&>".into())].into());
        });
        let plist = &export(Format::Launchd, &[&spaced]).unwrap().files[0].content;
        assert!(
            plist.contains("<key>V</key>\n    <string>a&#10;b&#9;c&#13;&lt;&amp;&gt;</string>"),
            "{plist}"
        );
    }
}
