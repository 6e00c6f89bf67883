//! reef runs a colony of OpenClaw gateways on one host, declared in a Lua topology script.
//!
//! # Layout
//! - [`cli`]: the command line, clap definitions only.
//! - [`commands`]: one function per verb; the only place that prints.
//! - [`lua`]: evaluates a topology script in a fresh, limited VM and records every file it loads;
//!   its `automation` part holds the hooks, timers and actions. Only the children of
//!   [`evaluator`] and [`hookhost`] run Lua; the supervisor never does.
//! - [`topology`]: plain data: what a script declared and the instances it resolves to.
//! - [`profile`]: OpenClaw's profile rules (paths, service names, the hashed port).
//! - [`ports`]: footprints `[B, B+110]`, overlap checks and pools.
//! - [`validate`]: isolation checks across instances, as data.
//! - [`plan`]: evaluation plus validation: what `reef plan` reports.
//! - [`evaluator`]: every evaluation runs in a child of reef's own binary under hard limits
//!   (time, memory, CPU) and answers with the plan as JSON: no script can wedge reef.
//! - [`hookhost`]: the child of `reef up` whose VM runs the script's hooks and timers.
//! - [`render`]: human tables and the stable JSON forms.
//! - [`suggest`]: "did you mean" hints.
//! - [`supervisor`]: `reef up`: a state machine per instance driven by one task each, one colony
//!   task that owns the running topology and applies reloads, typed events for hooks and
//!   progress, and a write-ahead ledger plus process markers so that nothing is ever orphaned.
//! - [`control`]: the Unix-socket server of a running `reef up` and its client.
//! - [`metrics`]: `reef up --metrics`: the colony as Prometheus text over HTTP.
//! - [`layout`]: where a topology's lock, logs and socket live.
//! - [`hostports`]: which ports are free on the host, and who holds the others.
//! - [`check`]: `reef check`, the plan against the host (listeners, permissions, configs).
//! - [`setup`]: state dirs and minimal configs for `reef setup`.
//! - [`gateway_config`]: a gateway's `openclaw.json` resolved as OpenClaw resolves it (JSON5,
//!   `$include`, `${VAR}`), and edited in place with its comments kept.
//! - [`gateway`]: the built-in reference gateway (`reef gateway`).
//! - [`export`]: the plan as systemd units, launchd agents, Compose, Kubernetes, Nomad: pure
//!   generation; `export::write` writes the files, and `export::openclaw` finds the Node and
//!   OpenClaw package a runtime-openclaw unit runs, as OpenClaw's own installer does.
//! - [`logview`]: `reef logs` over every gateway: prefixed, interleaved lines.
//! - [`progress`]: `reef up`'s live line on a terminal, with logs written around it.
//! - [`top`]: `reef top`, a terminal dashboard (ratatui) of a running topology, fed by its
//!   event stream and a status a second; its state (`top::app`) and screen (`top::view`) are
//!   pure.
//! - [`host`]: processes on this host (Linux via procfs and rustix): identity by start time,
//!   marker variables, pidfd signals and exit watching, subreaping and sweeping orphans.
//! - [`reconcile`]: the diff from the running topology to a new plan (hot reload).
//! - [`watch`]: notify events on the script's files, debounced into reload requests.
//!
//! The core (`topology`, `profile`, `ports`, `validate`, `reconcile`, `export`) is pure: no Lua,
//! no async runtime, no filesystem. The Lua layer turns a script into a `Topology` in a child
//! process (and, inside `reef up`, a hook host keeps a VM to run its hooks); everything after
//! works on data.

pub mod check;
pub mod cli;
pub mod commands;
pub mod control;
pub mod evaluator;
pub mod export;
pub mod gateway;
pub mod gateway_config;
pub mod hookhost;
pub mod host;
pub mod hostports;
pub mod layout;
pub mod logview;
pub mod lua;
pub mod metrics;
pub mod plan;
pub mod ports;
pub mod profile;
pub mod progress;
pub mod reconcile;
pub mod render;
pub mod setup;
pub mod suggest;
pub mod supervisor;
pub mod top;
pub mod topology;
pub mod validate;
pub mod watch;
