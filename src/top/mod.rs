//! `reef top`: a terminal dashboard of a running topology.
//!
//! One loop owns the screen and the [`App`]; everything else reaches it as a `Msg` on one
//! channel, so the loop sleeps until something happens:
//! - an input thread turns the terminal's keys and resizes into messages;
//! - an events thread streams `reef events` (`Request::Events`) and sends each line, so a
//!   state change is on the screen at once; when the stream ends it says so and attaches
//!   again every second;
//! - a status thread asks for `Request::Status` once a second (CPU, memory, restarts, and
//!   whatever the events do not carry): with the event stream, the whole cost of a dashboard
//!   to the supervisor;
//! - each action (start, stop, restart, reload) runs on a thread of its own, since a stop may
//!   take the gateway's whole stop timeout, and sends back reef's answer;
//! - a signal thread turns SIGTERM, SIGHUP and SIGINT into a clean quit.
//!
//! The loop also wakes every [`LOG_TICK`] to `stat` the selected gateway's log and read what
//! was appended ([`tail`]). The terminal is restored (raw mode off, alternate screen left,
//! cursor shown) however the loop ends: quit, signal, error, or a panic in any of its threads
//! (after which the loop ends too).

pub mod app;
pub mod tail;
pub mod view;

use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyEvent, KeyEventKind};
use ratatui::crossterm::{cursor, execute, terminal};
use serde_json::Value;

use crate::control::{self, ClientError, Request, Response};
use crate::layout::TopologyDirs;
use crate::supervisor::status::{TopologyStatus, unix_now};
use app::{Action, App};
use tail::LogTail;

/// How often the selected gateway's log is looked at.
pub const LOG_TICK: Duration = Duration::from_millis(250);
/// How often reef is asked for a status; also how soon a lost reef is tried again.
pub const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long a status may take before the dashboard stops waiting for it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// What wakes the loop.
#[derive(Debug)]
enum Msg {
    Key(KeyEvent),
    Resize,
    /// The terminal cannot be read any more.
    InputClosed,
    Status(Result<Box<TopologyStatus>, ClientError>),
    Event(Value),
    /// The event stream is attached.
    Attached,
    /// The event stream ended or could not attach.
    Detached,
    Answer(Action, Box<Result<Response, String>>),
    Signal,
}

/// Runs the dashboard until the user quits or a signal ends it; `first` is the status that
/// showed reef is running. The terminal is taken over here and always given back.
pub fn run(dirs: TopologyDirs, first: TopologyStatus, colour: bool) -> Result<()> {
    let signals = quit_signals();
    // Blocked before any thread starts, so that every thread inherits the mask and only the
    // signal thread takes them.
    let previous = signals
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .context("cannot block the quit signals")?;
    let result = run_blocked(dirs, first, colour, signals);
    let _ = previous.thread_set_mask();
    result
}

fn quit_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        signals.add(signal);
    }
    signals
}

fn run_blocked(
    dirs: TopologyDirs,
    first: TopologyStatus,
    colour: bool,
    signals: SigSet,
) -> Result<()> {
    let (sender, receiver) = mpsc::channel();
    spawn("top-signals", {
        let sender = sender.clone();
        move || {
            if signals.wait().is_ok() {
                let _ = sender.send(Msg::Signal);
            }
        }
    })?;
    let mut screen = Screen::enter().context("cannot take over the terminal")?;
    spawn("top-input", {
        let sender = sender.clone();
        move || read_input(&sender)
    })?;
    spawn("top-events", {
        let (sender, dirs) = (sender.clone(), dirs.clone());
        move || follow_events(&dirs, &sender)
    })?;
    spawn("top-status", {
        let (sender, dirs) = (sender.clone(), dirs.clone());
        move || poll_status(&dirs, &sender)
    })?;
    let mut app = App::new(first, unix_now());
    app.colour = colour;
    let outcome = event_loop(&mut screen.terminal, &mut app, &receiver, &sender, &dirs);
    drop(screen);
    outcome
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .with_context(|| format!("cannot start the {name} thread"))?;
    Ok(())
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    receiver: &Receiver<Msg>,
    sender: &Sender<Msg>,
    dirs: &TopologyDirs,
) -> Result<()> {
    let mut tail: Option<LogTail> = None;
    let mut dirty = true;
    loop {
        // A thread panicked and its hook gave the terminal back: drawing on would scribble
        // over the shell's screen.
        if !TAKEN.load(Ordering::SeqCst) {
            anyhow::bail!("reef top stopped after an internal error (above)");
        }
        // Follow the selected gateway's log: another gateway selected, another file.
        if tail.as_ref().map(LogTail::path) != app.selected_log() {
            let (opened, lines) = match app.selected_log() {
                Some(path) => {
                    let (opened, lines) = LogTail::open(path);
                    (Some(opened), lines)
                }
                None => (None, Vec::new()),
            };
            tail = opened;
            app.replace_log(lines);
            dirty = true;
        }
        if let Some(update) = tail.as_mut().and_then(LogTail::poll) {
            match update {
                tail::Update::Replace(lines) => app.replace_log(lines),
                tail::Update::Append(lines) => app.append_log(lines),
            }
            dirty = true;
        }
        if dirty {
            app.now = unix_now();
            terminal
                .draw(|frame| view::draw(frame, app))
                .context("cannot draw on the terminal")?;
            dirty = false;
        }
        let first = match receiver.recv_timeout(LOG_TICK) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // A burst (events of a reload, say) is drawn once.
        for msg in std::iter::once(first).chain(receiver.try_iter()) {
            dirty = true;
            match msg {
                Msg::Key(key) => match app.on_key(key) {
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Redraw) => repaint(terminal)?,
                    Some(action) => act(app, action, dirs, sender)?,
                    None => {}
                },
                Msg::Resize => {}
                Msg::InputClosed | Msg::Signal => return Ok(()),
                Msg::Status(Ok(status)) => app.apply_status(*status),
                Msg::Status(Err(ClientError::NotRunning(_))) | Msg::Detached => {
                    app.on_not_running()
                }
                Msg::Status(Err(error)) => app.on_status_error(error.to_string()),
                Msg::Event(event) => app.apply_event(&event),
                Msg::Attached => app.on_attached(),
                Msg::Answer(action, answer) => app.on_answer(&action, *answer),
            }
        }
    }
}

/// Sends an action to reef on a thread of its own; its answer comes back as a message.
fn act(app: &mut App, action: Action, dirs: &TopologyDirs, sender: &Sender<Msg>) -> Result<()> {
    let Some(request) = action.request() else {
        return Ok(());
    };
    app.begin(&action);
    let (dirs, sender) = (dirs.clone(), sender.clone());
    spawn("top-action", move || {
        let answer = control::request(&dirs.running_socket(), &request).map_err(|err| match err {
            ClientError::NotRunning(_) => "reef is not running".to_owned(),
            other => other.to_string(),
        });
        let _ = sender.send(Msg::Answer(action, Box::new(answer)));
    })
}

/// Clears the screen so that the next draw paints all of it. Not `Terminal::clear`: that asks
/// the terminal where its cursor is, and the answer would go to the input thread.
fn repaint(terminal: &mut Terminal<CrosstermBackend<Stdout>>) -> Result<()> {
    let area = terminal.size().context("cannot read the terminal's size")?;
    terminal
        .resize(area.into())
        .context("cannot clear the terminal")
}

/// Keys and resizes, until the terminal cannot be read or the loop is gone.
fn read_input(sender: &Sender<Msg>) {
    loop {
        let msg = match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => Msg::Key(key),
            Ok(Event::Resize(..)) => Msg::Resize,
            Ok(_) => continue,
            Err(_) => {
                let _ = sender.send(Msg::InputClosed);
                return;
            }
        };
        if sender.send(msg).is_err() {
            return;
        }
    }
}

/// Streams reef's events into the loop; when the stream ends (reef stopped) or cannot start,
/// says so and tries again every [`STATUS_EVERY`].
fn follow_events(dirs: &TopologyDirs, sender: &Sender<Msg>) {
    loop {
        let open = std::cell::Cell::new(true);
        let _ = control::events(
            &dirs.running_socket(),
            || open.set(sender.send(Msg::Attached).is_ok()),
            |line| {
                // A line that is not JSON is skipped; the next status has what it said.
                if let Ok(event) = serde_json::from_str::<Value>(line) {
                    open.set(sender.send(Msg::Event(event)).is_ok());
                }
                open.get()
            },
        );
        if !open.get() || sender.send(Msg::Detached).is_err() {
            return;
        }
        std::thread::sleep(STATUS_EVERY);
    }
}

/// Asks reef for its status every [`STATUS_EVERY`], until the loop is gone.
fn poll_status(dirs: &TopologyDirs, sender: &Sender<Msg>) {
    loop {
        std::thread::sleep(STATUS_EVERY);
        let status =
            control::request_within(&dirs.running_socket(), &Request::Status, STATUS_TIMEOUT)
                .and_then(|response| match response.status {
                    Some(status) if response.ok => Ok(Box::new(status)),
                    _ => Err(ClientError::Protocol(
                        response
                            .message
                            .unwrap_or_else(|| "reef sent no status".to_owned()),
                    )),
                });
        if sender.send(Msg::Status(status)).is_err() {
            return;
        }
    }
}

/// Whether the terminal is taken over: restoring it twice (the panic hook, then the guard
/// while unwinding) writes nothing the second time.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen, cursor hidden; dropping it gives the
/// terminal back as it was.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        TAKEN.store(true, Ordering::SeqCst);
        let screen = || -> Result<Screen> {
            execute!(
                std::io::stdout(),
                terminal::EnterAlternateScreen,
                cursor::Hide
            )?;
            let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
            repaint(&mut terminal)?;
            Ok(Screen { terminal })
        };
        screen().inspect_err(|_| restore())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode off, the alternate screen left, the cursor shown; once.
fn restore() {
    if TAKEN.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// A panic prints its message on the terminal as it was, not on the alternate screen.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
