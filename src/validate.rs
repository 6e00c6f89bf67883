//! Isolation checks across a topology's instances, as data.
//!
//! Every [`Violation`] names the instances involved, the value they share and what to change.
//! Violations make a plan invalid (`reef plan` exits 1); [`Warning`]s are printed and allowed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::ports::{FOOTPRINT_SIZE, Footprint, MAX_PORT, MIN_PORT};
use crate::profile;
use crate::topology::{Instance, Location};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    DuplicateName,
    InvalidName,
    InvalidProfile,
    SharedProfile,
    SharedStateDir,
    SharedConfigPath,
    SharedWorkspace,
    PortOutOfRange,
    FootprintOverlap,
    SharedCdpPort,
    CdpPortInFootprint,
    SharedCdpUrl,
    UnknownDependency,
    DependencyCycle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    MacosServiceName,
    DependsOnDisabled,
    NoGateways,
}

/// An isolation mistake: the plan cannot run as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub instances: Vec<String>,
    /// The shared or offending value, e.g. a path, a port range, a profile name.
    pub value: String,
    pub message: String,
    pub locations: Vec<Location>,
}

/// Something that works here but may bite elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub instances: Vec<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub warnings: Vec<Warning>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs every check over `instances` (enabled or not: a disabled gateway may be enabled later).
pub fn validate(instances: &[Instance]) -> Report {
    let mut checker = Checker {
        instances,
        report: Report::default(),
    };
    checker.names();
    checker.profiles();
    checker.paths();
    checker.footprints();
    checker.browsers();
    checker.dependencies();
    checker.macos_service_names();
    if instances.is_empty() {
        checker.report.warnings.push(Warning {
            kind: WarningKind::NoGateways,
            instances: Vec::new(),
            message: "the script declares no gateways; add one with reef.gateway { profile = \"main\", port = 18789 }"
                .into(),
        });
    }
    checker.report
}

struct Checker<'a> {
    instances: &'a [Instance],
    report: Report,
}

/// Instance names become log file names, unit names and labels: one plain path component.
fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.len() <= 64
}

/// "`a`, `b` and `c`"
fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl<'a> Checker<'a> {
    fn violation(
        &mut self,
        kind: ViolationKind,
        members: &[&Instance],
        value: String,
        message: String,
    ) {
        self.report.violations.push(Violation {
            kind,
            instances: members.iter().map(|i| i.name.clone()).collect(),
            value,
            message,
            locations: members.iter().map(|i| i.declared_at.clone()).collect(),
        });
    }

    /// Groups instances by `key`, in declaration order, keeping groups of two or more.
    fn shared<K: Ord>(&self, key: impl Fn(&Instance) -> Option<K>) -> Vec<(K, Vec<&'a Instance>)> {
        let mut groups: BTreeMap<K, Vec<&'a Instance>> = BTreeMap::new();
        for instance in self.instances {
            if let Some(k) = key(instance) {
                groups.entry(k).or_default().push(instance);
            }
        }
        let mut shared: Vec<_> = groups.into_iter().filter(|(_, g)| g.len() > 1).collect();
        shared.sort_by_key(|(_, group)| group[0].declared_at.clone());
        shared
    }

    fn names(&mut self) {
        for instance in self.instances {
            if !is_safe_name(&instance.name) {
                self.violation(
                    ViolationKind::InvalidName,
                    &[instance],
                    instance.name.clone(),
                    format!(
                        "instance name {:?} is not usable: reef names files after it; use 1 to 64 letters, \
                         digits, '_', '-' or '.', starting with a letter or digit",
                        instance.name
                    ),
                );
            }
        }
        for (name, group) in self.shared(|i| Some(i.name.clone())) {
            let places: Vec<String> = group.iter().map(|i| i.declared_at.to_string()).collect();
            self.violation(
                ViolationKind::DuplicateName,
                &group,
                name.clone(),
                format!(
                    "instance name `{name}` is declared {} times ({}); give each gateway its own `name`",
                    group.len(),
                    places.join(", ")
                ),
            );
        }
    }

    fn profiles(&mut self) {
        for instance in self.instances {
            if let Err(err) = profile::check_name(&instance.profile) {
                self.violation(
                    ViolationKind::InvalidProfile,
                    &[instance],
                    instance.profile.clone(),
                    format!(
                        "`{}`: {err}; `openclaw --profile` refuses it",
                        instance.name
                    ),
                );
            }
        }
        for (profile, group) in self.shared(|i| Some(i.profile.to_ascii_lowercase())) {
            let names: Vec<&str> = group.iter().map(|i| i.name.as_str()).collect();
            self.violation(
                ViolationKind::SharedProfile,
                &group,
                profile.clone(),
                format!(
                    "{} share the profile `{profile}` (profile names match case-insensitively): \
                     they would fight over one state dir, lock and service name; give each gateway its own profile",
                    list(&names)
                ),
            );
        }
    }

    fn paths(&mut self) {
        // Instances that already share a profile share its default paths too: say it once.
        let by_profile: BTreeSet<Vec<String>> = self
            .report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::SharedProfile)
            .map(|v| v.instances.clone())
            .collect();
        type PathOf = fn(&Instance) -> &std::path::Path;
        let checks: [(ViolationKind, &str, PathOf); 3] = [
            (ViolationKind::SharedStateDir, "state dir", |i| &i.state_dir),
            (ViolationKind::SharedConfigPath, "config path", |i| {
                &i.config_path
            }),
            (ViolationKind::SharedWorkspace, "workspace", |i| {
                &i.workspace
            }),
        ];
        // Config path and workspace default to places inside the state dir: when the state dir
        // is shared, their sharing is the same mistake.
        let mut by_state_dir: BTreeSet<Vec<String>> = BTreeSet::new();
        for (kind, what, field) in checks {
            for (path, group) in self.shared(|i| Some(field(i).to_path_buf())) {
                let names: Vec<&str> = group.iter().map(|i| i.name.as_str()).collect();
                let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                if by_profile.contains(&owned) {
                    continue;
                }
                let derived = group.iter().all(|i| match kind {
                    ViolationKind::SharedConfigPath => {
                        i.config_path == profile::config_path(&i.state_dir)
                    }
                    ViolationKind::SharedWorkspace => {
                        i.workspace == profile::workspace(&i.state_dir)
                    }
                    _ => false,
                });
                if derived && by_state_dir.contains(&owned) {
                    continue;
                }
                if kind == ViolationKind::SharedStateDir {
                    by_state_dir.insert(owned);
                }
                let field_name = what.replace(' ', "_");
                self.violation(
                    kind,
                    &group,
                    path.display().to_string(),
                    format!(
                        "{} share the {what} {}; set a distinct `{field_name}` for each (or drop it to use the profile's own)",
                        list(&names),
                        path.display()
                    ),
                );
            }
        }
    }

    fn footprints(&mut self) {
        let mut placed: Vec<(&Instance, Footprint)> = Vec::new();
        for instance in self.instances {
            match instance.footprint() {
                Ok(footprint) => placed.push((instance, footprint)),
                Err(err) => self.violation(
                    ViolationKind::PortOutOfRange,
                    &[instance],
                    instance.port.to_string(),
                    format!("`{}`: {err}", instance.name),
                ),
            }
        }
        placed.sort_by_key(|(instance, footprint)| (footprint.first, instance.declared_at.clone()));
        for (index, (low, low_footprint)) in placed.iter().enumerate() {
            for (high, high_footprint) in &placed[index + 1..] {
                if high_footprint.first > low_footprint.last {
                    break;
                }
                let message = overlap_message(low, low_footprint, high, high_footprint);
                let shared = low_footprint
                    .range()
                    .intersection(&high_footprint.range())
                    .expect("sorted and overlapping");
                self.violation(
                    ViolationKind::FootprintOverlap,
                    &[low, high],
                    shared.to_string(),
                    message,
                );
            }
        }
    }

    fn browsers(&mut self) {
        for instance in self.instances {
            let Some(cdp_port) = instance.browser.cdp_port else {
                continue;
            };
            if !(i64::from(MIN_PORT)..=i64::from(MAX_PORT)).contains(&cdp_port) {
                self.violation(
                    ViolationKind::PortOutOfRange,
                    &[instance],
                    cdp_port.to_string(),
                    format!(
                        "`{}`: browser.cdp_port {cdp_port} is outside {MIN_PORT}..{MAX_PORT}",
                        instance.name
                    ),
                );
                continue;
            }
            let port = cdp_port as u16;
            for other in self.instances {
                if other.name == instance.name {
                    continue;
                }
                let Ok(footprint) = other.footprint() else {
                    continue;
                };
                if let Some(role) = footprint.describe_port(port) {
                    self.violation(
                        ViolationKind::CdpPortInFootprint,
                        &[instance, other],
                        port.to_string(),
                        format!(
                            "`{}` pins browser.cdp_port {port}, which lies inside `{}`'s footprint ({role}); \
                             pick a port inside `{}`'s own footprint or outside every other",
                            instance.name, other.name, instance.name
                        ),
                    );
                }
            }
        }
        for (port, group) in self.shared(|i| i.browser.cdp_port) {
            let names: Vec<&str> = group.iter().map(|i| i.name.as_str()).collect();
            self.violation(
                ViolationKind::SharedCdpPort,
                &group,
                port.to_string(),
                format!(
                    "{} pin the same browser.cdp_port {port}: two gateways would drive one Chrome; give each its own port",
                    list(&names)
                ),
            );
        }
        for (url, group) in self.shared(|i| i.browser.cdp_url.as_deref().map(normalize_url)) {
            let names: Vec<&str> = group.iter().map(|i| i.name.as_str()).collect();
            self.violation(
                ViolationKind::SharedCdpUrl,
                &group,
                url.clone(),
                format!(
                    "{} pin the same browser.cdp_url {url}: two gateways would drive one remote Chrome \
                     (a known OpenClaw pitfall); give each its own browser",
                    list(&names)
                ),
            );
        }
    }

    fn dependencies(&mut self) {
        let by_name: HashMap<&str, &Instance> = self
            .instances
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        for instance in self.instances {
            for dependency in &instance.depends_on {
                match by_name.get(dependency.as_str()) {
                    None => {
                        let known: Vec<&str> =
                            self.instances.iter().map(|i| i.name.as_str()).collect();
                        let hint = crate::suggest::did_you_mean(dependency, known.iter().copied())
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        self.violation(
                            ViolationKind::UnknownDependency,
                            &[instance],
                            dependency.clone(),
                            format!(
                                "`{}` depends on `{dependency}`, which is not declared{hint}; instances: {}",
                                instance.name,
                                list(&known)
                            ),
                        );
                    }
                    Some(target) if instance.enabled && !target.enabled => {
                        self.report.warnings.push(Warning {
                            kind: WarningKind::DependsOnDisabled,
                            instances: vec![instance.name.clone(), target.name.clone()],
                            message: format!(
                                "`{}` depends on `{}`, which is disabled: `{}` will wait for it forever",
                                instance.name, target.name, instance.name
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        for cycle in dependency_cycles(self.instances) {
            let members: Vec<&Instance> = cycle.iter().map(|name| by_name[name.as_str()]).collect();
            let mut path = cycle.clone();
            path.push(cycle[0].clone());
            let path = path.join(" -> ");
            self.violation(
                ViolationKind::DependencyCycle,
                &members,
                path.clone(),
                format!("dependency cycle {path}: none of these could ever start; remove one `depends_on`"),
            );
        }
    }

    fn macos_service_names(&mut self) {
        for instance in self.instances {
            if let Some(problem) = profile::macos_service_problem(&instance.profile) {
                self.report.warnings.push(Warning {
                    kind: WarningKind::MacosServiceName,
                    instances: vec![instance.name.clone()],
                    message: format!(
                        "`{}`: profile `{}` cannot own a launchd service on macOS: {problem}",
                        instance.name, instance.profile
                    ),
                });
            }
        }
    }
}

fn overlap_message(
    low: &Instance,
    low_fp: &Footprint,
    high: &Instance,
    high_fp: &Footprint,
) -> String {
    let shared = low_fp
        .range()
        .intersection(&high_fp.range())
        .expect("overlapping");
    let spacing = u32::from(high_fp.first - low_fp.first);
    let mut message = if spacing == 0 {
        format!(
            "`{}` and `{}` both use base port {}: their whole footprints {} collide",
            low.name,
            high.name,
            low_fp.first,
            low_fp.range()
        )
    } else {
        let role = low_fp
            .describe_port(high_fp.gateway)
            .expect("the higher base lies inside the lower footprint");
        format!(
            "footprints of `{}` ({}) and `{}` ({}) overlap on ports {shared}: `{}`'s gateway port {} \
             lies inside `{}`'s {role}",
            low.name,
            low_fp.range(),
            high.name,
            high_fp.range(),
            high.name,
            high_fp.gateway,
            low.name
        )
    };
    if spacing > 0 && spacing % 20 == 0 {
        message.push_str(&format!(
            ". Spacing base ports {spacing} apart follows the old \"20 ports\" advice; OpenClaw 2026.9 \
             uses {FOOTPRINT_SIZE} ports per gateway (its docs say space bases at least 120 apart)"
        ));
    }
    message.push_str(&format!(
        ". Move `{}` to port {} or above (or use a pool / port = \"auto\")",
        high.name,
        u32::from(low_fp.first) + FOOTPRINT_SIZE
    ));
    message
}

fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Each cycle once, as names in dependency order, starting from its earliest-declared member.
fn dependency_cycles(instances: &[Instance]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| (instance.name.as_str(), i))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; instances.len()];
    let mut cycles = Vec::new();

    fn visit(
        node: usize,
        instances: &[Instance],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        marks[node] = Mark::Active;
        stack.push(node);
        for dependency in &instances[node].depends_on {
            let Some(&next) = index.get(dependency.as_str()) else {
                continue;
            };
            match marks[next] {
                Mark::New => visit(next, instances, index, marks, stack, cycles),
                Mark::Active => {
                    let start = stack.iter().position(|&n| n == next).expect("on the stack");
                    let mut cycle: Vec<usize> = stack[start..].to_vec();
                    let first = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    cycle.rotate_left(first);
                    cycles.push(cycle.iter().map(|&n| instances[n].name.clone()).collect());
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[node] = Mark::Done;
    }

    for node in 0..instances.len() {
        if marks[node] == Mark::New {
            visit(
                node,
                instances,
                &index,
                &mut marks,
                &mut Vec::new(),
                &mut cycles,
            );
        }
    }
    cycles.sort();
    cycles.dedup();
    cycles
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::topology::GatewaySpec;

    fn instance(name: &str, port: i64) -> Instance {
        instance_with(name, port, |_| {})
    }

    fn instance_with(name: &str, port: i64, edit: impl FnOnce(&mut GatewaySpec)) -> Instance {
        let mut spec = GatewaySpec {
            profile: Some(name.into()),
            ..GatewaySpec::default()
        };
        edit(&mut spec);
        spec.resolve(
            port,
            Path::new("/home/ada"),
            Path::new("/srv"),
            Location {
                file: "reef.lua".into(),
                line: 1,
            },
        )
        .unwrap()
    }

    fn kinds(report: &Report) -> Vec<ViolationKind> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn main_and_rescue_a_thousand_apart_are_valid() {
        let report = validate(&[instance("main", 18789), instance("rescue", 19789)]);
        assert!(report.is_valid(), "{report:?}");
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn twenty_port_spacing_is_an_overlap_explained() {
        let report = validate(&[instance("main", 18789), instance("rescue", 18809)]);
        assert_eq!(kinds(&report), [ViolationKind::FootprintOverlap]);
        let violation = &report.violations[0];
        assert_eq!(violation.instances, ["main", "rescue"]);
        assert_eq!(violation.value, "18809-18899");
        let message = &violation.message;
        assert!(
            message.contains(
                "`rescue`'s gateway port 18809 lies inside `main`'s CDP range 18800-18899"
            ),
            "{message}"
        );
        assert!(message.contains("\"20 ports\" advice"), "{message}");
        assert!(message.contains("port 18900 or above"), "{message}");
    }

    #[test]
    fn adjacent_footprints_do_not_overlap() {
        let report = validate(&[instance("a", 20000), instance("b", 20111)]);
        assert!(report.is_valid());
        let report = validate(&[instance("a", 20000), instance("b", 20110)]);
        assert_eq!(kinds(&report), [ViolationKind::FootprintOverlap]);
        assert_eq!(report.violations[0].value, "20110");
    }

    #[test]
    fn same_base_port() {
        let report = validate(&[instance("a", 20000), instance("b", 20000)]);
        assert_eq!(kinds(&report), [ViolationKind::FootprintOverlap]);
        assert!(
            report.violations[0]
                .message
                .contains("both use base port 20000")
        );
    }

    #[test]
    fn out_of_range_ports() {
        let report = validate(&[instance("low", 80), instance("high", 65500)]);
        assert_eq!(
            kinds(&report),
            [ViolationKind::PortOutOfRange, ViolationKind::PortOutOfRange]
        );
        assert!(report.violations[1].message.contains("65500..65610"));
    }

    #[test]
    fn duplicate_names() {
        let a = instance("a", 20000);
        let mut b = instance("b", 21000);
        b.name = "a".into();
        let report = validate(&[a, b]);
        assert_eq!(kinds(&report), [ViolationKind::DuplicateName]);
    }

    #[test]
    fn shared_profile_is_reported_once_not_per_path() {
        let a = instance("a", 20000);
        let b = instance_with("b", 21000, |spec| spec.profile = Some("A".into()));
        let report = validate(&[a, b]);
        // Different case: different paths, yet the same profile to OpenClaw.
        assert_eq!(kinds(&report), [ViolationKind::SharedProfile]);
        let c = instance_with("c", 22000, |spec| {
            spec.name = Some("c".into());
            spec.profile = Some("a".into());
        });
        let report = validate(&[instance("a", 20000), c]);
        assert_eq!(kinds(&report), [ViolationKind::SharedProfile]);
    }

    #[test]
    fn shared_paths() {
        let a = instance_with("a", 20000, |s| s.workspace = Some("/shared/ws".into()));
        let b = instance_with("b", 21000, |s| {
            s.workspace = Some("/shared/./ws/".into());
            s.config_path = Some("/home/ada/.openclaw-a/openclaw.json".into());
        });
        let c = instance_with("c", 22000, |s| {
            s.state_dir = Some("/home/ada/.openclaw-a".into())
        });
        let report = validate(&[a, b, c]);
        let kinds = kinds(&report);
        assert!(kinds.contains(&ViolationKind::SharedStateDir), "{kinds:?}");
        assert!(
            kinds.contains(&ViolationKind::SharedConfigPath),
            "{kinds:?}"
        );
        assert!(kinds.contains(&ViolationKind::SharedWorkspace), "{kinds:?}");
    }

    #[test]
    fn names_that_would_be_paths_are_refused() {
        for bad in ["../../tmp/x", "team/a", "", ".hidden", "a b"] {
            let mut instance = instance("ok", 20000);
            instance.name = bad.into();
            let report = validate(&[instance]);
            assert_eq!(kinds(&report), [ViolationKind::InvalidName], "{bad:?}");
        }
        let mut fine = instance("ok", 20000);
        fine.name = "Team_1.b-2".into();
        assert!(validate(&[fine]).is_valid());
    }

    #[test]
    fn invalid_profile() {
        let bad = instance_with("bad", 20000, |s| {
            s.name = Some("bad".into());
            s.profile = Some("main bot".into());
        });
        let report = validate(&[bad]);
        assert_eq!(kinds(&report), [ViolationKind::InvalidProfile]);
    }

    #[test]
    fn browsers() {
        let a = instance_with("a", 20000, |s| {
            s.browser = Some(crate::topology::BrowserSpec {
                cdp_port: Some(30000),
                cdp_url: Some("http://127.0.0.1:9222/".into()),
            })
        });
        let b = instance_with("b", 21000, |s| {
            s.browser = Some(crate::topology::BrowserSpec {
                cdp_port: Some(30000),
                cdp_url: Some("HTTP://127.0.0.1:9222".into()),
            })
        });
        let c = instance_with("c", 22000, |s| {
            s.browser = Some(crate::topology::BrowserSpec {
                cdp_port: Some(20050),
                cdp_url: None,
            })
        });
        let report = validate(&[a, b, c]);
        assert_eq!(
            kinds(&report),
            [
                ViolationKind::CdpPortInFootprint,
                ViolationKind::SharedCdpPort,
                ViolationKind::SharedCdpUrl
            ]
        );
        assert!(
            report.violations[0]
                .message
                .contains("inside `a`'s footprint (CDP range 20011-20110)")
        );
    }

    #[test]
    fn dependencies() {
        let a = instance_with("a", 20000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("b".into()))
        });
        let b = instance_with("b", 21000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("c".into()))
        });
        let c = instance_with("c", 22000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("a".into()))
        });
        let d = instance_with("d", 23000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("aa".into()))
        });
        let e = instance_with("e", 24000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("e".into()))
        });
        let report = validate(&[a, b, c, d, e]);
        assert_eq!(
            kinds(&report),
            [
                ViolationKind::UnknownDependency,
                ViolationKind::DependencyCycle,
                ViolationKind::DependencyCycle
            ]
        );
        assert!(report.violations[0].message.contains("did you mean `a`?"));
        assert_eq!(report.violations[1].value, "a -> b -> c -> a");
        assert_eq!(report.violations[2].value, "e -> e");
    }

    #[test]
    fn warnings() {
        let base = instance_with("base", 20000, |s| s.enabled = Some(false));
        let app = instance_with("App", 21000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::One("base".into()))
        });
        let report = validate(&[base, app]);
        assert!(report.is_valid());
        let kinds: Vec<WarningKind> = report.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [
                WarningKind::DependsOnDisabled,
                WarningKind::MacosServiceName
            ]
        );
    }
}
