//! A live run: resolve → probe → plan → write → poll → verify.
//!
//! Owns: resolving the target to exactly one vendor object, the attempt loop (probe, then act
//! on the plan), the write (durable `write_intent` first; the answer classified; an unknown
//! outcome resolved by probe, never by a blind resend), and completion (poll, then verify).

use super::*;

impl Run {
    pub(super) async fn live(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<(), Halt> {
        // Resolve the vendor's id for the target once; it is kept in the intent record.
        if let Some(l) = c.spec.resolve.get(self.a.target.kind.as_str()) {
            let missing = l
                .capture
                .keys()
                .any(|k| !self.exec().vendor.contains_key(k));
            if missing {
                let (status, resolution) = match self.read(c, rt, "resolve", &l.request).await? {
                    // The target as the lookup was made with it (an indicator's value).
                    Ok(a) => {
                        let target = self.vars.get("target").unwrap_or(&self.a.target.id);
                        (a.status, resolve::pick(l, &a.json, target))
                    }
                    // A fetch by key answered 404: the vendor does not know the target.
                    Err(ReadError::Refused { status: 404 }) => (404, Resolution::NotFound),
                    Err(e) => {
                        return self
                            .fail_closed("target lookup failed", e.to_string())
                            .await;
                    }
                };
                match resolution {
                    Resolution::One { vendor, candidates } => {
                        for (k, v) in &vendor {
                            self.vars.set(format!("vendor.{k}"), v.clone());
                        }
                        let mut body = json!({"target": self.a.target, "vendor": vendor});
                        if let (Some(mut c), Some(tb)) = (candidates, &l.tie_break) {
                            rt.redact(&mut c);
                            body["candidates"] = c;
                            body["tie_break"] = json!({"newest": tb.newest});
                        }
                        self.note(
                            AuditKind::TargetResolved,
                            body,
                            ExecUpdate {
                                vendor,
                                ..Default::default()
                            },
                        );
                    }
                    Resolution::NotFound => {
                        return self
                            .fail_closed(
                                "target unknown to the vendor",
                                format!(
                                    "{} {:?} was not found at {} (status {}); nothing was sent",
                                    self.a.target.kind.as_str(),
                                    self.a.target.id,
                                    c.name,
                                    status
                                ),
                            )
                            .await;
                    }
                    Resolution::Ambiguous {
                        mut candidates,
                        why,
                    } => {
                        rt.redact(&mut candidates);
                        let n = candidates["count"].as_u64().unwrap_or(0);
                        self.note(
                            AuditKind::TargetAmbiguous,
                            json!({"target": self.a.target, "connector": c.name, "reason": why.to_string(), "candidates": candidates}),
                            ExecUpdate::default(),
                        );
                        return self
                            .fail_closed(
                                "target ambiguous",
                                format!(
                                    "{} {:?} does not resolve to exactly one object at {} ({why}; {n} candidates recorded); nothing was sent",
                                    self.a.target.kind.as_str(),
                                    self.a.target.id,
                                    c.name,
                                ),
                            )
                            .await;
                    }
                }
            }
        }
        // Write attempts are counted on record (`writes_sent`), so the budget holds across
        // restarts and reconcile passes, not per run.
        loop {
            let uncertain = self.uncertain();
            if uncertain {
                self.flush().await?;
                let settle = Duration::from_millis(c.spec.retry.unknown_settle_ms);
                if !pause(&self.s.cancel, settle).await {
                    return Err(Halt::Shutdown);
                }
            }
            // Probe and plan.
            let state = match &spec.probe {
                Some(p) => match self.probe(c, rt, "probe", p).await? {
                    Ok(s) => Some(s),
                    Err(e) => {
                        return self
                            .fail_closed(
                                "probe failed",
                                format!("cannot read the target's state: {e}"),
                            )
                            .await;
                    }
                },
                None => None,
            };
            let known = plan::Known {
                state,
                uncertain,
                accepted: self.exec().accepted,
                writes_sent: self.exec().writes_sent,
                resend_safe: spec.resend_safe,
                attempts: self.exec().writes_sent,
                max_attempts: c.spec.retry.max_attempts,
            };
            let (reconciled, give_up) = match plan::plan(known) {
                Plan::Succeed(outcome) => {
                    return self.finish(ActionState::Succeeded, outcome, None).await;
                }
                Plan::Wait => return self.complete(c, spec, rt).await,
                Plan::Refuse(outcome, why) => {
                    let why = match &self.observed {
                        Some(o) if !o.is_empty() => {
                            format!("{why} (the vendor reads {:?})", crate::ingest::clip(o, 200))
                        }
                        _ => why.to_string(),
                    };
                    return self.fail_closed(outcome, why).await;
                }
                Plan::Fail(outcome, why) => {
                    return self
                        .finish(ActionState::Failed, outcome, Some(why.into()))
                        .await;
                }
                Plan::StayUnknown => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "outcome unknown",
                            Some("an earlier write may have reached the vendor and nothing can probe it; not resending".into()),
                        )
                        .await;
                }
                Plan::Write { reconciled } => (reconciled, false),
                Plan::GiveUp { reconciled } => (reconciled, true),
            };
            if let Some(finding) = reconciled {
                self.note(
                    AuditKind::Reconciled,
                    json!({"finding": finding}),
                    ExecUpdate {
                        phase: Some(ExecPhase::Claimed),
                        ..Default::default()
                    },
                );
            }
            if give_up {
                return self
                    .fail_closed(
                        "gave up",
                        format!(
                            "{} write attempts without a definite answer",
                            self.exec().writes_sent
                        ),
                    )
                    .await;
            }
            // Sending again (the earlier write had no effect): the policy in force must still
            // allow it, as at the claim; what was found is recorded with that check.
            if reconciled.is_some() && !self.recheck().await? {
                return Ok(());
            }
            match self.write(c, spec, rt).await? {
                Next::Stop => return Ok(()),
                Next::Again => continue,
            }
        }
    }

    /// Sends the write once and reads its answer.
    pub(super) async fn write(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<Next, Halt> {
        let rendered = match c.render(&spec.request.request, &self.vars) {
            Ok(r) => r,
            Err(e) => {
                self.fail_closed("cannot render the write", format!("{e}; nothing was sent"))
                    .await?;
                return Ok(Next::Stop);
            }
        };
        // Durable before it goes out: a crash from here on means "may have been sent".
        self.record(
            AuditKind::WriteIntent,
            json!({"request": rendered.describe(), "write": self.exec().writes_sent + 1}),
            ExecUpdate {
                phase: Some(ExecPhase::Writing),
                write_sent: true,
                ..Default::default()
            },
        )
        .await?;
        let ex = self
            .exchange(rt, "write", &rendered, ExecUpdate::default())
            .await?;
        match ex.outcome {
            Outcome::Answer(ans) => {
                let class = classify_write(&spec.request, &ans);
                match class {
                    WriteClass::Accepted | WriteClass::AlreadyDone => {
                        let caps =
                            client::capture(&spec.request.capture, &ans.json).unwrap_or_default();
                        for (k, v) in &caps {
                            self.vars.set(format!("write.{k}"), v.clone());
                        }
                        self.note(
                            AuditKind::WriteResult,
                            json!({"class": class, "status": ans.status, "captured": caps}),
                            ExecUpdate {
                                phase: Some(ExecPhase::Polling),
                                accepted: true,
                                vendor: caps
                                    .iter()
                                    .map(|(k, v)| (format!("write.{k}"), v.clone()))
                                    .collect(),
                                ..Default::default()
                            },
                        );
                        self.complete(c, spec, rt).await?;
                        Ok(Next::Stop)
                    }
                    WriteClass::Busy => {
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        self.finish(
                            ActionState::Failed,
                            "vendor busy",
                            Some(format!(
                                "the vendor answered {} (another operation in flight); refusing to resend",
                                ans.status
                            )),
                        )
                        .await?;
                        Ok(Next::Stop)
                    }
                    WriteClass::Throttled => {
                        // A 429 was not processed: back to "nothing sent".
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        if self
                            .retry_pause(c, "write", "rate limited (429)", ex.wait)
                            .await?
                        {
                            Ok(Next::Again)
                        } else {
                            self.fail_closed(
                                "rate limited",
                                "the vendor kept rate-limiting (or asked for a wait longer than retry.max_wait_secs)".into(),
                            )
                            .await?;
                            Ok(Next::Stop)
                        }
                    }
                    WriteClass::ServerError => {
                        // A 5xx may or may not have been applied: the probe decides.
                        self.note(
                            AuditKind::OutcomeUnknown,
                            json!({"reason": format!("the vendor answered {}", ans.status)}),
                            ExecUpdate {
                                phase: Some(ExecPhase::Unknown),
                                ..Default::default()
                            },
                        );
                        if self
                            .retry_pause(
                                c,
                                "write",
                                &format!("server error {}", ans.status),
                                ex.wait,
                            )
                            .await?
                        {
                            Ok(Next::Again)
                        } else {
                            self.fail_closed(
                                "vendor failing",
                                format!("the vendor kept failing ({})", ans.status),
                            )
                            .await?;
                            Ok(Next::Stop)
                        }
                    }
                    WriteClass::Rejected => {
                        self.write_without_effect(json!({"class": class, "status": ans.status}))
                            .await?;
                        self.finish(
                            ActionState::Failed,
                            "vendor rejected the request",
                            Some(format!("the vendor rejected the request ({})", ans.status)),
                        )
                        .await?;
                        Ok(Next::Stop)
                    }
                }
            }
            Outcome::NotSent(reason) => {
                self.write_without_effect(json!({"class": "not_sent", "reason": reason}))
                    .await?;
                if self.retry_pause(c, "write", &reason, ex.wait).await? {
                    Ok(Next::Again)
                } else {
                    self.fail_closed("vendor unreachable", reason).await?;
                    Ok(Next::Stop)
                }
            }
            Outcome::Uncertain(reason) => {
                self.note(
                    AuditKind::OutcomeUnknown,
                    json!({"reason": reason, "resolution": "probe the target; never resend blindly"}),
                    ExecUpdate {
                        phase: Some(ExecPhase::Unknown),
                        ..Default::default()
                    },
                );
                Ok(Next::Again)
            }
            Outcome::Redirect { status, location } => {
                self.fail_closed(
                    "redirect refused",
                    format!("the vendor redirected ({status}) to {location:?}; redirects are never followed"),
                )
                .await?;
                Ok(Next::Stop)
            }
            Outcome::AuthFailed(reason) => {
                self.write_without_effect(json!({"class": "auth_failed"}))
                    .await?;
                self.finish(
                    ActionState::Failed,
                    "authentication failed",
                    Some(format!("{reason}; nothing was changed")),
                )
                .await?;
                Ok(Next::Stop)
            }
        }
    }

    /// Records a write answer that proves nothing took effect (429, busy, rejected, refused
    /// credentials, not sent): the intent goes back to "nothing sent".
    pub(super) async fn write_without_effect(&mut self, body: Value) -> Result<(), Halt> {
        self.note(
            AuditKind::WriteResult,
            body,
            ExecUpdate {
                phase: Some(ExecPhase::Claimed),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Waits for the vendor to complete (poll request or probe), then verifies by probe.
    pub(super) async fn complete(
        &mut self,
        c: &Connector,
        spec: &ActionSpec,
        rt: &client::Runtime,
    ) -> Result<(), Halt> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(spec.completion.max_wait_secs);
        let interval = Duration::from_millis(spec.completion.poll_interval_ms);
        // With a handle from the write, poll it; otherwise re-run the probe.
        let has_handle = spec
            .request
            .capture
            .keys()
            .all(|k| self.vars.get(&format!("write.{k}")).is_some())
            && !spec.request.capture.is_empty();
        let poller = match (&spec.poll, has_handle) {
            (Some(p), true) => Some(p.clone()),
            _ => spec.probe.clone(),
        };
        let Some(poller) = poller else {
            return self
                .finish(
                    ActionState::Succeeded,
                    "accepted by the vendor (this action has no probe to verify it)",
                    None,
                )
                .await;
        };
        loop {
            match self.probe(c, rt, "poll", &poller).await? {
                Ok(ProbeState::Done) => break,
                Ok(ProbeState::Pending) | Ok(ProbeState::NotDone) => {}
                Ok(ProbeState::Failed) => {
                    return self
                        .finish(
                            ActionState::Failed,
                            "vendor reports failure",
                            Some("the vendor reports the operation failed".into()),
                        )
                        .await;
                }
                Ok(s) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "completion unclear",
                            Some(format!(
                                "while waiting for completion the vendor reported {s:?}"
                            )),
                        )
                        .await;
                }
                Err(e) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "completion unclear",
                            Some(format!("cannot poll for completion: {e}")),
                        )
                        .await;
                }
            }
            // What the polls showed is on record before the wait.
            self.flush().await?;
            if tokio::time::Instant::now() + interval > deadline {
                return self
                    .finish(
                        ActionState::Unknown,
                        "not completed in time",
                        Some(format!(
                            "the vendor did not complete it within {}s (an offline host stays pending); it is re-checked later",
                            spec.completion.max_wait_secs
                        )),
                    )
                    .await;
            }
            if !self.pause_unpermitted(interval).await {
                return Err(Halt::Shutdown);
            }
        }
        // Verify the postcondition with the probe.
        if let Some(p) = &spec.probe {
            match self.probe(c, rt, "verify", p).await? {
                Ok(ProbeState::Done) => {}
                Ok(s) => {
                    return self
                        .finish(
                            ActionState::Failed,
                            "verification failed",
                            Some(format!("the vendor accepted it but the probe reads {s:?}")),
                        )
                        .await;
                }
                Err(e) => {
                    return self
                        .finish(
                            ActionState::Unknown,
                            "verification failed",
                            Some(format!("cannot verify: {e}")),
                        )
                        .await;
                }
            }
        }
        self.finish(ActionState::Succeeded, "done; verified by probe", None)
            .await
    }
}
