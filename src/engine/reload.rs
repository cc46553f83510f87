//! Event `ReloadPolicies`: a policy set recorded before it is put in force.
//!
//! Owns: recording a reload (hash, files, problems) in the batch, and installing the new set only
//! after that batch has committed, so the set in force always matches the audit log.

use super::*;

/// Result of a policy reload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadOutcome {
    pub ok: bool,
    /// The hash now in force.
    pub policy_hash: String,
    pub problems: Vec<PolicyProblem>,
}

impl Engine {
    /// Loads the policy directory and records the outcome; the new set (or the failure) takes
    /// effect only after the batch commits, so what is in force always matches the audit log.
    pub(super) fn reload(
        &mut self,
        txn: &mut Txn,
        trigger: &str,
    ) -> Result<ReloadOutcome, StoreError> {
        let now = (self.parts.clock)();
        let before = self.parts.policies.current().hash.clone();
        let outcome = match policy::load_dir(&self.parts.policies_dir) {
            Ok(engine) => {
                Self::keep_policy_set(&self.parts.store, txn, &engine)?;
                txn.audit(
                    AuditKind::PolicyReloaded,
                    Links::default(),
                    now,
                    json!({"trigger": trigger, "previous_hash": before, "policy_hash": engine.hash, "files": engine.files, "policies": engine.policy_count()}),
                )?;
                let outcome = ReloadOutcome {
                    ok: true,
                    policy_hash: engine.hash.clone(),
                    problems: vec![],
                };
                self.reloaded = Some(Ok((Arc::new(engine), trigger.to_string())));
                outcome
            }
            Err(problems) => {
                txn.audit(
                    AuditKind::PolicyReloadFailed,
                    Links::default(),
                    now,
                    json!({"trigger": trigger, "policy_hash_in_force": before, "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
                )?;
                self.reloaded = Some(Err((problems.clone(), trigger.to_string())));
                ReloadOutcome {
                    ok: false,
                    policy_hash: before,
                    problems,
                }
            }
        };
        Ok(outcome)
    }

    /// Keeps the texts of a policy set in the store, once per hash (`ps/<hash>`), in the
    /// transaction that records a reload or the first decisions made with it: every decision
    /// record's `policy_hash` then names a set that `cordon replay` can load again.
    pub(super) fn keep_policy_set(
        store: &crate::store::Store,
        txn: &mut Txn,
        engine: &policy::PolicyEngine,
    ) -> Result<(), StoreError> {
        let key = crate::store::policy_set_key(&engine.hash);
        if txn.get(store, &key)?.is_none() {
            txn.put_json(key, &*engine.source)?;
        }
        Ok(())
    }

    /// Applies a recorded reload: after the commit that recorded it succeeded.
    pub(super) fn apply_reload(&mut self) {
        let m = &self.parts.metrics;
        match self.reloaded.take() {
            Some(Ok((engine, trigger))) => {
                tracing::info!(trigger, policy_hash = %engine.hash, policies = engine.policy_count(), "policy set reloaded");
                m.policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "ok".into(),
                    })
                    .inc();
                m.policy_reload_failed.set(0);
                self.parts.policies.install(engine);
            }
            Some(Err((problems, trigger))) => {
                for p in &problems {
                    tracing::error!(trigger, problem = %p, "policy reload failed; the previous policy set stays in force");
                }
                m.policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "failed".into(),
                    })
                    .inc();
                m.policy_reload_failed.set(1);
                self.parts.policies.record_failure(problems);
            }
            None => {}
        }
    }
}
