//! A Nomad job: a group per instance with its static ports from the plan, the Docker driver,
//! a volume for its state and a script check that reads the JSON body.

use std::fmt::Write;

use super::{
    CONTAINER_STATE_DIR, Export, File, Options, container_env, container_warnings, dns_label,
    image_of, node_probe,
};
use crate::topology::{Instance, RestartPolicy};

/// An HCL string literal.
fn hcl(text: &str) -> String {
    serde_json::to_string(text)
        .expect("strings serialize")
        .replace("${", "$${")
        .replace("%{", "%%{")
}

pub fn export(instances: &[&Instance], options: &Options, export: &mut Export) {
    let job = dns_label(&options.topology);
    let mut out = String::new();
    let _ = writeln!(out, "# Written by reef from {}.", options.script.display());
    let _ = writeln!(
        out,
        "# Tokens: put OPENCLAW_GATEWAY_TOKEN in Nomad Variables (nomad/jobs/{job}), never here."
    );
    let _ = writeln!(out, "job {} {{", hcl(&job));
    let _ = writeln!(out, "  type = \"service\"");
    for instance in instances {
        container_warnings(instance, "Nomad", &mut export.warnings);
        if !instance.depends_on.is_empty() {
            export.warnings.push(format!(
                "`{}`: depends_on {:?} is not expressed in Nomad (groups start together)",
                instance.name, instance.depends_on
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
        let _ = writeln!(out, "      env {{");
        for (key, value) in container_env(instance) {
            let _ = writeln!(out, "        {key} = {}", hcl(&value));
        }
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "      template {{");
        let _ = writeln!(out, "        destination = \"secrets/token.env\"");
        let _ = writeln!(out, "        env         = true");
        let _ = writeln!(
            out,
            "        data        = \"{{{{ with nomadVar \\\"nomad/jobs/{job}\\\" }}}}OPENCLAW_GATEWAY_TOKEN={{{{ index . \\\"{}_token\\\" }}}}{{{{ end }}}}\"",
            group.replace('-', "_")
        );
        let _ = writeln!(out, "      }}");
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
    export.files.push(File {
        name: format!("{job}.nomad.hcl"),
        content: out,
    });
}
