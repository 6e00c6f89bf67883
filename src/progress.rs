//! The live progress line of `reef up` on a terminal, and log output that does not tear it:
//! while a line is shown, log records are written with the line hidden, then it is redrawn.

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Shows `bar` until [`finish`]; log output goes around it.
pub fn show(bar: ProgressBar) {
    *ACTIVE.lock().expect("progress lock") = Some(bar);
}

/// Stops routing log output around the line (the bar stays as last drawn).
pub fn finish() {
    *ACTIVE.lock().expect("progress lock") = None;
}

/// Standard error, writing around the progress line when one is shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().expect("progress lock").clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
