//! The notifier: keeping chat messages in step with approval requests.
//!
//! Owns: bringing every message owed (the `co/` markers the engine writes in the batch that
//! changes an action) up to date on every platform — post, update, thread notices — with
//! retries and full-jitter backoff, at most a bounded number of actions in hand, and never
//! holding up shutdown. It decides nothing: what it did is recorded through the engine.

use super::*;

/// Posts and updates messages for every action the engine marks as owed, until shutdown.
pub async fn run(
    chat: Arc<Chat>,
    engine: EngineHandle,
    store: Store,
    policies: Policies,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    for p in &chat.platforms {
        if let Kind::Teams(t) = &p.kind
            && let Err(e) = t.refresh_keys(&chat.http).await
        {
            tracing::warn!(error = %e, "Bot Framework signing keys could not be fetched; Teams callbacks are refused until they are");
        }
    }
    let mut rx = engine.subscribe();
    let n = Notifier {
        chat,
        metrics,
        engine,
        store,
        policies,
        cancel: cancel.clone(),
        inflight: Arc::new(Mutex::new(HashMap::new())),
        missed: Arc::new(AtomicBool::new(false)),
        permits: Arc::new(Semaphore::new(CONCURRENCY)),
    };
    let escalations = super::escalate::Escalations::new(
        n.chat.clone(),
        n.engine.clone(),
        n.store.clone(),
        cancel.clone(),
    );
    n.rescan();
    escalations.kick();
    let mut every = tokio::time::interval(RESCAN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = every.tick() => {
                n.rescan();
                escalations.kick();
            }
            u = rx.recv() => match u {
                Ok(ApprovalUpdate::Changed(a)) => {
                    if a.owes_chat() {
                        n.kick(a.action_id.clone());
                    }
                }
                Ok(ApprovalUpdate::Escalation { action_id, .. }) => n.kick(action_id),
                Ok(ApprovalUpdate::ChatEscalationOwed) => escalations.kick(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => n.rescan(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

#[derive(Clone)]
struct Notifier {
    chat: Arc<Chat>,
    metrics: Metrics,
    engine: EngineHandle,
    store: Store,
    policies: Policies,
    cancel: CancellationToken,
    /// Actions being synced, and whether they changed again meanwhile.
    inflight: Arc<Mutex<HashMap<String, bool>>>,
    /// A kick found no room: rescan the store once room frees up.
    missed: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
}

impl Notifier {
    fn rescan(&self) {
        match engine::read::chat_owed(&self.store) {
            Ok(ids) => ids.into_iter().for_each(|id| self.kick(id)),
            Err(e) => tracing::error!(error = %e, "cannot read what is owed to chat"),
        }
    }

    /// Brings `id`'s messages up to date, now or right after the sync already running. At
    /// most [`IN_HAND`] actions are in hand; the rest stay owed in the store (`co/`) and the
    /// next rescan takes them up, so a backlog costs no memory and holds nothing at shutdown.
    fn kick(&self, id: String) {
        {
            let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(dirty) = m.get_mut(&id) {
                *dirty = true;
                return;
            }
            if self.cancel.is_cancelled() {
                return;
            }
            if m.len() >= IN_HAND {
                self.missed.store(true, Ordering::Relaxed);
                return;
            }
            m.insert(id.clone(), false);
        }
        let n = self.clone();
        tokio::spawn(async move {
            // Shutdown does not wait for chat: what is still owed is posted after the restart.
            let permit = tokio::select! {
                _ = n.cancel.cancelled() => None,
                p = n.permits.clone().acquire_owned() => p.ok(),
            };
            let Some(_permit) = permit else {
                n.inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return;
            };
            loop {
                tokio::select! {
                    _ = n.cancel.cancelled() => {}
                    _ = n.sync(&id) => {}
                }
                {
                    let mut m = n.inflight.lock().unwrap_or_else(|e| e.into_inner());
                    match m.get_mut(&id) {
                        Some(dirty) if *dirty && !n.cancel.is_cancelled() => {
                            *dirty = false;
                            continue;
                        }
                        _ => {
                            m.remove(&id);
                        }
                    }
                }
                if n.missed.swap(false, Ordering::Relaxed) && !n.cancel.is_cancelled() {
                    n.rescan();
                }
                return;
            }
        });
    }

    /// Retries until every platform shows the action as stored, or shutdown.
    async fn sync(&self, id: &str) {
        let mut attempt: u32 = 0;
        loop {
            let generation = match self.store.get(&engine::keys::chat_owed(id)) {
                Ok(Some(g)) => String::from_utf8_lossy(&g).to_string(),
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read what is owed to chat");
                    String::new()
                }
            };
            attempt += 1;
            let ok = !generation.is_empty() && self.sync_once(id, attempt).await;
            if ok {
                let op = ChatOp::Synced {
                    action_id: id.to_string(),
                    generation,
                };
                if self.engine.chat(op).await.is_ok() {
                    return;
                }
            }
            let wait = self.chat.backoff(attempt);
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over every platform; whether all of them are up to date.
    async fn sync_once(&self, id: &str, attempt: u32) -> bool {
        let Ok(Some(a)) = engine::read::action(&self.store, id) else {
            return false;
        };
        let case = engine::read::case(&self.store, &a.case_id).ok().flatten();
        // Votes count on the request as the policy set in force hashes it (the engine's rule).
        let v = View::of(&a, case.as_ref(), &self.policies.current().hash);
        let rendered = v.hash();
        let severity = case.as_ref().map_or(0, |c| c.severity.id());
        let mut all = true;
        for p in &self.chat.platforms {
            let post = a.chat.iter().find(|x| x.platform == p.name);
            let deliver = |purpose: &'static str,
                           d: Result<Delivered, ChatError>,
                           notice: Option<String>| match d {
                Ok(d) => ChatOp::Delivered(ChatDelivery {
                    action_id: id.to_string(),
                    platform: p.name,
                    purpose,
                    channel: d.channel,
                    reference: d.reference,
                    attempt,
                    rendered: (purpose != "thread").then(|| rendered.clone()),
                    notice,
                }),
                Err(error) => {
                    tracing::warn!(platform = p.name, purpose, action_id = id, attempt, error = %error, "chat post failed; it will be retried");
                    ChatOp::Failed {
                        action_id: id.to_string(),
                        platform: p.name,
                        purpose,
                        channel: p.channel_for(&a, severity).to_string(),
                        attempt,
                        error: error.to_string(),
                    }
                }
            };
            let mut ops = Vec::new();
            match post {
                None if a.owes_chat() => {
                    let channel = p.channel_for(&a, severity);
                    let r = p.post(&self.chat.http, channel, &v).await;
                    ops.push(deliver("request", r, None));
                }
                None => {}
                Some(post) => {
                    if post.rendered != rendered {
                        let r = p
                            .update(&self.chat.http, &post.channel, &post.reference, &v)
                            .await
                            .map(|()| Delivered {
                                channel: post.channel.clone(),
                                reference: post.reference.clone(),
                            });
                        ops.push(deliver("update", r, None));
                    }
                    for notice in v.notices.iter().filter(|n| !post.notices.contains(n)) {
                        let r = p
                            .thread(
                                &self.chat.http,
                                &post.channel,
                                &post.reference,
                                &v.notice_text(notice),
                            )
                            .await
                            .map(|()| Delivered {
                                channel: post.channel.clone(),
                                reference: post.reference.clone(),
                            });
                        ops.push(deliver("thread", r, Some(notice.clone())));
                    }
                }
            }
            for op in ops {
                let failed = matches!(op, ChatOp::Failed { .. });
                all &= !failed;
                let outcome = if failed { "failed" } else { "posted" };
                Metrics::chat(&self.metrics.chat_posts, p.name, outcome);
                if self.engine.chat(op).await.is_err() {
                    all = false;
                }
            }
        }
        // The action may have changed while this pass ran, at a moment it owed chat nothing
        // (a vote decided before the post was recorded: no marker, no kick). The pass counts
        // only if the action still renders as what it delivered; otherwise another pass runs.
        if all && let Ok(Some(now)) = engine::read::action(&self.store, id) {
            let case = engine::read::case(&self.store, &now.case_id).ok().flatten();
            all = View::of(&now, case.as_ref(), &self.policies.current().hash).hash() == rendered;
        }
        all
    }
}
