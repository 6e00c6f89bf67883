//! The screen of `reef top`, drawn from an [`App`]: a header line (script, reef, generation,
//! gateways by state, a failed reload), the table of gateways, the selected gateway's note and
//! the tail of its log, the message line and the keys. Drawing reads the app and nothing else.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use super::app::{App, note};
use crate::render::duration_text;
use crate::supervisor::status::{InstanceStatus, State};

/// The line of keys at the bottom of the screen.
pub const KEYS: &str = "↑↓/jk select  s start  x stop  r restart  R reload script  ? help  q quit";

/// The help overlay's lines: key, what it does.
const HELP: [(&str, &str); 9] = [
    ("↑ ↓  j k", "select a gateway (Home/End or g/G: first/last)"),
    ("s", "start the selected gateway"),
    ("x", "stop it (it stays stopped until started)"),
    ("r", "restart it (also clears a config error)"),
    ("R", "reload the script now (as `reef reload`)"),
    ("Ctrl-L", "paint the screen again"),
    ("?", "show or hide this help"),
    ("q  Esc  Ctrl-C", "quit (Esc closes this help first)"),
    (
        "",
        "actions run in the background; answers show above the keys",
    ),
];

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let header = header_lines(app);
    let detail = app
        .selected()
        .and_then(|instance| note(instance).map(|note| (instance, note)));
    // Rows, header row and borders; the log gets what is left, at least 3 lines.
    let fixed = header.len() as u16 + u16::from(detail.is_some()) + 2;
    let wanted = app.instances().len() as u16 + 3;
    let table_height = wanted.min(area.height.saturating_sub(fixed + 3).max(4));
    let [
        header_area,
        table_area,
        detail_area,
        log_area,
        message_area,
        keys_area,
    ] = Layout::vertical([
        Constraint::Length(header.len() as u16),
        Constraint::Length(table_height),
        Constraint::Length(u16::from(detail.is_some())),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header), header_area);
    draw_table(frame, app, table_area);
    if let Some((instance, note)) = detail {
        let line = Line::from(vec![
            Span::styled(format!("{}: ", instance.name), Modifier::BOLD),
            Span::raw(note),
        ]);
        frame.render_widget(Paragraph::new(line), detail_area);
    }
    draw_log(frame, app, log_area);
    if let Some(message) = &app.message {
        let style = if message.error {
            paint(app, Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        frame.render_widget(
            Paragraph::new(Span::styled(message.text.as_str(), style)),
            message_area,
        );
    }
    frame.render_widget(Paragraph::new(Span::styled(KEYS, Modifier::DIM)), keys_area);
    if app.help {
        draw_help(frame, area);
    }
}

/// A foreground colour, or none where colours are off (`NO_COLOR`).
fn paint(app: &App, colour: Color) -> Style {
    if app.colour {
        Style::default().fg(colour)
    } else {
        Style::default()
    }
}

fn header_lines(app: &App) -> Vec<Line<'static>> {
    let topology = &app.topology;
    let counts: Vec<String> = app
        .counts()
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    let counts = if counts.is_empty() {
        "no gateways".to_owned()
    } else {
        counts.join(", ")
    };
    let reef = if app.connected {
        format!("reef pid {}", topology.pid)
    } else {
        format!("reef pid {} not running (as last seen)", topology.pid)
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("reef top  ", Modifier::BOLD),
        Span::raw(format!(
            "{} · {reef} · generation {} · {counts}",
            topology.script.display(),
            topology.generation
        )),
    ])];
    if let Some(error) = &topology.reload_error {
        lines.push(Line::styled(
            format!(
                "last reload failed {} ago, still running generation {}: {}",
                duration_text(app.now - error.at),
                topology.generation,
                error.message
            ),
            paint(app, Color::Red),
        ));
    }
    lines
}

fn state_colour(state: State) -> Color {
    match state {
        State::Ready => Color::Green,
        State::Waiting | State::Starting | State::Stopping => Color::Yellow,
        State::Stopped => Color::Gray,
        State::Unhealthy | State::Backoff | State::ConfigError | State::Blocked | State::Exited => {
            Color::Red
        }
    }
}

fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map(show).unwrap_or_else(|| "-".to_owned())
}

/// The STATE cell: a degraded gateway says so.
fn state_text(instance: &InstanceStatus) -> String {
    if instance.degraded.is_some() {
        format!("{} (degraded)", instance.state)
    } else {
        instance.state.to_string()
    }
}

/// The gateways table's columns, in order: heading, narrowest width (so that a value that
/// changes every second does not shift the columns after it), and rank among the columns
/// dropped when the terminal is too narrow for all of them (0: never; the highest goes first):
/// a truncated name helps nobody, a missing CDP range is in `reef status` and `reef plan`.
const COLUMNS: [(&str, u16, u8); 12] = [
    ("NAME", 4, 0),
    ("STATE", 9, 0),
    ("HEALTH", 7, 5),
    ("PID", 6, 0),
    ("CPU", 6, 3),
    ("MEM", 8, 4),
    ("RESTARTS", 8, 0),
    ("UPTIME", 6, 2),
    ("PORT", 5, 0),
    ("CONTROL", 7, 7),
    ("CDP", 11, 8),
    ("NOTE", 4, 6),
];

/// The table's spacing between columns.
const SPACING: u16 = 2;

/// One row's cells, a text for each of [`COLUMNS`].
fn cells(app: &App, instance: &InstanceStatus) -> [String; 12] {
    let ports = &instance.ports;
    let health = match instance.healthy {
        Some(true) => "ok",
        Some(false) => "failing",
        None => "-",
    };
    [
        instance.name.clone(),
        state_text(instance),
        health.to_owned(),
        or_dash(instance.pid, |pid| pid.to_string()),
        or_dash(instance.cpu_percent, |cpu| format!("{cpu:.1}%")),
        or_dash(instance.rss_bytes, crate::host::usage::bytes_text),
        instance.restarts.to_string(),
        or_dash(instance.started_at, |at| duration_text(app.now - at)),
        ports.gateway.to_string(),
        ports.browser_control.to_string(),
        format!("{}-{}", ports.cdp_first, ports.cdp_last),
        note(instance).unwrap_or_default(),
    ]
}

fn draw_table(frame: &mut Frame, app: &App, area: Rect) {
    let rows: Vec<[String; 12]> = app
        .instances()
        .iter()
        .map(|instance| cells(app, instance))
        .collect();
    // Each column as wide as its widest cell or heading; the note takes what is left.
    let mut widths: Vec<u16> = COLUMNS
        .iter()
        .enumerate()
        .map(|(index, (_, narrowest, _))| {
            rows.iter()
                .map(|cells| cells[index].chars().count() as u16)
                .fold(*narrowest, u16::max)
        })
        .collect();
    let note = COLUMNS.len() - 1;
    widths[note] = 4;
    // Borders and the selection mark.
    let room = area.width.saturating_sub(4);
    let mut shown: Vec<usize> = (0..COLUMNS.len()).collect();
    let needed = |shown: &[usize]| {
        shown.iter().map(|&i| widths[i]).sum::<u16>()
            + SPACING * (shown.len() as u16).saturating_sub(1)
    };
    while needed(&shown) > room {
        let Some(position) = (0..shown.len())
            .filter(|&p| COLUMNS[shown[p]].2 > 0)
            .max_by_key(|&p| COLUMNS[shown[p]].2)
        else {
            break;
        };
        shown.remove(position);
    }
    let constraints: Vec<Constraint> = shown
        .iter()
        .map(|&i| {
            if i == note {
                Constraint::Fill(1)
            } else {
                Constraint::Length(widths[i])
            }
        })
        .collect();
    let header = Row::new(shown.iter().map(|&i| COLUMNS[i].0))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let table_rows = app
        .instances()
        .iter()
        .zip(rows)
        .map(|(instance, mut cells)| {
            Row::new(shown.iter().map(|&i| {
                let cell = Cell::from(std::mem::take(&mut cells[i]));
                if i == 1 {
                    cell.style(paint(app, state_colour(instance.state)))
                } else {
                    cell
                }
            }))
        });
    let table = Table::new(table_rows, constraints)
        .header(header)
        .column_spacing(SPACING)
        .block(Block::bordered().title(" gateways "))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_log(frame: &mut Frame, app: &App, area: Rect) {
    let title = match app.selected() {
        Some(instance) => format!(" {} log: {} ", instance.name, instance.log.display()),
        None => " log ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let height = usize::from(block.inner(area).height);
    let lines: Vec<Line> = if app.log_lines().len() == 0 {
        vec![Line::styled("(no output yet)", Modifier::DIM)]
    } else {
        let skip = app.log_lines().len().saturating_sub(height);
        app.log_lines().skip(skip).map(Line::raw).collect()
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let key_width = HELP
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:<key_width$}  "), Modifier::BOLD),
                Span::raw(*what),
            ])
        })
        .collect();
    let width = (area.width.saturating_sub(4)).min(80);
    let height = (lines.len() as u16 + 2).min(area.height);
    let [popup] = Layout::horizontal([Constraint::Length(width)])
        .flex(ratatui::layout::Flex::Center)
        .areas(area);
    let [popup] = Layout::vertical([Constraint::Length(height)])
        .flex(ratatui::layout::Flex::Center)
        .areas(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::supervisor::status::ReloadError;
    use crate::top::app::tests::{instance, topology};

    /// The screen as text, a line a row, trailing blanks cut.
    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                let line: String = (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect();
                line.trim_end().to_owned() + "\n"
            })
            .collect()
    }

    /// main ready, rescue selected and in backoff after crashes, team1 stopped; a log tail.
    fn colony() -> App {
        let mut rescue = instance("rescue", 19789);
        rescue.state = State::Backoff;
        rescue.pid = None;
        rescue.healthy = None;
        rescue.ready = false;
        rescue.started_at = None;
        rescue.cpu_percent = None;
        rescue.rss_bytes = None;
        rescue.restarts = 3;
        rescue.last_exit = Some("exit code 1".into());
        rescue.message = Some("exited with exit code 1; next start in 4s".into());
        let mut team = instance("team1", 20000);
        team.state = State::Stopped;
        team.pid = None;
        team.healthy = None;
        team.started_at = None;
        team.cpu_percent = None;
        team.rss_bytes = None;
        let mut main = instance("main", 18789);
        main.cpu_percent = Some(2.25);
        main.rss_bytes = Some(61 * 1024 * 1024);
        main.started_at = Some(1_041.0 - 3_725.0);
        let mut app = App::new(topology(vec![main, rescue, team]), 1_041.0);
        app.on_key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Down,
        ));
        app.replace_log((1..=30).map(|n| format!("rescue line {n}")).collect());
        app
    }

    #[test]
    fn the_screen_shows_every_gateway_and_the_selected_ones_log() {
        let app = colony();
        let text = screen(&app, 120, 24);
        insta::assert_snapshot!(text);
        let row = |name: &str| {
            text.lines()
                .find(|line| line.split_whitespace().any(|cell| cell == name))
                .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("main")[1..12],
            [
                "main", "ready", "ok", "28789", "2.2%", "61", "MiB", "0", "1h02m", "18789", "18791"
            ]
        );
        assert!(row("main").contains(&"18800-18899"));
        assert_eq!(row("rescue")[..5], ["│>", "rescue", "backoff", "-", "-"]);
        assert!(row("rescue").contains(&"3"), "restarts");
        assert_eq!(row("team1")[1..3], ["team1", "stopped"]);
        assert!(text.contains("reef top  /srv/bots/reef.lua · reef pid 4242 · generation 1 · 1 ready, 1 backoff, 1 stopped"));
        assert!(text.contains("rescue: exited with exit code 1; next start in 4s"));
        assert!(text.contains(" rescue log: /state/logs/rescue.log "));
        // As many of the newest log lines as fit, the last at the bottom.
        assert!(text.contains("│rescue line 30"), "{text}");
        assert!(!text.contains("rescue line 1 "), "{text}");
        assert!(
            text.lines()
                .last()
                .is_some_and(|line| line.starts_with(KEYS))
        );
    }

    #[test]
    fn a_failed_reload_a_lost_reef_and_the_message_line_are_shown() {
        let mut app = colony();
        app.topology.reload_error = Some(ReloadError {
            message: "reef.lua:3: unexpected symbol near '}'".into(),
            at: 1_029.0,
        });
        app.on_not_running();
        let text = screen(&app, 120, 24);
        assert!(
            text.contains("last reload failed 12s ago, still running generation 1: reef.lua:3: unexpected symbol near '}'"),
            "{text}"
        );
        assert!(
            text.contains("reef pid 4242 not running (as last seen)"),
            "{text}"
        );
        let message = text.lines().rev().nth(1).unwrap();
        assert!(
            message.starts_with("reef is not running; trying again"),
            "{text}"
        );
    }

    #[test]
    fn help_overlays_the_screen() {
        let mut app = colony();
        app.on_key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Char('?'),
        ));
        let text = screen(&app, 100, 30);
        assert!(text.contains(" keys "), "{text}");
        for (key, what) in HELP {
            assert!(
                text.contains(&format!("{key:<14}  {what}")),
                "{key}:\n{text}"
            );
        }
    }

    #[test]
    fn states_are_coloured_only_where_colours_are_on() {
        let mut app = colony();
        let state_style = |app: &App| {
            let mut terminal = Terminal::new(TestBackend::new(120, 24)).unwrap();
            terminal.draw(|frame| draw(frame, app)).unwrap();
            let buffer = terminal.backend().buffer().clone();
            // "ready" of main: the row below the table's header.
            let y = (0..24)
                .find(|&y| {
                    (0..120)
                        .map(|x| buffer[(x, y)].symbol().to_owned())
                        .collect::<String>()
                        .contains("main ")
                })
                .unwrap();
            let x = (0..120)
                .find(|&x| buffer[(x, y)].symbol() == "r" && buffer[(x + 1, y)].symbol() == "e")
                .unwrap();
            buffer[(x, y)].fg
        };
        assert_eq!(state_style(&app), Color::Reset);
        app.colour = true;
        assert_eq!(state_style(&app), Color::Green);
    }

    #[test]
    fn a_narrow_terminal_drops_columns_before_it_cuts_names() {
        let mut app = colony();
        app.topology.instances[2].name = "team-alpha-west".into();
        let text = screen(&app, 80, 16);
        let header = text.lines().nth(2).unwrap();
        let headings: Vec<&str> = header
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|word| !word.is_empty())
            .collect();
        // The ports beyond the gateway's, the note and health go first.
        assert_eq!(
            headings,
            ["NAME", "STATE", "PID", "CPU", "RESTARTS", "UPTIME", "PORT"],
            "{text}"
        );
        assert!(text.contains(" team-alpha-west "), "{text}");
    }

    #[test]
    fn a_small_terminal_still_draws() {
        let app = colony();
        for (width, height) in [(20, 5), (1, 1), (80, 8)] {
            screen(&app, width, height);
        }
        screen(&App::new(topology(vec![]), 0.0), 80, 10);
    }
}
