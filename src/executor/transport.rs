//! Talking to a vendor within a run: one exchange with its evidence recorded, read-only calls
//! with retries, probes, and the pause between attempts.
//!
//! Owns: the retry budget (bounded across restarts: it counts the retries on record), backoff
//! with full jitter that honours the vendor's wait, and reading a probe's answer into a state
//! with its captures recorded.

use super::*;
use crate::connector::error::RenderError;

/// Why a read-only call (resolve, probe, poll, verify) got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("the vendor redirected ({status}) to {location:?}; redirects are never followed")]
    Redirected { status: u16, location: String },
    /// The retry budget ran out; the last reason.
    #[error("gave up: {0}")]
    GaveUp(String),
    /// A status that is not an answer to read (a 4xx other than 429; 401 and 403 are `Auth`):
    /// an error page says nothing about the target's state.
    #[error("the vendor answered {status}, not a state to read: nothing is concluded from it")]
    Refused { status: u16 },
    /// A 2xx whose body is not a JSON object or list (an HTML page from a proxy, plain text,
    /// an empty body): nothing is concluded from it.
    #[error("the vendor answered {status} with {what}, not JSON: nothing is concluded from it")]
    NotJson { status: u16, what: String },
}

/// What a read answer is, when it is not something to read state from: a status outside 2xx
/// (429 and 5xx are retried before this) or a body that is not a JSON object or list.
fn unreadable(a: &Answer) -> Option<ReadError> {
    if !(200..300).contains(&a.status) {
        return Some(ReadError::Refused { status: a.status });
    }
    if a.json.is_object() || a.json.is_array() {
        return None;
    }
    let content_type = a.header("content-type").unwrap_or("no content type");
    let what = match &a.json {
        serde_json::Value::Null => format!("an empty body ({content_type})"),
        _ => format!("a body of type {:?}", crate::ingest::clip(content_type, 64)),
    };
    Some(ReadError::NotJson {
        status: a.status,
        what,
    })
}

impl Run {
    /// One exchange, with its evidence recorded.
    pub(super) async fn exchange(
        &mut self,
        rt: &client::Runtime,
        phase: &'static str,
        r: &Rendered,
        update: ExecUpdate,
    ) -> Result<client::Exchange, Halt> {
        // Shutdown does not wait for a slow vendor: the one place a vendor call is dropped
        // half-way (an exception to "never drop a side-effecting call", ARCHITECTURE.md). It is
        // written down; the phase on record (`writing` after `write_intent`) makes the next
        // start resolve a write by probe, never by a resend.
        let ex = tokio::select! {
            _ = self.s.cancel.cancelled() => {
                let mut request = r.describe();
                rt.redact(&mut request);
                let body = json!({
                    "phase": phase,
                    "request": request,
                    "why": "shutdown: the call was in flight and was dropped; its outcome is unknown",
                    "resolution": "the next start resumes the action and, for a write, probes the target before anything is sent again",
                });
                // The engine drains what it is sent before it stops; if it cannot record this,
                // the phase on record still decides the resume.
                let _ = self.record(AuditKind::CallInterrupted, body, ExecUpdate::default()).await;
                return Err(Halt::Shutdown);
            }
            ex = rt.send(phase, r) => ex,
        };
        let mut ev = ex.evidence.clone();
        ev["kind"] = json!(self.a.kind);
        ev["target"] = json!(self.a.target);
        ev["outcome"] = json!(match &ex.outcome {
            Outcome::Answer(_) => "answered",
            Outcome::NotSent(_) => "not_sent",
            Outcome::Uncertain(_) => "unknown",
            Outcome::Redirect { .. } => "redirect_refused",
            Outcome::AuthFailed(_) => "auth_failed",
        });
        self.note(AuditKind::VendorExchange, ev, update);
        Ok(ex)
    }

    pub(super) async fn retry_pause(
        &mut self,
        c: &Connector,
        phase: &str,
        reason: &str,
        vendor_wait: Option<Duration>,
    ) -> Result<bool, Halt> {
        let r = &c.spec.retry;
        let retries = self.exec().retries;
        let budget = r.max_attempts.saturating_mul(3);
        if retries >= budget {
            return Ok(false);
        }
        if vendor_wait.is_some_and(|w| w > Duration::from_secs(r.max_wait_secs)) {
            return Ok(false);
        }
        let wait = backoff(r, retries, vendor_wait);
        self.record(
            AuditKind::Retry,
            json!({"phase": phase, "reason": reason, "retry": retries + 1, "budget": budget, "wait_ms": wait.as_millis() as u64, "vendor_asked_ms": vendor_wait.map(|w| w.as_millis() as u64)}),
            ExecUpdate {
                retry: true,
                ..Default::default()
            },
        )
        .await?;
        if !pause(&self.s.cancel, wait).await {
            return Err(Halt::Shutdown);
        }
        Ok(true)
    }

    /// A read-only call (resolve, probe, poll) with retries; `Err(reason)` when it cannot get
    /// an answer.
    pub(super) async fn read(
        &mut self,
        c: &Connector,
        rt: &client::Runtime,
        phase: &'static str,
        r: &RequestSpec,
    ) -> Result<Result<Answer, ReadError>, Halt> {
        let rendered = match c.render(r, &self.vars) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e.into())),
        };
        loop {
            let ex = self
                .exchange(rt, phase, &rendered, ExecUpdate::default())
                .await?;
            let (reason, wait) = match ex.outcome {
                Outcome::Answer(a) if a.status == 429 || a.status >= 500 => {
                    (format!("{phase} answered {}", a.status), ex.wait)
                }
                Outcome::Answer(a) => {
                    return Ok(match unreadable(&a) {
                        None => Ok(a),
                        Some(e) => Err(e),
                    });
                }
                Outcome::NotSent(r) | Outcome::Uncertain(r) => (format!("{phase}: {r}"), ex.wait),
                Outcome::AuthFailed(r) => return Ok(Err(ReadError::Auth(r))),
                Outcome::Redirect { status, location } => {
                    return Ok(Err(ReadError::Redirected { status, location }));
                }
            };
            if !self.retry_pause(c, phase, &reason, wait).await? {
                return Ok(Err(ReadError::GaveUp(reason)));
            }
        }
    }

    pub(super) async fn probe(
        &mut self,
        c: &Connector,
        rt: &client::Runtime,
        phase: &'static str,
        p: &Probe,
    ) -> Result<Result<ProbeState, ReadError>, Halt> {
        let ans = match self.read(c, rt, phase, &p.request).await? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let (state, observed, caps) = read_probe(p, &ans.json, self.exec().intent_at);
        let vendor: BTreeMap<String, String> = caps
            .into_iter()
            .filter(|(k, v)| self.exec().vendor.get(k) != Some(v))
            .collect();
        for (k, v) in &vendor {
            self.vars.set(format!("vendor.{k}"), v.clone());
        }
        self.observed = Some(observed.clone());
        self.note(
            AuditKind::ProbeResult,
            json!({"phase": phase, "state": state, "observed": observed, "status": ans.status}),
            ExecUpdate {
                vendor,
                ..Default::default()
            },
        );
        Ok(Ok(state))
    }
}
