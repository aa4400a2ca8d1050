//! The operator's operations over every bottle's queue (`Home::queues_dir()/<slug>/`): list the
//! pending requests, answer one, apply an approved `request_egress` to the bottle's routes.json,
//! and keep the audit trail. Shared by the `list` / `answer` commands and the TUI.
//!
//! Invariants: the bottle a request belongs to is the queue directory it sits in (never what
//! the file claims); an approved egress route is written (validated, atomic rewrite under a
//! lock) *before* the answer, so an agent told "approved" can use it; an answer is never
//! written twice; every request seen and every answer given is one line in `audit.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::formats::{QueueRequest, QueueResponse, ResponseStatus, Routes};
use common::queue::Queue;
use serde_json::{Value, json};

use crate::home::Home;

/// A request waiting for the operator, with the bottle (queue directory) it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub slug: String,
    pub request: QueueRequest,
}

/// Tools whose arguments the supervise daemon validated and that never carry held traffic;
/// other tools' arguments (e.g. a DLP hold) are kept out of the audit log.
const AUDITED_ARGUMENT_TOOLS: [&str; 3] =
    [supervise::tools::ASK_OPERATOR, supervise::tools::REQUEST_EGRESS, supervise::tools::REQUEST_CAPABILITY];

/// Every bottle queue directory: `(slug, Queue)`, sorted by slug.
pub fn queues(home: &Home) -> anyhow::Result<Vec<(String, Queue)>> {
    let root = home.queues_dir();
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.with_context(|| format!("reading {}", root.display()))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Some(slug) = entry.file_name().to_str().filter(|s| !s.starts_with('.')) {
            out.push((slug.to_string(), Queue::new(entry.path())));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every unanswered request in every bottle's queue, oldest first, and a warning for each file
/// that could not be read. Requests seen for the first time are written to the audit log.
pub fn pending(home: &Home) -> anyhow::Result<(Vec<Pending>, Vec<String>)> {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    for (slug, queue) in queues(home)? {
        let (list, errors) = queue.list().with_context(|| format!("reading {}", queue.dir().display()))?;
        warnings.extend(errors.iter().map(|e| e.to_string()));
        for (request, response) in list {
            if let Err(e) = audit_seen(home, &slug, &queue, &request) {
                warnings.push(format!("audit log: {e:#}"));
            }
            if response.is_none() {
                items.push(Pending { slug: slug.clone(), request });
            }
        }
    }
    items.sort_by(|a, b| a.request.created_at.cmp(&b.request.created_at).then_with(|| a.request.id.cmp(&b.request.id)));
    Ok((items, warnings))
}

/// Finds a request by id in any bottle's queue.
pub fn find(home: &Home, id: &str) -> anyhow::Result<Option<(String, Queue, QueueRequest)>> {
    for (slug, queue) in queues(home)? {
        if let Some(req) = queue.request(id)? {
            return Ok(Some((slug, queue, req)));
        }
    }
    Ok(None)
}

/// The operator's decision on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub approve: bool,
    pub notes: String,
    /// Approve with these arguments instead (status `modified`).
    pub arguments: Option<Value>,
}

/// What answering did, for the operator's confirmation line.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub slug: String,
    pub request: QueueRequest,
    pub response: QueueResponse,
    /// For an approved `request_egress`: the routes file the route was added to (`None` when
    /// an identical route was already there).
    pub route_added: Option<PathBuf>,
}

/// Answers request `id`: validates a modified answer, applies an approved egress route, writes
/// the response atomically and audits it.
pub fn answer(home: &Home, id: &str, decision: Decision) -> anyhow::Result<Answered> {
    let Some((slug, queue, request)) = find(home, id)? else {
        bail!("no request {id:?} in any bottle queue under {}", home.queues_dir().display());
    };
    audit_seen(home, &slug, &queue, &request)?;
    if let Some(existing) = queue.response(id)? {
        bail!("request {id} ({}) was already answered: {}", request.tool, status_word(existing.status));
    }
    let (status, arguments) = match (decision.approve, decision.arguments) {
        (false, _) => (ResponseStatus::Rejected, None),
        (true, None) => (ResponseStatus::Approved, None),
        (true, Some(args)) => {
            let args = supervise::tools::validate_modified(&request.tool, &args)
                .map_err(|e| common::daemon::UsageError(format!("--arguments: {e}")))?;
            (ResponseStatus::Modified, Some(args))
        }
    };
    let mut route_added = None;
    if status.is_yes() && request.tool == supervise::tools::REQUEST_EGRESS {
        let effective = arguments.as_ref().unwrap_or(&request.arguments);
        let route = supervise::tools::proposed_route(effective)
            .with_context(|| format!("request {id} cannot become a route"))?;
        let file = home.routes_file(&slug);
        if add_route(&file, route)? {
            route_added = Some(file);
        }
    }
    let response = QueueResponse { status, notes: decision.notes, arguments };
    queue.answer(id, &response).with_context(|| format!("answering request {id}"))?;
    audit(
        home,
        json!({"event": "supervise.answer", "bottle": slug, "id": id, "tool": request.tool,
               "status": response.status, "notes": response.notes, "arguments": response.arguments,
               "route_added": route_added.as_ref().map(|p| p.display().to_string())}),
    )?;
    Ok(Answered { slug, request, response, route_added })
}

/// Appends `route` to the routes file unless an identical route is there; validates the result
/// and replaces the file atomically, holding a lock beside it so two answers never lose one.
/// Returns whether the file changed.
pub fn add_route(file: &Path, route: common::formats::routes::Route) -> anyhow::Result<bool> {
    let dir = file.parent().context("routes file has no directory")?;
    let lock_path = dir.parent().unwrap_or(dir).join("routes.lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let mut routes = Routes::load(file).context("loading the bottle's routes")?;
    if routes.routes.contains(&route) {
        return Ok(false);
    }
    routes.routes.push(route);
    let routes = routes.validate(file).context("the new route list does not validate")?;
    common::atomic::write_json(file, &routes)?;
    Ok(true)
}

pub fn status_word(s: ResponseStatus) -> &'static str {
    match s {
        ResponseStatus::Approved => "approved",
        ResponseStatus::Modified => "modified",
        ResponseStatus::Rejected => "rejected",
    }
}

/// One line describing what a request asks, for lists.
pub fn summary(req: &QueueRequest) -> String {
    let a = &req.arguments;
    let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let text = match req.tool.as_str() {
        supervise::tools::ASK_OPERATOR => s("question"),
        supervise::tools::REQUEST_EGRESS => {
            let mut t = s("host");
            if let Some(p) = a.get("port").and_then(Value::as_u64) {
                t.push_str(&format!(":{p}"));
            }
            for key in ["methods", "paths"] {
                if let Some(list) = a.get(key).and_then(Value::as_array) {
                    let items: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                    t.push_str(&format!(" {}", items.join(",")));
                }
            }
            format!("{t} — {}", s("reason"))
        }
        supervise::tools::REQUEST_CAPABILITY => format!("{} — {}", s("capability"), s("reason")),
        // Anything else that states its question (a push git-gate holds) shows it.
        _ => match a {
            Value::Object(m) if m.get("question").is_some_and(Value::is_string) => s("question"),
            Value::Object(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
            other => other.to_string(),
        },
    };
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    truncate(&flat, 100)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// How long ago an RFC 3339 time was, coarsely (`42s`, `5m`, `3h`, `2d`).
pub fn age(created_at: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(created_at) else { return "?".into() };
    let secs = std::time::SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Writes a `supervise.request` audit line the first time the operator's side sees a request
/// (a hidden marker file beside it remembers that).
fn audit_seen(home: &Home, slug: &str, queue: &Queue, req: &QueueRequest) -> anyhow::Result<()> {
    let marker = queue.dir().join(format!(".{}.audited", req.id));
    if marker.exists() {
        return Ok(());
    }
    let mut line = json!({"event": "supervise.request", "bottle": slug, "id": req.id, "tool": req.tool,
                          "created_at": req.created_at});
    if req.bottle != slug {
        line["claimed_bottle"] = Value::String(req.bottle.clone());
    }
    if AUDITED_ARGUMENT_TOOLS.contains(&req.tool.as_str()) {
        line["arguments"] = req.arguments.clone();
    } else if let Value::Object(m) = &req.arguments {
        line["argument_keys"] = json!(m.keys().collect::<Vec<_>>());
    }
    audit(home, line)?;
    File::create(&marker).with_context(|| format!("creating {}", marker.display()))?;
    Ok(())
}

/// Appends one JSON line (with `ts`) to the home's `audit.jsonl`.
pub fn audit(home: &Home, mut line: Value) -> anyhow::Result<()> {
    line["ts"] = Value::String(common::queue::now_rfc3339());
    let path = home.audit_log();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut bytes = serde_json::to_vec(&line)?;
    bytes.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
    f.write_all(&bytes).with_context(|| format!("appending to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with_bottle(slug: &str) -> (tempfile::TempDir, Home, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        std::fs::create_dir_all(home.queue_dir(slug)).unwrap();
        std::fs::create_dir_all(home.egress_dir(slug)).unwrap();
        std::fs::write(
            home.routes_file(slug),
            r#"{"version":1,"routes":[{"host":"api.example.com","auth":{"token_env":"EGRESS_TOKEN_0"}}]}"#,
        )
        .unwrap();
        let q = Queue::new(home.queue_dir(slug));
        (dir, home, q)
    }

    fn audit_lines(home: &Home) -> Vec<Value> {
        std::fs::read_to_string(home.audit_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_request_that_states_its_question_is_summarised_by_it() {
        let (_d, _home, q) = home_with_bottle("b1");
        let held =
            q.file("b1", "git_push", json!({"repo": "app", "question": "push to app: 1 possible secret"})).unwrap();
        assert_eq!(summary(&held), "push to app: 1 possible secret");
        let other = q.file("b1", "something_new", json!({"b": 1, "a": 2})).unwrap();
        assert_eq!(summary(&other), "a, b");
    }

    #[test]
    fn approve_egress_adds_route_then_answers_and_audits() {
        let (_d, home, q) = home_with_bottle("b1");
        let req = q
            .file(
                "b1",
                "request_egress",
                json!({"host": "pypi.org", "port": 443, "paths": ["/simple/"], "reason": "pip"}),
            )
            .unwrap();
        let (p, w) = pending(&home).unwrap();
        assert_eq!((p.len(), w.len()), (1, 0));
        assert_eq!(summary(&p[0].request), "pypi.org:443 /simple/ — pip");
        let done = answer(&home, &req.id, Decision { approve: true, notes: "ok".into(), arguments: None }).unwrap();
        assert_eq!(done.route_added.as_deref(), Some(home.routes_file("b1").as_path()));
        let routes = Routes::load(&home.routes_file("b1")).unwrap();
        assert_eq!(routes.routes.len(), 2);
        assert_eq!(routes.routes[1].host, "pypi.org");
        assert_eq!(routes.routes[0].auth.as_ref().unwrap().token_env, "EGRESS_TOKEN_0");
        assert_eq!(q.response(&req.id).unwrap().unwrap().status, ResponseStatus::Approved);
        assert!(pending(&home).unwrap().0.is_empty());
        let err =
            answer(&home, &req.id, Decision { approve: false, notes: String::new(), arguments: None }).unwrap_err();
        assert!(err.to_string().contains("already answered: approved"), "{err}");
        let lines = audit_lines(&home);
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["supervise.request", "supervise.answer"], "seen once, answered once");
    }

    #[test]
    fn modified_egress_uses_the_operators_arguments_and_validates_them() {
        let (_d, home, q) = home_with_bottle("b1");
        let req = q.file("b1", "request_egress", json!({"host": "evil.example.net", "reason": "x"})).unwrap();
        let bad = answer(
            &home,
            &req.id,
            Decision { approve: true, notes: String::new(), arguments: Some(json!({"host": "a b", "reason": "x"})) },
        );
        assert!(bad.unwrap_err().to_string().contains("not a DNS name"));
        assert!(q.response(&req.id).unwrap().is_none(), "nothing answered on a bad modification");
        let done = answer(
            &home,
            &req.id,
            Decision {
                approve: true,
                notes: "GET only".into(),
                arguments: Some(json!({"host": "docs.example.net", "methods": ["GET"], "reason": "x"})),
            },
        )
        .unwrap();
        assert_eq!(done.response.status, ResponseStatus::Modified);
        let routes = Routes::load(&home.routes_file("b1")).unwrap();
        assert_eq!(routes.routes[1].host, "docs.example.net");
        assert_eq!(routes.routes[1].matches[0].methods.as_deref(), Some(&["GET".to_string()][..]));
    }

    #[test]
    fn reject_leaves_routes_alone_and_unknown_ids_fail() {
        let (_d, home, q) = home_with_bottle("b1");
        let before = std::fs::read(home.routes_file("b1")).unwrap();
        let req = q.file("b1", "request_egress", json!({"host": "x.example.com", "reason": "x"})).unwrap();
        answer(&home, &req.id, Decision { approve: false, notes: "no".into(), arguments: None }).unwrap();
        assert_eq!(std::fs::read(home.routes_file("b1")).unwrap(), before);
        assert!(answer(&home, "nope", Decision { approve: true, notes: String::new(), arguments: None }).is_err());
    }

    #[test]
    fn approved_egress_without_a_routes_file_answers_nothing() {
        let (_d, home, q) = home_with_bottle("b1");
        std::fs::remove_file(home.routes_file("b1")).unwrap();
        let req = q.file("b1", "request_egress", json!({"host": "x.example.com", "reason": "x"})).unwrap();
        let err =
            answer(&home, &req.id, Decision { approve: true, notes: String::new(), arguments: None }).unwrap_err();
        assert!(format!("{err:#}").contains("routes.json"), "{err:#}");
        assert!(q.response(&req.id).unwrap().is_none());
    }

    #[test]
    fn pending_spans_bottles_oldest_first_and_keeps_held_traffic_out_of_the_audit() {
        let (_d, home, q1) = home_with_bottle("b1");
        std::fs::create_dir_all(home.queue_dir("b2")).unwrap();
        let q2 = Queue::new(home.queue_dir("b2"));
        let first = q2.file("b2", "egress_dlp", json!({"host": "h", "body": "sekrit-value"})).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = q1.file("b1", "ask_operator", json!({"question": "?"})).unwrap();
        std::fs::write(q1.dir().join("broken.request.json"), b"{").unwrap();
        let (p, w) = pending(&home).unwrap();
        assert_eq!(
            p.iter().map(|x| x.request.id.as_str()).collect::<Vec<_>>(),
            [first.id.as_str(), second.id.as_str()]
        );
        assert_eq!(p[0].slug, "b2");
        assert_eq!(w.len(), 1, "{w:?}");
        let log = std::fs::read_to_string(home.audit_log()).unwrap();
        assert!(!log.contains("sekrit-value"), "{log}");
        assert!(log.contains("argument_keys"), "{log}");
    }
}
