//! launchd agents for macOS: one per instance, labelled as OpenClaw labels its own
//! (`ai.openclaw.PROFILE`).
//!
//! A property list is XML 1.0: markup characters are escaped, tab, newline and carriage
//! return written as character references (a reader would fold a raw `\r`), and the other
//! control characters, which XML 1.0 cannot hold at all, refused.

use std::fmt::Write;

use super::{
    Export, ExportError, File, Format, Options, argv_field, check_chars, check_env, host_launch,
    one_line,
};
use crate::topology::{Instance, RestartPolicy};

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
        export.files.push(File {
            name: format!("{}.plist", instance.launchd_label),
            content: plist(instance, options)?,
        });
    }
    Ok(())
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

fn plist(instance: &Instance, options: &Options) -> Result<String, ExportError> {
    let launch = host_launch(instance, options);
    for (index, word) in launch.argv.iter().enumerate() {
        check_chars(word, xml_holds, |problem| {
            let field = argv_field(instance, &launch.argv, index);
            ExportError::new(Format::Launchd, Some(instance), field, word, problem)
        })?;
    }
    check_env(Format::Launchd, instance, &launch.env, xml_holds)?;
    // The working directory and the logs are in the state dir.
    let state_dir = instance.state_dir.display().to_string();
    check_chars(&state_dir, xml_holds, |problem| {
        ExportError::new(
            Format::Launchd,
            Some(instance),
            "state_dir",
            &state_dir,
            problem,
        )
    })?;
    let mut out = opening(options, &format!("instance `{}`", instance.name));
    let _ = writeln!(
        out,
        "  <key>Label</key>\n  <string>{}</string>",
        xml(&instance.launchd_label)
    );
    let _ = writeln!(out, "  <key>ProgramArguments</key>\n  <array>");
    for word in &launch.argv {
        let _ = writeln!(out, "    <string>{}</string>", xml(word));
    }
    let _ = writeln!(out, "  </array>");
    let _ = writeln!(out, "  <key>EnvironmentVariables</key>\n  <dict>");
    for (key, value) in &launch.env {
        let _ = writeln!(
            out,
            "    <key>{}</key>\n    <string>{}</string>",
            xml(key),
            xml(value)
        );
    }
    let _ = writeln!(out, "  </dict>");
    let _ = writeln!(
        out,
        "  <key>WorkingDirectory</key>\n  <string>{}</string>",
        xml(&launch.cwd.display().to_string())
    );
    let _ = writeln!(out, "  <key>RunAtLoad</key>\n  <true/>");
    let keep_alive = match instance.restart.policy {
        RestartPolicy::Always => "  <key>KeepAlive</key>\n  <true/>".to_owned(),
        // Restart only after a failure (a non-zero exit).
        RestartPolicy::OnFailure => "  <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>".to_owned(),
        RestartPolicy::Never => "  <key>KeepAlive</key>\n  <false/>".to_owned(),
    };
    let _ = writeln!(out, "{keep_alive}");
    let _ = writeln!(
        out,
        "  <key>ThrottleInterval</key>\n  <integer>{}</integer>",
        instance.restart.backoff.initial.ceil().max(1.0) as u64
    );
    let _ = writeln!(
        out,
        "  <key>ExitTimeOut</key>\n  <integer>{}</integer>",
        instance.stop.timeout.ceil() as u64
    );
    let log = instance.state_dir.join("logs").join("launchd.log");
    let _ = writeln!(
        out,
        "  <key>StandardOutPath</key>\n  <string>{}</string>",
        xml(&log.display().to_string())
    );
    let _ = writeln!(
        out,
        "  <key>StandardErrorPath</key>\n  <string>{}</string>",
        xml(&log.display().to_string())
    );
    let _ = writeln!(out, "</dict>");
    let _ = writeln!(out, "</plist>");
    Ok(out)
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
    Ok(File {
        name: format!("{label}.plist"),
        content: out,
    })
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
