//! `bot-bottle supervise`: a terminal UI (ratatui) over every bottle's queue. Pending requests,
//! oldest first, refreshed twice a second; the selected request's arguments below.
//!
//! Keys: ↑/↓ (k/j) select · `a` approve (type notes or the answer, Enter) · `m` modify (edit the
//! arguments in `$EDITOR`, then notes, Enter) · `r` reject (type the reason, Enter) · Esc
//! cancels typing · `q` quits. The state machine ([`App::key`]) is pure and unit-tested; the
//! loop only draws, reads keys and performs the [`Action`]s through [`super::ops`].

use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState, Wrap};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;

use super::ops::{self, Decision, Pending};
use crate::home::Home;

const REFRESH: Duration = Duration::from_millis(500);

/// What the operator is typing, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    None,
    /// Notes for an approval (with edited arguments for a modification).
    Approve {
        id: String,
        arguments: Option<Value>,
        text: String,
    },
    /// The reason for a rejection.
    Reject {
        id: String,
        text: String,
    },
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    Quit,
    /// Open `$EDITOR` on this request's arguments.
    Edit(String),
    Answer(String, Decision),
}

/// The UI state.
pub struct App {
    pub items: Vec<Pending>,
    pub table: TableState,
    pub input: Input,
    /// The last outcome or problem, shown in the status line.
    pub status: String,
}

impl App {
    pub fn new() -> App {
        App { items: Vec::new(), table: TableState::default(), input: Input::None, status: String::new() }
    }

    /// Replaces the list, keeping the selection on the same request where it still exists.
    pub fn set_items(&mut self, items: Vec<Pending>) {
        let selected_id = self.selected().map(|p| p.request.id.clone());
        self.items = items;
        let idx = selected_id.and_then(|id| self.items.iter().position(|p| p.request.id == id));
        self.table.select(match (idx, self.items.is_empty()) {
            (_, true) => None,
            (Some(i), _) => Some(i),
            (None, false) => Some(self.table.selected().unwrap_or(0).min(self.items.len() - 1)),
        });
    }

    pub fn selected(&self) -> Option<&Pending> {
        self.table.selected().and_then(|i| self.items.get(i))
    }

    /// Starts typing notes for an approval with operator-edited arguments.
    pub fn edited(&mut self, id: String, arguments: Value) {
        self.input = Input::Approve { id, arguments: Some(arguments), text: String::new() };
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        match &mut self.input {
            Input::None => {}
            Input::Approve { text, .. } | Input::Reject { text, .. } => {
                match key.code {
                    KeyCode::Esc => {
                        self.input = Input::None;
                        self.status = "cancelled".into();
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    KeyCode::Enter => {
                        let input = std::mem::replace(&mut self.input, Input::None);
                        return match input {
                            Input::Approve { id, arguments, text } => {
                                Action::Answer(id, Decision { approve: true, notes: text, arguments })
                            }
                            Input::Reject { id, text } => {
                                Action::Answer(id, Decision { approve: false, notes: text, arguments: None })
                            }
                            Input::None => Action::Nothing,
                        };
                    }
                    _ => {}
                }
                return Action::Nothing;
            }
        }
        let id = self.selected().map(|p| p.request.id.clone());
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => {
                self.table.select_previous();
                Action::Nothing
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.table.selected().is_some_and(|i| i + 1 < self.items.len()) {
                    self.table.select_next();
                }
                Action::Nothing
            }
            KeyCode::Char('a') => {
                if let Some(id) = id {
                    self.input = Input::Approve { id, arguments: None, text: String::new() };
                }
                Action::Nothing
            }
            KeyCode::Char('r') => {
                if let Some(id) = id {
                    self.input = Input::Reject { id, text: String::new() };
                }
                Action::Nothing
            }
            KeyCode::Char('m') => id.map_or(Action::Nothing, Action::Edit),
            _ => Action::Nothing,
        }
    }

    pub fn render(&mut self, f: &mut Frame<'_>) {
        let [list_area, detail_area, status_area, help_area] = Layout::vertical([
            Constraint::Percentage(50),
            Constraint::Min(5),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let rows = self.items.iter().map(|p| {
            Row::new(vec![
                ops::age(&p.request.created_at),
                p.slug.clone(),
                p.request.tool.clone(),
                ops::summary(&p.request),
                p.request.id.clone(),
            ])
        });
        let title = format!(" bot-bottle supervise: {} pending ", self.items.len());
        let table = Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(16),
                Constraint::Length(18),
                Constraint::Fill(1),
                Constraint::Length(32),
            ],
        )
        .header(Row::new(vec!["AGE", "BOTTLE", "TOOL", "REQUEST", "ID"]).add_modifier(Modifier::BOLD))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(Block::bordered().title(title));
        f.render_stateful_widget(table, list_area, &mut self.table);

        let detail = match self.selected() {
            Some(p) => {
                let args = serde_json::to_string_pretty(&p.request.arguments).unwrap_or_default();
                format!("{} from bottle {} at {}\n{args}", p.request.tool, p.slug, p.request.created_at)
            }
            None => "no pending requests".to_string(),
        };
        f.render_widget(
            Paragraph::new(detail).wrap(Wrap { trim: false }).block(Block::bordered().title(" request ")),
            detail_area,
        );
        let (status, help) = match &self.input {
            Input::None => {
                (self.status.clone(), "↑/↓ select · a approve · m modify ($EDITOR) · r reject · q quit".to_string())
            }
            Input::Approve { arguments, text, .. } => (
                format!("{} notes> {text}▏", if arguments.is_some() { "modify" } else { "approve" }),
                "type notes (the answer for a question), Enter to send, Esc to cancel".to_string(),
            ),
            Input::Reject { text, .. } => {
                (format!("reject reason> {text}▏"), "type the reason, Enter to send, Esc to cancel".to_string())
            }
        };
        f.render_widget(Line::from(status).bold(), status_area);
        f.render_widget(Line::from(help).dim(), help_area);
    }
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

/// Runs the UI until the operator quits.
pub fn run(home: &Home) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init().context("starting the terminal UI (is this a terminal?)")?;
    let result = run_loop(home, &mut terminal);
    ratatui::restore();
    result
}

fn refresh(home: &Home, app: &mut App) {
    match ops::pending(home) {
        Ok((items, warnings)) => {
            app.set_items(items);
            if let Some(w) = warnings.first() {
                app.status = format!("warning: {w}");
            }
        }
        Err(e) => app.status = format!("error: {e:#}"),
    }
}

fn run_loop(home: &Home, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
    let mut app = App::new();
    refresh(home, &mut app);
    let mut last = Instant::now();
    loop {
        terminal.draw(|f| app.render(f)).context("drawing")?;
        let wait = REFRESH.saturating_sub(last.elapsed());
        if event::poll(wait).context("reading the terminal")?
            && let Event::Key(key) = event::read().context("reading the terminal")?
        {
            match app.key(key) {
                Action::Nothing => {}
                Action::Quit => return Ok(()),
                Action::Answer(id, decision) => {
                    app.status = match ops::answer(home, &id, decision) {
                        Ok(done) => {
                            let mut s =
                                format!("{} {} ({})", ops::status_word(done.response.status), id, done.request.tool);
                            if let Some(f) = done.route_added {
                                s.push_str(&format!("; route added to {}", f.display()));
                            }
                            s
                        }
                        Err(e) => format!("error: {e:#}"),
                    };
                    refresh(home, &mut app);
                    last = Instant::now();
                }
                Action::Edit(id) => {
                    let args = app.selected().map(|p| p.request.arguments.clone()).unwrap_or(Value::Null);
                    ratatui::restore();
                    let edited = edit_json(&args);
                    *terminal = ratatui::try_init().context("restarting the terminal UI")?;
                    match edited {
                        Ok(v) => app.edited(id, v),
                        Err(e) => app.status = format!("error: {e:#}"),
                    }
                }
            }
        }
        if last.elapsed() >= REFRESH {
            refresh(home, &mut app);
            last = Instant::now();
        }
    }
}

/// Lets the operator edit `value` as pretty JSON in `$VISUAL` / `$EDITOR` (default `vi`).
fn edit_json(value: &Value) -> anyhow::Result<Value> {
    let file = tempfile::Builder::new().prefix("bot-bottle-arguments-").suffix(".json").tempfile()?;
    std::fs::write(file.path(), serde_json::to_string_pretty(value)? + "\n")?;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| "vi".into());
    let mut words = shell_words::split(&editor).with_context(|| format!("$EDITOR {editor:?} does not parse"))?;
    if words.is_empty() {
        anyhow::bail!("$EDITOR is empty");
    }
    let program = words.remove(0);
    // Interactive: the editor owns the terminal until the operator closes it, so no timeout,
    // and it needs the operator's environment (TERM, HOME) and stdio, not common::proc's.
    #[allow(clippy::disallowed_methods)]
    let status = std::process::Command::new(&program)
        .args(&words)
        .arg(file.path())
        .status()
        .with_context(|| format!("running the editor {program:?}"))?;
    if !status.success() {
        anyhow::bail!("the editor {program:?} exited with {status}; nothing changed");
    }
    let text = std::fs::read_to_string(file.path())?;
    serde_json::from_str(&text).context("the edited arguments are not JSON; nothing changed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::formats::QueueRequest;
    use ratatui::backend::TestBackend;

    fn item(id: &str, tool: &str, args: Value) -> Pending {
        Pending {
            slug: "b1".into(),
            request: QueueRequest {
                id: id.into(),
                bottle: "b1".into(),
                tool: tool.into(),
                arguments: args,
                created_at: "2026-11-27T06:00:00.000Z".into(),
            },
        }
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, s: &str) {
        for c in s.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    #[test]
    fn approve_with_notes_reject_with_reason_and_cancel() {
        let mut app = App::new();
        app.set_items(vec![
            item("r1", "ask_operator", serde_json::json!({"question": "ok?"})),
            item("r2", "request_egress", serde_json::json!({"host": "a.com"})),
        ]);
        assert_eq!(app.selected().unwrap().request.id, "r1");
        press(&mut app, KeyCode::Char('a'));
        typed(&mut app, "yes!");
        press(&mut app, KeyCode::Backspace);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Action::Answer("r1".into(), Decision { approve: true, notes: "yes".into(), arguments: None })
        );
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Down);
        assert_eq!(app.selected().unwrap().request.id, "r2");
        press(&mut app, KeyCode::Char('r'));
        typed(&mut app, "q is a letter here");
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Action::Answer(
                "r2".into(),
                Decision { approve: false, notes: "q is a letter here".into(), arguments: None }
            )
        );
        press(&mut app, KeyCode::Char('r'));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.input, Input::None);
        assert_eq!(press(&mut app, KeyCode::Char('m')), Action::Edit("r2".into()));
        app.edited("r2".into(), serde_json::json!({"host": "b.com"}));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Action::Answer(
                "r2".into(),
                Decision { approve: true, notes: String::new(), arguments: Some(serde_json::json!({"host": "b.com"})) }
            )
        );
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn selection_follows_the_request_across_refreshes() {
        let mut app = App::new();
        app.set_items(vec![item("r1", "t", Value::Null), item("r2", "t", Value::Null)]);
        press(&mut app, KeyCode::Down);
        app.set_items(vec![item("r0", "t", Value::Null), item("r1", "t", Value::Null), item("r2", "t", Value::Null)]);
        assert_eq!(app.selected().unwrap().request.id, "r2");
        app.set_items(vec![item("r0", "t", Value::Null)]);
        assert_eq!(app.selected().unwrap().request.id, "r0");
        app.set_items(vec![]);
        assert!(app.selected().is_none());
        assert_eq!(press(&mut app, KeyCode::Char('a')), Action::Nothing);
        assert_eq!(app.input, Input::None);
    }

    #[test]
    fn renders_the_list_and_the_selected_arguments() {
        let mut app = App::new();
        app.set_items(vec![item("abc123", "ask_operator", serde_json::json!({"question": "deploy now?"}))]);
        let mut terminal = ratatui::Terminal::new(TestBackend::new(120, 24)).unwrap();
        terminal.draw(|f| app.render(f)).unwrap();
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        for frag in ["1 pending", "ask_operator", "deploy now?", "abc123", "\"question\""] {
            assert!(screen.contains(frag), "{frag} missing");
        }
    }
}
