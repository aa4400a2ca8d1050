//! The one decision over what a push (or `git-gate scan`) found: forward it, hold it for the
//! operator, or refuse it. Pure: the pre-receive hook and the scan command gather the facts
//! (ref-policy refusals, scan findings, whether a supervise queue is there to ask) and act on
//! the answer.

use crate::scan::{Confidence, GitFinding};

/// What happens to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing refused, nothing found: the push goes upstream (`git-gate scan` exits 0).
    Forward,
    /// Every finding is low-confidence and there is an operator to ask: the push waits for
    /// the answer. Carries the number of findings.
    Hold(usize),
    /// The push is refused; nothing goes upstream.
    Refuse(Refusal),
}

/// Why a push is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Ref policy refused these updates (one reason per update, naming the ref).
    Policy(Vec<String>),
    /// High-confidence findings (their number).
    Secrets(usize),
    /// Only low-confidence findings, but no supervise queue to ask the operator in.
    NoOperator(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Policy(_) => write!(f, "push rejected by ref policy; nothing was sent upstream"),
            Refusal::Secrets(n) => write!(f, "push rejected: {n} secret finding(s); nothing was sent upstream"),
            Refusal::NoOperator(n) => write!(
                f,
                "push rejected: {n} low-confidence finding(s) need the operator's approval and this gate has no \
                 supervise queue; nothing was sent upstream"
            ),
        }
    }
}

/// Decides a push: any ref-policy refusal refuses it; so does any high-confidence finding;
/// low-confidence findings alone hold it for the operator when `can_hold` (a supervise queue is
/// configured) and refuse it otherwise; no finding and no refusal forwards it.
pub fn verdict(findings: &[GitFinding], refusals: &[String], can_hold: bool) -> Verdict {
    if !refusals.is_empty() {
        return Verdict::Refuse(Refusal::Policy(refusals.to_vec()));
    }
    let high = findings.iter().filter(|f| f.confidence == Confidence::High).count();
    match (high, findings.len()) {
        (0, 0) => Verdict::Forward,
        (0, low) if can_hold => Verdict::Hold(low),
        (0, low) => Verdict::Refuse(Refusal::NoOperator(low)),
        (high, _) => Verdict::Refuse(Refusal::Secrets(high)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(confidence: Confidence) -> GitFinding {
        GitFinding {
            rule_id: "r".into(),
            file: "f".into(),
            line: 1,
            commit: "c".into(),
            secret_redacted: "abcd…".into(),
            confidence,
        }
    }

    #[test]
    fn every_combination() {
        let (high, low) = (finding(Confidence::High), finding(Confidence::Low));
        let policy = vec!["refs/heads/main: delete is not allowed (allow_delete is off)".to_string()];
        for can_hold in [false, true] {
            assert_eq!(verdict(&[], &[], can_hold), Verdict::Forward);
            assert_eq!(verdict(std::slice::from_ref(&high), &[], can_hold), Verdict::Refuse(Refusal::Secrets(1)));
            assert_eq!(
                verdict(&[low.clone(), high.clone(), high.clone()], &[], can_hold),
                Verdict::Refuse(Refusal::Secrets(2)),
                "a sure finding refuses without asking, whatever else was found"
            );
            for findings in [vec![], vec![low.clone()], vec![high.clone()]] {
                assert_eq!(
                    verdict(&findings, &policy, can_hold),
                    Verdict::Refuse(Refusal::Policy(policy.clone())),
                    "policy refuses first"
                );
            }
        }
        assert_eq!(verdict(&[low.clone(), low.clone()], &[], true), Verdict::Hold(2));
        assert_eq!(verdict(std::slice::from_ref(&low), &[], false), Verdict::Refuse(Refusal::NoOperator(1)));
    }

    #[test]
    fn refusals_say_nothing_was_sent() {
        for r in [Refusal::Policy(vec![]), Refusal::Secrets(3), Refusal::NoOperator(1)] {
            assert!(r.to_string().ends_with("nothing was sent upstream"), "{r}");
        }
        assert_eq!(Refusal::Secrets(3).to_string(), "push rejected: 3 secret finding(s); nothing was sent upstream");
    }
}
