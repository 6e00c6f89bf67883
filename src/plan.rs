//! A plan: a script evaluated into a topology, and that topology validated.
//!
//! [`plan`] runs in the calling process: it is what the evaluation child
//! ([`crate::evaluator`]) does, and what benchmarks and tests measure. Commands go through
//! [`crate::evaluator::plan`], never this.

use std::path::{Path, PathBuf};

use crate::lua::automation::Automaton;
use crate::lua::{self, Host, Limits, ScriptError};
use crate::topology::Topology;
use crate::validate::{self, Report};

/// A script's topology with its validation report.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topology: Topology,
    pub report: Report,
}

impl Plan {
    pub fn is_valid(&self) -> bool {
        self.report.is_valid()
    }
}

/// Evaluates and validates `script`. `files` lists every script file read, also on failure.
#[derive(Debug)]
pub struct Planned {
    pub result: Result<Plan, ScriptError>,
    pub files: Vec<PathBuf>,
}

pub fn plan(script: &Path, host: &Host, limits: Limits) -> Planned {
    plan_keeping_vm(script, host, limits).0
}

/// Like [`plan`], keeping the script's VM to run its hooks (inside `reef up`).
pub fn plan_keeping_vm(script: &Path, host: &Host, limits: Limits) -> (Planned, Option<Automaton>) {
    let (evaluation, automaton) = lua::evaluate_keeping_vm(script, host, limits);
    let planned = Planned {
        result: evaluation.result.map(|topology| Plan {
            report: validate::validate(&topology.instances),
            topology,
        }),
        files: evaluation.files,
    };
    (planned, automaton)
}
