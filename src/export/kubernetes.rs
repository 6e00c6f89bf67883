//! Kubernetes manifests: per instance a PersistentVolumeClaim for its state, a Deployment of one
//! replica (Recreate: the state dir has a single owner), and a Service for its gateway port.
//! Probes run the image's Node to read the JSON body: liveness `/healthz`, readiness `/readyz`,
//! start-up `/readyz` with a five-minute budget, as OpenClaw's own manifests do.
//!
//! Every string is a double-quoted YAML scalar ([`yaml_string`]); in an env var's value `$` is
//! doubled, since Kubernetes expands `$(VAR)` there and reads `$$` as `$`.
//!
//! Secret variables come from a Secret per instance (`TOPOLOGY-NAME-env`, written to
//! `TOPOLOGY.secrets.k8s.yaml`, 0600), the token from `TOPOLOGY-NAME-token` unless the topology
//! sets it: each variable is defined once, by value or by `secretKeyRef`, never both.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{
    CONTAINER_STATE_DIR, Export, ExportError, File, Format, Options, PUBLIC, Problem, SecretFile,
    check_env, check_labels, container_env, container_warnings, dns_label, env_field, image_of,
    node_probe, one_line, secrets, yaml_name, yaml_string,
};
use crate::topology::{Instance, RestartPolicy};

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "apps/v1",
        _ => "v1",
    }
}

pub fn export(
    instances: &[&Instance],
    options: &Options,
    export: &mut Export,
) -> Result<(), ExportError> {
    check_labels(Format::Kubernetes, instances)?;
    let topology = dns_label(&options.topology);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by reef from {}.",
        one_line(&options.script.display().to_string())
    );
    let _ = writeln!(
        out,
        "# Tokens: create a Secret per gateway, e.g. kubectl create secret generic {topology}-NAME-token --from-literal=token=..."
    );
    let mut secret_docs = String::new();
    let mut printed_docs = String::new();
    let mut secret_keys = Vec::new();
    for instance in instances {
        container_warnings(instance, "Kubernetes", &mut export.warnings);
        if instance.restart.policy != RestartPolicy::Always {
            export.warnings.push(format!(
                "`{}`: a Deployment always restarts its pod; restart policy {} is not expressed",
                one_line(&instance.name),
                serde_json::to_string(&instance.restart.policy).expect("policies serialize")
            ));
        }
        if !instance.depends_on.is_empty() {
            export.warnings.push(format!(
                "`{}`: Kubernetes has no start order between Deployments; depends_on {:?} is not expressed",
                one_line(&instance.name),
                instance.depends_on
            ));
        }
        let name = format!("{topology}-{}", dns_label(&instance.name));
        let labels = |indent: usize| -> String {
            [
                "app.kubernetes.io/name: openclaw-gateway".to_owned(),
                format!("app.kubernetes.io/instance: {}", yaml_string(&name)),
                format!("app.kubernetes.io/part-of: {}", yaml_string(&topology)),
                "app.kubernetes.io/managed-by: reef".to_owned(),
            ]
            .iter()
            .map(|line| format!("{}{line}\n", " ".repeat(indent)))
            .collect()
        };
        let metadata = |kind: &str, object: &str| {
            format!(
                "apiVersion: {}\nkind: {kind}\nmetadata:\n  name: {object}\n  labels:\n{}",
                api_version(kind),
                labels(4)
            )
        };
        let _ = writeln!(out, "---");
        let _ = write!(
            out,
            "{}",
            metadata("PersistentVolumeClaim", &format!("{name}-state"))
        );
        let _ = writeln!(
            out,
            "spec:\n  accessModes: [\"ReadWriteOnce\"]\n  resources:\n    requests:\n      storage: 1Gi"
        );
        let _ = writeln!(out, "---");
        let _ = write!(out, "{}", metadata("Service", &name));
        let _ = writeln!(
            out,
            "spec:\n  selector:\n    app.kubernetes.io/instance: {}",
            yaml_string(&name)
        );
        let _ = writeln!(
            out,
            "  ports:\n    - name: gateway\n      port: {0}\n      targetPort: {0}",
            instance.port
        );
        let _ = writeln!(out, "---");
        let _ = write!(out, "{}", metadata("Deployment", &name));
        let _ = writeln!(
            out,
            "spec:\n  replicas: 1\n  strategy:\n    type: Recreate\n  selector:\n    matchLabels:\n      app.kubernetes.io/instance: {}",
            yaml_string(&name)
        );
        let _ = write!(
            out,
            "  template:\n    metadata:\n      labels:\n{}",
            labels(8)
        );
        let _ = writeln!(out, "    spec:");
        let _ = writeln!(
            out,
            "      terminationGracePeriodSeconds: {}",
            instance.stop.timeout.ceil() as u64
        );
        let _ = writeln!(out, "      securityContext:\n        fsGroup: 1000");
        let _ = writeln!(out, "      containers:");
        let _ = writeln!(out, "        - name: gateway");
        let _ = writeln!(
            out,
            "          image: {}",
            yaml_string(image_of(instance, options))
        );
        let _ = writeln!(
            out,
            "          ports:\n            - name: gateway\n              containerPort: {}",
            instance.port
        );
        let _ = writeln!(out, "          env:");
        let env = container_env(instance);
        check_env(Format::Kubernetes, instance, &env, |_| true)?;
        let (plain, secret_env) = secrets::split(&env);
        for (key, value) in &plain {
            let _ = writeln!(
                out,
                "            - name: {}\n              value: {}",
                yaml_name(key),
                yaml_string(&value.replace('$', "$$"))
            );
        }
        // Each secret from the instance's Secret, never also as a value.
        for key in secret_env.keys() {
            if !is_secret_key(key) {
                return Err(ExportError::new(
                    Format::Kubernetes,
                    Some(instance),
                    env_field(key),
                    key,
                    Problem::SecretName,
                ));
            }
            let _ = writeln!(
                out,
                "            - name: {}\n              valueFrom:\n                secretKeyRef:\n                  name: {}\n                  key: {}",
                yaml_name(key),
                yaml_string(&format!("{name}-env")),
                yaml_string(key)
            );
        }
        if !secret_env.contains_key("OPENCLAW_GATEWAY_TOKEN") {
            let _ = writeln!(
                out,
                "            - name: OPENCLAW_GATEWAY_TOKEN\n              valueFrom:\n                secretKeyRef:\n                  name: {}\n                  key: token\n                  optional: true",
                yaml_string(&format!("{name}-token"))
            );
        }
        if !secret_env.is_empty() {
            let secret = |values: &BTreeMap<String, String>| {
                let mut doc = String::from("---\n");
                doc.push_str(&metadata("Secret", &format!("{name}-env")));
                doc.push_str("type: Opaque\nstringData:\n");
                for (key, value) in values {
                    doc.push_str(&format!("  {}: {}\n", yaml_name(key), yaml_string(value)));
                }
                doc
            };
            secret_docs.push_str(&secret(&secret_env));
            printed_docs.push_str(&secret(&secrets::redacted(&secret_env)));
            secret_keys.extend(secret_env.keys().cloned());
        }
        let probe = |path: &str, field: &str| {
            format!(
                "exec:\n              command: [\"node\", \"-e\", {}]",
                yaml_string(&node_probe(instance.port, path, field))
            )
        };
        let period = instance.health.interval.ceil().max(1.0) as u64;
        let timeout = instance.health.timeout.ceil().max(1.0) as u64;
        let _ = writeln!(
            out,
            "          startupProbe:\n            {}\n            periodSeconds: 10\n            timeoutSeconds: {timeout}\n            failureThreshold: 30",
            probe(&instance.health.readiness_path, "ready")
        );
        let _ = writeln!(
            out,
            "          readinessProbe:\n            {}\n            periodSeconds: {period}\n            timeoutSeconds: {timeout}",
            probe(&instance.health.readiness_path, "ready")
        );
        let _ = writeln!(
            out,
            "          livenessProbe:\n            {}\n            periodSeconds: {period}\n            timeoutSeconds: {timeout}\n            failureThreshold: 3",
            probe(&instance.health.liveness_path, "ok")
        );
        let _ = writeln!(
            out,
            "          volumeMounts:\n            - name: state\n              mountPath: {}",
            yaml_string(CONTAINER_STATE_DIR)
        );
        let _ = writeln!(
            out,
            "      volumes:\n        - name: state\n          persistentVolumeClaim:\n            claimName: {name}-state"
        );
    }
    export
        .files
        .push(File::new(format!("{topology}.k8s.yaml"), out, PUBLIC));
    if !secret_keys.is_empty() {
        let heading = format!(
            "# Written by reef from {}: the gateways' secret variables, one Secret per gateway.\n\
             # Keep this file private (0600) and out of version control: kubectl apply -f it before the manifests.\n",
            one_line(&options.script.display().to_string())
        );
        export.secret_files.push(SecretFile {
            name: format!("{topology}.secrets.k8s.yaml"),
            host_path: None,
            content: format!("{heading}{secret_docs}"),
            printed: format!("{heading}{printed_docs}"),
            keys: secret_keys,
        });
    }
    Ok(())
}

/// Whether a Secret can hold a key of that name (letters, digits, `-`, `_`, `.`).
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
