//! Isolation checks across a topology's instances, as data.
//!
//! Every [`Violation`] names the instances involved, the value they share and what to change.
//! Violations make a plan invalid (`reef plan` exits 1); [`Warning`]s are printed and allowed.
//!
//! A script may declare thousands of gateways, so every check is O(n log n) and the report stays
//! small whatever the script does:
//! - instances sharing a value are grouped: one violation per group, naming at most
//!   [`MAX_NAMED`] of its members and counting the rest;
//! - footprints are swept in port order: one violation per base port used more than once, and
//!   one per neighbouring pair of bases whose footprints overlap;
//! - dependency cycles are found per strongly connected component, one cycle each;
//! - past [`MAX_PER_KIND`] violations (or warnings) of one kind, the rest are only counted, in
//!   [`Report::omitted`] (and [`Report::omitted_warnings`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ports::{FOOTPRINT_SIZE, Footprint, MAX_PORT, MIN_PORT};
use crate::profile;
use crate::topology::{Instance, Location};

/// At most this many violations, and this many warnings, of one kind are listed; the rest are
/// counted in [`Report::omitted`] and [`Report::omitted_warnings`].
pub const MAX_PER_KIND: usize = 50;
/// At most this many instances are named in one violation; its message counts the rest.
pub const MAX_NAMED: usize = 10;
/// "Did you mean" hints compare an unknown dependency with every instance name; past this many
/// comparisons in one validation they are skipped, so a huge topology cannot make them slow.
const HINT_BUDGET: usize = 200_000;
/// Longest instance name shown in a message or a violation's `instances` (valid names have
/// at most 64 bytes; longer ones are invalid anyway).
const NAME_CLIP: usize = 200;
/// Longest value (a path, a URL, a profile...) shown in a message or a violation's `value`.
const VALUE_CLIP: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    InvalidString,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    MacosServiceName,
    CliPortMismatch,
    DependsOnDisabled,
    NoGateways,
}

/// The kebab-case name a kind has in JSON.
fn kind_name(kind: &impl Serialize) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("kinds serialize as strings"),
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&kind_name(self))
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&kind_name(self))
    }
}

/// An isolation mistake: the plan cannot run as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The instances involved, at most [`MAX_NAMED`] of them (the message counts the rest).
    pub instances: Vec<String>,
    /// The shared or offending value, e.g. a path, a port range, a profile name.
    pub value: String,
    pub message: String,
    /// Where each of `instances` is declared, in the same order.
    pub locations: Vec<Location>,
}

/// Something that works here but may bite elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub instances: Vec<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub warnings: Vec<Warning>,
    /// Violations found beyond the [`MAX_PER_KIND`] listed of their kind: counted, not listed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub omitted: BTreeMap<ViolationKind, usize>,
    /// Warnings found beyond the [`MAX_PER_KIND`] listed of their kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub omitted_warnings: BTreeMap<WarningKind, usize>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// Every violation found, listed or omitted.
    pub fn violation_count(&self) -> usize {
        self.violations.len() + self.omitted.values().sum::<usize>()
    }

    /// Every warning found, listed or omitted.
    pub fn warning_count(&self) -> usize {
        self.warnings.len() + self.omitted_warnings.values().sum::<usize>()
    }

    /// One line per kind with omitted violations, e.g. "and 9,949 more footprint-overlap
    /// violations", to print after the listed ones.
    pub fn omitted_summary(&self) -> Vec<String> {
        omitted_lines(&self.omitted, "violation")
    }

    /// One line per kind with omitted warnings, e.g. "and 120 more macos-service-name warnings".
    pub fn omitted_warnings_summary(&self) -> Vec<String> {
        omitted_lines(&self.omitted_warnings, "warning")
    }
}

fn omitted_lines<K: fmt::Display>(omitted: &BTreeMap<K, usize>, noun: &str) -> Vec<String> {
    omitted
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, &count)| {
            let plural = if count == 1 { "" } else { "s" };
            format!("and {} more {kind} {noun}{plural}", thousands(count))
        })
        .collect()
}

/// Runs every check over `instances` (enabled or not: a disabled gateway may be enabled later).
pub fn validate(instances: &[Instance]) -> Report {
    let mut checker = Checker {
        instances,
        report: Report::default(),
        listed: BTreeMap::new(),
        listed_warnings: BTreeMap::new(),
        shared_profiles: BTreeSet::new(),
        placed: Vec::new(),
    };
    checker.strings();
    checker.names();
    checker.profiles();
    checker.paths();
    checker.footprints();
    checker.browsers();
    checker.dependencies();
    checker.macos_service_names();
    checker.cli_ports();
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
    /// How many violations of each kind are listed so far.
    listed: BTreeMap<ViolationKind, usize>,
    listed_warnings: BTreeMap<WarningKind, usize>,
    /// Groups of instances (indices, ascending) that share a profile, listed or not.
    shared_profiles: BTreeSet<Vec<usize>>,
    /// Instances whose footprint fits, by base port then declaration: filled by `footprints`.
    placed: Vec<(&'a Instance, Footprint)>,
}

/// Instance names become log file names, unit names and labels: one plain path component.
fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.len() <= 64
}

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// A name as a message shows it: clipped, control characters escaped.
fn shown(name: &str) -> Cow<'_, str> {
    let name = clip(name, NAME_CLIP);
    if name.chars().any(char::is_control) {
        Cow::Owned(name.escape_debug().to_string())
    } else {
        name
    }
}

/// 9949 as "9,949".
fn thousands(count: usize) -> String {
    let digits = count.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "`a`, `b` and `c`"; past [`MAX_NAMED`] names, "`a`, `b`, ..., `j` and 9,990 more".
fn list<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let mut names = names.into_iter();
    let quoted: Vec<String> = names
        .by_ref()
        .take(MAX_NAMED)
        .map(|name| format!("`{}`", shown(name)))
        .collect();
    let more = names.count();
    match (quoted.as_slice(), more) {
        ([], _) => String::new(),
        ([one], 0) => one.clone(),
        ([init @ .., last], 0) => format!("{} and {last}", init.join(", ")),
        (all, more) => format!("{} and {} more", all.join(", "), thousands(more)),
    }
}

/// The names of `members`, for [`list`].
fn names_of<'m>(members: &'m [&Instance]) -> impl Iterator<Item = &'m str> {
    members.iter().map(|i| i.name.as_str())
}

impl<'a> Checker<'a> {
    /// Whether one more violation of `kind` is listed; past [`MAX_PER_KIND`] it is only counted.
    fn admit(&mut self, kind: ViolationKind) -> bool {
        let listed = self.listed.entry(kind).or_default();
        if *listed < MAX_PER_KIND {
            *listed += 1;
            true
        } else {
            *self.report.omitted.entry(kind).or_default() += 1;
            false
        }
    }

    /// Records a violation of `kind` among `members`; `describe` gives its value and message,
    /// and runs only when the violation is listed.
    fn violation(
        &mut self,
        kind: ViolationKind,
        members: &[&Instance],
        describe: impl FnOnce() -> (String, String),
    ) {
        if !self.admit(kind) {
            return;
        }
        let (value, message) = describe();
        let named = &members[..members.len().min(MAX_NAMED)];
        self.report.violations.push(Violation {
            kind,
            instances: named
                .iter()
                .map(|i| clip(&i.name, NAME_CLIP).into_owned())
                .collect(),
            value,
            message,
            locations: named.iter().map(|i| i.declared_at.clone()).collect(),
        });
    }

    /// Records a warning, listed unless [`MAX_PER_KIND`] of its kind already are.
    fn warning(
        &mut self,
        kind: WarningKind,
        members: &[&Instance],
        message: impl FnOnce() -> String,
    ) {
        let listed = self.listed_warnings.entry(kind).or_default();
        if *listed >= MAX_PER_KIND {
            *self.report.omitted_warnings.entry(kind).or_default() += 1;
            return;
        }
        *listed += 1;
        self.report.warnings.push(Warning {
            kind,
            instances: members
                .iter()
                .take(MAX_NAMED)
                .map(|i| clip(&i.name, NAME_CLIP).into_owned())
                .collect(),
            message: message(),
        });
    }

    /// Indices of instances grouped by `key`, keeping groups of two or more, ordered by where
    /// each group's first member is declared (then by key); each group in declaration order.
    /// Grouped by hash: comparing paths component by component for every instance is slow.
    fn shared<K: Ord + Hash>(
        &self,
        key: impl Fn(&'a Instance) -> Option<K>,
    ) -> Vec<(K, Vec<usize>)> {
        let mut groups: HashMap<K, Vec<usize>> = HashMap::new();
        for (index, instance) in self.instances.iter().enumerate() {
            if let Some(k) = key(instance) {
                groups.entry(k).or_default().push(index);
            }
        }
        let mut shared: Vec<_> = groups.into_iter().filter(|(_, g)| g.len() > 1).collect();
        let instances = self.instances;
        shared.sort_by(|(a_key, a), (b_key, b)| {
            (&instances[a[0]].declared_at, a_key).cmp(&(&instances[b[0]].declared_at, b_key))
        });
        shared
    }

    fn members(&self, group: &[usize]) -> Vec<&'a Instance> {
        group.iter().map(|&index| &self.instances[index]).collect()
    }

    /// NUL bytes in strings that reach a process, a file or an export, and environment
    /// variable names a process environment cannot hold.
    fn strings(&mut self) {
        let instances = self.instances;
        for instance in instances {
            each_string(instance, |field, text| {
                let nul = text.contains(&0);
                let bad_name =
                    matches!(field, Field::EnvKey(_)) && (text.is_empty() || text.contains(&b'='));
                if !nul && !bad_name {
                    return;
                }
                self.violation(ViolationKind::InvalidString, &[instance], || {
                    let problem = if nul {
                        format!("contains a NUL byte (\\0); {}", field.why_no_nul())
                    } else if text.is_empty() {
                        "is an empty variable name; a process environment cannot hold it".into()
                    } else {
                        "has '=' in its name; a process would read the variable's name as ending \
                         there"
                            .into()
                    };
                    let field = field.to_string();
                    let message = format!("`{}`: {field} {problem}", shown(&instance.name));
                    (field, message)
                });
            });
        }
    }

    fn names(&mut self) {
        let instances = self.instances;
        for instance in instances {
            // A NUL byte is reported as an invalid string, once.
            if is_safe_name(&instance.name) || instance.name.contains('\0') {
                continue;
            }
            self.violation(ViolationKind::InvalidName, &[instance], || {
                let name = clip(&instance.name, NAME_CLIP);
                (
                    name.to_string(),
                    format!(
                        "instance name {name:?} is not usable: reef names files after it; use 1 to 64 letters, \
                         digits, '_', '-' or '.', starting with a letter or digit"
                    ),
                )
            });
        }
        for (name, group) in self.shared(|i| Some(i.name.as_str())) {
            let members = self.members(&group);
            self.violation(ViolationKind::DuplicateName, &members, || {
                let mut places: Vec<String> = members
                    .iter()
                    .take(MAX_NAMED)
                    .map(|i| i.declared_at.to_string())
                    .collect();
                if members.len() > MAX_NAMED {
                    places.push(format!("and {} more", thousands(members.len() - MAX_NAMED)));
                }
                let name = shown(name);
                (
                    name.to_string(),
                    format!(
                        "instance name `{name}` is declared {} times ({}); give each gateway its own `name`",
                        thousands(members.len()),
                        places.join(", ")
                    ),
                )
            });
        }
    }

    fn profiles(&mut self) {
        let instances = self.instances;
        for instance in instances {
            if instance.profile.contains('\0') || profile::check_name(&instance.profile).is_ok() {
                continue;
            }
            self.violation(ViolationKind::InvalidProfile, &[instance], || {
                let err = profile::InvalidProfileName {
                    name: clip(&instance.profile, VALUE_CLIP).into_owned(),
                };
                (
                    err.name.clone(),
                    format!(
                        "`{}`: {err}; `openclaw --profile` refuses it",
                        shown(&instance.name)
                    ),
                )
            });
        }
        for (profile, group) in self.shared(|i| Some(i.profile.to_ascii_lowercase())) {
            let members = self.members(&group);
            self.shared_profiles.insert(group);
            self.violation(ViolationKind::SharedProfile, &members, || {
                let profile = shown(&profile);
                (
                    profile.to_string(),
                    format!(
                        "{} share the profile `{profile}` (profile names match case-insensitively): \
                         they would fight over one state dir, lock and service name; give each gateway its own profile",
                        list(names_of(&members))
                    ),
                )
            });
        }
    }

    fn paths(&mut self) {
        type PathOf = fn(&Instance) -> &Path;
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
        let mut shared_state_dirs: BTreeSet<Vec<usize>> = BTreeSet::new();
        for (kind, what, field) in checks {
            for (path, group) in self.shared(|i| Some(field(i))) {
                // Instances that already share a profile share its default paths too: say it once.
                if self.shared_profiles.contains(&group) {
                    continue;
                }
                let members = self.members(&group);
                let derived = members.iter().all(|i| match kind {
                    ViolationKind::SharedConfigPath => {
                        i.config_path == profile::config_path(&i.state_dir)
                    }
                    ViolationKind::SharedWorkspace => {
                        i.workspace == profile::workspace(&i.state_dir)
                    }
                    _ => false,
                });
                if derived && shared_state_dirs.contains(&group) {
                    continue;
                }
                if kind == ViolationKind::SharedStateDir {
                    shared_state_dirs.insert(group);
                }
                self.violation(kind, &members, || {
                    let path = path.display().to_string();
                    let path = clip(&path, VALUE_CLIP);
                    let field_name = what.replace(' ', "_");
                    (
                        path.to_string(),
                        format!(
                            "{} share the {what} {path}; set a distinct `{field_name}` for each (or drop it to use the profile's own)",
                            list(names_of(&members)),
                        ),
                    )
                });
            }
        }
    }

    /// Sorts the fitting footprints by base port and sweeps them once. Every footprint has the
    /// same size, so the one before in that order reaches furthest: a footprint overlapping any
    /// lower one overlaps its predecessor. Gateways on the same base are one violation; between
    /// bases, each base's first gateway is compared with the previous base's first.
    fn footprints(&mut self) {
        let instances = self.instances;
        let mut placed: Vec<(&Instance, Footprint)> = Vec::with_capacity(instances.len());
        for instance in instances {
            match instance.footprint() {
                Ok(footprint) => placed.push((instance, footprint)),
                Err(err) => self.violation(ViolationKind::PortOutOfRange, &[instance], || {
                    (
                        instance.port.to_string(),
                        format!("`{}`: {err}", shown(&instance.name)),
                    )
                }),
            }
        }
        placed.sort_by(|(a, a_footprint), (b, b_footprint)| {
            (a_footprint.first, &a.declared_at).cmp(&(b_footprint.first, &b.declared_at))
        });
        let mut previous: Option<(&Instance, Footprint)> = None;
        for same_base in placed.chunk_by(|(_, a), (_, b)| a.first == b.first) {
            let (head, footprint) = same_base[0];
            if let Some((low, low_footprint)) = previous
                && low_footprint.last >= footprint.first
            {
                self.violation(ViolationKind::FootprintOverlap, &[low, head], || {
                    let shared = low_footprint
                        .range()
                        .intersection(&footprint.range())
                        .expect("sorted and overlapping");
                    (
                        shared.to_string(),
                        overlap_message(low, &low_footprint, head, &footprint),
                    )
                });
            }
            if same_base.len() > 1 {
                let members: Vec<&Instance> = same_base.iter().map(|(i, _)| *i).collect();
                self.violation(ViolationKind::FootprintOverlap, &members, || {
                    (
                        footprint.range().to_string(),
                        same_base_message(&members, &footprint),
                    )
                });
            }
            previous = Some((head, footprint));
        }
        self.placed = placed;
    }

    fn browsers(&mut self) {
        let instances = self.instances;
        for instance in instances {
            let Some(cdp_port) = instance.browser.cdp_port else {
                continue;
            };
            if !(i64::from(MIN_PORT)..=i64::from(MAX_PORT)).contains(&cdp_port) {
                self.violation(ViolationKind::PortOutOfRange, &[instance], || {
                    (
                        cdp_port.to_string(),
                        format!(
                            "`{}`: browser.cdp_port {cdp_port} is outside {MIN_PORT}..{MAX_PORT}",
                            shown(&instance.name)
                        ),
                    )
                });
                continue;
            }
            let port = cdp_port as u16;
            // Footprints are sorted by base and all the same size, so by their last port too:
            // those holding `port` are one run.
            let start = self.placed.partition_point(|(_, f)| f.last < port);
            let end = self.placed.partition_point(|(_, f)| f.first <= port);
            let others = || {
                self.placed[start..end]
                    .iter()
                    .filter(|(other, _)| !std::ptr::eq(*other, instance))
            };
            if others().next().is_none() {
                continue;
            }
            // The pinning instance and the first hosts fill the violation's `instances`.
            let hosts: Vec<(&Instance, Footprint)> =
                others().take(MAX_NAMED - 1).copied().collect();
            let own = usize::from(instance.footprint().is_ok_and(|f| f.range().contains(port)));
            let more = end - start - own - hosts.len();
            let mut members = vec![instance];
            members.extend(hosts.iter().map(|(other, _)| *other));
            self.violation(ViolationKind::CdpPortInFootprint, &members, || {
                let name = shown(&instance.name);
                let inside: Vec<String> = hosts
                    .iter()
                    .map(|(other, footprint)| {
                        let role = footprint
                            .describe_port(port)
                            .expect("the footprint holds the port");
                        (shown(&other.name).into_owned(), role)
                    })
                    .map(|(other, role)| format!("`{other}`'s footprint ({role})"))
                    .collect();
                let inside = match (inside.as_slice(), more) {
                    ([one], 0) => one.clone(),
                    ([init @ .., last], 0) => format!("{} and {last}", init.join(", ")),
                    (all, more) => {
                        format!("{} and {} more footprints", all.join(", "), thousands(more))
                    }
                };
                (
                    port.to_string(),
                    format!(
                        "`{name}` pins browser.cdp_port {port}, which lies inside {inside}; \
                         pick a port inside `{name}`'s own footprint or outside every other"
                    ),
                )
            });
        }
        for (port, group) in self.shared(|i| i.browser.cdp_port) {
            let members = self.members(&group);
            self.violation(ViolationKind::SharedCdpPort, &members, || {
                (
                    port.to_string(),
                    format!(
                        "{} pin the same browser.cdp_port {port}: two gateways would drive one Chrome; give each its own port",
                        list(names_of(&members))
                    ),
                )
            });
        }
        for (url, group) in self.shared(|i| i.browser.cdp_url.as_deref().map(normalize_url)) {
            let members = self.members(&group);
            self.violation(ViolationKind::SharedCdpUrl, &members, || {
                let url = clip(&url, VALUE_CLIP);
                (
                    url.to_string(),
                    format!(
                        "{} pin the same browser.cdp_url {url}: two gateways would drive one remote Chrome \
                         (a known OpenClaw pitfall); give each its own browser",
                        list(names_of(&members))
                    ),
                )
            });
        }
    }

    fn dependencies(&mut self) {
        let instances = self.instances;
        let by_name: HashMap<&str, &Instance> =
            instances.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut hint_budget = HINT_BUDGET;
        for instance in instances {
            for dependency in &instance.depends_on {
                match by_name.get(dependency.as_str()) {
                    None => {
                        let mut budget = hint_budget;
                        self.violation(ViolationKind::UnknownDependency, &[instance], || {
                            let hint = hint(dependency, instances, &mut budget)
                                .map(|s| format!(" (did you mean `{s}`?)"))
                                .unwrap_or_default();
                            (
                                clip(dependency, NAME_CLIP).into_owned(),
                                format!(
                                    "`{}` depends on `{}`, which is not declared{hint}; instances: {}",
                                    shown(&instance.name),
                                    shown(dependency),
                                    list(instances.iter().map(|i| i.name.as_str()))
                                ),
                            )
                        });
                        hint_budget = budget;
                    }
                    Some(&target) if instance.enabled && !target.enabled => {
                        self.warning(WarningKind::DependsOnDisabled, &[instance, target], || {
                            format!(
                                "`{}` depends on `{}`, which is disabled: `{}` will wait for it forever",
                                shown(&instance.name),
                                shown(&target.name),
                                shown(&instance.name)
                            )
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        for cycle in dependency_cycles(instances) {
            let members = self.members(&cycle.members);
            self.violation(ViolationKind::DependencyCycle, &members, || {
                let path = cycle_path(&members);
                let mut message = format!(
                    "dependency cycle {path}: none of these could ever start; remove one `depends_on`"
                );
                let caught = cycle.knot - members.len();
                if caught > 0 {
                    message.push_str(&format!(
                        " ({} more {} on each other with these)",
                        thousands(caught),
                        if caught == 1 { "instance waits" } else { "instances wait" }
                    ));
                }
                (path, message)
            });
        }
    }

    /// `openclaw --profile dev` always targets port 19001: a `dev` gateway elsewhere is out of
    /// the CLI's reach.
    fn cli_ports(&mut self) {
        let instances = self.instances;
        for instance in instances {
            if let Some(forced) = profile::cli_forces_port(&instance.profile)
                && instance.port != i64::from(forced)
            {
                self.warning(WarningKind::CliPortMismatch, &[instance], || {
                    format!(
                        "`{}`: `openclaw --profile {}` always targets port {forced}, but this gateway \
                         listens on {}; use port = {forced}, or another profile name",
                        shown(&instance.name),
                        shown(&instance.profile),
                        instance.port
                    )
                });
            }
        }
    }

    fn macos_service_names(&mut self) {
        let instances = self.instances;
        for instance in instances {
            if let Some(problem) = profile::macos_service_problem(&instance.profile) {
                self.warning(WarningKind::MacosServiceName, &[instance], || {
                    format!(
                        "`{}`: profile `{}` cannot own a launchd service on macOS: {problem}",
                        shown(&instance.name),
                        shown(&instance.profile)
                    )
                });
            }
        }
    }
}

/// A string field of an instance, as a message names it.
#[derive(Debug, Clone, Copy)]
enum Field<'s> {
    Name,
    Profile,
    /// The index counts from 1, as in the script's Lua table.
    Command(usize),
    Args(usize),
    EnvKey(&'s str),
    EnvValue(&'s str),
    StateDir,
    ConfigPath,
    Workspace,
    SystemdUnit,
    LaunchdLabel,
    LivenessPath,
    ReadinessPath,
    StopSignal,
    CdpUrl,
    Image,
}

impl Field<'_> {
    /// Why a NUL byte cannot be in this field.
    fn why_no_nul(&self) -> &'static str {
        match self {
            Field::StateDir | Field::ConfigPath | Field::Workspace => "no file path can hold it",
            Field::LivenessPath | Field::ReadinessPath => "no HTTP request can carry it",
            Field::Image => "no container image reference can hold it",
            _ => "a process cannot receive it",
        }
    }
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Name => f.write_str("name"),
            Field::Profile => f.write_str("profile"),
            Field::Command(index) => write!(f, "command[{index}]"),
            Field::Args(index) => write!(f, "args[{index}]"),
            Field::EnvValue(key)
                if !key.is_empty()
                    && key.len() <= NAME_CLIP
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                write!(f, "env.{key}")
            }
            Field::EnvKey(key) | Field::EnvValue(key) => {
                write!(f, "env[{:?}]", clip(key, NAME_CLIP))
            }
            Field::StateDir => f.write_str("state_dir"),
            Field::ConfigPath => f.write_str("config_path"),
            Field::Workspace => f.write_str("workspace"),
            Field::SystemdUnit => f.write_str("systemd_unit"),
            Field::LaunchdLabel => f.write_str("launchd_label"),
            Field::LivenessPath => f.write_str("health.liveness_path"),
            Field::ReadinessPath => f.write_str("health.readiness_path"),
            Field::StopSignal => f.write_str("stop.signal"),
            Field::CdpUrl => f.write_str("browser.cdp_url"),
            Field::Image => f.write_str("image"),
        }
    }
}

/// Calls `visit` with every string of `instance` that reaches a process, a file or an export.
fn each_string<'i>(instance: &'i Instance, mut visit: impl FnMut(Field<'i>, &[u8])) {
    visit(Field::Name, instance.name.as_bytes());
    visit(Field::Profile, instance.profile.as_bytes());
    for (index, word) in instance.command.iter().flatten().enumerate() {
        visit(Field::Command(index + 1), word.as_bytes());
    }
    for (index, word) in instance.args.iter().enumerate() {
        visit(Field::Args(index + 1), word.as_bytes());
    }
    for (key, value) in &instance.env {
        visit(Field::EnvKey(key), key.as_bytes());
        // A NUL in the name is reported once, for the name.
        if !key.contains('\0') {
            visit(Field::EnvValue(key), value.as_bytes());
        }
    }
    let paths = [
        (Field::StateDir, &instance.state_dir),
        (Field::ConfigPath, &instance.config_path),
        (Field::Workspace, &instance.workspace),
    ];
    for (field, path) in paths {
        visit(field, path.as_os_str().as_encoded_bytes());
    }
    visit(Field::SystemdUnit, instance.systemd_unit.as_bytes());
    visit(Field::LaunchdLabel, instance.launchd_label.as_bytes());
    visit(
        Field::LivenessPath,
        instance.health.liveness_path.as_bytes(),
    );
    visit(
        Field::ReadinessPath,
        instance.health.readiness_path.as_bytes(),
    );
    visit(Field::StopSignal, instance.stop.signal.as_bytes());
    if let Some(url) = &instance.browser.cdp_url {
        visit(Field::CdpUrl, url.as_bytes());
    }
    if let Some(image) = &instance.image {
        visit(Field::Image, image.as_bytes());
    }
}

/// The declared name closest to `dependency`, while `budget` comparisons remain.
fn hint<'i>(dependency: &str, instances: &'i [Instance], budget: &mut usize) -> Option<&'i str> {
    // Valid names have at most 64 bytes; longer strings are no likely typo and slow to compare.
    const LONGEST: usize = 64;
    if dependency.len() > LONGEST || instances.len() > *budget {
        return None;
    }
    *budget -= instances.len();
    let candidates = instances
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| name.len() <= LONGEST);
    crate::suggest::did_you_mean(dependency, candidates)
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
    let (low_name, high_name) = (shown(&low.name), shown(&high.name));
    let mut message = if spacing == 0 {
        format!(
            "`{low_name}` and `{high_name}` both use base port {}: their whole footprints {} collide",
            low_fp.first,
            low_fp.range()
        )
    } else {
        let role = low_fp
            .describe_port(high_fp.gateway)
            .expect("the higher base lies inside the lower footprint");
        format!(
            "footprints of `{low_name}` ({}) and `{high_name}` ({}) overlap on ports {shared}: \
             `{high_name}`'s gateway port {} lies inside `{low_name}`'s {role}",
            low_fp.range(),
            high_fp.range(),
            high_fp.gateway,
        )
    };
    if spacing > 0 && spacing % 20 == 0 {
        message.push_str(&format!(
            ". Spacing base ports {spacing} apart follows the old \"20 ports\" advice; OpenClaw 2026.9 \
             uses {FOOTPRINT_SIZE} ports per gateway (its docs say space bases at least 120 apart)"
        ));
    }
    message.push_str(&format!(
        ". Move `{high_name}` to port {} or above (or use a pool / port = \"auto\")",
        u32::from(low_fp.first) + FOOTPRINT_SIZE
    ));
    message
}

/// Two or more gateways on one base port (`members` in sweep order).
fn same_base_message(members: &[&Instance], footprint: &Footprint) -> String {
    match members {
        [low, high] => overlap_message(low, footprint, high, footprint),
        _ => format!(
            "{} all use base port {}: their whole footprints {} collide. Give each gateway its own \
             base port, at least {FOOTPRINT_SIZE} apart (or use a pool / port = \"auto\")",
            list(names_of(members)),
            footprint.first,
            footprint.range()
        ),
    }
}

fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// "a -> b -> c -> a"; a long cycle shows its first [`MAX_NAMED`] members and counts the rest.
fn cycle_path(members: &[&Instance]) -> String {
    let mut steps: Vec<String> = members
        .iter()
        .take(MAX_NAMED)
        .map(|i| shown(&i.name).into_owned())
        .collect();
    if members.len() > MAX_NAMED {
        steps.push(format!("... {} more", thousands(members.len() - MAX_NAMED)));
    }
    steps.push(shown(&members[0].name).into_owned());
    steps.join(" -> ")
}

/// A dependency cycle: its members (indices) in dependency order, starting from the
/// earliest-declared, and how many instances its strongly connected component holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cycle {
    members: Vec<usize>,
    knot: usize,
}

/// One cycle per strongly connected component of the `depends_on` graph that has one: the
/// shortest through the component's earliest-declared member. Components come from an
/// iterative Tarjan (no recursion, so a chain of 100,000 dependencies cannot overflow the
/// stack), cycles from a breadth-first search inside each; both linear in instances plus
/// dependencies. Ordered by their first member.
fn dependency_cycles(instances: &[Instance]) -> Vec<Cycle> {
    let index: HashMap<&str, usize> = instances
        .iter()
        .enumerate()
        .map(|(i, instance)| (instance.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = instances
        .iter()
        .map(|instance| {
            instance
                .depends_on
                .iter()
                .filter_map(|dependency| index.get(dependency.as_str()).copied())
                .collect()
        })
        .collect();
    let count = instances.len();

    // Tarjan's algorithm with an explicit call stack of (node, next edge).
    const UNSEEN: usize = usize::MAX;
    let mut order = vec![UNSEEN; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack: Vec<usize> = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut next_order = 0;
    let mut components: Vec<Vec<usize>> = Vec::new();
    for root in 0..count {
        if order[root] != UNSEEN {
            continue;
        }
        order[root] = next_order;
        low[root] = next_order;
        next_order += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some((node, edge)) = calls.last_mut() {
            let node = *node;
            if let Some(&next) = edges[node].get(*edge) {
                *edge += 1;
                if order[next] == UNSEEN {
                    order[next] = next_order;
                    low[next] = next_order;
                    next_order += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    calls.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(order[next]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == order[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("the root is on the stack");
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 || edges[node].contains(&node) {
                    components.push(component);
                }
            }
        }
    }

    // The shortest cycle through each component's first member, by breadth-first search.
    let mut component_of = vec![usize::MAX; count];
    for (id, component) in components.iter().enumerate() {
        for &member in component {
            component_of[member] = id;
        }
    }
    let mut parent = vec![usize::MAX; count];
    let mut cycles: Vec<Cycle> = components
        .iter()
        .enumerate()
        .map(|(id, component)| {
            let start = *component.iter().min().expect("components are not empty");
            let mut queue = VecDeque::from([start]);
            parent[start] = start;
            let last = 'search: loop {
                let node = queue.pop_front().expect("a component holds a cycle");
                for &next in &edges[node] {
                    if next == start {
                        break 'search node;
                    }
                    if component_of[next] == id && parent[next] == usize::MAX {
                        parent[next] = node;
                        queue.push_back(next);
                    }
                }
            };
            let mut members = vec![last];
            while *members.last().expect("not empty") != start {
                let node = *members.last().expect("not empty");
                members.push(parent[node]);
            }
            members.reverse();
            Cycle {
                members,
                knot: component.len(),
            }
        })
        .collect();
    cycles.sort_by_key(|cycle| cycle.members[0]);
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

    #[test]
    fn a_dev_gateway_off_the_port_the_cli_forces_is_warned_about() {
        let away = instance("dev", 20000);
        let report = validate(&[away]);
        assert!(report.is_valid());
        assert_eq!(report.warnings.len(), 1, "{report:?}");
        assert_eq!(report.warnings[0].kind, WarningKind::CliPortMismatch);
        assert!(report.warnings[0].message.contains("19001"));
        let report = validate(&[instance("dev", 19001), instance("default", 20000)]);
        assert!(report.warnings.is_empty(), "{report:?}");
    }

    fn count_of(report: &Report, kind: ViolationKind) -> usize {
        report.violations.iter().filter(|v| v.kind == kind).count()
    }

    /// `count` gateways from `make(i)`, each named and profiled `p{i}`.
    fn fleet(count: usize, port: impl Fn(usize) -> i64) -> Vec<Instance> {
        (0..count)
            .map(|i| instance(&format!("p{i}"), port(i)))
            .collect()
    }

    #[test]
    fn ten_thousand_gateways_on_one_port_are_one_violation_naming_ten() {
        let report = validate(&fleet(10_000, |_| 18789));
        assert_eq!(kinds(&report), [ViolationKind::FootprintOverlap]);
        assert!(report.omitted.is_empty(), "{:?}", report.omitted);
        let violation = &report.violations[0];
        assert_eq!(violation.instances.len(), MAX_NAMED);
        assert_eq!(violation.locations.len(), MAX_NAMED);
        assert_eq!(violation.instances[0], "p0");
        assert_eq!(violation.value, "18789-18899");
        assert!(
            violation
                .message
                .starts_with("`p0`, `p1`, `p2`, `p3`, `p4`, `p5`, `p6`, `p7`, `p8`, `p9` and 9,990 more all use base port 18789"),
            "{}",
            violation.message
        );
        assert!(violation.message.len() < 500, "{}", violation.message);
    }

    #[test]
    fn ten_thousand_overlapping_footprints_list_fifty_and_count_the_rest() {
        // Bases 1 apart: every neighbouring pair overlaps, 9,999 pairs in all.
        let report = validate(&fleet(10_000, |i| 20000 + i as i64));
        assert_eq!(report.violations.len(), MAX_PER_KIND);
        assert_eq!(
            count_of(&report, ViolationKind::FootprintOverlap),
            MAX_PER_KIND
        );
        assert_eq!(
            report.omitted,
            BTreeMap::from([(ViolationKind::FootprintOverlap, 9_999 - MAX_PER_KIND)])
        );
        assert_eq!(report.violation_count(), 9_999);
        assert_eq!(
            report.omitted_summary(),
            ["and 9,949 more footprint-overlap violations"]
        );
        // Listed in port order: p0 with p1, p1 with p2, ...
        assert_eq!(report.violations[1].instances, ["p1", "p2"]);
        assert!(report.is_valid() == report.violations.is_empty());
    }

    #[test]
    fn overlaps_between_same_base_groups_name_each_group_once() {
        let report = validate(&[
            instance("a", 20000),
            instance("b", 20000),
            instance("c", 20050),
            instance("d", 20050),
            instance("e", 20050),
            instance("far", 30000),
        ]);
        let overlaps: Vec<&Vec<String>> = report.violations.iter().map(|v| &v.instances).collect();
        assert_eq!(
            overlaps,
            [
                &vec!["a".to_owned(), "b".to_owned()],
                &vec!["a".to_owned(), "c".to_owned()],
                &vec!["c".to_owned(), "d".to_owned(), "e".to_owned()],
            ]
        );
        assert!(
            report.violations[2]
                .message
                .starts_with("`c`, `d` and `e` all use base port 20050"),
            "{}",
            report.violations[2].message
        );
    }

    #[test]
    fn huge_groups_sharing_a_value_name_ten_and_count_the_rest() {
        let mut instances = fleet(10_000, |i| 1024 + (i as i64 % 500) * 111);
        for instance in &mut instances {
            instance.name = "bot".into();
        }
        let report = validate(&instances);
        let duplicate = report
            .violations
            .iter()
            .find(|v| v.kind == ViolationKind::DuplicateName)
            .expect("duplicate names");
        assert_eq!(duplicate.instances.len(), MAX_NAMED);
        assert!(
            duplicate.message.contains("is declared 10,000 times")
                && duplicate.message.contains(", and 9,990 more)"),
            "{}",
            duplicate.message
        );
        // 500 bases, each used 20 times: 500 same-base groups, 50 listed.
        assert_eq!(report.omitted[&ViolationKind::FootprintOverlap], 450);

        let shared: Vec<Instance> = (0..10_000)
            .map(|i| {
                instance_with(&format!("g{i}"), 1024 + (i as i64 % 500) * 111, |s| {
                    s.name = Some(format!("g{i}"));
                    s.profile = Some("shared".into());
                })
            })
            .collect();
        let report = validate(&shared);
        assert_eq!(count_of(&report, ViolationKind::SharedProfile), 1);
        // The profile's paths are shared too: said once, by the profile violation.
        assert_eq!(count_of(&report, ViolationKind::SharedStateDir), 0);
        let profile = &report.violations[0];
        assert!(
            profile
                .message
                .contains("`g9` and 9,990 more share the profile `shared`"),
            "{}",
            profile.message
        );
    }

    #[test]
    fn unknown_dependencies_are_capped() {
        let names: Vec<String> = (0..10_000).map(|i| format!("missing{i}")).collect();
        let app = instance_with("app", 20000, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::Many(names))
        });
        let report = validate(&[app]);
        assert_eq!(report.violations.len(), MAX_PER_KIND);
        assert_eq!(report.omitted[&ViolationKind::UnknownDependency], 9_950);
        assert_eq!(
            report.omitted_summary(),
            ["and 9,950 more unknown-dependency violations"]
        );
    }

    #[test]
    fn warnings_are_capped_too() {
        let instances: Vec<Instance> = (0..120)
            .map(|i| {
                instance_with(&format!("g{i}"), 1024 + i * 111, |s| {
                    s.name = Some(format!("g{i}"));
                    s.profile = Some(format!("Upper{i}"));
                })
            })
            .collect();
        let report = validate(&instances);
        assert!(report.is_valid());
        assert_eq!(report.warnings.len(), MAX_PER_KIND);
        assert_eq!(report.warning_count(), 120);
        assert_eq!(
            report.omitted_warnings_summary(),
            ["and 70 more macos-service-name warnings"]
        );
    }

    #[test]
    fn a_cdp_port_inside_many_footprints_is_one_violation() {
        let mut instances = fleet(100, |_| 20000);
        instances.push(instance_with("pinned", 30000, |s| {
            s.browser = Some(crate::topology::BrowserSpec {
                cdp_port: Some(20050),
                cdp_url: None,
            })
        }));
        let report = validate(&instances);
        assert_eq!(count_of(&report, ViolationKind::CdpPortInFootprint), 1);
        let violation = report
            .violations
            .iter()
            .find(|v| v.kind == ViolationKind::CdpPortInFootprint)
            .unwrap();
        assert_eq!(violation.instances.len(), MAX_NAMED);
        assert_eq!(violation.instances[..2], ["pinned", "p0"]);
        assert!(
            violation.message.contains(
                "`p8`'s footprint (CDP range 20011-20110) and 91 more footprints; pick a port"
            ),
            "{}",
            violation.message
        );
    }

    #[test]
    fn a_cdp_port_inside_its_own_footprint_is_fine() {
        let own = instance_with("own", 20000, |s| {
            s.browser = Some(crate::topology::BrowserSpec {
                cdp_port: Some(20050),
                cdp_url: None,
            })
        });
        assert!(validate(&[own]).is_valid());
    }

    fn depending(name: &str, port: i64, on: &[String]) -> Instance {
        instance_with(name, port, |s| {
            s.depends_on = Some(crate::topology::OneOrMany::Many(on.to_vec()))
        })
    }

    #[test]
    fn a_hundred_thousand_long_dependency_cycle_does_not_overflow_the_stack() {
        let count = 100_000;
        let instances: Vec<Instance> = (0..count)
            .map(|i| depending(&format!("n{i}"), 20000, &[format!("n{}", (i + 1) % count)]))
            .collect();
        let cycles = dependency_cycles(&instances);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].members.len(), count);
        assert_eq!(cycles[0].members[..3], [0, 1, 2]);
        let report = validate(&instances);
        let cycle = report
            .violations
            .iter()
            .find(|v| v.kind == ViolationKind::DependencyCycle)
            .unwrap();
        assert_eq!(
            cycle.value,
            "n0 -> n1 -> n2 -> n3 -> n4 -> n5 -> n6 -> n7 -> n8 -> n9 -> ... 99,990 more -> n0"
        );
        assert_eq!(cycle.instances.len(), MAX_NAMED);
    }

    #[test]
    fn many_back_edges_are_one_cycle_per_knot() {
        // n0 -> n1 -> ... -> n9999, and every one back to n0: 10,000 cycles, one knot.
        let count = 10_000;
        let instances: Vec<Instance> = (0..count)
            .map(|i| {
                let mut on = vec!["n0".to_owned()];
                if i + 1 < count {
                    on.push(format!("n{}", i + 1));
                }
                depending(&format!("n{i}"), 20000, &on)
            })
            .collect();
        let cycles = dependency_cycles(&instances);
        assert_eq!(
            cycles,
            [Cycle {
                members: vec![0],
                knot: count
            }]
        );
        let report = validate(&instances);
        let cycle = report
            .violations
            .iter()
            .find(|v| v.kind == ViolationKind::DependencyCycle)
            .unwrap();
        assert_eq!(cycle.value, "n0 -> n0");
        assert!(
            cycle
                .message
                .ends_with("(9,999 more instances wait on each other with these)"),
            "{}",
            cycle.message
        );
    }

    #[test]
    fn the_shortest_cycle_through_the_first_member_is_shown() {
        let a = depending("a", 20000, &["b".into()]);
        let b = depending("b", 21000, &["c".into(), "a".into()]);
        let c = depending("c", 22000, &["a".into()]);
        let cycles = dependency_cycles(&[a, b, c]);
        assert_eq!(
            cycles,
            [Cycle {
                members: vec![0, 1],
                knot: 3
            }]
        );
    }

    #[test]
    fn nul_bytes_in_strings_that_reach_a_process_or_a_file() {
        let mut main = instance_with("main", 20000, |s| {
            s.runtime = Some(crate::topology::Runtime::Command);
            s.command = Some(crate::topology::OneOrMany::Many(vec![
                "node".into(),
                "gate\0way.js".into(),
            ]));
        });
        main.args = vec!["ok".into(), "--x=\0".into()];
        main.env.insert("A".into(), "1\0 2".into());
        main.env.insert("B\0".into(), "v".into());
        main.state_dir = "/srv/st\0ate".into();
        main.image = Some("img\0".into());
        main.browser.cdp_url = Some("http://h\0st".into());
        main.health.liveness_path = "/he\0alth".into();
        main.stop.signal = "SIG\0TERM".into();
        let report = validate(&[main]);
        let values: Vec<&str> = report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::InvalidString)
            .map(|v| v.value.as_str())
            .collect();
        assert_eq!(
            values,
            [
                "command[2]",
                "args[2]",
                "env.A",
                "env[\"B\\0\"]",
                "state_dir",
                "health.liveness_path",
                "stop.signal",
                "browser.cdp_url",
                "image",
            ]
        );
        let messages: Vec<&str> = report
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert!(
            messages
                .contains(&"`main`: env.A contains a NUL byte (\\0); a process cannot receive it")
        );
        assert!(
            messages
                .contains(&"`main`: state_dir contains a NUL byte (\\0); no file path can hold it")
        );
        assert!(report.violations.iter().all(|v| v.instances == ["main"]));
    }

    #[test]
    fn a_nul_byte_in_a_name_or_profile_is_one_violation() {
        let mut bad = instance("bad", 20000);
        bad.name = "b\0d".into();
        bad.profile = "p\0".into();
        let report = validate(&[bad]);
        assert_eq!(
            kinds(&report),
            [ViolationKind::InvalidString, ViolationKind::InvalidString]
        );
        assert_eq!(
            report.violations[0].message,
            "`b\\0d`: name contains a NUL byte (\\0); a process cannot receive it"
        );
        assert_eq!(report.violations[1].value, "profile");
    }

    #[test]
    fn env_names_a_process_environment_cannot_hold() {
        let mut main = instance("main", 20000);
        main.env.insert(String::new(), "x".into());
        main.env.insert("A=B".into(), "x".into());
        let report = validate(&[main]);
        assert_eq!(
            kinds(&report),
            [ViolationKind::InvalidString, ViolationKind::InvalidString]
        );
        assert_eq!(report.violations[0].value, "env[\"\"]");
        assert!(report.violations[0].message.contains("empty variable name"));
        assert_eq!(report.violations[1].value, "env[\"A=B\"]");
        assert!(report.violations[1].message.contains("has '=' in its name"));
    }

    #[test]
    fn other_control_characters_are_fine_in_argv_env_and_paths_but_not_names() {
        let mut main = instance("main", 20000);
        main.args = vec!["line\none".into(), "tab\there".into(), "\u{1b}[31m".into()];
        main.env.insert("MULTI".into(), "a\r\nb".into());
        main.workspace = "/srv/new\nline".into();
        assert!(validate(&[main]).is_valid());

        for bad in ["a\nb", "a\rb", "a\tb", "a\u{1b}b"] {
            let mut named = instance("ok", 20000);
            named.name = bad.into();
            assert_eq!(
                kinds(&validate(&[named])),
                [ViolationKind::InvalidName],
                "{bad:?}"
            );
            let profiled = instance_with("ok", 20000, |s| {
                s.name = Some("ok".into());
                s.profile = Some(bad.into());
            });
            assert_eq!(
                kinds(&validate(&[profiled])),
                [ViolationKind::InvalidProfile],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn huge_invalid_strings_are_clipped_in_reports() {
        let mut long = instance("ok", 20000);
        long.name = "x".repeat(1 << 20) + " y";
        let report = validate(&[long]);
        assert_eq!(kinds(&report), [ViolationKind::InvalidName]);
        let violation = &report.violations[0];
        assert!(
            violation.message.len() < 1000,
            "{}",
            violation.message.len()
        );
        assert!(violation.instances[0].len() < 300);
        assert!(violation.value.ends_with("… (1048578 bytes)"));
    }

    #[test]
    fn reports_round_trip_through_json() {
        let mut instances = fleet(200, |i| 20000 + i as i64);
        instances[0].env.insert("A".into(), "\0".into());
        instances[1].profile = "Upper".into();
        instances.push(depending("loop", 40000, &["loop".into(), "nowhere".into()]));
        let report = validate(&instances);
        assert!(!report.omitted.is_empty());
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(
            json.contains("\"omitted\":{\"footprint-overlap\":149}"),
            "{json}"
        );

        // Without omissions the JSON has the shape it always had.
        let small = validate(&[instance("a", 20000), instance("b", 20000)]);
        let json = serde_json::to_value(&small).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["violations", "warnings"]);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, small);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(9_949), "9,949");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 3), "é… (6 bytes)");
    }
}
