//! Event `Chat`: what is owed to chat, what was posted, and callbacks turned into votes.
//!
//! Owns: the `co/` markers written in the batch that changes an action (what chat owes), the
//! records of posts and failures, verified callbacks (replay memory `cr/`, then the same vote
//! path as gRPC) and refused ones (rate-limited records).

use super::*;

/// What the chat side asks the engine to record. Each is durable before the reply.
#[derive(Debug, Clone)]
pub enum ChatOp {
    /// A message was posted, updated, or a thread notice sent.
    Delivered(ChatDelivery),
    /// A post or update failed (it will be retried while it matters).
    Failed {
        action_id: String,
        platform: &'static str,
        purpose: &'static str,
        channel: String,
        attempt: u32,
        error: String,
    },
    /// Every platform shows the action as it was at generation `generation`.
    Synced {
        action_id: String,
        generation: String,
    },
    /// An inbound callback, after the platform's verification.
    Callback(ChatCallback),
    /// An escalation message (`ce/`) was posted to its channel (`Ok(reference)`), or failed.
    Escalation {
        id: String,
        platform: &'static str,
        attempt: u32,
        result: Result<String, String>,
    },
}

#[derive(Debug, Clone)]
pub struct ChatDelivery {
    pub action_id: String,
    pub platform: &'static str,
    /// request | update | thread
    pub purpose: &'static str,
    pub channel: String,
    /// The message's reference (Slack ts, Mattermost post id, Teams activity id).
    pub reference: String,
    pub attempt: u32,
    /// Hash of what the message now shows (request and update).
    pub rendered: Option<String>,
    /// The thread notice sent (thread).
    pub notice: Option<String>,
}

/// A chat callback as the HTTP side hands it over.
#[derive(Debug, Clone)]
pub struct ChatCallback {
    pub platform: &'static str,
    /// The platform's unique id of this callback (signature, trigger id, activity id), when the
    /// request was authentic: seen twice → refused as a replay.
    pub replay_key: Option<String>,
    /// How long to remember `replay_key`.
    pub replay_ttl: chrono::Duration,
    pub platform_user: String,
    pub approval_id: String,
    /// approve | deny
    pub decision: String,
    /// The vote to cast, or why the callback is refused (code, message).
    pub verdict: Result<VoteCast, (&'static str, String)>,
    /// Extra evidence for the audit record (request ids, team, channel...).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub enum ChatReply {
    Recorded,
    /// The callback was refused before any vote (code, message).
    Refused(&'static str, String),
    /// The callback became a vote; this is what the vote did.
    Voted(Box<Result<VoteOutcome, VoteError>>),
}

impl Engine {
    /// Marks every action changed in this batch whose chat messages may now be behind: a new
    /// request to post, or a posted one whose votes, state or escalation changed.
    pub(super) fn mark_chat_owed(&mut self, txn: &mut Txn) {
        let mut ids: Vec<String> = self
            .changed
            .iter()
            .filter(|a| a.owes_chat())
            .map(|a| a.action_id.clone())
            .chain(self.escalations.iter().map(|e| e.action_id.clone()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return;
        }
        let generation = self.next_id();
        for id in ids {
            txn.put(keys::chat_owed(&id), generation.clone().into_bytes());
        }
    }

    pub(super) fn chat(&mut self, txn: &mut Txn, op: ChatOp) -> Result<ChatReply, StoreError> {
        let store = self.parts.store.clone();
        let now = (self.parts.clock)();
        match op {
            ChatOp::Delivered(d) => {
                let Some(mut a) =
                    txn.get_json::<ActionRequest>(&store, &keys::action(&d.action_id))?
                else {
                    return Ok(ChatReply::Recorded);
                };
                match a.chat.iter_mut().find(|p| p.platform == d.platform) {
                    Some(post) => {
                        if let Some(r) = &d.rendered {
                            post.rendered = r.clone();
                        }
                        if let Some(n) = &d.notice
                            && !post.notices.contains(n)
                        {
                            post.notices.push(n.clone());
                        }
                    }
                    None => a.chat.push(crate::action::ChatPost {
                        platform: d.platform.to_string(),
                        channel: d.channel.clone(),
                        reference: d.reference.clone(),
                        posted_at: now,
                        rendered: d.rendered.clone().unwrap_or_default(),
                        notices: d.notice.iter().cloned().collect(),
                    }),
                }
                txn.audit(
                    AuditKind::ChatPost,
                    Self::links(&a),
                    now,
                    json!({
                        "platform": d.platform, "purpose": d.purpose, "action_id": a.action_id,
                        "channel": d.channel, "ref": d.reference, "attempt": d.attempt,
                        "outcome": "posted", "error": null, "notice": d.notice,
                    }),
                )?;
                txn.put_json(keys::action(&a.action_id), &a)?;
                Ok(ChatReply::Recorded)
            }
            ChatOp::Failed {
                action_id,
                platform,
                purpose,
                channel,
                attempt,
                error,
            } => {
                let links = txn
                    .get_json::<ActionRequest>(&store, &keys::action(&action_id))?
                    .map(|a| Self::links(&a))
                    .unwrap_or_default();
                txn.audit(
                    AuditKind::ChatPost,
                    links,
                    now,
                    json!({
                        "platform": platform, "purpose": purpose, "action_id": action_id,
                        "channel": channel, "ref": null, "attempt": attempt,
                        "outcome": "failed", "error": error,
                    }),
                )?;
                Ok(ChatReply::Recorded)
            }
            ChatOp::Synced {
                action_id,
                generation,
            } => {
                let key = keys::chat_owed(&action_id);
                if txn.get(&store, &key)?.as_deref() == Some(generation.as_bytes()) {
                    txn.delete(key);
                }
                Ok(ChatReply::Recorded)
            }
            ChatOp::Callback(cb) => self.chat_callback(txn, cb, now),
            ChatOp::Escalation {
                id,
                platform,
                attempt,
                result,
            } => self.escalation_posted(txn, &id, platform, attempt, result, now),
        }
    }

    pub(super) fn chat_callback(
        &mut self,
        txn: &mut Txn,
        cb: ChatCallback,
        now: DateTime<Utc>,
    ) -> Result<ChatReply, StoreError> {
        let store = self.parts.store.clone();
        let links = txn
            .get_json::<ActionRequest>(&store, &keys::action(&cb.approval_id))?
            .map(|a| Self::links(&a))
            .unwrap_or_default();
        let user = cb.verdict.as_ref().ok().map(|v| v.user.clone());
        let record = |txn: &mut Txn, outcome: &str, reason: Option<&str>, message: &str| {
            txn.audit(
                AuditKind::ChatCallback,
                links.clone(),
                now,
                json!({
                    "platform": cb.platform, "outcome": outcome, "reason": reason,
                    "message": message, "platform_user": cb.platform_user, "user": user,
                    "approval_id": cb.approval_id, "decision": cb.decision, "detail": cb.detail,
                }),
            )
        };
        if let Some(k) = &cb.replay_key {
            let key = keys::chat_replay(cb.platform, k);
            if txn.get(&store, &key)?.is_some() {
                let msg = "this callback was already received; a replay changes nothing";
                record(txn, "refused", Some("replayed"), msg)?;
                return Ok(ChatReply::Refused("replayed", msg.into()));
            }
            txn.put_json(key, &(now + cb.replay_ttl))?;
        }
        match &cb.verdict {
            Err((code, msg)) => {
                record(txn, "refused", Some(code), msg)?;
                Ok(ChatReply::Refused(code, msg.clone()))
            }
            Ok(vote) => {
                // The vote record comes first; the callback record then says how it ended.
                let result = self.vote(txn, vote)?;
                match &result {
                    Ok(_) => record(txn, "accepted", None, "")?,
                    Err(e) => record(txn, "refused", Some("vote_refused"), &e.to_string())?,
                };
                Ok(ChatReply::Voted(Box::new(result)))
            }
        }
    }

    /// Forgets chat callback ids whose replay window is over.
    pub(super) fn prune_chat_replays(
        &mut self,
        txn: &mut Txn,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let store = self.parts.store.clone();
        for (key, until) in
            store.scan_json::<DateTime<Utc>>(keys::CHAT_REPLAY_PREFIX, None, 100_000)?
        {
            // The scan sees sled; the commit in flight (or this batch) may have renewed the
            // guard since, so the decision is taken on the value read through the transaction.
            if until <= now
                && txn
                    .get_json::<DateTime<Utc>>(&store, &key)?
                    .is_some_and(|until| until <= now)
            {
                txn.delete(key);
            }
        }
        Ok(())
    }
}
