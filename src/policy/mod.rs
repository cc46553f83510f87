//! The control plane: Cedar policies decide each step's tier and each approval vote.
//!
//! Owns: loading `policies/` (every `*.cedar` file, the schema `cordon.cedarschema`, entity files
//! `*.entities.json`), strict validation with `file:line` errors, the `@id`/`@reason` annotation
//! vocabulary, tier derivation (the smallest k in 0, 1, 2 approvals that Cedar allows), vote
//! authorisation, the pre-execution re-check, the decision records that make every decision
//! replayable, and proofs of properties over every request (`prove`). This is the only module that calls Cedar. It fails closed: any
//! evaluation error makes the answer Deny/`denied`.

mod case_op;
mod load;
pub mod prove;
mod record;
pub mod replay;
mod request;
pub mod shadow;
pub mod testfile;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, PolicySet,
    Request, Schema,
};
// Cedar's own value types, behind the public API's `From` conversions: the decision path builds
// values directly instead of evaluating an expression per probe (see `cedar_value`). Pinned to
// the same exact version as `cedar-policy`.
use cedar_policy_core as cedar_core;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use smol_str::SmolStr;

use crate::action::{ActionKind, Target, TargetKind, Tier};
use crate::alert::{AlertFields, Entity as AlertEntity, EntityKind};
use crate::enrich::EnrichmentReport;

pub use case_op::{CASE_ACTIONS, CaseOpDecision, CaseOpRequest};
pub use load::{LoadError, PolicyProblem, load_dir, load_recorded};
pub use record::{
    PolicySource, RequestRecord, SharedInputs, SharedPart, SharedRefs, SourceFile, TypedStep,
};
pub use request::{
    CaseInfo, StepInfo, alert_context, default_attrs, enriched_attrs, step_context, target_type,
    time_context, with_step,
};

/// The annotations a policy may carry. Cedar does not check annotations, so cordon does: a
/// typo (`@reaosn`) is an error, not a silently missing explanation.
pub const ANNOTATIONS: [&str; 3] = ["id", "reason", "approval_timeout_mins"];

/// Metadata of one loaded policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyMeta {
    pub id: String,
    pub reason: String,
    pub effect: String,
    pub file: String,
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_mins: Option<u64>,
    /// The policy's text mentions `approvals`; a forbid that does not cannot be lifted by
    /// approvals, so tier derivation stops at the first probe it denies.
    #[serde(default)]
    pub uses_approvals: bool,
}

/// A loaded, validated policy set with its schema and static entities. Immutable; a reload
/// builds a new one.
pub struct PolicyEngine {
    /// SHA-256 over every file that went into it (policies, schema, entity files).
    pub hash: String,
    /// The texts it was loaded from, as the audit store keeps them (`store::policysets`).
    pub source: Arc<PolicySource>,
    pub files: Vec<String>,
    pub loaded_at: DateTime<Utc>,
    schema: Schema,
    /// The whole validated set (what `prove` reasons about).
    policies: PolicySet,
    /// The same policies split by the action they can apply to (see `load`).
    by_action: BTreeMap<String, PolicySet>,
    /// Users and groups from entity files.
    static_entities: Entities,
    /// Static attributes of resources (hosts, accounts, cloud resources) from entity files,
    /// keyed by entity uid text; enrichment overrides them.
    static_attrs: BTreeMap<String, Map<String, Value>>,
    /// Known users (ids) for vote checks.
    users: std::collections::BTreeSet<String>,
    /// (platform, platform user id) → cordon user, from the users' chat id attributes.
    chat_ids: BTreeMap<(String, String), String>,
    meta: BTreeMap<String, PolicyMeta>,
    authorizer: Authorizer,
}

/// One evaluation with a given number of approvals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub approvals: u8,
    /// `allow` or `deny`.
    pub decision: String,
    pub determining: Vec<String>,
    pub errors: Vec<String>,
}

/// A determining policy, as shown to approvers and auditors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Determining {
    pub id: String,
    pub effect: String,
    pub reason: String,
    pub file: String,
    pub line: usize,
}

/// Everything needed to replay a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRecord {
    pub policy_hash: String,
    /// principal, action, resource, context (with `approvals` as probed last), entities used.
    pub request: RequestRecord,
    pub probes: Vec<Probe>,
    pub tier: Tier,
    pub determining: Vec<Determining>,
    pub errors: Vec<String>,
    /// Human reasons from the determining policies' `@reason` (or why it was denied).
    pub reasons: Vec<String>,
    /// Smallest `@approval_timeout_mins` among the determining policies, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_mins: Option<u64>,
}

/// What a step request is made of (built from a case, an alert and its enrichment, or from a
/// policy test file).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    pub playbook: String,
    pub family: String,
    pub step: String,
    pub kind: ActionKind,
    pub target: Target,
    /// Attributes of the resource entity (complete for its type; see `default_attrs`).
    pub resource_attrs: Map<String, Value>,
    /// `context` without `approvals`.
    pub context: Map<String, Value>,
}

/// A vote to be authorised.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRequest {
    pub user: String,
    pub channel: String,
    pub identity: String,
    /// Distinct authorised approvals before this vote.
    pub approvals: u8,
    pub approval: ApprovalInfo,
}

/// The approval request a vote is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    pub approval_id: String,
    pub action_kind: ActionKind,
    pub target: Target,
    pub requester: String,
    pub case_id: String,
    pub tier: Tier,
    pub environment: String,
    pub criticality: String,
}

/// Outcome of a vote check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VoteDecision {
    pub allowed: bool,
    /// Why not, when refused before or by Cedar.
    pub refusal: Option<String>,
    pub record: DecisionRecord,
}

pub const NS: &str = "Cordon";

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    // Type names are parsed once per process; ids are taken verbatim (no escaping or parsing).
    static TYPES: std::sync::OnceLock<BTreeMap<&'static str, cedar_policy::EntityTypeName>> =
        std::sync::OnceLock::new();
    let types = TYPES.get_or_init(|| {
        [
            "Action",
            "User",
            "Group",
            "Playbook",
            "Agent",
            "Case",
            "Host",
            "Account",
            "Indicator",
            "CloudResource",
            "ApprovalRequest",
        ]
        .into_iter()
        .filter_map(|t| {
            Some((
                t,
                cedar_policy::EntityTypeName::from_str(&format!("{NS}::{t}")).ok()?,
            ))
        })
        .collect()
    });
    let ty = types
        .get(ty)
        .ok_or_else(|| format!("unknown entity type {ty}"))?;
    Ok(EntityUid::from_type_name_and_id(
        ty.clone(),
        cedar_policy::EntityId::new(id),
    ))
}

fn action_uid(name: &str) -> Result<EntityUid, String> {
    uid("Action", name)
}

impl PolicyEngine {
    /// Complete resource attributes: defaults (every value unknown), then the static
    /// attributes from entity files, then `known` (enrichment, or a test's values) on top.
    pub fn complete_attrs(&self, target: &Target, known: Map<String, Value>) -> Map<String, Value> {
        let mut m = default_attrs(target.kind, &target.id);
        let uid_text = format!(
            "{NS}::{}::{}",
            target_type(target.kind),
            serde_json::to_string(&target.id).unwrap_or_default()
        );
        if let Some(st) = self.static_attrs.get(&uid_text) {
            for (k, v) in st {
                m.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in known {
            m.insert(k, v);
        }
        m
    }

    pub fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }

    /// `user` is a user of the entity files (`Cordon::User`).
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains(user)
    }

    /// The cordon user a chat platform's user id maps to (`slack`, `mattermost`, `teams`;
    /// `oidc`: an email address, compared in ASCII lowercase).
    pub fn chat_user(&self, platform: &str, platform_user: &str) -> Option<&str> {
        self.chat_ids
            .get(&(platform.to_string(), load::id_key(platform, platform_user)))
            .map(String::as_str)
    }

    pub fn policy_count(&self) -> usize {
        self.meta.len()
    }

    /// Derives the tier of a step: probes `approvals` = 0, 1, 2 and takes the first Allow.
    /// Any error in a probe makes the step `denied` (fail closed).
    /// Takes the request by value: its JSON moves into the decision record.
    pub fn decide_step(&self, req: StepRequest) -> DecisionRecord {
        let mut probes = Vec::new();
        let mut tier = Tier::Denied;
        let mut determining: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        let step = self.typed_step(req);
        let prepared = self.prepare_step(&step);
        let mut last_k = 0;
        for k in 0..=2u8 {
            let probe = self.probe_step(&step, &prepared, k);
            last_k = k;
            let allow = probe.decision == "allow";
            let has_errors = !probe.errors.is_empty();
            if has_errors {
                errors.extend(probe.errors.iter().cloned());
            }
            let det = probe.determining.clone();
            probes.push(probe);
            if has_errors {
                determining = det;
                break; // fail closed: an erroring policy may be a forbid that did not fire
            }
            if allow {
                // The permits that allowed it, plus the forbids that raised the tier on the way
                // (so an approver reads both "one approver" and "production needs two").
                tier = Tier::from_approvals(Some(k));
                determining
                    .retain(|id: &String| self.meta.get(id).is_some_and(|m| m.effect == "forbid"));
                for id in det {
                    if !determining.contains(&id) {
                        determining.push(id);
                    }
                }
                break;
            }
            // A forbid whose condition does not mention approvals denies at every k: stop.
            let final_deny = det.iter().any(|id| {
                self.meta
                    .get(id)
                    .is_some_and(|m| m.effect == "forbid" && !m.uses_approvals)
            });
            for id in det {
                if !determining.contains(&id) {
                    determining.push(id);
                }
            }
            if final_deny {
                break;
            }
        }
        drop(prepared);
        let request = RequestRecord::Step(TypedStep {
            approvals: last_k,
            ..step
        });
        self.record(request, probes, tier, determining, errors)
    }

    /// The pre-execution check: evaluates the step once with the real number of approvals.
    /// `allowed` only for an Allow without errors.
    pub fn recheck(&self, req: StepRequest, approvals: u8) -> (bool, DecisionRecord) {
        let step = self.typed_step(req);
        let prepared = self.prepare_step(&step);
        let probe = self.probe_step(&step, &prepared, approvals);
        drop(prepared);
        let request = RequestRecord::Step(TypedStep { approvals, ..step });
        let allowed = probe.decision == "allow" && probe.errors.is_empty();
        let errors = probe.errors.clone();
        let det = probe.determining.clone();
        let tier = if allowed {
            Tier::from_approvals(Some(approvals.min(2)))
        } else {
            Tier::Denied
        };
        (
            allowed,
            self.record(request, vec![probe], tier, det, errors),
        )
    }

    /// Authorises a vote. The requester never counts, and an approver unknown to the entity
    /// files is refused, whatever the policies say.
    pub fn authorize_vote(&self, v: &VoteRequest) -> VoteDecision {
        let request_json = RequestRecord::Json(self.vote_request_json(v));
        let refuse = |reason: String, record: DecisionRecord| VoteDecision {
            allowed: false,
            refusal: Some(reason),
            record,
        };
        if v.user == v.approval.requester {
            let rec = self.record(request_json, vec![], Tier::Denied, vec![], vec![]);
            return refuse("the requester cannot approve their own request".into(), rec);
        }
        if !self.users.contains(&v.user) {
            let rec = self.record(request_json, vec![], Tier::Denied, vec![], vec![]);
            return refuse(format!("{:?} is not a known approver", v.user), rec);
        }
        let probe = match self.eval_vote(v) {
            Ok(p) => p,
            Err(e) => Probe {
                approvals: v.approvals,
                decision: "deny".into(),
                determining: vec![],
                errors: vec![e],
            },
        };
        let allowed = probe.decision == "allow" && probe.errors.is_empty();
        let errors = probe.errors.clone();
        let det = probe.determining.clone();
        let rec = self.record(
            request_json,
            vec![probe],
            if allowed { Tier::Auto } else { Tier::Denied },
            det,
            errors,
        );
        if allowed {
            VoteDecision {
                allowed: true,
                refusal: None,
                record: rec,
            }
        } else {
            let why = if rec.reasons.is_empty() {
                "no policy permits this approver to approve this request".to_string()
            } else {
                rec.reasons.join("; ")
            };
            refuse(why, rec)
        }
    }

    fn record(
        &self,
        request: RequestRecord,
        probes: Vec<Probe>,
        tier: Tier,
        determining: Vec<String>,
        errors: Vec<String>,
    ) -> DecisionRecord {
        let determining: Vec<Determining> = determining
            .iter()
            .map(|id| match self.meta.get(id) {
                Some(m) => Determining {
                    id: m.id.clone(),
                    effect: m.effect.clone(),
                    reason: m.reason.clone(),
                    file: m.file.clone(),
                    line: m.line,
                },
                None => Determining {
                    id: id.clone(),
                    effect: "?".into(),
                    reason: String::new(),
                    file: String::new(),
                    line: 0,
                },
            })
            .collect();
        let mut reasons: Vec<String> = determining
            .iter()
            .map(|d| d.reason.clone())
            .filter(|r| !r.is_empty())
            .collect();
        if !errors.is_empty() {
            reasons.push("denied: policy evaluation failed (fail closed)".into());
        } else if tier == Tier::Denied && determining.is_empty() {
            reasons.push("denied: no policy permits this action at any approval tier".into());
        }
        let approval_timeout_mins = determining
            .iter()
            .filter_map(|d| self.meta.get(&d.id).and_then(|m| m.approval_timeout_mins))
            .min();
        DecisionRecord {
            policy_hash: self.hash.clone(),
            request,
            probes,
            tier,
            determining,
            errors,
            reasons,
            approval_timeout_mins,
        }
    }

    fn typed_step(&self, req: StepRequest) -> TypedStep {
        TypedStep {
            playbook: req.playbook,
            family: req.family,
            kind: req.kind,
            target: req.target,
            // Complete (`complete_attrs`): defaults < entity files < enrichment.
            resource_attrs: req.resource_attrs,
            context: req.context,
            approvals: 0,
            shared: None,
        }
    }

    /// Builds what does not change between probes: the principal and resource entities.
    /// cordon constructs them itself (the schema validated the policies at load), so they are
    /// not re-validated per request; a value of the wrong type makes evaluation error, which
    /// fails closed.
    fn prepare_step(&self, step: &TypedStep) -> Result<Prepared, String> {
        let action = action_uid(step.kind.as_str())?;
        // An agent's proposal (`agent:<name>`) has the agent as principal, with no attributes.
        let (p_type, p_id, p_attrs) = match step.principal() {
            ("Agent", name) => ("Agent", name, vec![]),
            (_, name) => (
                "Playbook",
                name,
                vec![("family".into(), step.family.as_str().into())],
            ),
        };
        let p_uid = uid(p_type, p_id)?;
        let r_uid = uid(target_type(step.target.kind), &step.target.id)?;
        let entity = |uid: &EntityUid, attrs: Vec<(SmolStr, cedar_core::ast::Value)>| {
            cedar_core::ast::Entity::new_with_attr_partial_value(
                uid.as_ref().clone(),
                attrs.into_iter().map(|(k, v)| (k, v.into())),
                Default::default(),
                Default::default(),
                [],
            )
        };
        let p = entity(&p_uid, p_attrs);
        let rattrs = step
            .resource_attrs
            .iter()
            .map(|(k, v)| Ok((k.into(), cedar_value(v)?)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| format!("resource entity: {e}"))?;
        let r = entity(&r_uid, rattrs);
        // Neither entity has parents, so there is no transitive closure to compute.
        let entities = cedar_core::entities::Entities::from_entities(
            [p, r],
            None::<&cedar_core::entities::NoEntitiesSchema>,
            cedar_core::entities::TCComputation::AssumeAlreadyComputed,
            cedar_core::extensions::Extensions::all_available(),
        )
        .map_err(|e| format!("entities: {e}"))?
        .into();
        // The context without `approvals`, evaluated once and completed per probe.
        let mut base = BTreeMap::new();
        for (k, v) in &step.context {
            if k != "approvals" {
                base.insert(
                    k.into(),
                    cedar_value(v).map_err(|e| format!("context: {e}"))?,
                );
            }
        }
        Ok(Prepared {
            action,
            p_uid,
            r_uid,
            entities,
            base,
        })
    }
    fn probe_step(
        &self,
        step: &TypedStep,
        prepared: &Result<Prepared, String>,
        approvals: u8,
    ) -> Probe {
        let result = prepared.as_ref().map_err(Clone::clone).and_then(|p| {
            // The base values are shared (`Arc`s inside), so this copies a few pointers.
            let mut ctx = p.base.clone();
            ctx.insert("approvals".into(), i64::from(approvals).into());
            let ctx = Context::from(cedar_core::ast::Context::Value(Arc::new(ctx)));
            let request = Request::new(
                p.p_uid.clone(),
                p.action.clone(),
                p.r_uid.clone(),
                ctx,
                None,
            )
            .map_err(|e| format!("request: {e}"))?;
            Ok(self.to_probe(step.kind.as_str(), &request, &p.entities, approvals))
        });
        result.unwrap_or_else(|e| Probe {
            approvals,
            decision: "deny".into(),
            determining: vec![],
            errors: vec![e],
        })
    }

    fn vote_request_json(&self, v: &VoteRequest) -> Value {
        let a = &v.approval;
        json!({
            "principal": {"type": format!("{NS}::User"), "id": v.user},
            "action": {"type": format!("{NS}::Action"), "id": "approve"},
            "resource": {"type": format!("{NS}::ApprovalRequest"), "id": a.approval_id},
            "context": {"channel": v.channel, "identity": v.identity, "approvals": v.approvals},
            "entities": [self.approval_entity_json(a)],
        })
    }

    fn approval_entity_json(&self, a: &ApprovalInfo) -> Value {
        json!({
            "uid": {"type": format!("{NS}::ApprovalRequest"), "id": a.approval_id},
            "attrs": {
                "action_kind": a.action_kind.as_str(),
                "target_type": a.target.kind.as_str(),
                "target": a.target.id,
                "requester": a.requester,
                "case_id": a.case_id,
                "tier": a.tier.as_str(),
                "environment": a.environment,
                "criticality": a.criticality,
            },
            "parents": [],
        })
    }

    fn eval_vote(&self, v: &VoteRequest) -> Result<Probe, String> {
        let resource = self.approval_entity_json(&v.approval);
        let context =
            json!({"channel": v.channel, "identity": v.identity, "approvals": v.approvals});
        let principal = uid("User", &v.user)?;
        let action = action_uid("approve")?;
        let res_entity = Entity::from_json_value(resource, Some(&self.schema))
            .map_err(|e| format!("approval entity: {e}"))?;
        let res_uid = res_entity.uid();
        let entities = self
            .static_entities
            .clone()
            .add_entities([res_entity], Some(&self.schema))
            .map_err(|e| format!("entities: {e}"))?;
        let ctx = Context::from_json_value(context, Some((&self.schema, &action)))
            .map_err(|e| format!("context: {e}"))?;
        let request = Request::new(principal, action, res_uid, ctx, Some(&self.schema))
            .map_err(|e| format!("request: {e}"))?;
        Ok(self.to_probe("approve", &request, &entities, v.approvals))
    }

    fn to_probe(
        &self,
        action: &str,
        request: &Request,
        entities: &Entities,
        approvals: u8,
    ) -> Probe {
        let Some(set) = self.by_action.get(action) else {
            return Probe {
                approvals,
                decision: "deny".into(),
                determining: vec![],
                errors: vec![format!("no policy index for action {action:?}")],
            };
        };
        let resp = self.authorizer.is_authorized(request, set, entities);
        // Cedar gives both as sets (in no fixed order): sorted, a decision reads, and replays,
        // the same every time.
        let mut determining: Vec<String> = resp
            .diagnostics()
            .reason()
            // The id as given (`Display` escapes it, and would not match `meta` for every id).
            .map(|id| AsRef::<str>::as_ref(id).to_owned())
            .collect();
        determining.sort_unstable();
        let mut errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        errors.sort_unstable();
        let decision = match resp.decision() {
            CedarDecision::Allow => "allow",
            CedarDecision::Deny => "deny",
        };
        Probe {
            approvals,
            decision: decision.into(),
            determining,
            errors,
        }
    }
}

/// Entities of one step, shared by its probes.
struct Prepared {
    action: EntityUid,
    p_uid: EntityUid,
    r_uid: EntityUid,
    entities: Entities,
    base: BTreeMap<SmolStr, cedar_core::ast::Value>,
}

/// A JSON value as a Cedar value (strings, integers, booleans, arrays as sets, objects as
/// records), built directly: the same value Cedar's evaluator makes of the equivalent restricted
/// expression (a property test checks this), without building and then evaluating an
/// expression tree per probe, which was most of the cost of a decision.
fn cedar_value(v: &Value) -> Result<cedar_core::ast::Value, String> {
    use cedar_core::ast::Value as V;
    Ok(match v {
        Value::String(s) => V::from(s.as_str()),
        Value::Bool(b) => V::from(*b),
        Value::Number(n) => V::from(n.as_i64().ok_or_else(|| format!("{n} is not an integer"))?),
        Value::Array(items) => V::set(
            items
                .iter()
                .map(cedar_value)
                .collect::<Result<Vec<_>, _>>()?,
            None,
        ),
        Value::Object(m) => V::record(
            m.iter()
                .map(|(k, v)| Ok((k.as_str(), cedar_value(v)?)))
                .collect::<Result<Vec<_>, String>>()?,
            None,
        ),
        Value::Null => return Err("null is not a Cedar value".into()),
    })
}

/// The policy set in force, swapped whole on reload. Readers take an `Arc` and keep deciding
/// with it even while a reload runs.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<RwLock<State>>,
}

struct State {
    current: Arc<PolicyEngine>,
    last_error: Option<Vec<PolicyProblem>>,
}

impl Policies {
    pub fn new(engine: PolicyEngine) -> Policies {
        Policies {
            inner: Arc::new(RwLock::new(State {
                current: Arc::new(engine),
                last_error: None,
            })),
        }
    }

    pub fn current(&self) -> Arc<PolicyEngine> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone()
    }

    /// Problems of the last failed reload (cleared by a successful one).
    pub fn last_error(&self) -> Option<Vec<PolicyProblem>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
    }

    /// Puts a loaded set in force (the engine does this only once the reload is recorded).
    pub fn install(&self, engine: Arc<PolicyEngine>) {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        s.current = engine;
        s.last_error = None;
    }

    /// Remembers a failed reload for `/readyz`; the set in force stays.
    pub fn record_failure(&self, problems: Vec<PolicyProblem>) {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        s.last_error = Some(problems);
    }
}

#[cfg(test)]
mod tests;
