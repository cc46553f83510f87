//! Live shadow policies: a candidate set decided beside the set in force for every step.
//!
//! Owns: the `[policy.shadow]` config section (`dir`), checking that its set loads (every problem
//! reported by `cordon check` and at start, as for `policies_dir`) and loading it. The engine
//! records each shadow decision (`shadow_decision`, with the tier in force and whether they
//! agree) and counts `cordon_shadow_decisions_total{action,outcome}`; nothing it decides is
//! acted on. The shadow set is loaded at start (a change needs a restart); `cordon simulate
//! --shadow` reads the records back.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::{PolicyEngine, load_dir};
use crate::config::Problem;

/// `[policy.shadow]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ShadowConfig {
    /// The candidate policy directory (same layout as `policies_dir`).
    pub dir: PathBuf,
}

/// Every problem of the configured shadow set (none when there is none).
pub fn problems(cfg: Option<&ShadowConfig>) -> Vec<Problem> {
    let Some(c) = cfg else {
        return vec![];
    };
    match load_dir(&c.dir) {
        Ok(_) => vec![],
        Err(ps) => ps
            .into_iter()
            .map(|p| {
                let file = if p.line > 0 {
                    format!("{}:{}:{}", p.file, p.line, p.column)
                } else {
                    p.file
                };
                Problem::new(file, "policy.shadow.dir", p.message)
            })
            .collect(),
    }
}

/// The shadow set, if one is configured and loads (a set that stopped loading since the config
/// was checked is logged and left out: shadow decisions never affect what runs).
pub fn load(cfg: Option<&ShadowConfig>) -> Option<Arc<PolicyEngine>> {
    let c = cfg?;
    match load_dir(&c.dir) {
        Ok(e) => {
            tracing::info!(dir = %c.dir.display(), policy_hash = %e.hash, "shadow policy set loaded");
            Some(Arc::new(e))
        }
        Err(ps) => {
            for p in &ps {
                tracing::error!(problem = %p, "the shadow policy set does not load; running without it");
            }
            None
        }
    }
}
