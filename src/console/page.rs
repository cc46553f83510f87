//! The console's HTML, compiled into the binary (maud escapes every interpolated value, so
//! alert data always renders as text).
//!
//! Owns: the layout and one function per page. No page carries inline script or style: the
//! Content-Security-Policy (`http::console`) allows only `/ui/assets/`. Every form that changes
//! anything carries the session's CSRF token; everything reads without JavaScript, and
//! `assets/app.js` only refreshes the live parts (`#live`) when the server announces a change.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::view::{ActionView, AuditState, Board, CaseView, Freshness, MayVote, QueuePage, Viewer};
use crate::case::CaseState;

/// Where a vote form sends the browser back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Case,
    Inbox,
}

impl From {
    pub fn as_str(self) -> &'static str {
        match self {
            From::Case => "case",
            From::Inbox => "inbox",
        }
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// The page frame: navigation, the signed-in person and the sign-out form.
pub fn layout(title: &str, viewer: Option<(&Viewer, &str)>, live: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cordon" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body data-live=[live.then_some("1")] {
                header {
                    nav {
                        strong { "cordon" }
                        @if let Some((v, csrf)) = viewer {
                            a href="/ui" { "Queue" }
                            a href="/ui/approvals" { "Approvals" }
                            a href="/ui/learning" { "Learning and loop" }
                            a href="/ui/audit" { "Audit chain" }
                            span.who { (v.user) " (" (v.identity) ")" }
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" id="sign-out" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in page.
pub fn login(csrf: &str, token: bool, oidc: bool, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        false,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            @if oidc {
                p { a.button href="/ui/oidc/start" id="oidc-sign-in" { "Sign in with your identity provider" } }
            }
            @if token {
                form method="post" action="/ui/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="token" { "Approver token" }
                    input type="password" id="token" name="token" autocomplete="off" required;
                    button type="submit" id="token-sign-in" { "Sign in" }
                }
            }
            @if !token && !oidc {
                p { "No sign-in method is configured ([console] token_sign_in or [console.oidc])." }
            }
        },
    )
}

/// A page that only says something (errors, refusals).
pub fn message(title: &str, viewer: Option<(&Viewer, &str)>, text: &str, back: &str) -> Markup {
    layout(
        title,
        viewer,
        false,
        html! {
            h1 { (title) }
            p.error role="alert" id="message" { (text) }
            p { a href=(back) { "Back" } }
        },
    )
}

/// After an OpenID Connect sign-in: the browser arrived from the provider (a cross-site
/// navigation, which carries no `SameSite=Strict` cookie), so it moves on by itself to the
/// queue, where the new session cookie is sent.
pub fn signed_in() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/ui";
                title { "Signed in · cordon" }
            }
            body { p { "Signed in. " a href="/ui" { "Continue to the queue" } } }
        }
    }
}

fn freshness(f: &Option<Freshness>) -> Markup {
    html! {
        @match f {
            Some(f) => span.stale[f.stale] title=(time(f.newest)) {
                (age(f.age_secs)) @if f.stale { " (stale)" }
            },
            None => span.muted { "no enrichment" },
        }
    }
}

fn sla(deadline: Option<DateTime<Utc>>, breached: bool, now: DateTime<Utc>) -> Markup {
    html! {
        @match deadline {
            None => span.muted { "none" },
            Some(d) => span.sla-breach[breached] title=(time(d)) {
                @if breached { "BREACHED " (age((now - d).num_seconds().max(0))) " ago" }
                @else { "due in " (age((d - now).num_seconds().max(0))) }
            },
        }
    }
}

/// The queue of open cases.
pub fn queue(viewer: &Viewer, csrf: &str, page: &QueuePage) -> Markup {
    let f = &page.filter;
    let q = f.query();
    body_page(
        "Queue",
        viewer,
        csrf,
        true,
        html! {
            h1 { "Open cases (" (page.open_total) ")" }
            form.filters method="get" action="/ui" {
                label { "Severity at least "
                    select name="severity" {
                        option value="" { "any" }
                        @for s in ["low", "medium", "high", "critical"] {
                            option value=(s) selected[f.severity.is_some_and(|x| x.as_str() == s)] { (s) }
                        }
                    }
                }
                label { "State "
                    select name="state" {
                        option value="" { "any" }
                        @for s in CaseState::ALL.iter().filter(|s| crate::engine::queue::is_open(**s)) {
                            option value=(s.as_str()) selected[f.state == Some(*s)] { (s.as_str()) }
                        }
                    }
                }
                label { input type="checkbox" name="blocked" value="1" checked[f.blocked]; " blocked actions only" }
                label { "Owner " input type="text" name="owner" size="12" placeholder="user, or -" value=[f.owner.as_deref()]; }
                label { input type="checkbox" name="breached" value="1" checked[f.breached]; " SLA breached only" }
                button type="submit" { "Filter" }
            }
            div id="live" {
                table.queue {
                    thead { tr {
                        th { "Case" } th { "Severity" } th { "State" } th { "Owner" } th { "SLA" } th { "Confidence" }
                        th { "Evidence age" } th { "Missing context" } th { "Blocked actions" }
                        th { "Alerts" } th { "Updated" }
                    } }
                    tbody {
                        @for r in &page.rows {
                            tr.case-row data-case=(r.entry.case_id) {
                                td { a href={ "/ui/cases/" (r.entry.case_id) } { (r.entry.title) } br; small.muted { (r.entry.rule_id) } }
                                td { span class={ "sev sev-" (r.entry.severity.as_str()) } { (r.entry.severity.as_str()) } }
                                td.state { (r.entry.state.as_str()) }
                                td.owner { @match &r.entry.owner { Some(o) => (o), None => span.muted { "unassigned" } } }
                                td.sla { (sla(r.entry.sla_deadline, r.entry.sla_breached(page.now), page.now)) }
                                td { (r.confidence) }
                                td { (freshness(&r.freshness)) }
                                td { @if r.missing_context.is_empty() { "none" } @else { (r.missing_context.join(", ")) } }
                                td {
                                    @if r.blocked.awaiting > 0 { span.blocked { (r.blocked.awaiting) " awaiting approval" } " " }
                                    @if r.blocked.failed > 0 { span.blocked { (r.blocked.failed) " failed" } " " }
                                    @if r.blocked.unknown > 0 { span.blocked { (r.blocked.unknown) " unknown" } }
                                    @if !r.blocked.any() { "none" }
                                }
                                td { (r.entry.alerts) }
                                td { (time(r.entry.updated_at)) }
                            }
                        }
                    }
                }
                @if page.rows.is_empty() { p.muted { "No open case matches." } }
                @if let Some(next) = &page.next {
                    p { a id="next-page" href={ "/ui?" (q) @if !q.is_empty() { "&" } "after=" (next) } { "Next page" } }
                }
            }
        },
    )
}

fn body_page(title: &str, viewer: &Viewer, csrf: &str, live: bool, body: Markup) -> Markup {
    layout(title, Some((viewer, csrf)), live, body)
}

fn vote_forms(v: &ActionView, csrf: &str, from: From) -> Markup {
    html! {
        @match &v.may_vote {
            MayVote::Yes => {
                form.vote method="post" action={ "/ui/actions/" (v.action.action_id) "/vote" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="request_hash" value=(v.request_hash);
                    input type="hidden" name="from" value=(from.as_str());
                    input type="text" name="comment" placeholder="comment (optional)" maxlength="500";
                    button type="submit" name="decision" value="approve" class="approve" { "Approve" }
                    button type="submit" name="decision" value="deny" class="deny" { "Deny" }
                }
            }
            MayVote::No(why) => p.muted.refusal { "You cannot vote on this request: " (why) }
            MayVote::NotPending => {}
        }
    }
}

fn action_row(v: &ActionView, csrf: &str, from: From) -> Markup {
    let a = &v.action;
    html! {
        section.action id={ "action-" (a.action_id) } data-state=(a.state.as_str()) {
            h3 { (a.kind.as_str()) " → " (a.target.kind.as_str()) ":" (a.target.id) }
            dl {
                dt { "State" } dd.action-state { (a.state.as_str()) }
                dt { "Tier" } dd { (a.tier.map(|t| t.as_str()).unwrap_or("undecided")) }
                dt { "Playbook step" } dd { (a.playbook) " / " (a.step) }
                dt { "Connector" } dd { (a.connector) }
                dt { "Policies" } dd { (a.determining_policies.join(", ")) }
                dt { "Reasons" } dd { ul { @for r in &a.reasons { li { (r) } } } }
                @if let Some(p) = &a.proposal {
                    dt { "Proposed by agent" } dd.proposal {
                        (p.agent) " (confidence " (p.confidence) @if p.ai_generated { ", AI-generated" } ")"
                        p.hypothesis { (p.hypothesis) }
                        @if !p.citations.is_empty() { ul.citations { @for c in &p.citations { li { code { (c) } } } } }
                    }
                }
                @if let Some(input) = &a.decision_input {
                    dt { "Blast radius" } dd {
                        @for k in ["environment", "criticality", "owner"] {
                            @if let Some(val) = input.resource_attrs.get(k) {
                                (k) ": " (val.as_str().map(String::from).unwrap_or_else(|| val.to_string())) "; "
                            }
                        }
                    }
                }
                @if let Some(ap) = &a.approval {
                    dt { "Approvals" } dd { (v.approvals) " of " (v.needed) ", deadline " (time(ap.deadline)) }
                    dt { "Request hash" } dd { code.hash { (v.request_hash) } }
                    dt { "Votes" } dd { ul {
                        @for vote in &ap.votes {
                            li { (vote.user) " " (vote.decision) " via " (vote.channel) " (" (vote.identity) ") at " (time(vote.at))
                                 @if !vote.comment.is_empty() { ": " (vote.comment) } }
                        }
                    } }
                }
                @if let Some(ex) = &a.execution {
                    dt { "Execution" } dd {
                        (ex.mode) " via " (ex.connector) ", " (ex.writes_sent) " write(s) sent, " (ex.retries) " retries"
                        @if let Some(o) = &ex.outcome { ", outcome: " (o) }
                        " (vendor exchanges are in the timeline)"
                    }
                }
            }
            (vote_forms(v, csrf, from))
        }
    }
}

/// The case page.
pub fn case(viewer: &Viewer, csrf: &str, v: &CaseView) -> Markup {
    let c = &v.case;
    body_page(
        &c.title,
        viewer,
        csrf,
        true,
        html! {
            div id="live" {
                h1 { (c.title) }
                dl.summary {
                    dt { "Case" } dd { code { (c.case_id) } }
                    dt { "State" } dd id="case-state" { (c.state.as_str()) }
                    dt { "Severity" } dd { (c.severity.as_str()) }
                    dt { "Rule" } dd { (c.rule_id) }
                    dt { "Owner" } dd id="case-owner" { @match &c.owner { Some(o) => (o), None => span.muted { "unassigned" } } }
                    dt { "SLA" } dd id="case-sla" { (sla(c.sla_deadline, c.sla_escalated || c.sla_deadline.is_some_and(|d| d <= v.now), v.now)) }
                    @if let Some(o) = &c.ownership {
                        dt { "Workflow owner" } dd id="case-ownership" {
                            (o.playbook)
                            @if !o.owner_team.is_empty() { " · team " (o.owner_team) }
                            @if !o.escalation_route.is_empty() { " · escalates to " (o.escalation_route) }
                            @if !o.known_limitations.is_empty() { ul { @for l in &o.known_limitations { li { "Known limitation: " (l) } } } }
                        }
                    }
                    dt { "Handoffs" } dd {
                        @if let Some(t) = c.handoffs.first_human_action { "first human action " (time(t)) "; " }
                        @if let Some(t) = c.handoffs.ir_escalation { "escalated " (time(t)) "; " }
                        @if let Some(t) = c.handoffs.closed { "closed " (time(t)) "; " }
                        @if let Some(t) = c.handoffs.recovered { "recovered " (time(t)) }
                    }
                    dt { "Evidence age" } dd { (freshness(&v.freshness)) }
                    dt { "Missing context" } dd { @if v.missing_context.is_empty() { "none" } @else { (v.missing_context.join(", ")) } }
                    dt { "ATT&CK techniques" } dd { @for t in &v.techniques { code { (t) } " " } }
                    dt { "Tactics" } dd { @for t in &v.tactics { (t) " " } }
                }
                @if let Some(cl) = &c.closure {
                    h2 { "Closure" }
                    dl id="closure" {
                        dt { "Disposition" } dd { (cl.disposition.as_str()) }
                        dt { "Reason" } dd { (cl.reason) }
                        dt { "By" } dd { (cl.by) " at " (time(cl.at)) }
                        @if let Some(h) = &cl.helped {
                            @if let Some(r) = &h.intel_ref { dt { "Helped (intel)" } dd { (r) } }
                            @if let Some(r) = &h.rule { dt { "Helped (rule)" } dd { (r) } }
                        }
                        @if let Some(m) = &cl.missed { dt { "Missed" } dd { (m) } }
                        @if let Some(d) = &cl.duplicate_of { dt { "Duplicate of" } dd { a href={ "/ui/cases/" (d) } { (d) } } }
                        @if !cl.cancelled.is_empty() { dt { "Cancelled" } dd { (cl.cancelled.join(", ")) } }
                    }
                }
                @if let Some(r) = &c.recovery {
                    p id="recovery" { "Recovered (" (r.how) ") " @if let Some(b) = &r.by { "by " (b) " " } "at " (time(r.at)) ": " (r.reason) }
                }
                h2 { "Notes" }
                @if c.notes.is_empty() { p.muted { "No notes." } }
                ul.notes id="notes" {
                    @for n in &c.notes { li.note { (n.by) " at " (time(n.at)) ": " span.note-text { (n.text) } } }
                }
                h2 { "Actions" }
                @if v.actions.is_empty() { p.muted { "No action was proposed." } }
                @for a in &v.actions { (action_row(a, csrf, From::Case)) }
                h2 { "Entities" }
                table {
                    thead { tr { th { "Entity" } th { "Source" } th { "Loaded" } th { "Facts" } } }
                    tbody {
                        @for e in &v.entities {
                            @if e.facts.is_empty() {
                                tr { td { (e.entity.key()) } td.muted colspan="3" { "no enrichment" } }
                            }
                            @for f in &e.facts {
                                tr {
                                    td { (e.entity.key()) }
                                    td { (f.source) }
                                    td { (time(f.loaded_at)) @if f.stale { " (stale)" } }
                                    td { code { (f.data.to_string()) } }
                                }
                            }
                        }
                    }
                }
                h2 { "Alerts" }
                @for a in &v.alerts {
                    section.alert {
                        h3.alert-title { (a.stored.alert.fields.title) }
                        p { (a.stored.alert.source) " · " (time(a.stored.alert.received_at)) " · confidence " (a.stored.alert.fields.confidence) }
                        @if let Some(d) = &a.stored.alert.fields.description { p.alert-description { (d) } }
                        details {
                            summary { "Raw payload" }
                            pre.raw { (a.raw.as_deref().unwrap_or("(not recorded with this alert)")) }
                        }
                    }
                }
                h2 { "Timeline" }
                ol.timeline {
                    @for t in &v.timeline {
                        li { (time(t.at)) " · #" (t.seq) " " (t.kind)
                             @if let Some(x) = &t.action_id { " · action " code { (x) } }
                             ": " (t.what) }
                    }
                }
                @if v.timeline_cut { p.muted { "The timeline shows the first records only." } }
            }
            (case_forms(c, csrf))
        },
    )
}

/// The analyst operations of the case page (outside `#live`, so a refresh keeps what is typed).
fn case_forms(c: &crate::case::Case, csrf: &str) -> Markup {
    let action = format!("/ui/cases/{}/op", c.case_id);
    let closed = c.closure.is_some();
    html! {
        section.case-ops id="case-ops" {
            h2 { "Analyst operations" }
            form.case-op id="assign-form" method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="op" value="assign";
                label { "Assign to " input type="text" name="owner" required maxlength="128"; }
                button type="submit" { "Assign" }
            }
            form.case-op id="note-form" method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="op" value="note";
                label { "Note " textarea name="text" required rows="2" {} }
                button type="submit" { "Add note" }
            }
            @if !closed {
                form.case-op id="close-form" method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="op" value="close";
                    label { "Disposition "
                        select name="disposition" required {
                            @for d in crate::case::Disposition::ALL { option value=(d.as_str()) { (d.as_str()) } }
                        }
                    }
                    label { "Reason " input type="text" name="reason" required; }
                    label { "Helped: intel ref " input type="text" name="intel_ref"; }
                    label { "Helped: rule " input type="text" name="helped_rule"; }
                    label { "Missed " input type="text" name="missed"; }
                    label { "Duplicate of " input type="text" name="duplicate_of" maxlength="26"; }
                    label { input type="checkbox" name="cancel_pending" value="1"; " cancel pending requests" }
                    button type="submit" { "Close case" }
                }
            } @else {
                form.case-op id="reopen-form" method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="op" value="reopen";
                    label { "Reason " input type="text" name="reason" required; }
                    button type="submit" { "Reopen" }
                }
            }
            @if c.recovery.is_none() {
                form.case-op id="recover-form" method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="op" value="recover";
                    label { "Recovered because " input type="text" name="reason" required; }
                    button type="submit" { "Mark recovered" }
                }
            }
        }
    }
}

fn pct(r: Option<f64>) -> String {
    r.map(|x| format!("{:.0}%", x * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// A horizontal bar chart: one labelled bar per row, scaled to the largest value.
fn bars(id: &str, title: &str, rows: &[(String, f64, String)]) -> Markup {
    const W: f64 = 640.0;
    const LABEL: f64 = 220.0;
    const ROW: f64 = 22.0;
    let max = rows.iter().map(|r| r.1).fold(0.0_f64, f64::max);
    let h = (rows.len().max(1) as f64) * ROW + 8.0;
    html! {
        figure {
            figcaption { (title) }
            svg id=(id) xmlns="http://www.w3.org/2000/svg" width=(W) height=(h) viewBox={ "0 0 " (W) " " (h) } role="img" {
                title { (title) }
                @if rows.is_empty() { text x="4" y="18" { "no data in the window" } }
                @for (i, (label, val, shown)) in rows.iter().enumerate() {
                    @let y = i as f64 * ROW + 4.0;
                    @let w = if max > 0.0 { (val / max) * (W - LABEL - 90.0) } else { 0.0 };
                    text x="4" y=(format!("{:.0}", y + 14.0)) { (label) }
                    rect x=(LABEL) y=(format!("{y:.0}")) width=(format!("{w:.1}")) height="16" class="bar" {}
                    text x=(format!("{:.1}", LABEL + w + 6.0)) y=(format!("{:.0}", y + 14.0)) { (shown) }
                }
            }
        }
    }
}

/// The learning and loop board.
pub fn learning(viewer: &Viewer, csrf: &str, b: &Board) -> Markup {
    let m = &b.metrics;
    let heat: Vec<(String, f64, String)> = m
        .heat_map
        .iter()
        .map(|r| {
            (
                r.rule_id.clone(),
                r.alerts as f64,
                format!(
                    "{} alerts, {} FP of {} closed ({})",
                    r.alerts,
                    r.false_positives,
                    r.closed,
                    pct(r.false_positive_rate)
                ),
            )
        })
        .collect();
    let weekly: Vec<(String, f64, String)> = b
        .weekly_tagged
        .iter()
        .map(|w| {
            (
                format!("week of {}", w.since.format("%Y-%m-%d")),
                w.share.ratio.unwrap_or(0.0) * 100.0,
                format!(
                    "{} ({} of {})",
                    pct(w.share.ratio),
                    w.share.tagged,
                    w.share.alerts
                ),
            )
        })
        .collect();
    let leads: Vec<(String, f64, String)> = m
        .intel_lead_times
        .iter()
        .map(|l| {
            (
                l.rule_id.clone(),
                l.lead_time_secs.unwrap_or(0).max(0) as f64,
                match l.lead_time_secs {
                    Some(s) => format!("{} ({})", age(s.max(0)), l.intel_ref),
                    None => format!("not yet detected ({})", l.intel_ref),
                },
            )
        })
        .collect();
    body_page(
        "Learning and loop",
        viewer,
        csrf,
        false,
        html! {
            h1 { "Learning and loop board" }
            h2 { "Open learning proposals (" (b.proposals.len()) ")" }
            @if b.proposals.is_empty() { p.muted id="no-proposals" { "No open proposal." } }
            @for p in &b.proposals {
                section.proposal id={ "proposal-" (p.id) } {
                    h3 { (p.title) }
                    p { code { (p.id) } " · " (p.kind.as_str()) @if let Some(r) = &p.rule_id { " · rule " (r) }
                        " · from " @for c in &p.cases { a href={ "/ui/cases/" (c) } { (c) } " " } }
                    p.rationale { (p.rationale) }
                    @for f in &p.files {
                        details.proposal-file {
                            summary { (f.name) }
                            pre { (f.contents) }
                        }
                    }
                    form.inline method="post" action={ "/ui/learning/" (p.id) "/op" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="text" name="reason" placeholder="reason (required to dismiss)" maxlength="500";
                        button type="submit" name="op" value="accept" class="approve" { "Accept" }
                        button type="submit" name="op" value="dismiss" class="deny" { "Dismiss" }
                    }
                }
            }
            h2 { "Loop metrics, " (time(b.since)) " to " (time(b.until)) }
            p { "Intel-tagged alerts: " (pct(m.intel_tagged_overall.ratio)) " (" (m.intel_tagged_overall.tagged) " of " (m.intel_tagged_overall.alerts) ")"
                "; action success rate " (pct(m.action_success_rate))
                "; escalation acceptance " (pct(m.escalation_acceptance_rate)) }
            (bars("chart-heat", "Rule heat map: alerts per rule", &heat))
            (bars("chart-intel", "Intel-tagged alerts per week", &weekly))
            (bars("chart-lead", "Intel lead time: finding to first detection", &leads))
            h2 { "Audit chain" }
            dl {
                dt { "Head" } dd id="audit-head" { "#" (b.audit.head_seq) " " code { (b.audit.head_hash) } }
                dt { "Last checkpoint" }
                dd {
                    @match &b.audit.checkpoints {
                        None => "signed checkpoints are not configured",
                        Some(v) if v.is_empty() => "none yet",
                        Some(v) => @for c in v {
                            @match &c.checked {
                                Ok(cp) => { "#" (cp.seq) " at " (time(cp.time)) ", signature verified (" (c.file) ")" }
                                Err(e) => span.error { (c.file) ": " (e) }
                            }
                        },
                    }
                }
            }
        },
    )
}

/// The approvals inbox.
pub fn inbox(viewer: &Viewer, csrf: &str, items: &[ActionView]) -> Markup {
    body_page(
        "Approvals",
        viewer,
        csrf,
        true,
        html! {
            h1 { "Awaiting your vote" }
            div id="live" {
                @if items.is_empty() { p.muted id="inbox-empty" { "Nothing awaits your vote." } }
                @for v in items {
                    div.inbox-item {
                        p { a href={ "/ui/cases/" (v.action.case_id) } { "Case " (v.action.case_id) } }
                        (action_row(v, csrf, From::Inbox))
                    }
                }
            }
        },
    )
}

/// The audit chain's state.
pub fn audit(viewer: &Viewer, csrf: &str, s: &AuditState) -> Markup {
    body_page(
        "Audit chain",
        viewer,
        csrf,
        false,
        html! {
            h1 { "Audit chain" }
            dl {
                dt { "Head" } dd id="audit-head" { "#" (s.head_seq) " " code { (s.head_hash) } }
                dt { "Last checkpoint" }
                dd {
                    @match &s.checkpoints {
                        None => "signed checkpoints are not configured",
                        Some(v) if v.is_empty() => "none yet",
                        Some(v) => @for c in v {
                            @match &c.checked {
                                Ok(cp) => { "#" (cp.seq) " at " (time(cp.time)) ", signature verified (" (c.file) ")" }
                                Err(e) => span.error { (c.file) ": " (e) }
                            }
                        },
                    }
                }
            }
        },
    )
}
