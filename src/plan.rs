//! A plan: a script evaluated into a topology, and that topology validated.

use std::path::{Path, PathBuf};

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
pub struct Planned {
    pub result: Result<Plan, ScriptError>,
    pub files: Vec<PathBuf>,
}

pub fn plan(script: &Path, host: &Host, limits: Limits) -> Planned {
    let evaluation = lua::evaluate(script, host, limits);
    Planned {
        result: evaluation.result.map(|topology| Plan {
            report: validate::validate(&topology.instances),
            topology,
        }),
        files: evaluation.files,
    }
}
