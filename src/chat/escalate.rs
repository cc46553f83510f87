//! Escalation messages: posting what the engine routed to an owner's chat channel.
//!
//! Owns: delivering the `ce/` messages (an SLA breach, an approval past half its deadline, a
//! failed or unknown action, routed by the engine to the playbook's `chat:<channel>`) to that
//! channel on every configured platform, one task at a time, a page of messages in hand at
//! most, retried with the notifier's backoff, never holding up shutdown. What was posted (or
//! failed) is recorded through the engine; a message stays owed until it was posted, so a
//! restart delays it but never loses it.

use super::*;

/// Messages read from the store per pass.
const PAGE: usize = 16;

#[derive(Clone)]
pub(super) struct Escalations {
    chat: Arc<Chat>,
    engine: EngineHandle,
    store: Store,
    cancel: CancellationToken,
    /// A pass is running; `again` asks it to look once more when it ends.
    running: Arc<AtomicBool>,
    again: Arc<AtomicBool>,
}

impl Escalations {
    pub(super) fn new(
        chat: Arc<Chat>,
        engine: EngineHandle,
        store: Store,
        cancel: CancellationToken,
    ) -> Escalations {
        Escalations {
            chat,
            engine,
            store,
            cancel,
            running: Arc::new(AtomicBool::new(false)),
            again: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Posts whatever is owed, now or right after the pass already running.
    pub(super) fn kick(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        if self.running.swap(true, Ordering::SeqCst) {
            self.again.store(true, Ordering::SeqCst);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.again.store(false, Ordering::SeqCst);
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = me.pass() => {}
                }
                if me.cancel.is_cancelled() || !me.again.load(Ordering::SeqCst) {
                    break;
                }
            }
            me.running.store(false, Ordering::SeqCst);
        });
    }

    /// Posts every owed message, a page at a time, each retried until it is posted.
    async fn pass(&self) {
        loop {
            let owed = match engine::read::chat_escalations(&self.store, PAGE) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the escalations owed to chat");
                    return;
                }
            };
            if owed.is_empty() {
                return;
            }
            for m in owed {
                self.deliver(&m).await;
            }
        }
    }

    /// Posts one message on every platform; retries with backoff until one took it.
    async fn deliver(&self, m: &engine::ChatEscalation) {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut posted = false;
            for p in &self.chat.platforms {
                let result = p.post_plain(&self.chat.http, &m.channel, &m.text).await;
                if let Err(e) = &result {
                    tracing::warn!(platform = p.name, case_id = %m.case_id, attempt, error = %e, "Escalation post failed; it will be retried.");
                }
                posted |= result.is_ok();
                let op = ChatOp::Escalation {
                    id: m.id.clone(),
                    platform: p.name,
                    attempt,
                    result: result.map_err(|e| e.to_string()),
                };
                if self.engine.chat(op).await.is_err() {
                    return;
                }
                if posted {
                    break;
                }
            }
            if posted {
                return;
            }
            let wait = self.chat.backoff(attempt);
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
