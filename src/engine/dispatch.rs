//! One event of a batch, decided: the match from `Event` to the file that handles it.
//!
//! Owns: running each event's work inside `undoable` (so a failed event leaves nothing in the
//! batch), and what its caller is answered once the batch is durable (or at once, for an event
//! that could not be recorded). The work itself is in the event's own file.

use super::*;

impl Engine {
    /// Decides one event into the batch's transaction; its answer waits in `replies` for the
    /// commit (an event that could not be recorded is answered with the error now).
    pub(super) fn decide(&mut self, txn: &mut Txn, ev: Event, replies: &mut Vec<Reply>) {
        match ev {
            Event::Ingest {
                format,
                fields,
                raw,
                received_at,
                reply,
            } => {
                let r = self.undoable(txn, "alert", |e, t| {
                    e.ingest(t, format, &fields, raw, received_at)
                });
                match r {
                    Ok(ack) => {
                        let source = format.as_str();
                        let outcome = if ack.duplicate {
                            "duplicate"
                        } else {
                            "accepted"
                        };
                        let metrics = self.parts.metrics.clone();
                        replies.push(Box::new(move |r| {
                            match &r {
                                Ok(()) => metrics.alert(source, outcome),
                                Err(_) => metrics.alert(source, "store_unavailable"),
                            }
                            let _ = reply.send(r.map(|()| ack));
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::Vote { vote, reply, sent } => {
                let taken = std::time::Instant::now();
                let decided = self.undoable(txn, "vote", |e, t| e.vote(t, &vote));
                let durable = self.time_vote(sent, taken);
                match decided {
                    Ok(Ok(outcome)) => replies.push(Box::new(move |r| {
                        if r.is_ok() {
                            durable();
                        }
                        let _ = reply.send(
                            r.map(|()| outcome)
                                .map_err(|e| VoteError::Store(e.to_string())),
                        );
                    })),
                    Ok(Err(refusal)) => {
                        // Refusals are recorded too (the audit entry stays in the batch),
                        // but the caller hears the refusal only once it is durable.
                        replies.push(Box::new(move |r| {
                            if r.is_ok() {
                                durable();
                            }
                            let _ = reply.send(match r {
                                Ok(()) => Err(refusal),
                                Err(e) => Err(VoteError::Store(e.to_string())),
                            });
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(VoteError::Store(e.to_string())));
                    }
                }
            }
            Event::Tick { reply } => {
                // A failed pass is undone and logged; the next tick tries again.
                let _ = self.undoable(txn, "expiry pass", |e, t| e.tick(t));
                if let Some(reply) = reply {
                    replies.push(Box::new(move |_| {
                        let _ = reply.send(());
                    }));
                }
            }
            Event::Exec { op, reply } => {
                match self.undoable(txn, "executor step", |e, t| e.exec(t, op)) {
                    Ok(r) => replies.push(Box::new(move |c| {
                        let _ = reply.send(c.map(|()| r));
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::Chat { op, reply, sent } => {
                let taken = std::time::Instant::now();
                match self.undoable(txn, "chat step", |e, t| e.chat(t, op)) {
                    Ok(r) => {
                        // A callback that reached the vote is timed as a vote.
                        let durable =
                            matches!(r, ChatReply::Voted(_)).then(|| self.time_vote(sent, taken));
                        replies.push(Box::new(move |c| {
                            if let (Ok(()), Some(durable)) = (&c, durable) {
                                durable();
                            }
                            let _ = reply.send(c.map(|()| r));
                        }))
                    }
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::Schedule { op, reply } => {
                match self.undoable(txn, "scheduler step", |e, t| e.schedule(t, op)) {
                    Ok(r) => replies.push(Box::new(move |c| {
                        let _ = reply.send(c.map(|()| r));
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::Console { note, reply } => {
                let now = (self.parts.clock)();
                let r = self.undoable(txn, "console record", |_, t| {
                    t.audit(note.kind, Links::default(), now, &note.data)
                });
                match r {
                    Ok(_) => replies.push(Box::new(move |c| {
                        let _ = reply.send(c);
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::Checkpoint { note, reply } => {
                let now = (self.parts.clock)();
                let r = self.undoable(txn, "audit checkpoint", |_, t| {
                    t.audit(crate::checkpoint::RECORD_KIND, Links::default(), now, &note)?;
                    Ok(t.head().clone())
                });
                match r {
                    Ok(head) => replies.push(Box::new(move |c| {
                        let _ = reply.send(c.map(|()| head));
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::CaseOp { op, reply } => {
                match self.undoable(txn, "case operation", |e, t| e.case_op(t, &op)) {
                    // Refusals are recorded too; the caller hears either once durable.
                    Ok(result) => replies.push(Box::new(move |r| {
                        let _ = reply.send(match r {
                            Ok(()) => result,
                            Err(e) => Err(CaseOpError::Store(e.to_string())),
                        });
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(CaseOpError::Store(e.to_string())));
                    }
                }
            }
            Event::Agent { op, reply } => {
                match self.undoable(txn, "agent call", |e, t| e.agent(t, op)) {
                    Ok(r) => replies.push(Box::new(move |c| {
                        let _ = reply.send(c.map(|()| r));
                    })),
                    Err(e) => {
                        let _ = reply.send(Err(EngineError::Store(e.to_string())));
                    }
                }
            }
            Event::ReloadPolicies { trigger, reply } => {
                if let Ok(outcome) =
                    self.undoable(txn, "policy reload", |e, t| e.reload(t, &trigger))
                {
                    replies.push(Box::new(move |r| {
                        if let Some(reply) = reply {
                            let _ = reply.send(match r {
                                Ok(()) => outcome,
                                Err(e) => ReloadOutcome {
                                    ok: false,
                                    policy_hash: outcome.policy_hash,
                                    problems: vec![PolicyProblem {
                                        file: "store".into(),
                                        line: 0,
                                        column: 0,
                                        message: e.to_string(),
                                    }],
                                },
                            });
                        }
                    }));
                }
            }
        }
    }

    /// Times a vote the engine took up at `taken` and has just decided (`cordon_vote_seconds`):
    /// `queued` since the caller handed it over at `sent`, and `deciding`. Returns what times
    /// the `durable` stage, to be called only once the vote's commit is durable.
    fn time_vote(
        &self,
        sent: std::time::Instant,
        taken: std::time::Instant,
    ) -> impl FnOnce() + Send + 'static {
        use crate::metrics::Metrics;
        let done = std::time::Instant::now();
        let stages = self.parts.metrics.vote_seconds.clone();
        Metrics::vote_stage(&stages, "queued", taken.duration_since(sent));
        Metrics::vote_stage(&stages, "deciding", done.duration_since(taken));
        move || Metrics::vote_stage(&stages, "durable", done.elapsed())
    }
}
