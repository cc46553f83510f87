//! Read-only queries on committed engine state (for the HTTP and gRPC read APIs).
//!
//! Owns: typed reads of committed engine state; nothing here writes.

use super::*;

pub fn case(store: &Store, id: &str) -> Result<Option<Case>, StoreError> {
    store.get_json(&keys::case(id))
}

pub fn alert(store: &Store, id: &str) -> Result<Option<StoredAlert>, StoreError> {
    store.get_json(&keys::alert(id))
}

pub fn action(store: &Store, id: &str) -> Result<Option<ActionRequest>, StoreError> {
    store.get_json(&keys::action(id))
}

/// Cases in creation order after `after` (a case id), at most `limit`.
pub fn cases(store: &Store, after: Option<&str>, limit: usize) -> Result<Vec<Case>, StoreError> {
    let after = after.map(keys::case);
    Ok(store
        .scan_json::<Case>(keys::CASE_PREFIX, after.as_deref(), limit)?
        .into_iter()
        .map(|(_, c)| c)
        .collect())
}

/// Requests awaiting approval, oldest first, after `after` (an action id), at most `limit`.
pub fn pending(
    store: &Store,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ActionRequest>, StoreError> {
    let after = after.map(keys::pending);
    let mut out = Vec::new();
    for key in store.keys_after(keys::PENDING_PREFIX, after.as_deref(), limit)? {
        let id = String::from_utf8_lossy(&key[keys::PENDING_PREFIX.len()..]).to_string();
        if let Some(a) = action(store, &id)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Ids of the actions whose chat messages are behind.
pub fn chat_owed(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .keys_after(keys::CHAT_OWED_PREFIX, None, usize::MAX)?
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k[keys::CHAT_OWED_PREFIX.len()..]).to_string())
        .collect())
}

/// Ids of the actions the executor has to drive, in key order: up to `limit` after `after`.
pub fn runnable(
    store: &Store,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let after = after.map(keys::runnable);
    Ok(store
        .keys_after(keys::RUNNABLE_PREFIX, after.as_deref(), limit)?
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k[keys::RUNNABLE_PREFIX.len()..]).to_string())
        .collect())
}

pub fn actions_of(store: &Store, case: &Case) -> Result<Vec<ActionRequest>, StoreError> {
    let mut out = Vec::new();
    for id in &case.action_ids {
        if let Some(a) = action(store, id)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Every stored alert, case and action request, one at a time: what `crate::report` is
/// computed from. Read in pages of [`REPORT_PAGE`] records, so at most one page is in memory
/// (the caller keeps what it needs of each) and no read holds the store for the whole scan.
/// `stop` is asked before each page: once it says yes, the scan ends and answers `false`
/// (`true`: every record was read).
pub fn report_rows(
    store: &Store,
    stop: &dyn Fn() -> bool,
    mut alert: impl FnMut(StoredAlert),
    mut case: impl FnMut(Case),
    mut action: impl FnMut(ActionRequest),
) -> Result<bool, StoreError> {
    Ok(each_page(store, keys::ALERT_PREFIX, stop, &mut alert)?
        && each_page(store, keys::CASE_PREFIX, stop, &mut case)?
        && each_page(store, keys::ACTION_PREFIX, stop, &mut action)?)
}

/// Records per page of [`report_rows`].
pub const REPORT_PAGE: usize = 256;

fn each_page<T: serde::de::DeserializeOwned>(
    store: &Store,
    prefix: &[u8],
    stop: &dyn Fn() -> bool,
    f: &mut impl FnMut(T),
) -> Result<bool, StoreError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        if stop() {
            return Ok(false);
        }
        let page = store.scan_json::<T>(prefix, after.as_deref(), REPORT_PAGE)?;
        let full = page.len() == REPORT_PAGE;
        for (k, v) in page {
            f(v);
            after = Some(k);
        }
        if !full {
            return Ok(true);
        }
    }
}

/// Escalation messages owed to chat, oldest first, at most `limit`.
pub fn chat_escalations(store: &Store, limit: usize) -> Result<Vec<ChatEscalation>, StoreError> {
    Ok(store
        .scan_json::<ChatEscalation>(keys::CHAT_ESCALATION_PREFIX, None, limit)?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// Which cases a list wants; `None` = any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseFilter {
    pub state: Option<CaseState>,
    pub owner: Option<String>,
    pub severity: Option<crate::alert::Severity>,
    pub disposition: Option<crate::case::Disposition>,
    /// `true`: not closed; `false`: closed (a closure on record).
    pub open: Option<bool>,
}

impl CaseFilter {
    pub fn matches(&self, c: &Case) -> bool {
        self.state.is_none_or(|s| c.state == s)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| c.owner.as_deref() == Some(o.as_str()))
            && self.severity.is_none_or(|s| c.severity == s)
            && self
                .disposition
                .is_none_or(|d| c.closure.as_ref().is_some_and(|x| x.disposition == d))
            && self.open.is_none_or(|o| o == c.closure.is_none())
    }
}

/// Cases after `after` that pass `filter`, in creation order, at most `limit`; reads at most
/// `max_scan` cases. The second value is where the next page starts (`None` at the end).
pub fn cases_filtered(
    store: &Store,
    filter: &CaseFilter,
    after: Option<&str>,
    limit: usize,
    max_scan: usize,
) -> Result<(Vec<Case>, Option<String>), StoreError> {
    const PAGE: usize = 256;
    let mut out = Vec::new();
    let mut cursor = after.map(str::to_string);
    let mut scanned = 0;
    loop {
        let page = cases(store, cursor.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        for c in page {
            scanned += 1;
            cursor = Some(c.case_id.clone());
            if filter.matches(&c) {
                out.push(c);
                if out.len() >= limit {
                    return Ok((out, cursor));
                }
            }
            if scanned >= max_scan {
                return Ok((out, cursor));
            }
        }
        if !full {
            return Ok((out, None));
        }
    }
}

/// Open cases (the queue's index) in creation order after `after` (a case id): reads at most
/// `scan` entries and keeps at most `limit` of those `keep` accepts, so a page with a narrow
/// filter costs a bounded read. Returns the kept entries and the id to continue after, if the
/// index goes on.
pub fn queue(
    store: &Store,
    after: Option<&str>,
    limit: usize,
    scan: usize,
    mut keep: impl FnMut(&queue::QueueEntry) -> bool,
) -> Result<(Vec<queue::QueueEntry>, Option<String>), StoreError> {
    let mut cursor = after.map(keys::queue);
    let mut out = Vec::new();
    let mut read = 0;
    loop {
        let want = (scan - read).min(256);
        if want == 0 {
            break;
        }
        let page =
            store.scan_json::<queue::QueueEntry>(keys::QUEUE_PREFIX, cursor.as_deref(), want)?;
        let done = page.len() < want;
        for (key, e) in page {
            read += 1;
            cursor = Some(key);
            if keep(&e) {
                out.push(e);
                if out.len() >= limit {
                    let next = store.keys_after(keys::QUEUE_PREFIX, cursor.as_deref(), 1)?;
                    let more = !next.is_empty();
                    return Ok((out, more.then(|| last_id(&cursor)).flatten()));
                }
            }
        }
        if done {
            return Ok((out, None));
        }
    }
    Ok((out, last_id(&cursor)))
}

fn last_id(cursor: &Option<Vec<u8>>) -> Option<String> {
    cursor
        .as_ref()
        .map(|k| String::from_utf8_lossy(&k[keys::QUEUE_PREFIX.len()..]).to_string())
}

/// The number of open cases (kept by the engine with every case that opens or closes).
pub fn open_cases(store: &Store) -> Result<i64, StoreError> {
    Ok(store.get_json::<i64>(keys::CASES_OPEN)?.unwrap_or(0))
}
