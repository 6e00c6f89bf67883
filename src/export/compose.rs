//! A Compose file: a service per instance, its port published, a volume for its state,
//! health checks that read the JSON body, `depends_on` with `service_healthy`.
//!
//! Every string is a double-quoted YAML scalar ([`yaml_string`]) with `$` doubled: Compose
//! interpolates `$VAR` in every value, and `$$` is its literal `$`. Names of variables are keys,
//! which Compose does not interpolate ([`yaml_name`]).
//!
//! Secrets (and the token) go to each service's env file, `SERVICE.env` (0600), never into the
//! Compose file: a variable is in `environment:` or in the env file, never in both.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{
    CONTAINER_STATE_DIR, Export, ExportError, File, Format, Options, PUBLIC, SecretFile, check_env,
    check_labels, container_env, container_warnings, dns_label, image_of, node_probe, one_line,
    secrets, yaml_name, yaml_string,
};
use crate::topology::{Instance, RestartPolicy};

/// A value as Compose reads it back after interpolation.
fn value(text: &str) -> String {
    yaml_string(&text.replace('$', "$$"))
}

fn seconds(value: f64) -> String {
    format!("{}s", (value * 1000.0).round() / 1000.0)
}

pub fn export(
    instances: &[&Instance],
    options: &Options,
    export: &mut Export,
) -> Result<(), ExportError> {
    check_labels(Format::Compose, instances)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by reef from {}.",
        one_line(&options.script.display().to_string())
    );
    let _ = writeln!(
        out,
        "# Project: {} (docker compose -p {} ...).",
        dns_label(&options.topology),
        dns_label(&options.topology)
    );
    let _ = writeln!(
        out,
        "# Each gateway's token goes in its env file, e.g. main.env: OPENCLAW_GATEWAY_TOKEN=..."
    );
    let _ = writeln!(
        out,
        "# (`reef export --format compose --output DIR` writes them), never here."
    );
    let _ = writeln!(
        out,
        "# To reach a gateway from outside its container, set gateway.bind = \"lan\" in its"
    );
    let _ = writeln!(
        out,
        "# openclaw.json (in its state volume); token auth is then required."
    );
    let _ = writeln!(out, "services:");
    for instance in instances {
        container_warnings(instance, "Compose", &mut export.warnings);
        let service = dns_label(&instance.name);
        let _ = writeln!(out, "  {service}:");
        let _ = writeln!(out, "    image: {}", value(image_of(instance, options)));
        let restart = match instance.restart.policy {
            RestartPolicy::Always => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        };
        let _ = writeln!(out, "    restart: {}", value(restart));
        let env = container_env(instance);
        check_env(Format::Compose, instance, &env, |_| true)?;
        let (plain, secrets) = secrets::split(&env);
        let _ = writeln!(out, "    environment:");
        for (key, text) in &plain {
            let _ = writeln!(out, "      {}: {}", yaml_name(key), value(text));
        }
        let _ = writeln!(out, "    env_file:");
        let _ = writeln!(out, "      - {}", value(&format!("./{service}.env")));
        export
            .secret_files
            .push(env_file(instance, &service, &secrets)?);
        let _ = writeln!(out, "    ports:");
        let _ = writeln!(out, "      - {}", value(&format!("{0}:{0}", instance.port)));
        let _ = writeln!(out, "    volumes:");
        let _ = writeln!(
            out,
            "      - {}",
            value(&format!("{service}-state:{CONTAINER_STATE_DIR}"))
        );
        let _ = writeln!(
            out,
            "    stop_grace_period: {}",
            seconds(instance.stop.timeout)
        );
        let _ = writeln!(out, "    healthcheck:");
        let probe = node_probe(instance.port, &instance.health.liveness_path, "ok");
        let _ = writeln!(
            out,
            "      test: [\"CMD\", \"node\", \"-e\", {}]",
            value(&probe)
        );
        let _ = writeln!(out, "      interval: {}", seconds(instance.health.interval));
        let _ = writeln!(out, "      timeout: {}", seconds(instance.health.timeout));
        let _ = writeln!(out, "      retries: 3");
        let _ = writeln!(
            out,
            "      start_period: {}",
            seconds(instance.health.start_period)
        );
        let dependencies: Vec<&&Instance> = instance
            .depends_on
            .iter()
            .filter_map(|name| instances.iter().find(|i| &i.name == name))
            .collect();
        if !dependencies.is_empty() {
            let _ = writeln!(out, "    depends_on:");
            for dependency in dependencies {
                let _ = writeln!(out, "      {}:", dns_label(&dependency.name));
                let _ = writeln!(out, "        condition: service_healthy");
            }
        }
        if instance.restart.policy != RestartPolicy::Never {
            export.warnings.push(format!(
                "`{}`: Compose restart policies cannot spare exit 78 (configuration error) from restarting",
                one_line(&instance.name)
            ));
        }
    }
    let _ = writeln!(out, "volumes:");
    for instance in instances {
        let _ = writeln!(out, "  {}-state: {{}}", dns_label(&instance.name));
    }
    export.files.push(File::new("compose.yaml", out, PUBLIC));
    Ok(())
}

/// A service's env file, `SERVICE.env`: its secret variables, and a line for its token unless
/// the topology sets `OPENCLAW_GATEWAY_TOKEN` itself.
fn env_file(
    instance: &Instance,
    service: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<SecretFile, ExportError> {
    let mut comment = vec![format!(
        "Secrets of gateway `{}`; keep this file private (0600).",
        instance.name
    )];
    if !secrets.contains_key("OPENCLAW_GATEWAY_TOKEN") {
        comment.push("OPENCLAW_GATEWAY_TOKEN=".to_owned());
    }
    Ok(SecretFile {
        name: format!("{service}.env"),
        host_path: None,
        content: secrets::compose_env_file(instance, secrets, &comment)?,
        printed: secrets::compose_env_file(instance, &secrets::redacted(secrets), &comment)?,
        keys: secrets.keys().cloned().collect(),
    })
}
