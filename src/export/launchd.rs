//! launchd agents for macOS: one per instance, labelled as OpenClaw labels its own
//! (`ai.openclaw.PROFILE`).

use std::fmt::Write;

use super::{Export, File, Options, host_launch};
use crate::topology::{Instance, RestartPolicy};

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn per_instance(instances: &[&Instance], options: &Options, export: &mut Export) {
    for instance in instances {
        if let Some(problem) = crate::profile::macos_service_problem(&instance.profile) {
            export.warnings.push(format!(
                "`{}`: launchd refuses profile `{}` ({problem}); its agent will not load",
                instance.name, instance.profile
            ));
        }
        if !instance.depends_on.is_empty() {
            export.warnings.push(format!(
                "`{}`: launchd has no start order; depends_on {:?} is not expressed",
                instance.name, instance.depends_on
            ));
        }
        if instance.restart.policy != RestartPolicy::Never {
            export.warnings.push(format!(
                "`{}`: launchd cannot spare exit 78 (configuration error) from KeepAlive; it is throttled, not stopped",
                instance.name
            ));
        }
        export.files.push(File {
            name: format!("{}.plist", instance.launchd_label),
            content: plist(instance, options),
        });
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
        xml(&options.script.display().to_string()),
        xml(what)
    );
    let _ = writeln!(out, r#"<plist version="1.0">"#);
    let _ = writeln!(out, "<dict>");
    out
}

fn plist(instance: &Instance, options: &Options) -> String {
    let mut out = opening(options, &format!("instance `{}`", instance.name));
    let _ = writeln!(
        out,
        "  <key>Label</key>\n  <string>{}</string>",
        xml(&instance.launchd_label)
    );
    let launch = host_launch(instance, options);
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
    out
}

/// The label of the agent that runs `reef up` for a topology.
pub fn supervisor_label(topology: &str) -> String {
    format!("dev.reef.{}", super::dns_label(topology))
}

/// One agent that runs `reef up` on the script, kept alive by launchd. On SIGTERM reef stops
/// its gateways; if reef crashes, launchd starts it again and it adopts them.
pub fn supervisor(options: &Options) -> File {
    let label = supervisor_label(&options.topology);
    let mut out = opening(options, "runs `reef up` on it");
    let _ = writeln!(
        out,
        "  <key>Label</key>\n  <string>{}</string>",
        xml(&label)
    );
    let _ = writeln!(out, "  <key>ProgramArguments</key>\n  <array>");
    for word in [
        options.binaries.reef.display().to_string(),
        "up".to_owned(),
        options.script.display().to_string(),
    ] {
        let _ = writeln!(out, "    <string>{}</string>", xml(&word));
    }
    let _ = writeln!(out, "  </array>");
    let _ = writeln!(out, "  <key>RunAtLoad</key>\n  <true/>");
    let _ = writeln!(out, "  <key>KeepAlive</key>\n  <true/>");
    let _ = writeln!(out, "  <key>ExitTimeOut</key>\n  <integer>120</integer>");
    let _ = writeln!(out, "</dict>");
    let _ = writeln!(out, "</plist>");
    File {
        name: format!("{label}.plist"),
        content: out,
    }
}
