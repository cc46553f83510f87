//! One execution of one action: the claimed request, its placeholder values, and the steps
//! every kind of run shares.
//!
//! Owns: the `Run` (the action as claimed, the values its templates are filled with), recording
//! each step through the engine before the next one starts, the outcome, the built-in actions
//! (enrichment and summaries, done by cordon itself), the choice between a dry run and a live
//! run, and the dry run (every request rendered and recorded, none sent).

use super::*;

pub(super) struct Run {
    pub(super) s: Arc<Shared>,
    pub(super) a: ActionRequest,
    /// The action's intent record as last recorded, with the notes not yet recorded applied
    /// (a claimed action always has one).
    exec: crate::action::Execution,
    /// Evidence noted but not yet durable: recorded with the next durable step (the write
    /// intent, a retry's pause, a wait for completion, the outcome).
    notes: Vec<ExecNote>,
    pub(super) vars: Vars,
    /// What the last probe read (its state template rendered, or whether the object exists):
    /// named when the run refuses on it.
    pub(super) observed: Option<String>,
    /// The vendor permit this run holds (live runs), let go while it waits for completion.
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How the attempt loop continues.
pub(super) enum Next {
    /// Probe again (after a retryable failure or an unknown outcome).
    Again,
    Stop,
}

impl Run {
    pub(super) fn id(&self) -> String {
        self.a.action_id.clone()
    }

    /// A run of a claimed action; `None` if the engine handed back one without an intent
    /// record (nothing could say what was sent: never act on it).
    pub(super) fn new(s: Arc<Shared>, a: ActionRequest) -> Option<Run> {
        let exec = a.execution.clone()?;
        Some(Run {
            s,
            a,
            exec,
            notes: Vec::new(),
            vars: Vars::default(),
            observed: None,
            permit: None,
        })
    }

    /// Waits `d` between completion polls without holding a vendor permit (other targets use it
    /// meanwhile), then takes one again; `false` at shutdown.
    pub(super) async fn pause_unpermitted(&mut self, d: Duration) -> bool {
        let Some(held) = self.permit.take() else {
            return pause(&self.s.cancel, d).await;
        };
        drop(held);
        if !pause(&self.s.cancel, d).await {
            return false;
        }
        tokio::select! {
            _ = self.s.cancel.cancelled() => false,
            p = self.s.permits.clone().acquire_owned() => match p {
                Ok(p) => {
                    self.permit = Some(p);
                    true
                }
                Err(_) => false,
            },
        }
    }

    pub(super) fn exec(&self) -> &crate::action::Execution {
        &self.exec
    }

    /// Notes evidence for the record: it becomes durable with the next durable step, in
    /// order. Only reads and answers are noted; anything that must be on disk before the run
    /// goes on (the write intent, a retry, the outcome) is recorded.
    pub(super) fn note(&mut self, kind: AuditKind, body: Value, update: ExecUpdate) {
        update.apply(&mut self.exec);
        self.notes.push(ExecNote { kind, body, update });
    }

    /// Records evidence durably, with every note before it, in one commit.
    pub(super) async fn record(
        &mut self,
        kind: AuditKind,
        body: Value,
        update: ExecUpdate,
    ) -> Result<(), Halt> {
        self.note(kind, body, update);
        self.flush().await
    }

    /// Takes the action as the engine recorded it (with its intent record).
    fn adopt(&mut self, a: Box<ActionRequest>) -> Result<(), Halt> {
        match a.execution.clone() {
            Some(exec) => {
                self.exec = exec;
                self.a = *a;
                Ok(())
            }
            None => Err(Halt::Store(
                "the engine returned the action without its intent record".into(),
            )),
        }
    }

    /// Records the notes and re-checks the policy before a write is sent again
    /// ([`ExecOp::Recheck`]): `false` when the policy no longer allows it (the engine has
    /// ended the action and escalated).
    pub(super) async fn recheck(&mut self) -> Result<bool, Halt> {
        let notes = std::mem::take(&mut self.notes);
        match self
            .s
            .parts
            .engine
            .exec(ExecOp::Recheck {
                action_id: self.id(),
                notes,
            })
            .await?
        {
            ExecReply::Recorded(a) => self.adopt(a).map(|()| true),
            ExecReply::Refused(why) => {
                tracing::warn!(action_id = %self.a.action_id, reason = %why, "not sent again");
                Ok(false)
            }
            other => Err(Halt::Store(format!(
                "unexpected reply to a re-check: {other:?}"
            ))),
        }
    }

    /// Makes every note durable (nothing to do without notes).
    pub(super) async fn flush(&mut self) -> Result<(), Halt> {
        if self.notes.is_empty() {
            return Ok(());
        }
        let notes = std::mem::take(&mut self.notes);
        match self
            .s
            .parts
            .engine
            .exec(ExecOp::Record {
                action_id: self.id(),
                notes,
            })
            .await?
        {
            ExecReply::Recorded(a) => self.adopt(a),
            ExecReply::Refused(why) => Err(Halt::Store(format!("record refused: {why}"))),
            ExecReply::NotFound(id) => Err(Halt::Store(format!("record refused: no action {id}"))),
            _ => Ok(()),
        }
    }

    pub(super) async fn finish(
        &mut self,
        to: ActionState,
        outcome: &str,
        escalate: Option<String>,
    ) -> Result<(), Halt> {
        tracing::info!(action_id = %self.a.action_id, kind = %self.a.kind, target = %self.a.target.id, state = %to, outcome, "action finished");
        self.s
            .parts
            .engine
            .exec(ExecOp::Finish {
                action_id: self.id(),
                notes: std::mem::take(&mut self.notes),
                to,
                outcome: outcome.to_string(),
                escalate,
            })
            .await?;
        Ok(())
    }

    /// Enrichment and case summaries: cordon's own actions.
    pub(super) async fn builtin(&mut self) -> Result<(), Halt> {
        let u = builtin(&self.s.parts.store, &self.a)?;
        self.settle(u).await
    }

    /// Records the evidence of a run that sent nothing, then its outcome.
    async fn settle(&mut self, u: Unsent) -> Result<(), Halt> {
        for n in u.notes {
            self.note(n.kind, n.body, n.update);
        }
        self.finish(u.to, &u.outcome, u.escalate).await
    }

    pub(super) async fn connector(&mut self, c: &Connector) -> Result<(), Halt> {
        let Some(spec) = c.action(self.a.kind).cloned() else {
            return self
                .finish(
                    ActionState::Failed,
                    "connector lacks this action",
                    Some(format!(
                        "connector {} does not perform {}",
                        c.name, self.a.kind
                    )),
                )
                .await;
        };
        match build_vars(&self.s.parts.store, &self.a, c) {
            Ok(v) => self.vars = v,
            Err(e) => {
                let uncertain = self.uncertain();
                return self
                    .finish(
                        if uncertain {
                            ActionState::Unknown
                        } else {
                            ActionState::Failed
                        },
                        "cannot build the request",
                        Some(format!("{e}; nothing was sent")),
                    )
                    .await;
            }
        }
        match (c.mode, c.runtime.clone()) {
            (Mode::Live, Some(rt)) => self.live(c, &spec, &rt).await,
            _ => self.dry_run(c, &spec).await,
        }
    }

    /// Whether a write may already have reached the vendor. The phase on record says so: an
    /// `unknown` action carries phase `unknown` until a probe shows the write had no effect
    /// (`reconciled` puts it back to `claimed`), after which it can fail like any other run.
    pub(super) fn uncertain(&self) -> bool {
        matches!(self.exec().phase, ExecPhase::Writing | ExecPhase::Unknown)
    }

    /// Renders every request the action would send and records them; sends nothing.
    pub(super) async fn dry_run(&mut self, c: &Connector, spec: &ActionSpec) -> Result<(), Halt> {
        let u = dry_run(c, spec, &self.vars, self.a.target.kind);
        self.settle(u).await
    }

    pub(super) async fn fail_closed(&mut self, outcome: &str, why: String) -> Result<(), Halt> {
        let to = if self.uncertain() {
            ActionState::Unknown
        } else {
            ActionState::Failed
        };
        self.finish(to, outcome, Some(why)).await
    }
}

/// The whole run of an action that sends nothing to a vendor (a built-in action, a dry run):
/// the evidence it records and how it ends.
pub(super) struct Unsent {
    pub(super) notes: Vec<ExecNote>,
    pub(super) to: ActionState,
    pub(super) outcome: String,
    pub(super) escalate: Option<String>,
}

impl Unsent {
    fn new(to: ActionState, outcome: &str, escalate: Option<String>) -> Unsent {
        Unsent {
            notes: Vec::new(),
            to,
            outcome: outcome.to_string(),
            escalate,
        }
    }

    fn note(mut self, kind: AuditKind, body: Value) -> Unsent {
        self.notes.push(ExecNote {
            kind,
            body,
            update: ExecUpdate::default(),
        });
        self
    }
}

/// A fresh (approved, never claimed) action whose run sends nothing, made whole before its
/// claim, so the engine records the claim, the evidence and the outcome in one commit
/// (`ExecOp::ClaimAndFinish`) instead of two round trips. `None` when it is not such an action
/// (a live connector, an unknown connector, or a resumed run): it runs the usual way.
pub(super) fn unsent(s: &Shared, a: &ActionRequest, mode: &str) -> Result<Option<Unsent>, Halt> {
    if a.state != ActionState::Approved || mode == "live" {
        return Ok(None);
    }
    if a.connector == BUILTIN {
        return builtin(&s.parts.store, a).map(Some);
    }
    let Some(c) = s.parts.connectors.connectors.get(&a.connector) else {
        return Ok(None);
    };
    let Some(spec) = c.action(a.kind) else {
        return Ok(Some(Unsent::new(
            ActionState::Failed,
            "connector lacks this action",
            Some(format!("connector {} does not perform {}", c.name, a.kind)),
        )));
    };
    // Templates see the intent time the claim is about to record (to within the claim's wait).
    let mut claimed = a.clone();
    claimed.execution = Some(crate::action::Execution {
        connector: a.connector.clone(),
        mode: mode.to_string(),
        intent_at: Utc::now(),
        phase: ExecPhase::Claimed,
        writes_sent: 0,
        retries: 0,
        vendor: Default::default(),
        accepted: false,
        outcome: None,
        escalation: None,
        finished_at: None,
    });
    match build_vars(&s.parts.store, &claimed, c) {
        Ok(vars) => Ok(Some(dry_run(c, spec, &vars, a.target.kind))),
        Err(e) => Ok(Some(Unsent::new(
            ActionState::Failed,
            "cannot build the request",
            Some(format!("{e}; nothing was sent")),
        ))),
    }
}

/// Enrichment and case summaries: cordon's own actions.
fn builtin(store: &Store, a: &ActionRequest) -> Result<Unsent, Halt> {
    Ok(match a.kind {
        ActionKind::SummarizeCase => {
            let case =
                engine::read::case(store, &a.case_id).map_err(|e| Halt::Store(e.to_string()))?;
            let actions = case
                .as_ref()
                .map(|c| engine::read::actions_of(store, c))
                .transpose()
                .map_err(|e| Halt::Store(e.to_string()))?
                .unwrap_or_default();
            let summary = case.map(|c| {
                json!({
                    "title": c.title, "severity": c.severity, "rule_id": c.rule_id,
                    "alerts": c.alert_ids.len(), "duplicates": c.duplicate_count,
                    "entities": c.entities, "timeline": c.history,
                    "actions": actions.iter().map(|x| json!({"id": x.action_id, "kind": x.kind, "target": x.target.id, "state": x.state, "tier": x.tier})).collect::<Vec<_>>(),
                })
            });
            Unsent::new(ActionState::Succeeded, "case summary written", None)
                .note(AuditKind::CaseSummary, json!({"summary": summary}))
        }
        ActionKind::Enrich => Unsent::new(
            ActionState::Succeeded,
            "enrichment attached at ingest (see the case's enrichment records)",
            None,
        ),
        k => Unsent::new(
            ActionState::Failed,
            "not a built-in action",
            Some(format!("the built-in connector does not perform {k}")),
        ),
    })
}

/// Renders every request the action would send; sends nothing.
fn dry_run(c: &Connector, spec: &ActionSpec, vars: &Vars, target: TargetKind) -> Unsent {
    let mut vars = vars.clone();
    let mut placeholders: Vec<String> = c
        .spec
        .resolve
        .values()
        .flat_map(|l| l.capture.keys().cloned())
        .collect();
    if let Some(p) = &spec.probe {
        placeholders.extend(p.capture.keys().cloned());
    }
    for n in placeholders {
        vars.set(format!("vendor.{n}"), format!("<vendor.{n}>"));
    }
    for n in spec.request.capture.keys() {
        vars.set(format!("write.{n}"), format!("<write.{n}>"));
    }
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    let mut add = |phase: &str, r: &RequestSpec| match c.render(r, &vars) {
        Ok(x) => {
            let mut d = x.describe();
            d["phase"] = json!(phase);
            requests.push(d);
        }
        Err(e) => problems.push(format!("{phase}: {e}")),
    };
    if let Some(l) = c.spec.resolve.get(target.as_str()) {
        add("resolve", &l.request);
    }
    if let Some(p) = &spec.probe {
        add("probe", &p.request);
    }
    add("write", &spec.request.request);
    if let Some(p) = &spec.poll {
        add("poll", &p.request);
    }
    let body = json!({"mode": "dry_run", "requests": requests, "problems": problems, "note": "rendered and recorded; nothing was sent"});
    let u = if problems.is_empty() {
        Unsent::new(
            ActionState::DryRun,
            "dry run: every request rendered and recorded, none sent",
            None,
        )
    } else {
        Unsent::new(
            ActionState::Failed,
            "dry run: a request could not be rendered",
            Some(problems.join("; ")),
        )
    };
    u.note(AuditKind::DryRun, body)
}
