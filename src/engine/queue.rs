//! The queue of open cases: an index the console pages through without reading every case.
//!
//! Owns: the `q/` index (one entry per open case, keyed by case id so it pages in creation
//! order, holding the summary a queue row shows) and [`put_case`], the one way the engine writes
//! a case, so the index can never disagree with the case it summarises. A store written before
//! the index existed gets it built once at start ([`Engine::build_queue_index`], with
//! [`index_once`], which also builds the index of standing blocks).

use super::*;

/// What a queue row shows of an open case, kept beside the case so a page of the queue is one
/// range read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub case_id: String,
    pub state: CaseState,
    pub severity: crate::alert::Severity,
    pub title: String,
    pub rule_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_entity: Option<String>,
    pub alerts: usize,
    pub actions: usize,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The analyst who owns the case (`assign_case`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the case breaches its SLA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_deadline: Option<DateTime<Utc>>,
    /// The SLA breach was escalated.
    #[serde(default)]
    pub sla_escalated: bool,
}

impl QueueEntry {
    /// Whether the case is past its SLA deadline at `now` (or its breach was escalated).
    pub fn sla_breached(&self, now: DateTime<Utc>) -> bool {
        self.sla_escalated || self.sla_deadline.is_some_and(|d| d <= now)
    }

    pub fn of(case: &Case) -> QueueEntry {
        QueueEntry {
            case_id: case.case_id.clone(),
            state: case.state,
            severity: case.severity,
            title: case.title.clone(),
            rule_id: case.rule_id.clone(),
            primary_entity: case.primary_entity.clone(),
            alerts: case.alert_ids.len(),
            actions: case.action_ids.len(),
            created_at: case.created_at,
            updated_at: case.updated_at,
            owner: case.owner.clone(),
            sla_deadline: case.sla_deadline,
            sla_escalated: case.sla_escalated,
        }
    }
}

/// Whether a case in `state` may be in the queue (a case with a closure on record never is:
/// a closed case keeps its closure through `recovered` and `learned`).
pub fn is_open(state: CaseState) -> bool {
    !matches!(
        state,
        CaseState::Closed | CaseState::Suppressed | CaseState::Learned
    )
}

/// Writes a case and its queue entry (or removes the entry once the case is no longer open).
pub(super) fn put_case(txn: &mut Txn, case: &Case) -> Result<(), StoreError> {
    txn.put_json(keys::case(&case.case_id), case)?;
    index(txn, case)
}

fn index(txn: &mut Txn, case: &Case) -> Result<(), StoreError> {
    if is_open(case.state) && case.closure.is_none() {
        txn.put_json(keys::queue(&case.case_id), &QueueEntry::of(case))
    } else {
        txn.delete(keys::queue(&case.case_id));
        Ok(())
    }
}

impl Engine {
    /// Builds the queue index of a store written before it existed: once, before the first
    /// event, a page of cases at a time (one commit; the index holds no audit record, it is
    /// derived from the cases).
    pub(super) async fn build_queue_index(&self) -> Result<(), StoreError> {
        index_once(
            &self.parts.store,
            keys::QUEUE_BUILT,
            keys::CASE_PREFIX,
            |txn, case: &Case| index(txn, case),
        )
        .await
    }
}

/// Builds an index derived from the records under `prefix` for a store written before the
/// index existed: unless `marker` is set, `each` sees every record, a page at a time, and its
/// writes commit together with `marker` (one commit, no audit record: the index is derived).
pub(super) async fn index_once<T: serde::de::DeserializeOwned>(
    store: &Store,
    marker: &[u8],
    prefix: &[u8],
    mut each: impl FnMut(&mut Txn, &T) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if store.get(marker)?.is_some() {
        return Ok(());
    }
    let mut txn = store.begin();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_json::<T>(prefix, after.as_deref(), 1024)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (_, record) in &page {
            each(&mut txn, record)?;
        }
    }
    txn.put(marker.to_vec(), vec![]);
    store.commit(txn).await.map(|_| ())
}
