//! Reconcile: what turning the running topology into a new plan takes, as data.
//!
//! Instances are matched by name and compared by [`Instance::spec_hash`] (what runs and where):
//! a different hash restarts that one instance; the same hash with other differences (restart
//! policy, probes, stop settings, `depends_on`, `enabled`) is applied live. Pure: the supervisor
//! carries the actions out.

use serde::Serialize;

use crate::topology::Instance;

/// What a reload does, instance by instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    /// New instances: start them.
    pub added: Vec<Instance>,
    /// Gone from the script: stop them (gracefully).
    pub removed: Vec<String>,
    /// Spec changed: restart each with its new spec.
    pub changed: Vec<Instance>,
    /// Only live fields changed: apply without a restart.
    pub live: Vec<Instance>,
    /// Untouched.
    pub unchanged: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.live.is_empty()
    }

    /// "start a; restart b; stop c; update d live" or "nothing to do".
    pub fn summary(&self) -> String {
        let names =
            |instances: &[Instance]| instances.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        let parts: Vec<String> = [
            ("start", names(&self.added)),
            ("restart", names(&self.changed)),
            ("stop", self.removed.clone()),
            ("update live", names(&self.live)),
        ]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(verb, names)| format!("{verb} {}", names.join(", ")))
        .collect();
        if parts.is_empty() {
            "nothing to do".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// The diff from `running` to `next` (both in declaration order; `next` is a valid plan).
pub fn diff(running: &[Instance], next: &[Instance]) -> Diff {
    let mut result = Diff::default();
    for instance in next {
        match running.iter().find(|r| r.name == instance.name) {
            None => result.added.push(instance.clone()),
            Some(current) if current.spec_hash() != instance.spec_hash() => {
                result.changed.push(instance.clone())
            }
            Some(current) if !same_live_fields(current, instance) => {
                result.live.push(instance.clone())
            }
            Some(_) => result.unchanged.push(instance.name.clone()),
        }
    }
    result.removed = running
        .iter()
        .filter(|r| !next.iter().any(|n| n.name == r.name))
        .map(|r| r.name.clone())
        .collect();
    result
}

fn same_live_fields(a: &Instance, b: &Instance) -> bool {
    a.restart == b.restart
        && a.health == b.health
        && a.stop == b.stop
        && a.depends_on == b.depends_on
        && a.enabled == b.enabled
        && a.browser == b.browser
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::topology::{GatewaySpec, Location, RestartPolicy};

    fn instance(name: &str, port: i64) -> Instance {
        GatewaySpec {
            profile: Some(name.into()),
            ..GatewaySpec::default()
        }
        .resolve(
            port,
            Path::new("/h"),
            Path::new("/s"),
            Location {
                file: "reef.lua".into(),
                line: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn only_the_changed_port_restarts() {
        let running = [
            instance("a", 20000),
            instance("b", 21000),
            instance("c", 22000),
        ];
        let next = [
            instance("a", 20000),
            instance("b", 23000),
            instance("c", 22000),
        ];
        let diff = diff(&running, &next);
        assert_eq!(
            diff.changed
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(diff.unchanged, ["a", "c"]);
        assert!(diff.added.is_empty() && diff.removed.is_empty() && diff.live.is_empty());
        assert_eq!(diff.summary(), "restart b");
    }

    #[test]
    fn additions_removals_and_live_changes() {
        let running = [instance("a", 20000), instance("b", 21000)];
        let mut live = instance("a", 20000);
        live.restart.policy = RestartPolicy::Never;
        live.declared_at.line = 9;
        let next = [live, instance("c", 22000)];
        let diff = diff(&running, &next);
        assert_eq!(diff.live.len(), 1);
        assert_eq!(diff.removed, ["b"]);
        assert_eq!(diff.added[0].name, "c");
        assert_eq!(diff.summary(), "start c; stop b; update live a");
    }

    #[test]
    fn a_moved_declaration_is_no_change() {
        let running = [instance("a", 20000)];
        let mut moved = instance("a", 20000);
        moved.declared_at.line = 40;
        let diff = diff(&running, &[moved]);
        assert!(diff.is_empty());
        assert_eq!(diff.summary(), "nothing to do");
    }
}
