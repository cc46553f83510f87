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

/// Every stored alert, case (as stored JSON, so fields the report reads beyond [`Case`] stay
/// visible) and action request: what `crate::report` is computed from.
#[allow(clippy::type_complexity)]
pub fn report_rows(
    store: &Store,
) -> Result<(Vec<StoredAlert>, Vec<serde_json::Value>, Vec<ActionRequest>), StoreError> {
    let alerts = store
        .scan_json::<StoredAlert>(keys::ALERT_PREFIX, None, usize::MAX)?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let cases = store
        .scan_json::<serde_json::Value>(keys::CASE_PREFIX, None, usize::MAX)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let actions = store
        .scan_json::<ActionRequest>(keys::ACTION_PREFIX, None, usize::MAX)?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    Ok((alerts, cases, actions))
}
