//! What the report reads of the store: a lean row per stored alert, case and action request
//! (only the fields a metric, the board or the digest uses), read a page at a time
//! (`engine::read::report_rows`), so a large store is never held whole in memory; and the
//! low-priority thread whole reads run on ([`in_background`]).

use chrono::{DateTime, Utc};

use crate::action::{ActionRequest, ActionState, Tier};
use crate::case::{Case, CaseState};
use crate::engine::StoredAlert;

/// How a case was closed, as far as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Closure {
    /// `true_positive`, `benign_true_positive`, `false_positive`, `duplicate`.
    pub disposition: String,
    pub at: DateTime<Utc>,
    /// The intel reference the closure credits (what helped find a true positive), if any.
    pub intel_credit: Option<String>,
}

/// A stored alert, as far as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub alert_id: String,
    pub received_at: DateTime<Utc>,
    /// When the detection fired (source time).
    pub time: DateTime<Utc>,
    /// The ingest format that delivered it.
    pub source: String,
    pub rule_id: String,
    /// The intelligence source the SIEM tagged the alert with, if any.
    pub intel_source: Option<String>,
    pub case_id: String,
    /// A SIEM re-delivery of an earlier alert.
    pub duplicate: bool,
}

impl AlertRow {
    pub fn new(a: StoredAlert) -> AlertRow {
        AlertRow {
            alert_id: a.alert.alert_id,
            received_at: a.alert.received_at,
            time: a.alert.fields.time,
            source: a.alert.source,
            rule_id: a.alert.fields.rule.id,
            intel_source: a.alert.fields.intel_source,
            case_id: a.case_id,
            duplicate: a.duplicate_of.is_some(),
        }
    }
}

/// A stored case, as far as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    pub case_id: String,
    pub state: CaseState,
    pub title: String,
    pub rule_id: String,
    pub primary_entity: Option<String>,
    pub severity: crate::alert::Severity,
    pub first_alert: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Its first transition to `enriched`.
    pub enriched_at: Option<DateTime<Utc>>,
    /// Every transition to `learned` (a reopened case can learn again).
    pub learned_at: Vec<DateTime<Utc>>,
    pub closure: Option<Closure>,
    /// Human actions recorded on the case itself (assignment is not timed; notes, an
    /// analyst's closure and recovery, and the first human action the engine stamped), besides
    /// votes on its actions.
    pub human_marks: Vec<DateTime<Utc>>,
}

impl CaseRow {
    pub fn new(case: Case) -> CaseRow {
        let closure = case.closure.as_ref().map(|c| Closure {
            disposition: c.disposition.as_str().to_string(),
            at: c.at,
            intel_credit: c.helped.as_ref().and_then(|h| h.intel_ref.clone()),
        });
        let mut human_marks: Vec<DateTime<Utc>> = case.notes.iter().map(|n| n.at).collect();
        human_marks.extend(case.handoffs.first_human_action);
        human_marks.extend(case.closure.as_ref().map(|c| c.at));
        human_marks.extend(
            case.recovery
                .as_ref()
                .filter(|r| r.by.is_some())
                .map(|r| r.at),
        );
        let reached = |state: CaseState| case.history.iter().filter(move |t| t.to == state);
        CaseRow {
            enriched_at: reached(CaseState::Enriched).next().map(|t| t.at),
            learned_at: reached(CaseState::Learned).map(|t| t.at).collect(),
            first_alert: case.alert_ids.into_iter().next(),
            case_id: case.case_id,
            state: case.state,
            title: case.title,
            rule_id: case.rule_id,
            primary_entity: case.primary_entity,
            severity: case.severity,
            created_at: case.created_at,
            closure,
            human_marks,
        }
    }
}

/// A stored action request, as far as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub case_id: String,
    pub state: ActionState,
    pub tier: Option<Tier>,
    pub created_at: DateTime<Utc>,
    /// When it needed approval: its deadline and the times of its votes, in order.
    pub approval: Option<(DateTime<Utc>, Vec<DateTime<Utc>>)>,
}

impl ActionRow {
    pub fn new(a: ActionRequest) -> ActionRow {
        ActionRow {
            approval: a
                .approval
                .map(|ap| (ap.deadline, ap.votes.iter().map(|v| v.at).collect())),
            case_id: a.case_id,
            state: a.state,
            tier: a.tier,
            created_at: a.created_at,
        }
    }
}

/// Everything the report is computed from: a row per stored alert, case and action request,
/// each with only what the report reads (a store of 225,000 alerts read whole took ~4 GiB; as
/// rows, ~2 % of that).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub alerts: Vec<AlertRow>,
    pub cases: Vec<CaseRow>,
    pub actions: Vec<ActionRow>,
}

impl Input {
    /// Reads the committed store, a page at a time.
    pub fn read(store: &crate::store::Store) -> Result<Input, crate::store::StoreError> {
        Ok(Input::read_unless(store, &|| false)?.unwrap_or_default())
    }

    /// Reads the committed store, a page at a time, unless `stop` says so before a page
    /// (`None`: stopped).
    pub fn read_unless(
        store: &crate::store::Store,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Input>, crate::store::StoreError> {
        let mut input = Input::default();
        let whole = crate::engine::read::report_rows(
            store,
            stop,
            |a| input.alerts.push(AlertRow::new(a)),
            |c| input.cases.push(CaseRow::new(c)),
            |a| input.actions.push(ActionRow::new(a)),
        )?;
        Ok(whole.then_some(input))
    }
}

/// Runs `work` on a thread of its own (`cordon-report`) at a low operating system priority
/// ([`crate::nice::BACKGROUND`]) and waits for it: reading the whole store for a report, the
/// loop gauges or the console's board must not take a core from deciding alerts and votes.
pub async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, crate::store::StoreError> {
    use crate::store::StoreError;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cordon-report".into())
        .spawn(move || {
            // A refusal leaves the thread as it was; raising one's own value is always allowed.
            let _ = crate::nice::set_current_thread(crate::nice::BACKGROUND);
            let _ = tx.send(work());
        })
        .map_err(|e| StoreError::Aborted(format!("cannot start a report thread: {e}")))?;
    rx.await
        .map_err(|_| StoreError::Aborted("the report thread ended without an answer".into()))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// Whole reads run on a thread of their own, named, at the background priority (so they
    /// yield the cores to the engine), and their answer or failure comes back.
    #[tokio::test]
    async fn background_work_runs_on_a_low_priority_thread_of_its_own() {
        let (name, nice) = super::in_background(|| {
            let name = std::thread::current().name().map(str::to_string);
            Ok((name, crate::nice::current_thread()))
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("cordon-report"));
        assert!(nice.unwrap() >= crate::nice::BACKGROUND, "nice {nice:?}");
        let failed =
            super::in_background::<()>(|| Err(crate::store::StoreError::Aborted("no".into())))
                .await;
        assert!(failed.is_err());
    }
}
