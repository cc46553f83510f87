//! Key layout of engine state.
//!
//! Owns: every key prefix of engine state in the store. Only the engine writes these keys.

pub fn alert(id: &str) -> Vec<u8> {
    format!("al/{id}").into_bytes()
}
pub fn source_id(source: &str, source_alert_id: &str) -> Vec<u8> {
    format!("as/{source}/{source_alert_id}").into_bytes()
}
pub fn fingerprint(fp: &str) -> Vec<u8> {
    format!("fp/{fp}").into_bytes()
}
pub fn correlation(key: &str) -> Vec<u8> {
    format!("ck/{key}").into_bytes()
}
/// The recent cases that name an entity (`kind:value`), for correlation by shared entities.
pub fn entity_cases(entity: &str) -> Vec<u8> {
    format!("ec/{entity}").into_bytes()
}
pub fn case(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}
pub const CASE_PREFIX: &[u8] = b"c/";
pub fn action(id: &str) -> Vec<u8> {
    format!("x/{id}").into_bytes()
}
pub fn action_index(case_id: &str, idem: &str) -> Vec<u8> {
    format!("xi/{case_id}/{idem}").into_bytes()
}
pub const CASES_OPEN: &[u8] = b"s/cases_open";
/// Open cases in creation order (the console's queue), with a summary of each.
pub fn queue(case_id: &str) -> Vec<u8> {
    format!("q/{case_id}").into_bytes()
}
pub const QUEUE_PREFIX: &[u8] = b"q/";
/// Present once the queue index covers every case (stores written before it get it at start).
pub const QUEUE_BUILT: &[u8] = b"s/queue_index";
/// Set once the blocks that succeeded before the `ib/` index existed have been indexed.
pub const BLOCKS_INDEXED: &[u8] = b"s/block_index";
/// Requests awaiting approval, in creation order.
pub fn pending(action_id: &str) -> Vec<u8> {
    format!("pa/{action_id}").into_bytes()
}
pub const PENDING_PREFIX: &[u8] = b"pa/";
/// Deadlines and escalation points, ordered by time.
pub fn deadline(at: chrono::DateTime<chrono::Utc>, action_id: &str) -> Vec<u8> {
    format!("pd/{:020}/{action_id}", at.timestamp_millis().max(0)).into_bytes()
}
pub const DEADLINE_PREFIX: &[u8] = b"pd/";
pub fn escalation(at: chrono::DateTime<chrono::Utc>, action_id: &str) -> Vec<u8> {
    format!("pe/{:020}/{action_id}", at.timestamp_millis().max(0)).into_bytes()
}
pub const ESCALATION_PREFIX: &[u8] = b"pe/";
/// Actions the executor has to drive: approved, executing, or left unknown.
pub fn runnable(action_id: &str) -> Vec<u8> {
    format!("xq/{action_id}").into_bytes()
}
pub const RUNNABLE_PREFIX: &[u8] = b"xq/";
/// The per-target lease: one action with a write in flight per connector and target.
pub fn lease(connector: &str, target: &crate::action::Target) -> Vec<u8> {
    format!("tl/{connector}/{}:{}", target.kind.as_str(), target.id).into_bytes()
}
/// Actions whose chat messages are behind their state (value: a generation id).
pub fn chat_owed(action_id: &str) -> Vec<u8> {
    format!("co/{action_id}").into_bytes()
}
pub const CHAT_OWED_PREFIX: &[u8] = b"co/";
/// Chat callbacks already seen (value: when the memory may be dropped), by a hash of the
/// platform's unique callback id.
pub fn chat_replay(platform: &str, key: &str) -> Vec<u8> {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    format!("cr/{platform}/{h}").into_bytes()
}
pub const CHAT_REPLAY_PREFIX: &[u8] = b"cr/";
pub const ALERT_PREFIX: &[u8] = b"al/";
pub const ACTION_PREFIX: &[u8] = b"x/";
/// A schedule's durable state (its next fire time).
pub fn schedule(name: &str) -> Vec<u8> {
    format!("sn/{name}").into_bytes()
}
/// What a schedule's fire still has to deliver (a report, a digest), by schedule and fire time.
pub fn schedule_owed(id: &str) -> Vec<u8> {
    format!("sd/{id}").into_bytes()
}
pub const SCHEDULE_OWED_PREFIX: &[u8] = b"sd/";
/// Indicator blocks that expire, ordered by expiry time.
pub fn block_expiry(at: chrono::DateTime<chrono::Utc>, action_id: &str) -> Vec<u8> {
    format!("ie/{:020}/{action_id}", at.timestamp_millis().max(0)).into_bytes()
}
pub const BLOCK_EXPIRY_PREFIX: &[u8] = b"ie/";
/// Indicator blocks that succeeded (sent by cordon or found in place), by connector and target:
/// what an expiring block of the same indicator checks before its unblock is proposed. A
/// target id may hold `/`, so a prefix scan can match a longer id: readers compare the action's
/// own connector and target.
pub fn block_standing(connector: &str, target: &crate::action::Target, action_id: &str) -> Vec<u8> {
    let mut k = block_standing_prefix(connector, target);
    k.extend_from_slice(action_id.as_bytes());
    k
}
pub fn block_standing_prefix(connector: &str, target: &crate::action::Target) -> Vec<u8> {
    format!("ib/{connector}/{}/{}/", target.kind.as_str(), target.id).into_bytes()
}
/// SLA deadlines of open cases, ordered by time (removed when the case is closed, recovered or
/// learned, or once the breach is escalated).
pub fn sla(at: chrono::DateTime<chrono::Utc>, case_id: &str) -> Vec<u8> {
    format!("sl/{:020}/{case_id}", at.timestamp_millis().max(0)).into_bytes()
}
pub const SLA_PREFIX: &[u8] = b"sl/";
/// Escalation messages owed to a chat channel (value: `cases::ChatEscalation`), by id.
pub fn chat_escalation(id: &str) -> Vec<u8> {
    format!("ce/{id}").into_bytes()
}
pub const CHAT_ESCALATION_PREFIX: &[u8] = b"ce/";

/// A learning proposal (`learn::Proposal`) by id.
pub fn proposal(id: &str) -> Vec<u8> {
    format!("lp/{id}").into_bytes()
}
pub const PROPOSAL_PREFIX: &[u8] = b"lp/";

/// The proposals learned from a case (value empty).
pub fn case_proposal(case_id: &str, proposal_id: &str) -> Vec<u8> {
    format!("lq/{case_id}/{proposal_id}").into_bytes()
}
pub fn case_proposals_prefix(case_id: &str) -> Vec<u8> {
    format!("lq/{case_id}/").into_bytes()
}

/// A closed case by the rules its alerts came from (the rule id hex-encoded, since it is the
/// SIEM's and may hold `/`): the history tuning proposals are checked against.
pub fn rule_closure(rule_id: &str, case_id: &str) -> Vec<u8> {
    format!("lr/{}/{case_id}", hex::encode(rule_id)).into_bytes()
}
pub fn rule_closures_prefix(rule_id: &str) -> Vec<u8> {
    format!("lr/{}/", hex::encode(rule_id)).into_bytes()
}
