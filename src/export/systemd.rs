//! systemd user units: one per instance, compatible with the unit `openclaw gateway install`
//! writes (same name, same environment contract, no restart loop on exit 78), or one unit that
//! runs `reef up` itself.

use std::fmt::Write;

use super::{Export, File, Options, host_launch};
use crate::topology::{Instance, RestartPolicy};

/// The first line of every unit reef writes.
const MARKER: &str = "# Written by reef";

/// Quotes one word for `ExecStart=`: `$` and `%` are escaped, spaces and quotes quoted.
fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped.is_empty()
        || escaped
            .contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '\'' || c == ';')
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// An `Environment=` line: the assignment quoted, specifiers escaped.
fn environment(key: &str, value: &str) -> String {
    let assignment = format!("{key}={value}").replace('%', "%%");
    format!(
        "Environment=\"{}\"",
        assignment.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn restart(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "no",
    }
}

/// One unit per instance, named as OpenClaw names its own (`openclaw-gateway-PROFILE.service`).
pub fn per_instance(instances: &[&Instance], options: &Options, export: &mut Export) {
    for instance in instances {
        export.files.push(File {
            name: instance.systemd_unit.clone(),
            content: unit(instance, instances, options),
        });
    }
}

fn unit(instance: &Instance, all: &[&Instance], options: &Options) -> String {
    let mut unit = String::new();
    let launch = host_launch(instance, options);
    let argv: Vec<String> = launch.argv.iter().map(|w| exec_word(w)).collect();
    let dependencies: Vec<&str> = instance
        .depends_on
        .iter()
        .filter_map(|name| all.iter().find(|i| &i.name == name))
        .map(|i| i.systemd_unit.as_str())
        .collect();
    let _ = writeln!(
        unit,
        "{MARKER} from {}; instance `{}`.",
        options.script.display(),
        instance.name
    );
    let _ = writeln!(
        unit,
        "# Change the topology and run `reef install` again rather than editing this file."
    );
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description=OpenClaw gateway {} (profile {}, port {})",
        instance.name, instance.profile, instance.port
    );
    let _ = writeln!(
        unit,
        "After=network-online.target{}",
        dependencies
            .iter()
            .map(|d| format!(" {d}"))
            .collect::<String>()
    );
    let _ = writeln!(
        unit,
        "Wants=network-online.target{}",
        dependencies
            .iter()
            .map(|d| format!(" {d}"))
            .collect::<String>()
    );
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "Type=simple");
    let _ = writeln!(unit, "ExecStart={}", argv.join(" "));
    for (key, value) in &launch.env {
        let _ = writeln!(unit, "{}", environment(key, value));
    }
    // `-`: a state dir that does not exist yet is no error; the gateway creates it.
    let _ = writeln!(
        unit,
        "WorkingDirectory=-{}",
        launch.cwd.display().to_string().replace('%', "%%")
    );
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
    unit
}

/// The name of the unit that runs `reef up` for a topology.
pub fn supervisor_unit_name(topology: &str) -> String {
    format!("reef-{}.service", super::dns_label(topology))
}

/// One unit that runs `reef up` on the script. `KillMode=process`: systemd signals only reef,
/// which stops its gateways itself on SIGTERM; if reef crashes, systemd restarts it and the
/// new reef adopts the gateways that kept running.
pub fn supervisor(options: &Options) -> File {
    let mut unit = String::new();
    let _ = writeln!(
        unit,
        "{MARKER} from {}; runs `reef up` on it.",
        options.script.display()
    );
    let _ = writeln!(
        unit,
        "# Change the topology and run `reef install --mode supervisor` again rather than editing this file."
    );
    let _ = writeln!(unit, "[Unit]");
    let _ = writeln!(
        unit,
        "Description=reef: OpenClaw gateways of {}",
        options.topology
    );
    let _ = writeln!(unit, "After=network-online.target");
    let _ = writeln!(unit, "Wants=network-online.target");
    let _ = writeln!(unit);
    let _ = writeln!(unit, "[Service]");
    let _ = writeln!(unit, "Type=simple");
    let _ = writeln!(
        unit,
        "ExecStart={} up {}",
        exec_word(&options.binaries.reef.display().to_string()),
        exec_word(&options.script.display().to_string())
    );
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
    File {
        name: supervisor_unit_name(&options.topology),
        content: unit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
