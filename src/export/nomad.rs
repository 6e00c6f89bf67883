//! A Nomad job: a group per instance with its static ports from the plan, the Docker driver,
//! a volume for its state and a script check that reads the JSON body.
//!
//! Every string is an HCL quoted template ([`hcl`]): escapes for quotes, backslashes and
//! control characters, and `${` / `%{` escaped so no value starts an interpolation.
//!
//! Secrets (and the token) come from Nomad Variables at `nomad/jobs/JOB`, item `GROUP_KEY`
//! (`main_token`), through a template; `JOB.nv.hcl` (0600) is the variable's specification for
//! `nomad var put`. A secret is in the template or in `env`, never in both.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{
    CONTAINER_STATE_DIR, Export, ExportError, File, Format, Options, PUBLIC, Problem, SecretFile,
    check_env, check_labels, container_env, container_warnings, dns_label, env_field, image_of,
    node_probe, one_line, secrets,
};
use crate::topology::{Instance, RestartPolicy};

/// An HCL string literal: `"`, `\`, newline, carriage return and tab escaped as HCL knows
/// them, other control characters as `\uNNNN`, and the template sequences `${` and `%{` as
/// `$${` and `%%{`.
fn hcl(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    // No escape above makes a `$`, `%` or `{`: these are the text's own.
    out.replace("${", "$${").replace("%{", "%%{")
}

/// Whether an HCL attribute can be named `text` unquoted (an identifier; `-` allowed).
fn hcl_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The task's `env`: a block when every name is an identifier, else the map form Nomad takes
/// for names like `a.b`.
fn env_block(env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if env.keys().all(|key| hcl_identifier(key)) {
        let _ = writeln!(out, "      env {{");
        for (key, value) in env {
            let _ = writeln!(out, "        {key} = {}", hcl(value));
        }
    } else {
        let _ = writeln!(out, "      env = {{");
        for (key, value) in env {
            let _ = writeln!(out, "        {} = {}", hcl(key), hcl(value));
        }
    }
    let _ = writeln!(out, "      }}");
    out
}

pub fn export(
    instances: &[&Instance],
    options: &Options,
    export: &mut Export,
) -> Result<(), ExportError> {
    check_labels(Format::Nomad, instances)?;
    let job = dns_label(&options.topology);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by reef from {}.",
        one_line(&options.script.display().to_string())
    );
    let _ = writeln!(
        out,
        "# Tokens: put OPENCLAW_GATEWAY_TOKEN in Nomad Variables (nomad/jobs/{job}), never here."
    );
    let _ = writeln!(out, "job {} {{", hcl(&job));
    let mut items = String::new();
    let mut printed_items = String::new();
    let mut item_keys = Vec::new();
    let _ = writeln!(out, "  type = \"service\"");
    for instance in instances {
        container_warnings(instance, "Nomad", &mut export.warnings);
        if !instance.depends_on.is_empty() {
            export.warnings.push(format!(
                "`{}`: depends_on {:?} is not expressed in Nomad (groups start together)",
                one_line(&instance.name),
                instance.depends_on
            ));
        }
        let all_env = container_env(instance);
        check_env(Format::Nomad, instance, &all_env, |_| true)?;
        let (env, secret_env) = secrets::split(&all_env);
        for (key, _) in env.iter().filter(|(_, value)| value.contains("${")) {
            export.warnings.push(format!(
                "`{}`: Nomad interpolates ${{...}} in env values when the task starts; {} may not reach the gateway as written",
                one_line(&instance.name),
                one_line(&env_field(key))
            ));
        }
        let group = dns_label(&instance.name);
        let _ = writeln!(out);
        let _ = writeln!(out, "  group {} {{", hcl(&group));
        let _ = writeln!(out, "    count = 1");
        let _ = writeln!(
            out,
            "    network {{\n      port \"gateway\" {{\n        static = {}\n      }}\n    }}",
            instance.port
        );
        let (attempts, mode) = match instance.restart.policy {
            RestartPolicy::Never => (0, "fail"),
            _ => (10, "delay"),
        };
        let _ = writeln!(
            out,
            "    restart {{\n      attempts = {attempts}\n      interval = \"10m\"\n      delay    = \"{}s\"\n      mode     = \"{mode}\"\n    }}",
            instance.restart.backoff.initial.max(1.0).ceil() as u64
        );
        let _ = writeln!(out, "    task \"gateway\" {{");
        let _ = writeln!(out, "      driver = \"docker\"");
        let _ = writeln!(
            out,
            "      kill_timeout = \"{}s\"",
            instance.stop.timeout.ceil() as u64
        );
        let _ = writeln!(out, "      config {{");
        let _ = writeln!(out, "        image = {}", hcl(image_of(instance, options)));
        let _ = writeln!(out, "        ports = [\"gateway\"]");
        let _ = writeln!(
            out,
            "        volumes = [{}]",
            hcl(&format!("{group}-state:{CONTAINER_STATE_DIR}"))
        );
        let _ = writeln!(out, "      }}");
        let _ = write!(out, "{}", env_block(&env));
        let _ = writeln!(out, "      template {{");
        let _ = writeln!(out, "        destination = \"secrets/token.env\"");
        let _ = writeln!(out, "        env         = true");
        let _ = writeln!(
            out,
            "        data        = {}",
            hcl(&secrets_template(&job, &group, &secret_env))
        );
        let _ = writeln!(out, "      }}");
        for (key, value) in &secret_env {
            if !hcl_identifier(key) {
                return Err(ExportError::new(
                    Format::Nomad,
                    Some(instance),
                    env_field(key),
                    key,
                    Problem::SecretName,
                ));
            }
            let item = item_name(&group, key);
            items.push_str(&format!("  {item} = {}\n", hcl(value)));
            printed_items.push_str(&format!("  {item} = {}\n", hcl(secrets::PLACEHOLDER)));
            item_keys.push(item);
        }
        if !secret_env.contains_key("OPENCLAW_GATEWAY_TOKEN") {
            let token = format!(
                "  # {} = \"...\"   (the token of `{}`: add it before `nomad var put`)\n",
                item_name(&group, "token"),
                one_line(&instance.name)
            );
            items.push_str(&token);
            printed_items.push_str(&token);
        }
        let _ = writeln!(out, "      service {{");
        let _ = writeln!(out, "        name = {}", hcl(&format!("{job}-{group}")));
        let _ = writeln!(out, "        port = \"gateway\"");
        let _ = writeln!(out, "        check {{");
        let _ = writeln!(out, "          name     = \"healthz\"");
        let _ = writeln!(out, "          type     = \"script\"");
        let _ = writeln!(out, "          command  = \"node\"");
        let _ = writeln!(
            out,
            "          args     = [\"-e\", {}]",
            hcl(&node_probe(
                instance.port,
                &instance.health.liveness_path,
                "ok"
            ))
        );
        let _ = writeln!(
            out,
            "          interval = \"{}s\"",
            instance.health.interval.ceil().max(1.0) as u64
        );
        let _ = writeln!(
            out,
            "          timeout  = \"{}s\"",
            instance.health.timeout.ceil().max(1.0) as u64
        );
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "  }}");
    }
    let _ = writeln!(out, "}}");
    export
        .files
        .push(File::new(format!("{job}.nomad.hcl"), out, PUBLIC));
    if !item_keys.is_empty() {
        let specification = |items: &str| {
            format!(
                "# Written by reef from {}: the gateways' secret variables (keep this file private, 0600).\n\
                 # nomad var put @{job}.nv.hcl   (it replaces every item of the variable: keep the tokens here too)\n\
                 path = {}\n\
                 items {{\n{items}}}\n",
                one_line(&options.script.display().to_string()),
                hcl(&variable_path(&job))
            )
        };
        export.secret_files.push(SecretFile {
            name: format!("{job}.nv.hcl"),
            host_path: None,
            content: specification(&items),
            printed: specification(&printed_items),
            keys: item_keys,
        });
    }
    Ok(())
}

/// The Nomad Variables path a job's tasks read without further ACLs.
fn variable_path(job: &str) -> String {
    format!("nomad/jobs/{job}")
}

/// The item of the job's variable holding a group's `key` (`main_token`, `main_API_KEY`).
fn item_name(group: &str, key: &str) -> String {
    format!("{}_{key}", group.replace('-', "_"))
}

/// The template that turns the job's variable into the group's secret variables: the token
/// (unless the topology sets it) and each secret of `env`, values as JSON strings, which
/// Nomad's env parser reads back exactly whatever they hold.
fn secrets_template(job: &str, group: &str, env: &BTreeMap<String, String>) -> String {
    let mut lines = Vec::new();
    if !env.contains_key("OPENCLAW_GATEWAY_TOKEN") {
        lines.push(format!(
            "OPENCLAW_GATEWAY_TOKEN={{{{ index . \"{}\" }}}}",
            item_name(group, "token")
        ));
    }
    for key in env.keys() {
        lines.push(format!(
            "{key}={{{{ index . \"{}\" | toJSON }}}}",
            item_name(group, key)
        ));
    }
    format!(
        "{{{{ with nomadVar \"{}\" }}}}{}{{{{ end }}}}",
        variable_path(job),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testing::{export, instance};

    #[test]
    fn strings_escape_quotes_controls_and_templates() {
        assert_eq!(hcl("main"), "\"main\"");
        assert_eq!(hcl("\"\\\n\r\t\u{1b}"), r#""\"\\\n\r\t\u001b""#);
        assert_eq!(
            hcl("${X} %{if} $${Y} $x %d"),
            r#""$${X} %%{if} $$${Y} $x %d""#
        );
    }

    #[test]
    fn env_names_that_are_not_identifiers_use_the_map_form() {
        let plain = BTreeMap::from([("A_B".to_owned(), "1".to_owned())]);
        assert_eq!(
            env_block(&plain),
            "      env {\n        A_B = \"1\"\n      }\n"
        );
        let dotted = BTreeMap::from([
            ("A_B".to_owned(), "1".to_owned()),
            ("a.b = 1 }\n".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(
            env_block(&dotted),
            "      env = {\n        \"A_B\" = \"1\"\n        \"a.b = 1 }\\n\" = \"2\"\n      }\n"
        );
    }

    #[test]
    fn an_interpolation_in_an_env_value_is_named_in_a_warning() {
        let templated = instance(|spec| {
            spec.env = Some([("T".into(), "${node.class}".into())].into());
        });
        let export = export(Format::Nomad, &[&templated]).unwrap();
        assert!(export.files[0].content.contains("T = \"$${node.class}\""));
        assert!(
            export.warnings.iter().any(|w| w.contains("env.T")),
            "{:?}",
            export.warnings
        );
    }
}
