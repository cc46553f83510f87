//! The plan: what a run does next, given what the probe showed. Pure.
//!
//! Owns: the rule table of the attempt loop. Already done = success without a write; a matching
//! operation pending = wait for it; another operation in flight, a vendor-reported failure or an
//! answer that matches no known state = refuse and escalate; after a write whose outcome is
//! unknown, only a probe showing "no effect" (or a vendor that deduplicates, `resend_safe`)
//! allows another write, and without either the action stays `unknown`; after a write the vendor
//! accepted, "not done" means reversed or dropped at the vendor: fail, never resend; attempts
//! are bounded.

use crate::connector::client::ProbeState;

/// What the attempt loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The target is in the desired state: succeed with this outcome.
    Succeed(&'static str),
    /// A matching operation is in flight at the vendor: wait for it to complete.
    Wait,
    /// Refuse to act and escalate: (outcome, reason).
    Refuse(&'static str, &'static str),
    /// End `failed` and escalate, whatever the earlier write's uncertainty: (outcome, reason).
    Fail(&'static str, &'static str),
    /// An earlier write may have taken effect and nothing can tell: stay `unknown`.
    StayUnknown,
    /// Send the write. `reconciled` says why an earlier uncertain write may be repeated.
    Write { reconciled: Option<&'static str> },
    /// The attempt budget is spent (after recording `reconciled`, if any).
    GiveUp { reconciled: Option<&'static str> },
}

/// What the run knows before it decides.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The probe's reading; `None` when the action has no probe.
    pub state: Option<ProbeState>,
    /// A write may already have reached the vendor.
    pub uncertain: bool,
    /// The vendor accepted an earlier write for this key.
    pub accepted: bool,
    /// Writes sent so far (on record).
    pub writes_sent: u32,
    /// The vendor deduplicates this write, so repeating it is harmless.
    pub resend_safe: bool,
    /// Write attempts on record for this idempotency key (across restarts and reconcile
    /// passes), and the connector's limit.
    pub attempts: u32,
    pub max_attempts: u32,
}

pub fn plan(k: Known) -> Plan {
    match k.state {
        Some(ProbeState::Done) => {
            return Plan::Succeed(if k.writes_sent > 0 {
                "done; confirmed by probe"
            } else {
                "already in the desired state; nothing was sent"
            });
        }
        Some(ProbeState::Pending) => return Plan::Wait,
        Some(ProbeState::Busy) => {
            return Plan::Refuse(
                "target busy",
                "another operation on the target is in flight; refusing to act",
            );
        }
        Some(ProbeState::Failed) => {
            return Plan::Refuse(
                "vendor reports failure",
                "the vendor reports the operation failed",
            );
        }
        Some(ProbeState::Ambiguous) => {
            return Plan::Refuse(
                "ambiguous state",
                "the probe's answer matches no known state; refusing to act",
            );
        }
        // The vendor took the write and the target reads as if it never had: the effect was
        // reversed (a person released the host at the vendor's console) or dropped. Sending it
        // again would override that person; it is not sent again.
        Some(ProbeState::NotDone) if k.accepted => {
            return Plan::Fail(
                "reversed at the vendor",
                "the vendor accepted the write, but the target now reads not done: it was reversed or dropped at the vendor; it is not sent again",
            );
        }
        Some(ProbeState::NotDone) | None => {}
    }
    let reconciled = if k.uncertain {
        match (k.state.is_some(), k.resend_safe) {
            (true, _) => Some("the probe shows the earlier request had no effect"),
            (false, true) => Some("the vendor deduplicates this write; it is safe to repeat"),
            (false, false) => return Plan::StayUnknown,
        }
    } else {
        None
    };
    if k.attempts >= k.max_attempts {
        Plan::GiveUp { reconciled }
    } else {
        Plan::Write { reconciled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeState::*;

    fn known(state: Option<ProbeState>, uncertain: bool, resend_safe: bool) -> Known {
        Known {
            state,
            uncertain,
            accepted: false,
            writes_sent: u32::from(uncertain),
            resend_safe,
            attempts: 0,
            max_attempts: 5,
        }
    }

    #[test]
    fn the_rule_table() {
        let no_effect = Some("the probe shows the earlier request had no effect");
        let dedup = Some("the vendor deduplicates this write; it is safe to repeat");
        // (probe state, uncertain, resend_safe) -> plan
        let table: &[(Option<ProbeState>, bool, bool, Plan)] = &[
            (
                Some(Done),
                false,
                false,
                Plan::Succeed("already in the desired state; nothing was sent"),
            ),
            (
                Some(Done),
                true,
                false,
                Plan::Succeed("done; confirmed by probe"),
            ),
            (Some(Pending), false, false, Plan::Wait),
            (Some(Pending), true, true, Plan::Wait),
            (
                Some(Busy),
                false,
                true,
                Plan::Refuse(
                    "target busy",
                    "another operation on the target is in flight; refusing to act",
                ),
            ),
            (
                Some(Failed),
                true,
                false,
                Plan::Refuse(
                    "vendor reports failure",
                    "the vendor reports the operation failed",
                ),
            ),
            (
                Some(Ambiguous),
                false,
                false,
                Plan::Refuse(
                    "ambiguous state",
                    "the probe's answer matches no known state; refusing to act",
                ),
            ),
            (
                Some(NotDone),
                false,
                false,
                Plan::Write { reconciled: None },
            ),
            (
                Some(NotDone),
                true,
                false,
                Plan::Write {
                    reconciled: no_effect,
                },
            ),
            (None, false, false, Plan::Write { reconciled: None }),
            (None, true, true, Plan::Write { reconciled: dedup }),
            // Never a blind resend: unknown outcome, nothing to probe, not deduplicated.
            (None, true, false, Plan::StayUnknown),
        ];
        for (state, uncertain, resend_safe, want) in table {
            assert_eq!(
                plan(known(*state, *uncertain, *resend_safe)),
                *want,
                "{state:?} uncertain={uncertain} resend_safe={resend_safe}"
            );
        }
    }

    /// After the vendor accepted a write: done succeeds, pending waits, "not done" fails
    /// (reversed or dropped at the vendor) instead of writing again, uncertain or not.
    #[test]
    fn an_accepted_write_is_never_sent_again() {
        for uncertain in [false, true] {
            let mut k = known(Some(NotDone), uncertain, true);
            k.accepted = true;
            k.writes_sent = 1;
            assert!(
                matches!(plan(k), Plan::Fail("reversed at the vendor", _)),
                "{:?}",
                plan(k)
            );
            k.state = Some(Pending);
            assert_eq!(plan(k), Plan::Wait);
            k.state = Some(Done);
            assert_eq!(plan(k), Plan::Succeed("done; confirmed by probe"));
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let mut k = known(Some(NotDone), true, false);
        k.attempts = 5;
        assert_eq!(
            plan(k),
            Plan::GiveUp {
                reconciled: Some("the probe shows the earlier request had no effect")
            }
        );
        k.attempts = 4;
        assert!(matches!(plan(k), Plan::Write { .. }));
        // A done target succeeds whatever the budget.
        k.state = Some(Done);
        k.attempts = 99;
        assert!(matches!(plan(k), Plan::Succeed(_)));
    }
}
