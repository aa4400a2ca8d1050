//! The operator's side of the supervise queue: `bot-bottle supervise list [--json]`,
//! `bot-bottle supervise answer ID --approve|--reject [--notes] [--arguments JSON]`, and
//! `bot-bottle supervise` alone, a terminal UI over every bottle's queue.
//!
//! [`ops`] holds the operations (list, answer, apply egress routes, audit); [`tui`] the UI.

pub mod ops;
pub mod tui;

use std::io::Write;

use anyhow::Context;
use common::daemon::UsageError;
use serde_json::json;

use crate::cli::{SuperviseArgs, SuperviseCmd};
use crate::home::Home;

/// Runs `bot-bottle supervise ...`.
pub fn run(home: &Home, args: SuperviseArgs) -> anyhow::Result<()> {
    match args.command {
        None => tui::run(home),
        Some(SuperviseCmd::List { json }) => list(home, json),
        Some(SuperviseCmd::Answer { id, approve, reject, notes, arguments }) => {
            if approve == reject {
                return Err(UsageError("give exactly one of --approve or --reject".into()).into());
            }
            let arguments = arguments
                .map(|a| {
                    serde_json::from_str::<serde_json::Value>(&a)
                        .map_err(|e| UsageError(format!("--arguments: not JSON: {e}")))
                })
                .transpose()?;
            let done = ops::answer(home, &id, ops::Decision { approve, notes: notes.unwrap_or_default(), arguments })?;
            let mut out = std::io::stdout().lock();
            let mut line = format!(
                "{} {} ({} from bottle {})",
                ops::status_word(done.response.status),
                done.request.id,
                done.request.tool,
                done.slug
            );
            if let Some(file) = &done.route_added {
                line.push_str(&format!("; route added to {}", file.display()));
            }
            writeln!(out, "{line}").context("writing to stdout")?;
            Ok(())
        }
    }
}

fn list(home: &Home, as_json: bool) -> anyhow::Result<()> {
    let (items, warnings) = ops::pending(home)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let list: Vec<_> = items
            .iter()
            .map(|p| {
                json!({"id": p.request.id, "bottle": p.slug, "tool": p.request.tool,
                       "created_at": p.request.created_at, "arguments": p.request.arguments})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?).context("writing to stdout")?;
        return Ok(());
    }
    if items.is_empty() {
        writeln!(out, "no pending requests").context("writing to stdout")?;
        return Ok(());
    }
    let bw = items.iter().map(|p| p.slug.len()).max().unwrap_or(0).max(6);
    let tw = items.iter().map(|p| p.request.tool.len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:<32}  {:<bw$}  {:<tw$}  {:>4}  REQUEST", "ID", "BOTTLE", "TOOL", "AGE")
        .context("writing to stdout")?;
    for p in &items {
        writeln!(
            out,
            "{:<32}  {:<bw$}  {:<tw$}  {:>4}  {}",
            p.request.id,
            p.slug,
            p.request.tool,
            ops::age(&p.request.created_at),
            ops::summary(&p.request)
        )
        .context("writing to stdout")?;
    }
    Ok(())
}
