//! Retention: which audit records may leave the store.
//!
//! Owns: the rule that only records of settled cases are archived. A case is settled when it
//! is `closed`, `suppressed` or `learned`, reached that state before the cut-off, and none of
//! its actions is still open, pending or `unknown`. A record about an alert or an action is
//! judged by its case; a record about no case (a policy reload, a checkpoint) only by its time.
//! Reads engine state through typed reads; the store cuts the prefix (`Store::archive_prefix`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::case::CaseState;
use crate::store::{AuditBody, Store};

use super::read;

/// Judges records for `Store::archive_prefix`, caching each case's verdict.
pub struct Settled<'a> {
    store: &'a Store,
    before: DateTime<Utc>,
    cases: HashMap<String, Option<String>>,
}

impl<'a> Settled<'a> {
    pub fn new(store: &'a Store, before: DateTime<Utc>) -> Settled<'a> {
        Settled {
            store,
            before,
            cases: HashMap::new(),
        }
    }

    /// `Some(reason)` when `rec` must stay in the store.
    pub fn hold(&mut self, rec: &AuditBody) -> Option<String> {
        let case_id = match (&rec.case_id, &rec.alert_id, &rec.action_id) {
            (Some(c), _, _) => c.clone(),
            (None, _, Some(a)) => match read::action(self.store, a) {
                Ok(Some(a)) => a.case_id,
                Ok(None) => return Some(format!("its action {a} is not in the store")),
                Err(e) => return Some(format!("cannot read action {a}: {e}")),
            },
            (None, Some(a), None) => match read::alert(self.store, a) {
                Ok(Some(a)) => a.case_id,
                Ok(None) => return Some(format!("its alert {a} is not in the store")),
                Err(e) => return Some(format!("cannot read alert {a}: {e}")),
            },
            (None, None, None) => return None,
        };
        if let Some(v) = self.cases.get(&case_id) {
            return v.clone();
        }
        let v = self.case_hold(&case_id);
        self.cases.insert(case_id, v.clone());
        v
    }

    fn case_hold(&self, id: &str) -> Option<String> {
        let case = match read::case(self.store, id) {
            Ok(Some(c)) => c,
            Ok(None) => return Some(format!("case {id} is not in the store")),
            Err(e) => return Some(format!("cannot read case {id}: {e}")),
        };
        if !settled_state(case.state) {
            return Some(format!("case {id} is {} (not closed)", case.state));
        }
        let since = case
            .history
            .iter()
            .rev()
            .find(|t| t.to == case.state)
            .map_or(case.updated_at, |t| t.at);
        if since >= self.before {
            return Some(format!(
                "case {id} became {} at {since}, not before {}",
                case.state, self.before
            ));
        }
        match read::actions_of(self.store, &case) {
            Ok(actions) => actions
                .iter()
                .find(|a| !a.state.is_terminal())
                .map(|a| format!("case {id} has action {} still {}", a.action_id, a.state)),
            Err(e) => Some(format!("cannot read the actions of case {id}: {e}")),
        }
    }
}

/// The case states whose records may be archived.
pub fn settled_state(s: CaseState) -> bool {
    matches!(
        s,
        CaseState::Closed | CaseState::Suppressed | CaseState::Learned
    )
}
