//! Policy properties (`policies/properties/*.toml`), proven by `cordon policy prove`.
//!
//! Owns: the property-file format, turning each property into a Cedar question, and asking
//! Cedar's symbolic compiler (`cedar-policy-symcc`, the same Cedar version as the daemon) for
//! every request the schema allows, one request environment (principal type, action, resource
//! type) at a time. A property that does not hold comes back with a concrete counterexample
//! request (principal, action, resource, context, entities), which is re-evaluated with the
//! ordinary Cedar authorizer before it is reported. Analysis time only: the solver is a cvc5
//! executable (`CVC5`, else `cvc5` on `PATH`) run as a child process; the daemon never needs it.
//!
//! A property is one of:
//! - `never_allowed`: no request (of `actions`) for which the Cedar condition `when` holds is
//!   allowed. Checked as "the policy set implies `permit all` + `forbid … when { when }`".
//! - `always_allowed`: every request (of `actions`) for which `when` holds (default: every
//!   request) is allowed. Checked as "`permit … when { when }` implies the policy set".
//! - `never_errors`: no policy errors on any request (of `actions`).
//!
//! Tiers: cordon asks Cedar with `context.approvals` = 0, 1, 2 and takes the smallest allowed,
//! so "auto" is "allowed with `context.approvals == 0`" and "needs two people" is "never allowed
//! with `context.approvals < 2`".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Context, Decision, Entities, EntityUid, Expression, Policy, PolicySet, Request, RequestEnv,
    ValidationMode, Validator,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{NS, PolicyEngine};
use crate::config::{Problem, parse_toml_file};

/// How long cvc5 may spend on one query before it answers `unknown`.
const SOLVER_QUERY_LIMIT_MS: u64 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertyFile {
    #[serde(default)]
    property: Vec<PropertyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertyEntry {
    name: String,
    kind: Kind,
    /// Action names (without the `Cordon::Action::` prefix); absent = every action.
    #[serde(default)]
    actions: Option<Vec<String>>,
    /// A Cedar condition over `principal`, `action`, `resource` and `context`.
    #[serde(default)]
    when: Option<String>,
}

/// What a property claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NeverAllowed,
    AlwaysAllowed,
    NeverErrors,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NeverAllowed => "never_allowed",
            Kind::AlwaysAllowed => "always_allowed",
            Kind::NeverErrors => "never_errors",
        }
    }
}

/// One checked property, ready to prove.
#[derive(Debug, Clone)]
pub struct Property {
    pub file: String,
    pub name: String,
    pub kind: Kind,
    /// The actions it speaks about (bare names), in schema order.
    pub actions: BTreeSet<String>,
    /// The Cedar policies that state it (empty for `never_errors`).
    spec: Option<PolicySet>,
}

/// A request for which a property does not hold, in Cedar's JSON forms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Counterexample {
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// The request context (Cedar JSON).
    pub context: Value,
    /// The entity store (Cedar JSON entity list).
    pub entities: Value,
    /// `never_errors`: the policy that errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// What Cedar's ordinary authorizer says about a counterexample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    pub allowed: bool,
    /// Policies that errored.
    pub errors: Vec<String>,
}

/// The verdict on one property.
#[derive(Debug, Clone)]
pub enum Verdict {
    Proven,
    /// Counterexamples (one per request environment where it fails), each already confirmed
    /// by the authorizer.
    Refuted(Vec<Counterexample>),
    /// The solver could not decide (time limit), or a counterexample did not re-check.
    Unknown(String),
}

/// One property's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: String,
    pub name: String,
    pub kind: Kind,
    /// Request environments checked.
    pub envs: usize,
    pub verdict: Verdict,
}

/// Why a proof could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(
        "no cvc5 executable: {0} (policy prove needs the cvc5 SMT solver at analysis time: set CVC5=/path/to/cvc5 or put cvc5 on PATH, e.g. apt-get install cvc5)"
    )]
    NoSolver(String),
    #[error("solver: {0}")]
    Solver(String),
}

/// The cvc5 executable: `CVC5` if set (as symcc does), else the first `cvc5` on `PATH`.
pub fn find_cvc5() -> Result<PathBuf, ProveError> {
    if let Some(p) = std::env::var_os("CVC5") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(ProveError::NoSolver(format!(
                "CVC5={} is not an executable file",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("cvc5"))
        .find(|p| is_executable(p))
        .ok_or_else(|| ProveError::NoSolver("none on PATH and CVC5 is not set".into()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The schema's action names (without namespace), in schema order.
fn action_names(engine: &PolicyEngine) -> Vec<String> {
    let mut names: Vec<String> = engine
        .schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn action_uid(name: &str) -> String {
    format!("{NS}::Action::{name:?}")
}

/// Reads and checks every `*.toml` under `dir` against `engine`'s schema. Every problem comes
/// back at once, each with file, key and reason.
pub fn load_dir(engine: &PolicyEngine, dir: &Path) -> Result<Vec<Property>, Vec<Problem>> {
    let files = crate::connector::toml_files(dir).map_err(|p| vec![p])?;
    if files.is_empty() {
        return Err(vec![Problem::new(
            dir.display().to_string(),
            "",
            "no property files (*.toml)",
        )]);
    }
    let mut problems = Vec::new();
    let mut props = Vec::new();
    for path in files {
        let file = path.display().to_string();
        match parse_toml_file::<PropertyFile>(&path) {
            Ok(pf) => match check_file(engine, &file, pf) {
                Ok(mut p) => props.append(&mut p),
                Err(mut p) => problems.append(&mut p),
            },
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(props)
    } else {
        Err(problems)
    }
}

/// Checks one parsed property file (pure apart from Cedar parsing and validation).
fn check_file(
    engine: &PolicyEngine,
    file: &str,
    pf: PropertyFile,
) -> Result<Vec<Property>, Vec<Problem>> {
    let known = action_names(engine);
    let mut problems = Vec::new();
    let mut props = Vec::new();
    if pf.property.is_empty() {
        problems.push(Problem::new(file, "property", "no [[property]] entries"));
    }
    let mut names = BTreeSet::new();
    for (i, e) in pf.property.into_iter().enumerate() {
        let key = |k: &str| format!("property[{i}] ({}).{k}", e.name);
        let before = problems.len();
        if e.name.trim().is_empty() {
            problems.push(Problem::new(
                file,
                format!("property[{i}].name"),
                "must not be empty",
            ));
        } else if !names.insert(e.name.clone()) {
            problems.push(Problem::new(
                file,
                key("name"),
                "another property in this file has the same name",
            ));
        }
        let actions: BTreeSet<String> = match &e.actions {
            None => known.iter().cloned().collect(),
            Some(list) if list.is_empty() => {
                problems.push(Problem::new(
                    file,
                    key("actions"),
                    "must name at least one action (leave it out to mean every action)",
                ));
                BTreeSet::new()
            }
            Some(list) => {
                for a in list.iter().filter(|a| !known.contains(a)) {
                    problems.push(Problem::new(
                        file,
                        key("actions"),
                        format!(
                            "unknown action {a:?} (the schema's actions: {})",
                            known.join(", ")
                        ),
                    ));
                }
                list.iter().cloned().collect()
            }
        };
        let when = match (e.kind, &e.when) {
            (Kind::NeverErrors, Some(_)) => {
                problems.push(Problem::new(
                    file,
                    key("when"),
                    "never_errors takes no condition",
                ));
                None
            }
            (Kind::NeverAllowed, None) => {
                problems.push(Problem::new(
                    file,
                    key("when"),
                    "never_allowed needs a condition: the requests that must never be allowed",
                ));
                None
            }
            (_, Some(w)) => match Expression::from_str(w) {
                Ok(_) => Some(w.clone()),
                Err(err) => {
                    problems.push(Problem::new(
                        file,
                        key("when"),
                        format!("not a Cedar expression: {}", one_line(&err)),
                    ));
                    None
                }
            },
            (_, None) => None,
        };
        if problems.len() > before {
            continue;
        }
        let spec = match spec_policies(engine, e.kind, &actions, when.as_deref()) {
            Ok(s) => s,
            Err(reason) => {
                problems.push(Problem::new(file, key("when"), reason));
                continue;
            }
        };
        props.push(Property {
            file: file.to_string(),
            name: e.name,
            kind: e.kind,
            actions,
            spec,
        });
    }
    if problems.is_empty() {
        Ok(props)
    } else {
        Err(problems)
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The policy set that states the property, strictly validated against the schema.
fn spec_policies(
    engine: &PolicyEngine,
    kind: Kind,
    actions: &BTreeSet<String>,
    when: Option<&str>,
) -> Result<Option<PolicySet>, String> {
    let scope = format!(
        "action in [{}]",
        actions
            .iter()
            .map(|a| action_uid(a))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cond = when.unwrap_or("true");
    let texts: Vec<(&str, String)> = match kind {
        Kind::NeverErrors => return Ok(None),
        Kind::NeverAllowed => vec![
            (
                "property-allows-the-rest",
                "permit (principal, action, resource);".to_string(),
            ),
            (
                "property",
                format!("forbid (principal, {scope}, resource) when {{\n{cond}\n}};"),
            ),
        ],
        Kind::AlwaysAllowed => vec![(
            "property",
            format!("permit (principal, {scope}, resource) when {{\n{cond}\n}};"),
        )],
    };
    let mut set = PolicySet::new();
    for (id, text) in texts {
        let p = Policy::parse(Some(cedar_policy::PolicyId::new(id)), &text)
            .map_err(|e| format!("not a single Cedar condition: {}", one_line(&e)))?;
        set.add(p)
            .map_err(|e| format!("cannot build the property: {}", one_line(&e)))?;
    }
    let v = Validator::new(engine.schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(e) = v.validation_errors().next() {
        return Err(format!(
            "does not validate against the schema: {}",
            one_line(e)
        ));
    }
    Ok(Some(set))
}

/// Proves every property with one cvc5 process, one request environment at a time.
pub async fn prove(engine: &PolicyEngine, props: &[Property]) -> Result<Vec<Outcome>, ProveError> {
    let cvc5 = find_cvc5()?;
    let solver = LocalSolver::from_command(
        tokio::process::Command::new(&cvc5)
            .args(["--lang", "smt"])
            .arg(format!("--tlimit-per={SOLVER_QUERY_LIMIT_MS}"))
            .kill_on_drop(true),
    )
    .map_err(|e| ProveError::NoSolver(format!("cannot start {}: {e}", cvc5.display())))?;
    let mut compiler = CedarSymCompiler::new(solver).map_err(|e| solver_err(&e))?;
    let envs: Vec<RequestEnv> = engine.schema.request_envs().collect();
    let mut out = Vec::new();
    for prop in props {
        let mut cexs = Vec::new();
        let mut unknown = None;
        let mut checked = 0;
        for env in envs
            .iter()
            .filter(|e| prop.actions.contains(e.action().id().unescaped()))
        {
            checked += 1;
            match prove_in_env(engine, &mut compiler, prop, env).await? {
                EnvVerdict::Holds => {}
                EnvVerdict::Fails(mut c) => cexs.append(&mut c),
                EnvVerdict::Unknown(why) => unknown = Some(why),
            }
        }
        let verdict = if !cexs.is_empty() {
            match cexs.iter().find_map(|c| confirm(engine, prop, c).err()) {
                Some(why) => Verdict::Unknown(why),
                None => Verdict::Refuted(cexs),
            }
        } else if let Some(why) = unknown {
            Verdict::Unknown(why)
        } else {
            Verdict::Proven
        };
        out.push(Outcome {
            file: prop.file.clone(),
            name: prop.name.clone(),
            kind: prop.kind,
            envs: checked,
            verdict,
        });
    }
    Ok(out)
}

enum EnvVerdict {
    Holds,
    Fails(Vec<Counterexample>),
    Unknown(String),
}

fn solver_err(e: &dyn std::fmt::Display) -> ProveError {
    ProveError::Solver(one_line(e))
}

async fn prove_in_env(
    engine: &PolicyEngine,
    compiler: &mut CedarSymCompiler<LocalSolver>,
    prop: &Property,
    env: &RequestEnv,
) -> Result<EnvVerdict, ProveError> {
    let schema = &engine.schema;
    let compile = |set: &PolicySet| {
        CompiledPolicySet::compile(set, env, schema).map_err(|e| {
            ProveError::Solver(format!(
                "cannot compile for {}: {}",
                env_name(env),
                one_line(&e)
            ))
        })
    };
    let shipped = compile(&engine.policies)?;
    let mut found = Vec::new();
    let mut unknown = None;
    match (prop.kind, &prop.spec) {
        (Kind::NeverAllowed, Some(spec)) => {
            let spec = compile(spec)?;
            let r = compiler
                .check_implies_with_counterexample_opt(&shipped, &spec)
                .await;
            answer(r, None, env, &mut found, &mut unknown)?;
        }
        (Kind::AlwaysAllowed, Some(spec)) => {
            let spec = compile(spec)?;
            let r = compiler
                .check_implies_with_counterexample_opt(&spec, &shipped)
                .await;
            answer(r, None, env, &mut found, &mut unknown)?;
        }
        (Kind::NeverErrors, _) => {
            for p in engine.policies.policies() {
                let compiled = CompiledPolicy::compile(p, env, schema).map_err(|e| {
                    ProveError::Solver(format!(
                        "cannot compile {} for {}: {}",
                        p.id(),
                        env_name(env),
                        one_line(&e)
                    ))
                })?;
                let r = compiler
                    .check_never_errors_with_counterexample_opt(&compiled)
                    .await;
                answer(r, Some(p.id().to_string()), env, &mut found, &mut unknown)?;
            }
        }
        (_, None) => return Ok(EnvVerdict::Unknown("property has no statement".into())),
    }
    Ok(match (found.is_empty(), unknown) {
        (false, _) => EnvVerdict::Fails(found),
        (true, Some(why)) => EnvVerdict::Unknown(why),
        (true, None) => EnvVerdict::Holds,
    })
}

/// Files one solver answer: a counterexample, nothing (the property holds), or `unknown`
/// (symcc reports the solver's `unknown`, e.g. at the time limit, as an error).
fn answer(
    r: Result<Option<Env>, cedar_policy_symcc::err::Error>,
    policy: Option<String>,
    env: &RequestEnv,
    found: &mut Vec<Counterexample>,
    unknown: &mut Option<String>,
) -> Result<(), ProveError> {
    match r {
        Ok(None) => Ok(()),
        Ok(Some(e)) => {
            found.push(counterexample(&e, policy)?);
            Ok(())
        }
        Err(cedar_policy_symcc::err::Error::SolverUnknown) => {
            *unknown = Some(format!(
                "the solver could not decide for {} within {} s",
                env_name(env),
                SOLVER_QUERY_LIMIT_MS / 1000
            ));
            Ok(())
        }
        Err(e) => Err(solver_err(&e)),
    }
}

fn env_name(env: &RequestEnv) -> String {
    format!(
        "principal {}, action {}, resource {}",
        env.principal(),
        env.action(),
        env.resource()
    )
}

/// The counterexample in Cedar's JSON forms (so it can be printed, stored and re-checked).
fn counterexample(env: &Env, policy: Option<String>) -> Result<Counterexample, ProveError> {
    let req = &env.request;
    let uid = |u: Option<EntityUid>| u.map(|u| u.to_string()).unwrap_or_default();
    let context = match req.context() {
        Some(c) => c
            .to_json_value()
            .map_err(|e| ProveError::Solver(format!("counterexample context: {e}")))?,
        None => Value::Object(Default::default()),
    };
    let mut entities = env
        .entities
        .to_json_value()
        .map_err(|e| ProveError::Solver(format!("counterexample entities: {e}")))?;
    // Action entities come from the schema; leaving them out keeps the example readable.
    if let Value::Array(list) = &mut entities {
        list.retain(|e| {
            e.pointer("/uid/type")
                .and_then(Value::as_str)
                .is_none_or(|t| !t.ends_with("::Action"))
        });
    }
    Ok(Counterexample {
        principal: uid(req.principal().cloned()),
        action: uid(req.action().cloned()),
        resource: uid(req.resource().cloned()),
        context,
        entities,
        policy,
    })
}

/// Re-evaluates a counterexample (from its JSON forms) with Cedar's ordinary authorizer against
/// `engine`'s policy set.
pub fn recheck(engine: &PolicyEngine, c: &Counterexample) -> Result<Recheck, String> {
    recheck_with(engine, &engine.policies, c)
}

fn recheck_with(
    engine: &PolicyEngine,
    set: &PolicySet,
    c: &Counterexample,
) -> Result<Recheck, String> {
    let parse = |what: &str, s: &str| {
        EntityUid::from_str(s).map_err(|e| format!("counterexample {what} {s:?}: {}", one_line(&e)))
    };
    let principal = parse("principal", &c.principal)?;
    let action = parse("action", &c.action)?;
    let resource = parse("resource", &c.resource)?;
    let context = Context::from_json_value(c.context.clone(), Some((&engine.schema, &action)))
        .map_err(|e| format!("counterexample context: {}", one_line(&e)))?;
    let entities = Entities::from_json_value(c.entities.clone(), Some(&engine.schema))
        .map_err(|e| format!("counterexample entities: {}", one_line(&e)))?;
    let request = Request::new(principal, action, resource, context, Some(&engine.schema))
        .map_err(|e| format!("counterexample request: {}", one_line(&e)))?;
    let resp = engine.authorizer.is_authorized(&request, set, &entities);
    Ok(Recheck {
        allowed: resp.decision() == Decision::Allow,
        errors: resp
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => {
                    e.policy_id().to_string()
                }
            })
            .collect(),
    })
}

/// A counterexample is reported only if the authorizer agrees it breaks the property.
fn confirm(engine: &PolicyEngine, prop: &Property, c: &Counterexample) -> Result<(), String> {
    let shipped = recheck(engine, c)?;
    let ok = match (prop.kind, &prop.spec) {
        (Kind::NeverAllowed, Some(spec)) => {
            shipped.allowed && !recheck_with(engine, spec, c)?.allowed
        }
        (Kind::AlwaysAllowed, Some(spec)) => {
            !shipped.allowed && recheck_with(engine, spec, c)?.allowed
        }
        (Kind::NeverErrors, _) => c
            .policy
            .as_ref()
            .is_some_and(|p| shipped.errors.contains(p)),
        (_, None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the solver's counterexample does not re-check with the authorizer (allowed: {}, errors: {:?}): {}",
            shipped.allowed,
            shipped.errors,
            serde_json::to_string(c).unwrap_or_default()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> PolicyEngine {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        super::super::load_dir(&dir).expect("shipped policies load")
    }

    fn check(text: &str) -> Result<Vec<Property>, Vec<String>> {
        let pf: PropertyFile =
            crate::config::parse_toml_str("p.toml", text).map_err(|p| vec![p.to_string()])?;
        check_file(&engine(), "p.toml", pf)
            .map_err(|ps| ps.into_iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn a_well_formed_file_parses() {
        let props = check(
            r#"
[[property]]
name = "two people for production"
kind = "never_allowed"
actions = ["contain_cloud_resource"]
when = 'resource.environment == "production" && context.approvals < 2'

[[property]]
name = "enrich is automatic"
kind = "always_allowed"
actions = ["enrich"]

[[property]]
name = "no errors"
kind = "never_errors"
"#,
        )
        .unwrap();
        assert_eq!(props.len(), 3);
        assert_eq!(props[0].kind, Kind::NeverAllowed);
        assert_eq!(
            props[0].actions,
            BTreeSet::from(["contain_cloud_resource".to_string()])
        );
        assert!(props[2].actions.contains("approve") && props[2].actions.contains("enrich"));
        assert!(props[2].spec.is_none());
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused_with_their_place() {
        let e =
            check("[[property]]\nname = \"x\"\nkind = \"never_errors\"\nactoins = [\"enrich\"]\n")
                .unwrap_err();
        assert!(
            e[0].contains("p.toml") && e[0].contains("line 4") && e[0].contains("actoins"),
            "{e:?}"
        );
        let e = check("[[property]]\nname = \"x\"\nkind = \"sometimes\"\n").unwrap_err();
        assert!(
            e[0].contains("line 3") && e[0].contains("sometimes"),
            "{e:?}"
        );
        let e = check("[[propery]]\nname = \"x\"\n").unwrap_err();
        assert!(e[0].contains("propery"), "{e:?}");
    }

    #[test]
    fn semantic_problems_name_the_property_and_key_and_all_come_back() {
        let e = check(
            r#"
[[property]]
name = "a"
kind = "never_allowed"
actions = ["isolate_hosts"]
when = "true"

[[property]]
name = "b"
kind = "never_allowed"

[[property]]
name = "c"
kind = "never_errors"
when = "true"

[[property]]
name = "d"
kind = "never_allowed"
actions = ["isolate_host"]
when = "resource.enviroment == \"production\""

[[property]]
name = "e"
kind = "never_allowed"
when = "context.approvals <"

[[property]]
name = "f"
kind = "never_allowed"
when = "true }; permit (principal, action, resource) when { true"

[[property]]
name = "a"
kind = "never_errors"
actions = []
"#,
        )
        .unwrap_err();
        let has = |needle: &[&str]| e.iter().any(|p| needle.iter().all(|n| p.contains(n)));
        assert!(
            has(&[
                "property[0] (a).actions",
                "unknown action \"isolate_hosts\""
            ]),
            "{e:#?}"
        );
        assert!(
            has(&["property[1] (b).when", "needs a condition"]),
            "{e:#?}"
        );
        assert!(
            has(&["property[2] (c).when", "takes no condition"]),
            "{e:#?}"
        );
        assert!(
            has(&["property[3] (d).when", "does not validate", "enviroment"]),
            "{e:#?}"
        );
        assert!(
            has(&["property[4] (e).when", "not a Cedar expression"]),
            "{e:#?}"
        );
        assert!(has(&["property[5] (f).when"]), "{e:#?}");
        assert!(has(&["property[6] (a).name", "same name"]), "{e:#?}");
        assert!(
            has(&["property[6] (a).actions", "at least one action"]),
            "{e:#?}"
        );
        assert_eq!(e.len(), 8, "{e:#?}");
    }

    #[test]
    fn a_condition_must_type_for_every_action_it_covers() {
        // `resource.environment` exists on hosts, not on indicators.
        let e = check(
            "[[property]]\nname = \"x\"\nkind = \"never_allowed\"\nactions = [\"isolate_host\", \"block_ioc\"]\nwhen = 'resource.environment == \"production\"'\n",
        )
        .unwrap_err();
        assert!(
            e[0].contains("property[0] (x).when") && e[0].contains("does not validate"),
            "{e:?}"
        );
    }

    #[test]
    fn an_empty_file_is_a_problem() {
        let e = check("").unwrap_err();
        assert!(e[0].contains("no [[property]] entries"), "{e:?}");
    }
}
