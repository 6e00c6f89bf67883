//! The hook host: the child of `reef up` (`reef __hooks`) whose Lua VM runs the script's hooks
//! and timers, so that no hook can stall or kill the supervisor.
//!
//! The parent ([`crate::supervisor::automation`]) starts it with the sources of the last good
//! evaluation ([`ToHost::Start`]), so it runs exactly the script that was applied even when the
//! files changed since. Messages are JSON lines: events and status answers in on stdin, actions
//! and status requests out on stdout ([`FromHost`]). Around every run of Lua it says
//! [`FromHost::Busy`] and then [`FromHost::Idle`]: a host that stays busy past a hook's budget
//! plus a second (a finalizer loop, a C pattern match, which the VM's budget cannot stop) is
//! killed and started again by the parent. What the hooks log goes to stderr, which the parent
//! relays into its own log. A program started by `reef.exec` runs on a thread of its own while
//! the hook that started it waits (see [`crate::lua::automation`]), so other hooks go on.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::evaluator::{Sources, leave};
use crate::lua::automation::{Action, Attachment, Automaton, ExecDone};
use crate::lua::{self, Host, Limits, ScriptError};

/// The hidden verb the hook host runs.
pub const CHILD_VERB: &str = "__hooks";

/// From the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ToHost {
    /// The first message: evaluate this script from these sources.
    Start {
        script: PathBuf,
        sources: Sources,
        memory: usize,
        instructions: u64,
        time_ms: u64,
    },
    /// An event for the hooks (the shape hooks see).
    Event { event: serde_json::Value },
    /// The answer to a [`FromHost::StatusRequest`].
    Status { status: serde_json::Value },
}

/// To the parent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum FromHost {
    /// The script evaluated; its hooks and timers are armed.
    Ready { hooks: usize, timers: usize },
    /// The script did not evaluate (the host exits).
    Failed { error: ScriptError },
    /// Lua runs now, for `what`.
    Busy { what: String },
    /// Lua is done for now.
    Idle,
    /// A hook asks for `verb` (start, stop, restart) on instance `name`.
    Act { verb: String, name: String },
    /// A hook called `reef.status()`; answer with [`ToHost::Status`].
    StatusRequest,
}

/// What the host's main loop waits for.
enum Incoming {
    Message(ToHost),
    Exec(ExecDone),
    Closed,
}

/// Messages not yet handled: the main loop's, and those that arrive while a hook waits for a
/// status answer.
struct Inbox {
    receiver: Receiver<Incoming>,
    deferred: VecDeque<Incoming>,
}

impl Inbox {
    fn next(&mut self, wait: Duration) -> Option<Incoming> {
        if let Some(incoming) = self.deferred.pop_front() {
            return Some(incoming);
        }
        match self.receiver.recv_timeout(wait) {
            Ok(incoming) => Some(incoming),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Incoming::Closed),
        }
    }

    /// Waits for the status answer, keeping everything else for later.
    fn status(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.receiver.recv() {
                Ok(Incoming::Message(ToHost::Status { status })) => return Some(status),
                Ok(Incoming::Closed) | Err(_) => {
                    self.deferred.push_back(Incoming::Closed);
                    return None;
                }
                Ok(other) => self.deferred.push_back(other),
            }
        }
    }
}

/// Writes one message line to the parent.
fn send(message: &FromHost) {
    let mut line = serde_json::to_vec(message).expect("messages serialize");
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    // A parent that is gone ends the host at its next read.
    let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
}

/// `reef __hooks`: evaluates the script it is sent, then runs its hooks until stdin closes.
pub fn serve_child() -> ! {
    let (incoming, receiver) = std::sync::mpsc::channel();
    let reader = incoming.clone();
    let started = std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(256 << 10)
        .spawn(move || read_messages(reader));
    if started.is_err() {
        leave(3);
    }
    let inbox = Arc::new(Mutex::new(Inbox {
        receiver,
        deferred: VecDeque::new(),
    }));
    let first = inbox.lock().expect("inbox").next(Duration::from_secs(3600));
    let Some(Incoming::Message(ToHost::Start {
        script,
        sources,
        memory,
        instructions,
        time_ms,
    })) = first
    else {
        eprintln!("reef {CHILD_VERB}: expected a start message first");
        leave(3);
    };
    let limits = Limits {
        memory,
        instructions,
        time: Duration::from_millis(time_ms),
    };
    let host = match Host::from_process() {
        Ok(host) => host,
        Err(error) => {
            send(&FromHost::Failed { error });
            leave(2);
        }
    };
    let (evaluation, automaton) = lua::evaluate_from(&script, &host, limits, Some(&sources));
    drop(sources);
    match (&evaluation.result, automaton) {
        (Ok(topology), Some(automaton)) => {
            let names = topology.instances.iter().map(|i| i.name.clone()).collect();
            run(automaton, names, inbox, incoming);
        }
        (Err(error), _) => {
            send(&FromHost::Failed {
                error: error.clone(),
            });
            leave(2);
        }
        (Ok(_), None) => leave(2),
    }
    leave(0)
}

fn read_messages(incoming: Sender<Incoming>) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => match serde_json::from_str::<ToHost>(&line) {
                Ok(message) => {
                    if incoming.send(Incoming::Message(message)).is_err() {
                        return;
                    }
                }
                Err(err) => eprintln!("reef {CHILD_VERB}: bad message: {err}"),
            },
        }
    }
    let _ = incoming.send(Incoming::Closed);
}

/// Runs hooks, timers and waiting programs until the parent closes stdin.
fn run(
    mut automaton: Automaton,
    names: Vec<String>,
    inbox: Arc<Mutex<Inbox>>,
    incoming: Sender<Incoming>,
) {
    let (exec_tx, exec_rx) = std::sync::mpsc::channel::<ExecDone>();
    std::thread::Builder::new()
        .name("exec-done".into())
        .stack_size(64 << 10)
        .spawn(move || {
            for done in exec_rx {
                if incoming.send(Incoming::Exec(done)).is_err() {
                    return;
                }
            }
        })
        .unwrap_or_else(|_| leave(3));
    let known = names;
    let asking = inbox.clone();
    automaton.attach(Attachment {
        act: Box::new(move |action| {
            let (verb, name) = match action {
                Action::Start(name) => ("start", name),
                Action::Stop(name) => ("stop", name),
                Action::Restart(name) => ("restart", name),
            };
            if !known.contains(&name) {
                return Err(crate::suggest::no_such_instance(
                    &name,
                    known.iter().map(String::as_str),
                ));
            }
            send(&FromHost::Act {
                verb: verb.into(),
                name,
            });
            Ok(())
        }),
        status: Box::new(move || {
            send(&FromHost::StatusRequest);
            asking
                .lock()
                .expect("inbox")
                .status()
                .unwrap_or(serde_json::Value::Null)
        }),
        exec_done: Some(exec_tx),
    });
    automaton.announce_runs(|what| {
        send(&FromHost::Busy {
            what: what.to_owned(),
        })
    });
    send(&FromHost::Ready {
        hooks: automaton.hook_count(),
        timers: automaton.timer_count(),
    });
    loop {
        let wait = automaton
            .next_due()
            .map(|due| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        // The lock is not held while Lua runs: `reef.status()` takes it.
        let next = inbox.lock().expect("inbox").next(wait);
        match next {
            Some(Incoming::Message(ToHost::Event { event })) => {
                let kind = event
                    .get("event")
                    .and_then(|kind| kind.as_str())
                    .unwrap_or("event")
                    .to_owned();
                busy(format!("{kind} hooks"), || automaton.dispatch(&event));
            }
            Some(Incoming::Exec(done)) => {
                busy("a hook after its program".into(), || {
                    automaton.exec_done(done)
                });
            }
            Some(Incoming::Message(ToHost::Status { .. } | ToHost::Start { .. })) => {}
            Some(Incoming::Closed) => return,
            None => {}
        }
        if automaton
            .next_due()
            .is_some_and(|due| due <= Instant::now())
        {
            busy("timers".into(), || automaton.run_due_timers());
        }
    }
}

/// Runs Lua between a Busy and an Idle message.
fn busy(what: String, run: impl FnOnce()) {
    send(&FromHost::Busy { what });
    run();
    send(&FromHost::Idle);
}
