//! Loop and operator metrics, the weekly board (`cordon report`) and the SOC→CTI digest.
//!
//! Owns: every metric definition (what counts, over which window), the board and digest
//! documents (JSON and Markdown), and setting the `cordon_loop_*` gauges; `catalog` the rule
//! catalog (`[[rules]]` in playbooks: which rule an intel finding motivated and when the
//! finding was made), `input` the lean rows the report reads of the store.
//! Pure: fed by typed reads of the store ([`Input::read`]), so the same store always gives the
//! same numbers (replayable). Windows are half-open, `[since, until)`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;

use crate::action::{ActionState, Tier};
use crate::case::CaseState;

mod catalog;
mod input;

pub use catalog::{Catalog, RuleMeta, check_rules};
pub use input::{ActionRow, AlertRow, CaseRow, Closure, Input, in_background};

/// Repeat false positives count an earlier false positive of the same rule and entity within
/// this many days.
pub const REPEAT_FP_DAYS: i64 = 14;

/// Intel priorities, most urgent first (the board's sections).
pub const PRIORITIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// Intel-tagged alerts of one source (or `all`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagShare {
    pub source: String,
    pub alerts: u64,
    pub tagged: u64,
    /// `tagged / alerts` (none without alerts).
    pub ratio: Option<f64>,
}

/// One intel-driven rule's finding → first detection lead time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadTime {
    pub rule_id: String,
    pub intel_ref: String,
    pub finding_at: DateTime<Utc>,
    pub first_detection: Option<DateTime<Utc>>,
    pub lead_time_secs: Option<i64>,
}

/// One rule's line in the heat map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeatRow {
    pub rule_id: String,
    pub alerts: u64,
    pub cases: u64,
    /// Sum over the rule's cases of the span of human involvement (first to last human action).
    pub human_handling_secs: i64,
    /// Cases of the rule closed in the window with a disposition.
    pub closed: u64,
    pub false_positives: u64,
    pub false_positive_rate: Option<f64>,
    /// False positives with an earlier one of the same rule and entity within 14 days.
    pub repeat_false_positives: u64,
}

/// Approval wait of one tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierWait {
    pub tier: String,
    pub requests: u64,
    pub mean_secs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarterCount {
    /// `2026-Q4`.
    pub quarter: String,
    pub incidents: u64,
}

/// The loop and operator metrics over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopMetrics {
    pub intel_tagged: Vec<TagShare>,
    pub intel_tagged_overall: TagShare,
    pub intel_lead_times: Vec<LeadTime>,
    pub mean_intel_lead_time_secs: Option<f64>,
    pub heat_map: Vec<HeatRow>,
    pub mean_time_to_enriched_case_secs: Option<f64>,
    pub mean_time_to_first_human_action_secs: Option<f64>,
    /// Requests escalated to a human (tier one_approver or two_person) and decided.
    pub escalations_decided: u64,
    pub escalations_accepted: u64,
    pub escalation_acceptance_rate: Option<f64>,
    pub approval_wait: Vec<TierWait>,
    pub actions_finished: u64,
    pub actions_succeeded: u64,
    pub action_success_rate: Option<f64>,
    pub intel_credited_incidents: Vec<QuarterCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenIncident {
    pub case_id: String,
    pub rule_id: String,
    pub title: String,
    pub state: CaseState,
    pub severity: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Learning {
    pub case_id: String,
    pub rule_id: String,
    pub title: String,
    pub at: DateTime<Utc>,
}

/// One intel priority's part of the board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrioritySection {
    pub priority: String,
    pub rules_in_production: Vec<String>,
    pub rules_in_tuning: Vec<String>,
    pub open_incidents: Vec<OpenIncident>,
    pub recent_learnings: Vec<Learning>,
}

/// The weekly board ("active threats board").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub priorities: Vec<PrioritySection>,
    pub metrics: LoopMetrics,
}

fn within(t: DateTime<Utc>, since: DateTime<Utc>, until: DateTime<Utc>) -> bool {
    since <= t && t < until
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn mean(xs: &[i64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<i64>() as f64 / xs.len() as f64)
}

/// When a request that went to a human was decided: the last vote for approved or rejected
/// ones, the deadline for expired ones.
fn decided_at(a: &ActionRow) -> Option<DateTime<Utc>> {
    let (deadline, votes) = a.approval.as_ref()?;
    match a.state {
        ActionState::AwaitingApproval | ActionState::Proposed => None,
        ActionState::Expired => Some(*deadline),
        _ => votes.last().copied(),
    }
}

fn human_tier(a: &ActionRow) -> bool {
    matches!(a.tier, Some(Tier::OneApprover | Tier::TwoPerson))
}

fn quarter(t: DateTime<Utc>) -> String {
    format!("{}-Q{}", t.year(), (t.month0() / 3) + 1)
}

fn heat_row<'a, 'b>(heat: &'b mut BTreeMap<&'a str, HeatRow>, id: &'a str) -> &'b mut HeatRow {
    heat.entry(id).or_insert_with(|| HeatRow {
        rule_id: id.to_string(),
        alerts: 0,
        cases: 0,
        human_handling_secs: 0,
        closed: 0,
        false_positives: 0,
        false_positive_rate: None,
        repeat_false_positives: 0,
    })
}

/// Computes the metrics over `[since, until)`.
pub fn metrics(
    input: &Input,
    catalog: &Catalog,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> LoopMetrics {
    let originals: Vec<&AlertRow> = input.alerts.iter().filter(|a| !a.duplicate).collect();
    let in_window: Vec<&AlertRow> = originals
        .iter()
        .copied()
        .filter(|a| within(a.received_at, since, until))
        .collect();

    // Intel tag share per source and overall.
    let mut per_source: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for a in &in_window {
        let e = per_source.entry(a.source.as_str()).or_default();
        e.0 += 1;
        e.1 += u64::from(catalog.intel_tagged(a));
    }
    let share = |source: &str, (alerts, tagged): (u64, u64)| TagShare {
        source: source.to_string(),
        alerts,
        tagged,
        ratio: ratio(tagged, alerts),
    };
    let overall = per_source
        .values()
        .fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
    let intel_tagged = per_source.iter().map(|(s, v)| share(s, *v)).collect();

    // Finding → first detection, for every intel-driven rule.
    let mut first: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for a in &originals {
        if a.received_at < until {
            let e = first.entry(a.rule_id.as_str()).or_insert(a.received_at);
            *e = (*e).min(a.received_at);
        }
    }
    let intel_lead_times: Vec<LeadTime> = catalog
        .rules
        .values()
        .filter_map(|r| {
            let (intel_ref, finding_at) = (r.intel_ref.clone()?, r.intel_finding_at?);
            let first_detection = first.get(r.id.as_str()).copied();
            Some(LeadTime {
                rule_id: r.id.clone(),
                intel_ref,
                finding_at,
                first_detection,
                lead_time_secs: first_detection.map(|t| (t - finding_at).num_seconds()),
            })
        })
        .collect();
    let leads: Vec<i64> = intel_lead_times
        .iter()
        .filter_map(|l| l.lead_time_secs)
        .collect();

    // Human involvement per case (what happened before `until`).
    let mut human: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for a in &input.actions {
        if let Some((_, votes)) = &a.approval {
            human
                .entry(a.case_id.as_str())
                .or_default()
                .extend(votes.iter().copied().filter(|t| *t < until));
        }
    }
    for c in &input.cases {
        human
            .entry(c.case_id.as_str())
            .or_default()
            .extend(c.human_marks.iter().copied().filter(|t| *t < until));
    }
    let span = |case_id: &str| -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let ts = human.get(case_id)?;
        Some((*ts.iter().min()?, *ts.iter().max()?))
    };

    let cases_in: Vec<&CaseRow> = input
        .cases
        .iter()
        .filter(|c| within(c.created_at, since, until))
        .collect();

    // Heat map.
    let mut heat: BTreeMap<&str, HeatRow> = BTreeMap::new();
    for a in &in_window {
        heat_row(&mut heat, &a.rule_id).alerts += 1;
    }
    for c in &cases_in {
        let r = heat_row(&mut heat, &c.rule_id);
        r.cases += 1;
        if let Some((a, b)) = span(&c.case_id) {
            r.human_handling_secs += (b - a).num_seconds();
        }
    }
    // False-positive closures by rule and entity, in time order.
    let mut fps: BTreeMap<(&str, Option<&str>), Vec<DateTime<Utc>>> = BTreeMap::new();
    for c in &input.cases {
        if let Some(cl) = &c.closure
            && cl.disposition == "false_positive"
        {
            fps.entry((c.rule_id.as_str(), c.primary_entity.as_deref()))
                .or_default()
                .push(cl.at);
        }
    }
    for times in fps.values_mut() {
        times.sort();
    }
    for c in &input.cases {
        let Some(cl) = &c.closure else { continue };
        if !within(cl.at, since, until) {
            continue;
        }
        let id = c.rule_id.as_str();
        let r = heat_row(&mut heat, id);
        r.closed += 1;
        if cl.disposition == "false_positive" {
            r.false_positives += 1;
            // An earlier one within the window: the first at or after `at - window` is before `at`.
            let times = &fps[&(id, c.primary_entity.as_deref())];
            let from = times.partition_point(|t| cl.at - *t > Duration::days(REPEAT_FP_DAYS));
            let repeat = times.get(from).is_some_and(|t| *t < cl.at);
            r.repeat_false_positives += u64::from(repeat);
        }
    }
    let mut heat_map: Vec<HeatRow> = heat
        .into_values()
        .map(|mut r| {
            r.false_positive_rate = ratio(r.false_positives, r.closed);
            r
        })
        .collect();
    // Hottest first: most alerts, then most human time.
    heat_map.sort_by(|a, b| {
        (b.alerts, b.human_handling_secs, &a.rule_id).cmp(&(
            a.alerts,
            a.human_handling_secs,
            &b.rule_id,
        ))
    });

    // Time to enriched case: from the detection time of the case's first alert.
    let alert_time: BTreeMap<&str, DateTime<Utc>> = input
        .alerts
        .iter()
        .map(|a| (a.alert_id.as_str(), a.time))
        .collect();
    let enriched: Vec<i64> = cases_in
        .iter()
        .filter_map(|c| {
            let t = c.enriched_at?;
            let first = alert_time.get(c.first_alert.as_deref()?)?;
            Some((t - *first).num_seconds().max(0))
        })
        .collect();
    let first_human: Vec<i64> = cases_in
        .iter()
        .filter_map(|c| {
            let (a, _) = span(&c.case_id)?;
            Some((a - c.created_at).num_seconds().max(0))
        })
        .collect();

    // Escalations to a human and their approval waits.
    let escalated: Vec<&ActionRow> = input
        .actions
        .iter()
        .filter(|a| human_tier(a) && within(a.created_at, since, until))
        .filter(|a| {
            matches!(
                a.state,
                ActionState::Approved
                    | ActionState::Rejected
                    | ActionState::Expired
                    | ActionState::Executing
                    | ActionState::Succeeded
                    | ActionState::Failed
                    | ActionState::Unknown
                    | ActionState::RolledBack
                    | ActionState::DryRun
            )
        })
        .collect();
    let accepted = escalated
        .iter()
        .filter(|a| !matches!(a.state, ActionState::Rejected | ActionState::Expired))
        .count() as u64;
    let approval_wait = [Tier::OneApprover, Tier::TwoPerson]
        .into_iter()
        .map(|tier| {
            let waits: Vec<i64> = escalated
                .iter()
                .filter(|a| a.tier == Some(tier))
                .filter_map(|a| Some((decided_at(a)? - a.created_at).num_seconds().max(0)))
                .collect();
            TierWait {
                tier: tier.as_str().to_string(),
                requests: waits.len() as u64,
                mean_secs: mean(&waits),
            }
        })
        .collect();

    // Response actions.
    let (mut finished, mut succeeded) = (0, 0);
    for a in input
        .actions
        .iter()
        .filter(|a| within(a.created_at, since, until))
    {
        match a.state {
            ActionState::Succeeded | ActionState::RolledBack => {
                finished += 1;
                succeeded += 1;
            }
            ActionState::Failed | ActionState::Unknown => finished += 1,
            _ => {}
        }
    }

    // Intel-credited true positives by quarter.
    let mut credited: BTreeMap<String, u64> = BTreeMap::new();
    for c in &input.cases {
        if let Some(cl) = &c.closure
            && cl.disposition == "true_positive"
            && cl.intel_credit.is_some()
            && within(cl.at, since, until)
        {
            *credited.entry(quarter(cl.at)).or_default() += 1;
        }
    }

    LoopMetrics {
        intel_tagged,
        intel_tagged_overall: share("all", overall),
        mean_intel_lead_time_secs: mean(&leads),
        intel_lead_times,
        heat_map,
        mean_time_to_enriched_case_secs: mean(&enriched),
        mean_time_to_first_human_action_secs: mean(&first_human),
        escalations_decided: escalated.len() as u64,
        escalations_accepted: accepted,
        escalation_acceptance_rate: ratio(accepted, escalated.len() as u64),
        approval_wait,
        actions_finished: finished,
        actions_succeeded: succeeded,
        action_success_rate: ratio(succeeded, finished),
        intel_credited_incidents: credited
            .into_iter()
            .map(|(quarter, incidents)| QuarterCount { quarter, incidents })
            .collect(),
    }
}

/// Whether a case was still an open incident at `until`: not closed with a disposition
/// before then, and (without one) not closed, suppressed or learned.
fn is_open(c: &CaseRow, until: DateTime<Utc>) -> bool {
    match &c.closure {
        Some(cl) => cl.at >= until,
        None => !matches!(
            c.state,
            CaseState::Closed | CaseState::Suppressed | CaseState::Learned
        ),
    }
}

/// The weekly board over `[since, until)`.
pub fn board(
    input: &Input,
    catalog: &Catalog,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Board {
    let mut priorities = Vec::new();
    for prio in PRIORITIES {
        let rules: Vec<&RuleMeta> = catalog
            .rules
            .values()
            .filter(|r| r.intel_ref.is_some() && r.intel_priority.as_deref() == Some(prio))
            .collect();
        let ids: BTreeSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        let open_incidents = input
            .cases
            .iter()
            .filter(|c| ids.contains(c.rule_id.as_str()))
            .filter(|c| c.created_at < until && is_open(c, until))
            .map(|c| OpenIncident {
                case_id: c.case_id.clone(),
                rule_id: c.rule_id.clone(),
                title: c.title.clone(),
                state: c.state,
                severity: c.severity.as_str().to_string(),
            })
            .collect();
        let recent_learnings = input
            .cases
            .iter()
            .filter(|c| ids.contains(c.rule_id.as_str()))
            .filter_map(|c| {
                let at = *c.learned_at.iter().find(|t| within(**t, since, until))?;
                Some(Learning {
                    case_id: c.case_id.clone(),
                    rule_id: c.rule_id.clone(),
                    title: c.title.clone(),
                    at,
                })
            })
            .collect();
        let by_status = |s: &str| {
            rules
                .iter()
                .filter(|r| r.status == s)
                .map(|r| r.id.clone())
                .collect()
        };
        priorities.push(PrioritySection {
            priority: prio.to_string(),
            rules_in_production: by_status("production"),
            rules_in_tuning: by_status("tuning"),
            open_incidents,
            recent_learnings,
        });
    }
    Board {
        since,
        until,
        priorities,
        metrics: metrics(input, catalog, since, until),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{:.1} %", r * 100.0))
}

fn dur(s: Option<f64>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.abs() >= 86_400.0 => format!("{:.1} d", s / 86_400.0),
        Some(s) if s.abs() >= 3_600.0 => format!("{:.1} h", s / 3_600.0),
        Some(s) if s.abs() >= 60.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.0} s"),
    }
}

/// Table cells and list items hold outside text (titles, rule ids, intel references): no pipe or
/// line break may break the table, and no Markdown in it may link, embed, format or mention
/// (`@` broken) where the report is read or posted (the chat module's Markdown escape).
fn cell(s: &str) -> String {
    crate::chat::view::markdown_text(s)
}

impl Board {
    /// The board as Markdown.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let m = &self.metrics;
        let _ = writeln!(
            o,
            "# Active threats board\n\n{} to {}\n",
            self.since.to_rfc3339(),
            self.until.to_rfc3339()
        );
        for p in &self.priorities {
            let _ = writeln!(o, "## Intel priority: {}\n", p.priority);
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter().map(|s| cell(s)).collect::<Vec<_>>().join(", ")
                }
            };
            let _ = writeln!(o, "- Rules in production: {}", list(&p.rules_in_production));
            let _ = writeln!(o, "- Rules in tuning: {}", list(&p.rules_in_tuning));
            let _ = writeln!(o, "- Open incidents: {}", p.open_incidents.len());
            for i in &p.open_incidents {
                let _ = writeln!(
                    o,
                    "  - {} {} ({}, {}, rule {})",
                    i.case_id,
                    cell(&i.title),
                    i.state,
                    i.severity,
                    cell(&i.rule_id)
                );
            }
            let _ = writeln!(o, "- Recent learnings: {}", p.recent_learnings.len());
            for l in &p.recent_learnings {
                let _ = writeln!(
                    o,
                    "  - {} {} ({})",
                    l.case_id,
                    cell(&l.title),
                    l.at.to_rfc3339()
                );
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(o, "## Metrics\n\n| metric | value |\n|---|---|");
        let ov = &m.intel_tagged_overall;
        let _ = writeln!(
            o,
            "| alerts tagged with their intel source | {} ({} of {}) |",
            pct(ov.ratio),
            ov.tagged,
            ov.alerts
        );
        for s in &m.intel_tagged {
            let _ = writeln!(
                o,
                "| … from {} | {} ({} of {}) |",
                cell(&s.source),
                pct(s.ratio),
                s.tagged,
                s.alerts
            );
        }
        let rows = [
            (
                "mean intel finding → first detection",
                dur(m.mean_intel_lead_time_secs),
            ),
            (
                "mean time to enriched case",
                dur(m.mean_time_to_enriched_case_secs),
            ),
            (
                "mean time to first human action",
                dur(m.mean_time_to_first_human_action_secs),
            ),
            (
                "escalation acceptance rate",
                format!(
                    "{} ({} of {})",
                    pct(m.escalation_acceptance_rate),
                    m.escalations_accepted,
                    m.escalations_decided
                ),
            ),
            (
                "response action success rate",
                format!(
                    "{} ({} of {})",
                    pct(m.action_success_rate),
                    m.actions_succeeded,
                    m.actions_finished
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        for w in &m.approval_wait {
            let _ = writeln!(
                o,
                "| approval wait, {} | {} ({} requests) |",
                w.tier,
                dur(w.mean_secs),
                w.requests
            );
        }
        for q in &m.intel_credited_incidents {
            let _ = writeln!(
                o,
                "| intel-credited incidents, {} | {} |",
                q.quarter, q.incidents
            );
        }
        let _ = writeln!(
            o,
            "\n## Rule heat map\n\n| rule | alerts | cases | human time | closed | FP rate | repeat FPs (14 d) |\n|---|---|---|---|---|---|---|"
        );
        for r in &m.heat_map {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&r.rule_id),
                r.alerts,
                r.cases,
                dur(Some(r.human_handling_secs as f64)),
                r.closed,
                pct(r.false_positive_rate),
                r.repeat_false_positives
            );
        }
        let _ = writeln!(
            o,
            "\n## Intel finding → first detection\n\n| rule | intel | finding | first detection | lead time |\n|---|---|---|---|---|"
        );
        for l in &m.intel_lead_times {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                cell(&l.rule_id),
                cell(&l.intel_ref),
                l.finding_at.to_rfc3339(),
                l.first_detection
                    .map_or("not yet".into(), |t| t.to_rfc3339()),
                dur(l.lead_time_secs.map(|s| s as f64))
            );
        }
        o
    }
}

/// One alert of an intel-driven rule and what the SOC made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestRow {
    pub alert_id: String,
    pub received_at: DateTime<Utc>,
    pub rule_id: String,
    pub intel_ref: Option<String>,
    pub case_id: String,
    pub case_state: Option<CaseState>,
    pub disposition: Option<String>,
}

/// The SOC→CTI digest of one shift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub alerts: Vec<DigestRow>,
}

/// Every alert of an intel-driven rule received in `[since, until)`, with its case's state and
/// disposition (closed benign ones included).
pub fn digest(
    input: &Input,
    catalog: &Catalog,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Digest {
    let cases: BTreeMap<&str, &CaseRow> = input
        .cases
        .iter()
        .map(|c| (c.case_id.as_str(), c))
        .collect();
    let alerts = input
        .alerts
        .iter()
        .filter(|a| !a.duplicate && within(a.received_at, since, until))
        .filter(|a| catalog.intel_tagged(a))
        .map(|a| {
            let c = cases.get(a.case_id.as_str());
            DigestRow {
                alert_id: a.alert_id.clone(),
                received_at: a.received_at,
                rule_id: a.rule_id.clone(),
                intel_ref: catalog
                    .intel_ref(&a.rule_id)
                    .map(str::to_string)
                    .or_else(|| a.intel_source.clone()),
                case_id: a.case_id.clone(),
                case_state: c.map(|c| c.state),
                disposition: c.and_then(|c| c.closure.as_ref().map(|cl| cl.disposition.clone())),
            }
        })
        .collect();
    Digest {
        since,
        until,
        alerts,
    }
}

impl Digest {
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut o = format!(
            "# SOC → CTI digest\n\n{} to {}: {} alert(s) from intel-driven rules\n\n| alert | received | rule | intel | case | state | disposition |\n|---|---|---|---|---|---|---|\n",
            self.since.to_rfc3339(),
            self.until.to_rfc3339(),
            self.alerts.len()
        );
        for a in &self.alerts {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                a.alert_id,
                a.received_at.to_rfc3339(),
                cell(&a.rule_id),
                cell(a.intel_ref.as_deref().unwrap_or("")),
                a.case_id,
                a.case_state.map_or("", |s| s.as_str()),
                a.disposition.as_deref().unwrap_or("open")
            );
        }
        o
    }
}

/// Sets the `cordon_loop_*` gauges from metrics over the whole store up to `now`.
pub fn publish(m: &LoopMetrics, metrics: &crate::metrics::Metrics, now: DateTime<Utc>) {
    let l = &metrics.loop_metrics;
    let set = |g: &prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
               v: Option<f64>| {
        g.set(v.unwrap_or(f64::NAN));
    };
    for s in m.intel_tagged.iter().chain([&m.intel_tagged_overall]) {
        set(
            &l.intel_tagged_ratio
                .get_or_create(&crate::metrics::SourceLabels {
                    source: s.source.clone(),
                }),
            s.ratio,
        );
    }
    set(&l.intel_lead_time_seconds, m.mean_intel_lead_time_secs);
    set(
        &l.time_to_enriched_case_seconds,
        m.mean_time_to_enriched_case_secs,
    );
    set(
        &l.time_to_first_human_action_seconds,
        m.mean_time_to_first_human_action_secs,
    );
    set(&l.escalation_acceptance_ratio, m.escalation_acceptance_rate);
    set(&l.action_success_ratio, m.action_success_rate);
    for w in &m.approval_wait {
        set(
            &l.approval_wait_seconds
                .get_or_create(&crate::metrics::TierLabels {
                    tier: w.tier.clone(),
                }),
            w.mean_secs,
        );
    }
    let (closed, fps, repeats) = m.heat_map.iter().fold((0, 0, 0), |a, r| {
        (
            a.0 + r.closed,
            a.1 + r.false_positives,
            a.2 + r.repeat_false_positives,
        )
    });
    set(&l.false_positive_ratio, ratio(fps, closed));
    l.repeat_false_positives.set(repeats as i64);
    let this_quarter = quarter(now);
    l.intel_credited_incidents_quarter.set(
        m.intel_credited_incidents
            .iter()
            .find(|q| q.quarter == this_quarter)
            .map_or(0, |q| q.incidents) as i64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_metadata_problems() {
        let rules: Vec<RuleMeta> = toml::from_str::<BTreeMap<String, Vec<RuleMeta>>>(
            r#"
            rules = [
              { id = "r1", intel_ref = "CTI-1" },
              { id = "r1", intel_ref = "CTI-2", intel_finding_at = "2026-01-01T00:00:00Z", intel_priority = "urgent", status = "beta" },
              { id = "", intel_priority = "high" },
            ]
            "#,
        )
        .unwrap()
        .remove("rules")
        .unwrap();
        let p: Vec<String> = check_rules(&rules)
            .into_iter()
            .map(|(k, r)| format!("{k}: {r}"))
            .collect();
        let want = [
            "rules[0].intel_finding_at: intel_ref and intel_finding_at go together",
            "rules[1].id: duplicate rule id \"r1\"",
            "rules[1].intel_priority: \"urgent\" is not one of",
            "rules[1].status: \"beta\" is not `production` or `tuning`",
            "rules[2].id: must not be empty",
            "rules[2].intel_priority: needs an intel_ref",
        ];
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w:?} not in {p:#?}");
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            cell("@all [x](https://e.example)"),
            "@\u{200B}all \\[x\\]\\(https://e.example\\)"
        );
        assert_eq!(quarter("2026-12-31T23:59:59Z".parse().unwrap()), "2026-Q4");
        assert_eq!(quarter("2027-01-01T00:00:00Z".parse().unwrap()), "2027-Q1");
    }
}
