//! The values an action's request templates are filled with.
//!
//! Owns: the closed set of placeholders (`target`, `ioc.*`, `idempotency_*`, case and alert
//! fields, `param.*` with the connector's defaults under the step's parameters, and what was
//! captured on record), built from the stored action alone so a resumed run renders the same
//! requests.

use super::*;

/// Why an action's placeholder values cannot be built: nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsError {
    #[error("indicator {0:?} has no kind")]
    IndicatorWithoutKind(String),
    #[error("indicator kind {0:?} cannot be blocked")]
    UnblockableIndicator(String),
}

/// Placeholder values for one action on one connector.
pub fn build_vars(store: &Store, a: &ActionRequest, c: &Connector) -> Result<Vars, VarsError> {
    let mut v = Vars::default();
    let exec = a.execution.as_ref();
    let intent_at: DateTime<Utc> = exec.map(|e| e.intent_at).unwrap_or(a.updated_at);
    v.set("target.kind", a.target.kind.as_str());
    if a.target.kind == TargetKind::Indicator {
        let (kind, value) = a
            .target
            .id
            .split_once(':')
            .ok_or_else(|| VarsError::IndicatorWithoutKind(a.target.id.clone()))?;
        let ioc_kind = match kind {
            "ip" if value.contains(':') => "ip6",
            "ip" => "ip",
            "domain" => "domain",
            "url" => "url",
            "file_hash" => match value.len() {
                32 => "md5",
                40 => "sha1",
                _ => "sha256",
            },
            other => return Err(VarsError::UnblockableIndicator(other.to_string())),
        };
        v.set("target", value);
        v.set("ioc.kind", ioc_kind);
        v.set("ioc.value", value);
        // Without an entry, a template naming {ioc.type} fails to render: the connector
        // cannot block this kind of indicator, and nothing is sent.
        if let Some(t) = c.spec.ioc_types.get(ioc_kind) {
            v.set("ioc.type", t.clone());
        }
    } else {
        v.set("target", a.target.id.clone());
    }
    v.set("idempotency_key", a.idempotency_key.clone());
    v.set(
        "idempotency_label",
        format!(
            "cordon-{}",
            &a.idempotency_key[..a.idempotency_key.len().min(24)]
        ),
    );
    v.set("case_id", a.case_id.clone());
    v.set("action_id", a.action_id.clone());
    v.set("alert_id", a.alert_id.clone());
    v.set("playbook", a.playbook.clone());
    v.set("step", a.step.clone());
    let title = engine::read::case(store, &a.case_id)
        .ok()
        .flatten()
        .map(|c| c.title)
        .unwrap_or_default();
    v.set("summary", title);
    v.set(
        "reason",
        if a.reasons.is_empty() {
            format!("{} by cordon playbook {}", a.kind, a.playbook)
        } else {
            a.reasons.join("; ")
        },
    );
    v.set(
        "intent_time",
        intent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let mut params: BTreeMap<String, String> = c.spec.params.clone();
    for (k, x) in &a.parameters {
        params.insert(
            k.clone(),
            match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        );
    }
    let days: i64 = params
        .get("expiry_days")
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
        .clamp(1, 3650);
    v.set(
        "expires_at",
        (intent_at + chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    for (k, x) in params {
        v.set(format!("param.{k}"), x);
    }
    if let Some(e) = exec {
        for (k, x) in &e.vendor {
            if let Some(w) = k.strip_prefix("write.") {
                v.set(format!("write.{w}"), x.clone());
            } else {
                v.set(format!("vendor.{k}"), x.clone());
            }
        }
    }
    Ok(v)
}
