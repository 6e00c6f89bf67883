use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use reef::cli::{Cli, Command};
use reef::commands::{self, Exit};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    // `reef up` is a foreground supervisor: its events are its output.
    // The hook host's log is relayed into `reef up`'s, which shows info.
    let quiet_level = u8::from(matches!(cli.command, Command::Up(_) | Command::Hooks));
    init_logging(cli.verbose.max(quiet_level));
    let exit = match commands::run(cli.command) {
        Ok(exit) => exit,
        Err(err) => {
            eprintln!("error: {err:#}");
            Exit::Failure
        }
    };
    ExitCode::from(exit.code())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| reef::progress::Stderr)
        .with_ansi(color)
        .with_target(false)
        .init();
}

/// glibc gives every thread that allocates an arena of its own; reef's threads (blocking pool,
/// ledger writer, hooks) allocate little, so one shared arena keeps `reef up` small.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
