//! What each console page shows, built from the engine's typed reads of committed state.
//!
//! Owns: the view models (queue rows, the case page, the approvals inbox, the audit chain's
//! state) and the query filters the pages take. Nothing here writes; whether the viewer may
//! vote is asked of `policy` with the same request the engine's vote path builds.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::action::{ActionRequest, ActionState, Tier};
use crate::alert::{Entity, Severity};
use crate::case::{Case, CaseState};
use crate::engine::StoredAlert;
use crate::engine::queue::QueueEntry;
use crate::engine::read;
use crate::enrich::Fact;
use crate::policy::{self, PolicyEngine};
use crate::store::{Store, StoreError};

/// How a vote from the console reaches the engine and Cedar (`context.channel`).
pub const CHANNEL: &str = "web";

/// Queue rows per page.
pub const PAGE_SIZE: usize = 50;

/// Most index entries one queue page reads while filtering (so a narrow filter costs a bounded
/// read; the page then offers "next" from where it stopped).
pub const SCAN_MAX: usize = 5_000;

/// The signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
    /// How they signed in: `token`, `oidc` or `oidc_mfa` (`context.identity` of their votes).
    pub identity: String,
}

/// The queue's filters, from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// At least this severe.
    pub severity: Option<Severity>,
    pub state: Option<CaseState>,
    /// Only cases with an action awaiting approval, failed or unknown.
    pub blocked: bool,
    /// Only cases owned by this user; `-` for cases nobody owns.
    pub owner: Option<String>,
    /// Only cases past their SLA deadline.
    pub breached: bool,
    /// Continue after this case id.
    pub after: Option<String>,
}

impl QueueFilter {
    /// Parses `severity`, `state`, `blocked`, `owner`, `breached` and `after`; anything else, or a value that is
    /// not one of the known ones, is refused with the reason.
    pub fn parse(pairs: &[(String, String)]) -> Result<QueueFilter, String> {
        let mut f = QueueFilter::default();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "severity" => {
                    f.severity =
                        Some(Severity::parse(v).ok_or_else(|| "unknown severity".to_string())?)
                }
                "state" => {
                    f.state =
                        Some(CaseState::parse(v).ok_or_else(|| "unknown case state".to_string())?)
                }
                "blocked" => f.blocked = v == "1" || v == "on" || v == "true",
                "breached" => f.breached = v == "1" || v == "on" || v == "true",
                "owner" => {
                    if v.chars().count() > 128 || v.chars().any(|c| c.is_control()) {
                        return Err("owner must be a user id".into());
                    }
                    f.owner = Some(v.clone())
                }
                "after" => {
                    if v.len() != 26 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err("after must be a case id".into());
                    }
                    f.after = Some(v.clone())
                }
                _ => return Err("unknown query parameter".into()),
            }
        }
        Ok(f)
    }

    /// The query string of these filters (without `after`), for links to further pages.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.severity {
            parts.push(format!("severity={}", s.as_str()));
        }
        if let Some(s) = self.state {
            parts.push(format!("state={}", s.as_str()));
        }
        if self.blocked {
            parts.push("blocked=1".into());
        }
        if self.breached {
            parts.push("breached=1".into());
        }
        if let Some(o) = &self.owner {
            let enc: String = url::form_urlencoded::byte_serialize(o.as_bytes()).collect();
            parts.push(format!("owner={enc}"));
        }
        parts.join("&")
    }
}

/// Age of the newest enrichment fact of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub newest: DateTime<Utc>,
    pub age_secs: i64,
    pub stale: bool,
}

/// Actions held up: awaiting approval, failed, or left unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocked {
    pub awaiting: usize,
    pub failed: usize,
    pub unknown: usize,
}

impl Blocked {
    pub fn any(&self) -> bool {
        self.awaiting + self.failed + self.unknown > 0
    }
    fn of(actions: &[ActionRequest]) -> Blocked {
        let mut b = Blocked::default();
        for a in actions {
            match a.state {
                ActionState::AwaitingApproval => b.awaiting += 1,
                ActionState::Failed => b.failed += 1,
                ActionState::Unknown => b.unknown += 1,
                _ => {}
            }
        }
        b
    }
}

#[derive(Debug, Clone)]
pub struct QueueRow {
    pub entry: QueueEntry,
    pub confidence: u8,
    pub freshness: Option<Freshness>,
    /// Hosts, users and cloud resources with neither an asset nor an identity fact.
    pub missing_context: Vec<String>,
    pub blocked: Blocked,
}

#[derive(Debug, Clone)]
pub struct QueuePage {
    pub rows: Vec<QueueRow>,
    /// The case id the next page starts after, if there is more.
    pub next: Option<String>,
    pub open_total: i64,
    pub filter: QueueFilter,
    /// When the page was read (SLA breach is judged against it).
    pub now: DateTime<Utc>,
}

/// The newest alerts of a case a queue row looks at (confidence, freshness, context).
const ROW_ALERTS: usize = 20;

fn alerts_of(store: &Store, case: &Case, newest: usize) -> Result<Vec<StoredAlert>, StoreError> {
    let mut out = Vec::new();
    for id in case.alert_ids.iter().rev().take(newest) {
        if let Some(a) = read::alert(store, id)? {
            out.push(a);
        }
    }
    out.reverse();
    Ok(out)
}

fn facts(alerts: &[StoredAlert]) -> Vec<&Fact> {
    alerts
        .iter()
        .filter_map(|a| a.enrichment.as_ref())
        .flat_map(|r| r.facts.iter())
        .collect()
}

fn freshness(facts: &[&Fact], now: DateTime<Utc>, stale_after_secs: u64) -> Option<Freshness> {
    let newest = facts.iter().map(|f| f.loaded_at).max()?;
    let age_secs = (now - newest).num_seconds().max(0);
    Some(Freshness {
        newest,
        age_secs,
        stale: age_secs as u64 > stale_after_secs || facts.iter().any(|f| f.stale),
    })
}

/// Hosts, users and cloud resources with neither an asset nor an identity fact (indicators such
/// as IPs and hashes have no inventory to be missing from).
fn missing_context(entities: &[Entity], facts: &[&Fact]) -> Vec<String> {
    use crate::alert::EntityKind;
    entities
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EntityKind::Host | EntityKind::User | EntityKind::CloudResource
            )
        })
        .filter(|e| {
            !facts.iter().any(|f| {
                &f.entity == *e
                    && (f.source.starts_with("assets") || f.source.starts_with("identities"))
            })
        })
        .map(|e| e.key())
        .collect()
}

/// One page of the queue of open cases.
pub fn queue(
    store: &Store,
    filter: &QueueFilter,
    now: DateTime<Utc>,
    stale_after_secs: u64,
) -> Result<QueuePage, StoreError> {
    let mut failed: Option<StoreError> = None;
    let mut rows = Vec::new();
    let (entries, next) = read::queue(store, filter.after.as_deref(), PAGE_SIZE, SCAN_MAX, |e| {
        filter.severity.is_none_or(|s| e.severity >= s)
            && filter.state.is_none_or(|s| e.state == s)
            && filter.owner.as_deref().is_none_or(|o| match &e.owner {
                Some(x) => x == o,
                None => o == "-",
            })
            && (!filter.breached || e.sla_breached(now))
    })?;
    for entry in entries {
        let row = (|| -> Result<Option<QueueRow>, StoreError> {
            let Some(case) = read::case(store, &entry.case_id)? else {
                return Ok(None);
            };
            let actions = read::actions_of(store, &case)?;
            let blocked = Blocked::of(&actions);
            if filter.blocked && !blocked.any() {
                return Ok(None);
            }
            let alerts = alerts_of(store, &case, ROW_ALERTS)?;
            let fs = facts(&alerts);
            Ok(Some(QueueRow {
                confidence: alerts
                    .iter()
                    .map(|a| a.alert.fields.confidence)
                    .max()
                    .unwrap_or(0),
                freshness: freshness(&fs, now, stale_after_secs),
                missing_context: missing_context(&case.entities, &fs),
                blocked,
                entry,
            }))
        })();
        match row {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(QueuePage {
        rows,
        next,
        open_total: read::open_cases(store)?,
        filter: filter.clone(),
        now,
    })
}

/// An alert of the case with its raw payload as received (from its `alert_received` record).
#[derive(Debug, Clone)]
pub struct AlertView {
    pub stored: StoredAlert,
    pub raw: Option<String>,
}

/// What an entity is known as, with each fact's source and time.
#[derive(Debug, Clone)]
pub struct EntityView {
    pub entity: Entity,
    pub facts: Vec<Fact>,
}

/// Whether the viewer may vote on a request, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MayVote {
    Yes,
    No(String),
    /// Not awaiting approval.
    NotPending,
}

#[derive(Debug, Clone)]
pub struct ActionView {
    pub action: ActionRequest,
    /// The request hash a vote binds to: the decided one, else the current one.
    pub request_hash: String,
    pub approvals: usize,
    pub needed: u8,
    pub may_vote: MayVote,
}

/// One line of the case's timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub action_id: Option<String>,
    /// What happened, in one sentence (`explain`'s telling).
    pub what: String,
}

#[derive(Debug, Clone)]
pub struct CaseView {
    pub case: Case,
    pub alerts: Vec<AlertView>,
    pub entities: Vec<EntityView>,
    pub techniques: BTreeSet<String>,
    pub tactics: BTreeSet<String>,
    pub actions: Vec<ActionView>,
    pub timeline: Vec<TimelineEntry>,
    /// The timeline reached its read bound before the audit log's head.
    pub timeline_cut: bool,
    pub freshness: Option<Freshness>,
    pub missing_context: Vec<String>,
    /// When the page was read (SLA breach is judged against it).
    pub now: DateTime<Utc>,
}

/// Most alerts a case page shows (the newest).
pub const CASE_ALERTS: usize = 50;
/// Most audit records the timeline reads, from the case's first alert on.
pub const TIMELINE_SCAN: usize = 20_000;

/// The case page, or `None` for no such case.
pub fn case(
    store: &Store,
    policy: &PolicyEngine,
    viewer: &Viewer,
    id: &str,
    now: DateTime<Utc>,
    stale_after_secs: u64,
) -> Result<Option<CaseView>, StoreError> {
    let Some(case) = read::case(store, id)? else {
        return Ok(None);
    };
    let stored = alerts_of(store, &case, CASE_ALERTS)?;
    let mut alerts = Vec::new();
    let mut techniques = BTreeSet::new();
    let mut tactics = BTreeSet::new();
    for a in stored {
        techniques.extend(a.alert.fields.techniques.iter().cloned());
        tactics.extend(a.alert.fields.tactics.iter().cloned());
        let raw = match a.received_seq {
            Some(seq) => store
                .audit_records(seq, 1)?
                .into_iter()
                .next()
                .filter(|r| r.body.seq == seq)
                .and_then(|r| {
                    r.body
                        .data
                        .get("raw")
                        .and_then(|v| v.as_str())
                        .map(String::from)
                }),
            None => None,
        };
        alerts.push(AlertView { stored: a, raw });
    }
    let all: Vec<StoredAlert> = alerts.iter().map(|a| a.stored.clone()).collect();
    let fs = facts(&all);
    let entities = case
        .entities
        .iter()
        .map(|e| {
            let mut seen = BTreeSet::new();
            EntityView {
                entity: e.clone(),
                facts: fs
                    .iter()
                    .filter(|f| {
                        &f.entity == e && seen.insert((f.source.clone(), f.data.to_string()))
                    })
                    .map(|f| (*f).clone())
                    .collect(),
            }
        })
        .collect();
    let mut actions: Vec<ActionView> = read::actions_of(store, &case)?
        .into_iter()
        .map(|a| action_view(policy, viewer, a))
        .collect();
    // What waits for a person first, then the rest in proposal order.
    actions.sort_by_key(|v| v.action.state != ActionState::AwaitingApproval);
    let (timeline, timeline_cut) = timeline(store, &case)?;
    Ok(Some(CaseView {
        freshness: freshness(&fs, now, stale_after_secs),
        missing_context: missing_context(&case.entities, &fs),
        case,
        alerts,
        entities,
        techniques,
        tactics,
        actions,
        timeline,
        timeline_cut,
        now,
    }))
}

/// The case's story as `explain` tells it (one sentence per audit record, in chain order), read
/// forward from its first alert's arrival and bounded to [`TIMELINE_SCAN`] records.
fn timeline(store: &Store, case: &Case) -> Result<(Vec<TimelineEntry>, bool), StoreError> {
    let Some((story, cut)) = crate::explain::read_bounded(store, &case.case_id, TIMELINE_SCAN)?
    else {
        return Ok((vec![], false));
    };
    let out = story
        .events
        .into_iter()
        .map(|e| TimelineEntry {
            seq: e.seq,
            at: e.at,
            kind: e.kind,
            action_id: e.action_id,
            what: e.what,
        })
        .collect();
    Ok((out, cut))
}

/// An action with the hash a vote binds to and whether the viewer may vote on it.
pub fn action_view(policy: &PolicyEngine, viewer: &Viewer, a: ActionRequest) -> ActionView {
    let request_hash = a
        .approval
        .as_ref()
        .and_then(|ap| ap.decided_hash.clone())
        .unwrap_or_else(|| a.request_hash(&policy.hash));
    let (approvals, needed) = match &a.approval {
        Some(ap) => (ap.approvals_for(&request_hash).len(), ap.needed),
        None => (0, 0),
    };
    let may_vote = may_vote(policy, viewer, &a, &request_hash);
    ActionView {
        action: a,
        request_hash,
        approvals,
        needed,
        may_vote,
    }
}

fn may_vote(policy: &PolicyEngine, viewer: &Viewer, a: &ActionRequest, hash: &str) -> MayVote {
    if a.state != ActionState::AwaitingApproval {
        return MayVote::NotPending;
    }
    let Some(ap) = &a.approval else {
        return MayVote::NotPending;
    };
    let counted = ap.approvals_for(hash);
    if counted.contains(&viewer.user.as_str()) {
        return MayVote::No("you have already approved this request".into());
    }
    let attr = |k: &str| {
        a.decision_input
            .as_ref()
            .and_then(|i| i.resource_attrs.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    let check = policy.authorize_vote(&policy::VoteRequest {
        user: viewer.user.clone(),
        channel: CHANNEL.into(),
        identity: viewer.identity.clone(),
        approvals: counted.len() as u8,
        approval: policy::ApprovalInfo {
            approval_id: a.action_id.clone(),
            action_kind: a.kind,
            target: a.target.clone(),
            requester: a.requester.clone(),
            case_id: a.case_id.clone(),
            tier: a.tier.unwrap_or(Tier::Denied),
            environment: attr("environment"),
            criticality: attr("criticality"),
        },
    });
    if check.allowed {
        MayVote::Yes
    } else {
        MayVote::No(
            check
                .refusal
                .unwrap_or_else(|| "no policy allows you to vote on this request".into()),
        )
    }
}

/// The approvals inbox: pending requests the viewer may vote on, oldest first.
pub fn inbox(
    store: &Store,
    policy: &PolicyEngine,
    viewer: &Viewer,
    limit: usize,
) -> Result<Vec<ActionView>, StoreError> {
    Ok(read::pending(store, None, limit)?
        .into_iter()
        .map(|a| action_view(policy, viewer, a))
        .filter(|v| v.may_vote == MayVote::Yes)
        .collect())
}

/// The newest signed checkpoint, verified with the daemon's key.
#[derive(Debug, Clone)]
pub struct CheckpointState {
    pub file: String,
    pub checked: Result<crate::checkpoint::Checkpoint, String>,
}

#[derive(Debug, Clone)]
pub struct AuditState {
    pub head_seq: u64,
    pub head_hash: String,
    /// `None` when checkpoints are not configured.
    pub checkpoints: Option<Vec<CheckpointState>>,
}

/// The audit chain's head and the newest checkpoint in `dir` (verified by `key`).
pub fn audit_state(
    store: &Store,
    checkpoints: Option<(&std::path::Path, &crate::checkpoint::PublicKey)>,
) -> AuditState {
    let head = store.head();
    AuditState {
        head_seq: head.seq,
        head_hash: head.hash,
        checkpoints: checkpoints.map(|(dir, key)| match crate::checkpoint::read_dir(dir, key) {
            Ok(files) => files
                .into_iter()
                .next_back()
                .map(|(file, r)| CheckpointState {
                    file,
                    checked: r.map_err(|e| e.to_string()),
                })
                .into_iter()
                .collect(),
            Err(e) => vec![CheckpointState {
                file: dir.display().to_string(),
                checked: Err(e),
            }],
        }),
    }
}

/// Open learning proposals the board lists at most.
pub const BOARD_PROPOSALS: usize = 100;
/// The loop metrics' window on the board.
pub const BOARD_WINDOW_DAYS: i64 = 30;
/// Weeks of the intel-tag percentage chart.
pub const BOARD_WEEKS: i64 = 8;

/// One week's share of intel-tagged alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekShare {
    pub since: DateTime<Utc>,
    pub share: crate::report::TagShare,
}

/// The learning and loop board.
#[derive(Debug, Clone)]
pub struct Board {
    /// Open learning proposals, newest first.
    pub proposals: Vec<crate::learn::Proposal>,
    /// The loop metrics over the last `BOARD_WINDOW_DAYS` days.
    pub metrics: crate::report::LoopMetrics,
    /// The intel-tagged share of alerts per week, oldest first.
    pub weekly_tagged: Vec<WeekShare>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub audit: AuditState,
}

/// The rows the board's loop metrics are computed from (`report::Input`, the whole committed
/// store as rows), shared by every view of the board: only one whole read runs at a time
/// (views that arrive meanwhile wait for it instead of starting their own), and a view with no
/// commit since the last read began reuses its rows (they are current). So many analysts on the
/// board, or one refreshing it, cost at most one read per commit, never one per view at once.
/// Holds the last read's rows (about 2 % of the records' size) until a view after the next
/// commit replaces them.
#[derive(Default)]
pub struct BoardRows {
    /// The store's durable commit count when the last read began, and its rows.
    last: tokio::sync::Mutex<Option<(u64, std::sync::Arc<crate::report::Input>)>>,
    reads: std::sync::atomic::AtomicU64,
}

impl BoardRows {
    /// The rows as of now or later: those of the last read if nothing was committed since it
    /// began (`Store::durable_commits`), else a new read (on a low-priority thread of its own,
    /// as the loop gauges' reads: `report::in_background`).
    pub async fn current(
        &self,
        store: &Store,
    ) -> Result<std::sync::Arc<crate::report::Input>, StoreError> {
        let mut last = self.last.lock().await;
        // Taken before the rows are read: rows read after it have at least every commit it
        // counts (a caller is answered only after its commit is counted here).
        let commits = store.durable_commits();
        if let Some((seen, rows)) = last.as_ref()
            && *seen == commits
        {
            return Ok(rows.clone());
        }
        let s = store.clone();
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = crate::report::in_background(move || crate::report::Input::read(&s)).await?;
        let rows = std::sync::Arc::new(rows);
        *last = Some((commits, rows.clone()));
        Ok(rows)
    }

    /// How many whole reads the board has made.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The board: open proposals, the loop metrics (as `cordon report` computes them, over `input`:
/// see [`BoardRows`]) and the audit chain's state.
pub fn board(
    store: &Store,
    input: &crate::report::Input,
    catalog: &crate::report::Catalog,
    checkpoints: Option<(&std::path::Path, &crate::checkpoint::PublicKey)>,
    now: DateTime<Utc>,
) -> Result<Board, StoreError> {
    use crate::learn::ProposalState;
    let proposals = crate::engine::learn::proposals(
        store,
        None,
        |p| p.state == ProposalState::Open,
        BOARD_PROPOSALS,
    )?;
    let since = now - chrono::Duration::days(BOARD_WINDOW_DAYS);
    let metrics = crate::report::metrics(input, catalog, since, now);
    let weekly_tagged = (0..BOARD_WEEKS)
        .rev()
        .map(|w| {
            let until = now - chrono::Duration::weeks(w);
            let since = until - chrono::Duration::weeks(1);
            WeekShare {
                since,
                share: crate::report::metrics(input, catalog, since, until).intel_tagged_overall,
            }
        })
        .collect();
    Ok(Board {
        proposals,
        metrics,
        weekly_tagged,
        since,
        until: now,
        audit: audit_state(store, checkpoints),
    })
}
