//! `cargo bench --bench plan`: how long `reef plan` takes on a 500-instance topology (near the
//! most one host's port space holds at 111 ports a footprint: 581), in process, in the
//! evaluation child every command uses, and as a whole `reef plan`; and how much memory it peaks
//! at.
//!
//! Prints figures; asserts nothing about speed (a busy machine must not fail a build).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reef::lua::{Host, Limits};

const INSTANCES: usize = 500;
const RUNS: usize = 20;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("fleet500.lua");
    let mut file = std::fs::File::create(&script).expect("script");
    writeln!(
        file,
        "local reef = require \"reef\"\n\
         local pool = reef.ports.pool {{ from = 1024, to = 65535 }}\n\
         for i = 1, {INSTANCES} do\n\
           reef.gateway {{ profile = \"bot\" .. i, port = pool:next(), env = {{ INDEX = tostring(i) }} }}\n\
         end"
    )
    .expect("write script");
    drop(file);

    // In-process: evaluation plus validation, without process start-up.
    let host =
        Host::from_env([("HOME".to_owned(), "/home/bench".to_owned())].into()).expect("host");
    let mut in_process = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let planned = reef::plan::plan(&script, &host, Limits::default());
        in_process.push(started.elapsed());
        let plan = planned.result.expect("the generated topology evaluates");
        assert_eq!(plan.topology.instances.len(), INSTANCES);
        assert!(plan.is_valid(), "{:?}", plan.report.violations.first());
    }

    // The binary, as a user runs it: `reef plan SCRIPT --json`.
    let binary = env!("CARGO_BIN_EXE_reef");

    // What every command and reload does: the evaluation in a child under hard limits, the
    // plan back as JSON.
    let mut in_child = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let outcome = reef::evaluator::evaluate_with(
            std::path::Path::new(binary),
            reef::evaluator::Request::new(&script, Limits::default()),
        );
        in_child.push(started.elapsed());
        let plan = outcome
            .planned
            .result
            .expect("the generated topology evaluates");
        assert_eq!(plan.topology.instances.len(), INSTANCES);
    }
    let mut whole = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new(binary)
            .args(["plan", "--json"])
            .arg(&script)
            .stdout(Stdio::null())
            .status()
            .expect("run reef");
        whole.push(started.elapsed());
        assert!(status.success(), "reef plan failed: {status}");
    }
    let peak_kib = children_peak_rss_kib();

    println!("reef plan, {INSTANCES} instances, {RUNS} runs");
    println!(
        "  evaluate + validate (in process): median {}",
        ms(median(&mut in_process))
    );
    println!(
        "  evaluate + validate in a child (what commands and reloads run): median {}",
        ms(median(&mut in_child))
    );
    println!(
        "  `reef plan --json` (whole process): median {}",
        ms(median(&mut whole))
    );
    println!(
        "  peak RSS of `reef plan`: {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// The largest resident set of any child this process has waited for, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    }
}
