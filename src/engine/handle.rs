//! `EngineHandle`: how the rest of cordon talks to the engine.
//!
//! Owns: the calls callers make (ingest, vote, tick, exec, chat, checkpoint, schedule, case
//! operations, reload), each an `Event` sent on the queue or, for votes and chat callbacks, on
//! the urgent lane (see `lanes`), and the broadcast of approval updates. Nothing here decides.

use super::*;

impl EngineHandle {
    pub async fn ingest(
        &self,
        format: IngestFormat,
        fields: AlertFields,
        raw: String,
        received_at: DateTime<Utc>,
    ) -> Result<IngestAck, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Ingest {
                format,
                fields: Box::new(fields),
                raw,
                received_at,
                reply,
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    pub async fn reload_policies(&self, trigger: &str) -> Option<ReloadOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::ReloadPolicies {
                trigger: trigger.to_string(),
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    pub async fn vote(&self, vote: VoteCast) -> Result<VoteOutcome, VoteError> {
        let (reply, rx) = oneshot::channel();
        self.urgent
            .send(Event::Vote {
                vote,
                reply,
                sent: std::time::Instant::now(),
            })
            .await
            .map_err(|_| VoteError::Store("shutting down".into()))?;
        rx.await
            .map_err(|_| VoteError::Store("shutting down".into()))?
    }

    /// Runs expiry and escalation now and waits until the result is durable.
    pub async fn tick(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Event::Tick { reply: Some(reply) })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Asks for an expiry pass without waiting (the daemon's timer).
    pub fn request_tick(&self) {
        let _ = self.tx.try_send(Event::Tick { reply: None });
    }

    /// Records an executor step; answers once it is durable.
    pub async fn exec(&self, op: ExecOp) -> Result<ExecReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Exec { op, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Records a chat step or handles a chat callback; answers once it is durable.
    pub async fn chat(&self, op: ChatOp) -> Result<ChatReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        let ev = Event::Chat {
            op,
            reply,
            sent: std::time::Instant::now(),
        };
        let lane = if lanes::is_urgent(&ev) {
            &self.urgent
        } else {
            &self.tx
        };
        lane.send(ev).await.map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Records a console sign-in or sign-out; answers once it is durable.
    pub async fn console(&self, note: ConsoleNote) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Console { note, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Records a checkpoint's announcement; answers with the head ending at it once durable.
    pub async fn checkpoint(
        &self,
        note: crate::checkpoint::Announcement,
    ) -> Result<crate::store::Head, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Checkpoint { note, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Fires what is due or records a delivery; answers once it is durable.
    pub async fn schedule(&self, op: ScheduleOp) -> Result<ScheduleReply, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Schedule { op, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Performs an analyst's case operation; answers once it (or its refusal) is durable.
    pub async fn case_op(&self, op: CaseOp) -> Result<CaseOpOutcome, CaseOpError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::CaseOp {
                op: Box::new(op),
                reply,
            })
            .await
            .map_err(|_| CaseOpError::Store("shutting down".into()))?;
        rx.await
            .map_err(|_| CaseOpError::Store("shutting down".into()))?
    }

    /// Approval changes, as they become durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ApprovalUpdate> {
        self.watch.subscribe()
    }

    /// Asks for a reload without waiting for it (signal and file-watch triggers).
    pub fn request_reload(&self, trigger: &str) {
        let _ = self.tx.try_send(Event::ReloadPolicies {
            trigger: trigger.to_string(),
            reply: None,
        });
    }
}
