//! What `reef top` shows, as plain state: the last status of the topology with every event
//! since applied to it, the selected gateway, the tail of its log and the message line. Keys
//! become [`Action`]s here; sending them, reading the socket and the log, and drawing are the
//! caller's. No I/O, no terminal: every case is a unit test.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

use crate::control::{Request, Response};
use crate::supervisor::degraded::Degraded;
use crate::supervisor::status::{InstanceStatus, ReloadError, State, TopologyStatus};

/// How many log lines are kept for the selected gateway (more than any screen shows).
pub const LOG_KEEP: usize = 1000;

/// What a key asks for beyond moving the selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(String),
    Stop(String),
    Restart(String),
    Reload,
    /// Paint the whole screen again (something else wrote on the terminal).
    Redraw,
    Quit,
}

impl Action {
    /// The control request that carries the action out, for those reef does.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Action::Start(name) => Request::Start { name: name.clone() },
            Action::Stop(name) => Request::Stop { name: name.clone() },
            Action::Restart(name) => Request::Restart { name: name.clone() },
            Action::Reload => Request::Reload,
            Action::Redraw | Action::Quit => return None,
        })
    }
}

/// The message line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

impl Message {
    fn info(text: impl Into<String>) -> Message {
        Message {
            text: text.into(),
            error: false,
        }
    }

    fn error(text: impl Into<String>) -> Message {
        Message {
            text: text.into(),
            error: true,
        }
    }
}

/// The state and pid the last event said an instance has, kept until a status shows them or
/// something newer: a status computed just before an event may arrive just after it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    time: f64,
    state: State,
    pid: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct App {
    /// The topology as last seen: the last status with every event since applied.
    pub topology: TopologyStatus,
    selected: usize,
    log: VecDeque<String>,
    pub message: Option<Message>,
    /// Whether reef answers (the event stream is attached or a status came).
    pub connected: bool,
    pub help: bool,
    /// Seconds since the Unix epoch, for uptimes: set by the caller before each draw.
    pub now: f64,
    /// Whether the screen may use colours (a terminal without `NO_COLOR`).
    pub colour: bool,
    seen: BTreeMap<String, Seen>,
}

/// The message while reef does not answer.
const NOT_RUNNING: &str = "reef is not running";

impl App {
    pub fn new(topology: TopologyStatus, now: f64) -> App {
        App {
            topology,
            selected: 0,
            log: VecDeque::new(),
            message: None,
            connected: true,
            help: false,
            now,
            colour: false,
            seen: BTreeMap::new(),
        }
    }

    pub fn instances(&self) -> &[InstanceStatus] {
        &self.topology.instances
    }

    /// The selected row's index, if there is any row.
    pub fn selected_index(&self) -> Option<usize> {
        (!self.topology.instances.is_empty()).then_some(self.selected)
    }

    pub fn selected(&self) -> Option<&InstanceStatus> {
        self.topology.instances.get(self.selected)
    }

    /// The log file of the selected gateway, whose tail the screen shows.
    pub fn selected_log(&self) -> Option<&Path> {
        self.selected().map(|instance| instance.log.as_path())
    }

    /// The log lines kept, oldest first.
    pub fn log_lines(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.log.iter().map(String::as_str)
    }

    /// The selected gateway's log starts over with these lines (another gateway, or its file
    /// was truncated).
    pub fn replace_log(&mut self, lines: Vec<String>) {
        self.log.clear();
        self.append_log(lines);
    }

    pub fn append_log(&mut self, lines: Vec<String>) {
        self.log.extend(lines);
        let excess = self.log.len().saturating_sub(LOG_KEEP);
        self.log.drain(..excess);
    }

    /// A fresh status: rows, counters and header from it, the selection kept on the same
    /// gateway by name (or on the same row, clamped, when that gateway is gone).
    pub fn apply_status(&mut self, mut status: TopologyStatus) {
        let selected = self.selected().map(|instance| instance.name.clone());
        for instance in &mut status.instances {
            let Some(seen) = self.seen.get(&instance.name).copied() else {
                continue;
            };
            if seen.time > instance.since && seen.state != instance.state {
                // The status predates the event: the event's word stands.
                set_state(instance, seen.state, seen.pid, seen.time);
            } else {
                self.seen.remove(&instance.name);
            }
        }
        self.seen
            .retain(|name, _| status.instances.iter().any(|i| &i.name == name));
        self.topology = status;
        if let Some(index) =
            selected.and_then(|name| self.topology.instances.iter().position(|i| i.name == name))
        {
            self.selected = index;
        }
        self.clamp_selection();
        self.reconnected();
    }

    /// One line of the event stream (`control::event_line`): the instance's state and pid at
    /// once, and what the kind says about health, readiness, notes and reloads.
    pub fn apply_event(&mut self, event: &Value) {
        let time = event["time"].as_f64().unwrap_or(self.now);
        let kind = event["kind"].as_str().unwrap_or_default();
        let text = |key: &str| event[key].as_str().map(str::to_owned);
        match kind {
            "reload-failed" => {
                self.topology.reload_error = Some(ReloadError {
                    message: text("message").unwrap_or_default(),
                    at: time,
                });
                return;
            }
            "reload-applied" => {
                self.topology.reload_error = None;
                return;
            }
            _ => {}
        }
        let Some(name) = event["instance"].as_str() else {
            return;
        };
        // An instance the last status did not have (a reload added it) waits for the next.
        let Some(instance) = self
            .topology
            .instances
            .iter_mut()
            .find(|instance| instance.name == name)
        else {
            return;
        };
        if let Some(state) = event
            .get("state")
            .and_then(|state| serde_json::from_value::<State>(state.clone()).ok())
        {
            let pid = event["pid"]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok());
            set_state(instance, state, pid, time);
            self.seen.insert(name.to_owned(), Seen { time, state, pid });
        }
        match kind {
            "spawned" | "adopted" => {
                instance.started_at = Some(time);
                instance.ready = false;
                instance.healthy = None;
                instance.message = None;
            }
            "ready" => instance.ready = true,
            "unhealthy" => instance.healthy = Some(false),
            "healthy" => instance.healthy = Some(true),
            "exited" => instance.last_exit = text("description"),
            "config-error" => instance.message = text("message"),
            "degraded" => {
                instance.degraded = Some(Degraded {
                    reason: text("reason").unwrap_or_default(),
                    message: text("message").unwrap_or_default(),
                    advice: text("advice").unwrap_or_default(),
                    bundle: text("bundle").map(Into::into),
                })
            }
            "recovered" => instance.degraded = None,
            _ => {}
        }
    }

    /// The event stream is attached again.
    pub fn on_attached(&mut self) {
        self.reconnected();
    }

    /// reef does not answer (the event stream ended, the socket is gone): the rows stay as
    /// last seen and the message line says so until it answers again.
    pub fn on_not_running(&mut self) {
        self.connected = false;
        self.message = Some(Message::error(format!(
            "{NOT_RUNNING}; trying again every second (q quits)"
        )));
    }

    /// A status request failed for another reason than reef being gone.
    pub fn on_status_error(&mut self, error: String) {
        self.message = Some(Message::error(format!("status: {error}")));
    }

    fn reconnected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.message = Some(Message::info("reef is running again"));
        }
    }

    /// The message line while an action is under way (a stop can take a gateway's whole stop
    /// timeout).
    pub fn begin(&mut self, action: &Action) {
        let text = match action {
            Action::Start(name) => format!("starting {name}..."),
            Action::Stop(name) => format!("stopping {name}..."),
            Action::Restart(name) => format!("restarting {name}..."),
            Action::Reload => "reloading the script...".to_owned(),
            Action::Redraw | Action::Quit => return,
        };
        self.message = Some(Message::info(text));
    }

    /// reef's answer to an action (or why it could not be asked): the message line, and the
    /// status it sent along.
    pub fn on_answer(&mut self, action: &Action, answer: Result<Response, String>) {
        let subject = match action {
            Action::Start(name) | Action::Stop(name) | Action::Restart(name) => name.as_str(),
            Action::Reload => "reload",
            Action::Redraw | Action::Quit => return,
        };
        match answer {
            Ok(response) => {
                let text = response.message.unwrap_or_else(|| "done".to_owned());
                self.message = Some(match (response.ok, action) {
                    (true, Action::Reload) => Message::info(format!("reloaded: {text}")),
                    (true, _) => Message::info(format!("{subject}: {text}")),
                    (false, Action::Reload) => Message::error(format!("reload failed: {text}")),
                    (false, _) => Message::error(format!("{subject}: {text}")),
                });
                if let Some(status) = response.status {
                    self.apply_status(status);
                }
            }
            Err(error) => self.message = Some(Message::error(format!("{subject}: {error}"))),
        }
    }

    /// What a key does: moves the selection or toggles help here, or asks for an action.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if control => return Some(Action::Quit),
            KeyCode::Char('l') if control => return Some(Action::Redraw),
            KeyCode::Char('q') => return Some(Action::Quit),
            // Esc closes the help first, then quits.
            KeyCode::Esc if self.help => self.help = false,
            KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Char('?') => self.help = !self.help,
            _ if control => {}
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.selected += 1,
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = usize::MAX,
            KeyCode::Char('R') => return Some(Action::Reload),
            KeyCode::Char(verb @ ('s' | 'x' | 'r')) => {
                let Some(name) = self.selected().map(|instance| instance.name.clone()) else {
                    self.message = Some(Message::error("no gateway to act on"));
                    return None;
                };
                return Some(match verb {
                    's' => Action::Start(name),
                    'x' => Action::Stop(name),
                    _ => Action::Restart(name),
                });
            }
            _ => {}
        }
        self.clamp_selection();
        None
    }

    fn clamp_selection(&mut self) {
        self.selected = self
            .selected
            .min(self.topology.instances.len().saturating_sub(1));
    }

    /// How many gateways are in each state, in the order of a gateway's life.
    pub fn counts(&self) -> Vec<(State, usize)> {
        const ORDER: [State; 10] = [
            State::Ready,
            State::Starting,
            State::Waiting,
            State::Unhealthy,
            State::Backoff,
            State::Stopping,
            State::Stopped,
            State::ConfigError,
            State::Blocked,
            State::Exited,
        ];
        ORDER
            .iter()
            .map(|state| {
                let count = self
                    .topology
                    .instances
                    .iter()
                    .filter(|instance| instance.state == *state)
                    .count();
                (*state, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// A row takes the state an event reported at `time`; as the supervisor does, a gateway with
/// no process has no uptime, readiness, health or usage.
fn set_state(instance: &mut InstanceStatus, state: State, pid: Option<u32>, time: f64) {
    if instance.state != state {
        instance.since = time;
    }
    instance.state = state;
    instance.pid = pid;
    if !state.is_running() {
        instance.ready = false;
        instance.healthy = None;
        instance.started_at = None;
        instance.degraded = None;
        instance.cpu_percent = None;
        instance.rss_bytes = None;
    }
}

/// The note of an instance, as `reef status` shows it: why it is in its state, or its
/// gateway's degraded state, or that it was adopted.
pub fn note(instance: &InstanceStatus) -> Option<String> {
    match (&instance.message, &instance.degraded, instance.adopted) {
        (Some(message), _, _) => Some(message.clone()),
        (None, Some(degraded), _) => Some(degraded.note()),
        (None, None, true) => Some("adopted from a previous reef".to_owned()),
        (None, None, false) => instance
            .last_exit
            .as_ref()
            .filter(|_| !instance.state.is_running())
            .map(|exit| format!("last exit: {exit}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use ratatui::crossterm::event::{KeyEventState, KeyModifiers};
    use serde_json::json;

    use super::*;

    pub(crate) use crate::supervisor::status::samples::{instance, topology};

    fn three() -> App {
        App::new(
            topology(vec![
                instance("main", 18789),
                instance("rescue", 19789),
                instance("team1", 20000),
            ]),
            1_041.0,
        )
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn selected_name(app: &App) -> &str {
        &app.selected().expect("a selection").name
    }

    #[test]
    fn arrows_and_vi_keys_move_the_selection_within_the_rows() {
        let mut app = three();
        assert_eq!(selected_name(&app), "main");
        assert_eq!(app.on_key(key(KeyCode::Up)), None);
        assert_eq!(selected_name(&app), "main", "the top row stays");
        app.on_key(key(KeyCode::Down));
        assert_eq!(selected_name(&app), "rescue");
        app.on_key(key(KeyCode::Char('j')));
        app.on_key(key(KeyCode::Char('j')));
        assert_eq!(selected_name(&app), "team1", "the last row stays");
        app.on_key(key(KeyCode::Char('k')));
        assert_eq!(selected_name(&app), "rescue");
        app.on_key(key(KeyCode::Char('g')));
        assert_eq!(selected_name(&app), "main");
        app.on_key(key(KeyCode::End));
        assert_eq!(selected_name(&app), "team1");
        assert_eq!(app.selected_log(), Some(Path::new("/state/logs/team1.log")));
    }

    #[test]
    fn keys_map_to_actions_on_the_selected_gateway() {
        let mut app = three();
        app.on_key(key(KeyCode::Down));
        assert_eq!(
            app.on_key(key(KeyCode::Char('s'))),
            Some(Action::Start("rescue".into()))
        );
        assert_eq!(
            app.on_key(key(KeyCode::Char('x'))),
            Some(Action::Stop("rescue".into()))
        );
        assert_eq!(
            app.on_key(key(KeyCode::Char('r'))),
            Some(Action::Restart("rescue".into()))
        );
        assert_eq!(app.on_key(key(KeyCode::Char('R'))), Some(Action::Reload));
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Some(Action::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_c), Some(Action::Quit));
        let ctrl_l = KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_l), Some(Action::Redraw));
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_s), None, "Ctrl-S starts nothing");
        let release = KeyEvent {
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
            ..key(KeyCode::Char('x'))
        };
        assert_eq!(app.on_key(release), None, "a key release is no press");
        assert_eq!(
            Action::Restart("rescue".into()).request(),
            Some(Request::Restart {
                name: "rescue".into()
            })
        );
        assert_eq!(Action::Quit.request(), None);
    }

    #[test]
    fn question_mark_toggles_help_and_esc_closes_it_before_quitting() {
        let mut app = three();
        assert_eq!(app.on_key(key(KeyCode::Char('?'))), None);
        assert!(app.help);
        assert_eq!(app.on_key(key(KeyCode::Esc)), None);
        assert!(!app.help);
        app.on_key(key(KeyCode::Char('?')));
        app.on_key(key(KeyCode::Char('?')));
        assert!(!app.help);
    }

    #[test]
    fn actions_with_no_gateway_say_so() {
        let mut app = App::new(topology(vec![]), 0.0);
        assert_eq!(app.selected_index(), None);
        assert_eq!(app.on_key(key(KeyCode::Char('r'))), None);
        assert!(app.message.as_ref().is_some_and(|m| m.error));
        assert_eq!(app.on_key(key(KeyCode::Down)), None);
        assert_eq!(app.selected_index(), None);
    }

    #[test]
    fn an_event_sets_the_rows_state_and_pid_at_once() {
        let mut app = three();
        app.apply_event(&json!({
            "format": 1, "time": 1_050.0, "instance": "rescue", "kind": "stopped",
            "reason": "asked", "state": "stopped", "pid": null,
        }));
        let rescue = &app.instances()[1];
        assert_eq!(rescue.state, State::Stopped);
        assert_eq!(rescue.pid, None);
        assert_eq!(rescue.since, 1_050.0);
        assert_eq!(rescue.started_at, None, "no uptime without a process");
        assert_eq!(rescue.rss_bytes, None);
        assert!(!rescue.ready);

        app.apply_event(&json!({
            "format": 1, "time": 1_060.0, "instance": "rescue", "kind": "spawned",
            "state": "starting", "pid": 777,
        }));
        let rescue = &app.instances()[1];
        assert_eq!((rescue.state, rescue.pid), (State::Starting, Some(777)));
        assert_eq!(rescue.started_at, Some(1_060.0));
        app.apply_event(&json!({
            "format": 1, "time": 1_061.0, "instance": "rescue", "kind": "ready",
            "after": 1.0, "state": "ready", "pid": 777,
        }));
        assert!(app.instances()[1].ready);
        app.apply_event(&json!({
            "format": 1, "time": 1_070.0, "instance": "rescue", "kind": "unhealthy",
            "reason": "timeout", "state": "unhealthy", "pid": 777,
        }));
        assert_eq!(app.instances()[1].healthy, Some(false));
        assert_eq!(app.instances()[1].started_at, Some(1_060.0));
        // Untouched rows stay as they were.
        assert_eq!(app.instances()[0], instance("main", 18789));
    }

    #[test]
    fn events_carry_degraded_states_and_reload_outcomes() {
        let mut app = three();
        app.apply_event(&json!({
            "format": 1, "time": 1_050.0, "instance": "main", "kind": "degraded",
            "reason": "gateway.crash_loop_breaker", "message": "breaker tripped",
            "advice": "look at the bundle", "bundle": null, "state": "ready", "pid": 28789,
        }));
        let main = &app.instances()[0];
        assert_eq!(
            main.degraded.as_ref().map(|d| d.message.as_str()),
            Some("breaker tripped")
        );
        assert!(note(main).is_some_and(|note| note.starts_with("degraded: breaker tripped")));
        app.apply_event(&json!({
            "format": 1, "time": 1_051.0, "instance": "main", "kind": "recovered",
            "reason": "gateway.crash_loop_breaker", "state": "ready", "pid": 28789,
        }));
        assert_eq!(app.instances()[0].degraded, None);

        app.apply_event(&json!({
            "format": 1, "time": 1_052.0, "instance": null, "kind": "reload-failed",
            "message": "reef.lua:3: syntax error",
        }));
        let error = app.topology.reload_error.clone().expect("a reload error");
        assert_eq!(error.message, "reef.lua:3: syntax error");
        assert_eq!(error.at, 1_052.0);
        app.apply_event(&json!({
            "format": 1, "time": 1_053.0, "instance": null, "kind": "reload-applied",
            "diff": {},
        }));
        assert_eq!(app.topology.reload_error, None);
        // Unknown instances and kinds change nothing.
        let before = app.topology.clone();
        app.apply_event(&json!({ "kind": "lagged", "missed": 3 }));
        app.apply_event(&json!({
            "time": 1_054.0, "instance": "new", "kind": "spawned", "state": "starting", "pid": 1,
        }));
        assert_eq!(app.topology, before);
    }

    #[test]
    fn a_status_refresh_keeps_the_selection_on_the_same_gateway() {
        let mut app = three();
        app.on_key(key(KeyCode::Down));
        assert_eq!(selected_name(&app), "rescue");
        // A reload added a gateway before it: the selection follows rescue to row 3.
        let mut fresh = topology(vec![
            instance("aaa", 21000),
            instance("main", 18789),
            instance("rescue", 19789),
            instance("team1", 20000),
        ]);
        fresh.instances[2].restarts = 2;
        fresh.instances[2].cpu_percent = Some(12.5);
        app.apply_status(fresh);
        assert_eq!(app.selected_index(), Some(2));
        assert_eq!(selected_name(&app), "rescue");
        assert_eq!(app.selected().unwrap().restarts, 2);
        assert_eq!(app.selected().unwrap().cpu_percent, Some(12.5));
    }

    #[test]
    fn the_selection_clamps_when_gateways_vanish_after_a_reload() {
        let mut app = three();
        app.on_key(key(KeyCode::End));
        assert_eq!(selected_name(&app), "team1");
        app.apply_status(topology(vec![instance("main", 18789)]));
        assert_eq!(selected_name(&app), "main", "the last row left");
        app.apply_status(topology(vec![]));
        assert_eq!(app.selected_index(), None);
        assert_eq!(app.selected_log(), None);
        app.apply_status(topology(vec![instance("x", 1), instance("y", 2)]));
        assert_eq!(selected_name(&app), "x");
    }

    #[test]
    fn a_status_older_than_an_event_does_not_undo_it() {
        let mut app = three();
        app.apply_event(&json!({
            "time": 1_050.0, "instance": "main", "kind": "stopped", "state": "stopped",
            "pid": null,
        }));
        // Computed before the stop: main still ready since 1000.
        app.apply_status(topology(vec![
            instance("main", 18789),
            instance("rescue", 19789),
        ]));
        assert_eq!(app.instances()[0].state, State::Stopped);
        assert_eq!(app.instances()[0].pid, None);
        // A status that has seen the stop (and a start since) is taken as it is.
        let mut later = instance("main", 18789);
        later.state = State::Starting;
        later.since = 1_055.0;
        app.apply_status(topology(vec![later.clone()]));
        assert_eq!(app.instances()[0], later);
        // ... and the event is forgotten: an old status after it is taken too.
        app.apply_status(topology(vec![instance("main", 18789)]));
        assert_eq!(app.instances()[0].state, State::Ready);
    }

    #[test]
    fn losing_reef_is_shown_and_its_return_too() {
        let mut app = three();
        app.on_not_running();
        assert!(!app.connected);
        let message = app.message.clone().expect("a message");
        assert!(message.error);
        assert!(
            message.text.starts_with("reef is not running"),
            "{message:?}"
        );
        app.on_attached();
        assert!(app.connected);
        assert_eq!(
            app.message.as_ref().map(|m| m.text.as_str()),
            Some("reef is running again")
        );
        app.on_not_running();
        app.apply_status(topology(vec![instance("main", 18789)]));
        assert!(app.connected);
    }

    #[test]
    fn answers_show_in_the_message_line_with_their_status() {
        let mut app = three();
        let action = Action::Stop("rescue".into());
        app.begin(&action);
        assert_eq!(
            app.message.as_ref().map(|m| m.text.as_str()),
            Some("stopping rescue...")
        );
        let mut stopped = instance("rescue", 19789);
        stopped.state = State::Stopped;
        stopped.since = 2_000.0;
        let response = Response {
            ok: true,
            message: Some("stopped".into()),
            status: Some(topology(vec![instance("main", 18789), stopped])),
            diff: None,
        };
        app.on_answer(&action, Ok(response));
        assert_eq!(
            app.message,
            Some(Message::info("rescue: stopped".to_owned()))
        );
        assert_eq!(app.instances()[1].state, State::Stopped);

        let refused = Response {
            ok: false,
            message: Some("reef.lua:2: oops".into()),
            status: None,
            diff: None,
        };
        app.on_answer(&Action::Reload, Ok(refused));
        assert_eq!(
            app.message,
            Some(Message::error("reload failed: reef.lua:2: oops"))
        );
        app.on_answer(
            &Action::Restart("main".into()),
            Err("reef is not running".into()),
        );
        assert_eq!(
            app.message,
            Some(Message::error("main: reef is not running"))
        );
    }

    #[test]
    fn the_log_keeps_its_newest_lines() {
        let mut app = three();
        app.replace_log((0..LOG_KEEP + 5).map(|n| n.to_string()).collect());
        assert_eq!(app.log_lines().len(), LOG_KEEP);
        assert_eq!(app.log_lines().next(), Some("5"));
        app.append_log(vec!["new".into()]);
        assert_eq!(app.log_lines().next_back(), Some("new"));
        app.replace_log(vec!["fresh".into()]);
        assert_eq!(app.log_lines().collect::<Vec<_>>(), ["fresh"]);
    }

    #[test]
    fn counts_follow_a_gateways_life() {
        let mut app = three();
        app.topology.instances[2].state = State::Backoff;
        assert_eq!(app.counts(), [(State::Ready, 2), (State::Backoff, 1)]);
    }
}
