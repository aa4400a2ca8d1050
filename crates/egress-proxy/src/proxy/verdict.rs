//! The DLP verdict: a pure function from what the inspection found and the route's DLP action
//! to what happens to the request. The plumbing applies it ([`super::request`]).

use common::formats::routes::DlpAction;

use super::inspect::Inspection;

/// What happens to an inspected request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing found: forward it as it is.
    Forward,
    /// Refuse it: 403 with this reason (no values in it).
    Block(String),
    /// Replace every finding with `[REDACTED]` and forward; audited with this reason.
    Redact(String),
    /// Hold it for the operator (file a supervise request, forward only on approval);
    /// the summary of the findings.
    Hold(String),
}

/// The verdict for `insp` under the route's `action`; `queue` says whether a supervise queue is
/// configured (without one a hold cannot be asked for, so it is a block).
pub(super) fn verdict(insp: &Inspection, action: DlpAction, queue: bool) -> Verdict {
    if insp.is_clean() {
        return Verdict::Forward;
    }
    let summary = insp.summary();
    match action {
        DlpAction::Block => Verdict::Block(format!("dlp: {summary}")),
        // A finding in the host, the method or a header name cannot be replaced: the request
        // would be another request.
        DlpAction::Redact if !insp.fixed.is_empty() => {
            Verdict::Block(format!("dlp: {summary} (the {} cannot be redacted)", insp.fixed[0].0))
        }
        DlpAction::Redact => Verdict::Redact(format!("dlp: {summary}")),
        DlpAction::Supervise if !queue => Verdict::Block(format!("dlp: {summary} (supervise: no queue configured)")),
        DlpAction::Supervise => Verdict::Hold(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlp::Hit;
    use common::scan::Mode;

    fn hit(rule: &str, start: usize, end: usize) -> Hit {
        Hit { rule_id: rule.into(), start, end, redacted: "…".into(), mode: Mode::Standard }
    }

    fn found() -> Inspection {
        Inspection {
            url: vec![hit("known-secret", 3, 20)],
            headers: vec![(http::HeaderName::from_static("x-leak"), 0, vec![hit("github-pat", 0, 40)])],
            body: vec![hit("known-secret", 5, 30), hit("known-secret", 50, 70)],
            fixed: Vec::new(),
        }
    }

    #[test]
    fn clean_requests_go_through_whatever_the_action() {
        for action in [DlpAction::Block, DlpAction::Redact, DlpAction::Supervise] {
            for queue in [false, true] {
                assert_eq!(verdict(&Inspection::default(), action, queue), Verdict::Forward);
            }
        }
    }

    #[test]
    fn each_action_with_and_without_a_queue() {
        let summary =
            "known-secret in url (standard); github-pat in header x-leak (standard); known-secret in body (standard)";
        let insp = found();
        assert_eq!(verdict(&insp, DlpAction::Block, true), Verdict::Block(format!("dlp: {summary}")));
        assert_eq!(verdict(&insp, DlpAction::Redact, false), Verdict::Redact(format!("dlp: {summary}")));
        assert_eq!(verdict(&insp, DlpAction::Supervise, true), Verdict::Hold(summary.into()));
        assert_eq!(
            verdict(&insp, DlpAction::Supervise, false),
            Verdict::Block(format!("dlp: {summary} (supervise: no queue configured)"))
        );
    }

    #[test]
    fn a_finding_in_the_host_method_or_a_header_name_cannot_be_redacted() {
        for place in ["host", "method", "header name x-leak", "header upgrade"] {
            let mut h = hit("known-secret", 0, 8);
            h.mode = Mode::Strict;
            let insp = Inspection { fixed: vec![(place.into(), h)], ..Inspection::default() };
            assert_eq!(
                verdict(&insp, DlpAction::Redact, true),
                Verdict::Block(format!("dlp: known-secret in {place} (strict) (the {place} cannot be redacted)"))
            );
            // Blocking and holding do not care where it was.
            assert!(matches!(verdict(&insp, DlpAction::Block, true), Verdict::Block(_)));
            assert!(matches!(verdict(&insp, DlpAction::Supervise, true), Verdict::Hold(_)));
        }
    }
}
