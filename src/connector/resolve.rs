//! Reading a resolve answer into exactly one vendor object.
//!
//! Owns: the rule that a target is acted on only when it resolves to exactly one vendor
//! object. A lookup that lists candidates (`list`) must yield one; none means the target is
//! unknown to the vendor, several are refused (a re-imaged machine keeps its old device
//! records; a name can match many accounts) unless the connector declares a tie-break
//! (`tie_break = { newest = "/pointer" }`: the one candidate with the strictly newest RFC 3339
//! time there, e.g. the most recently seen device). Every candidate is returned for the
//! evidence either way. A list answer that is one page of more, or carries vendor errors next
//! to the list, is refused too: it cannot show that there is exactly one. A lookup without
//! `list` reads one object (a fetch by unique key). Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::client::capture;
use super::error::Ambiguity;
use super::spec::Lookup;

/// Candidates kept in evidence (the count is always recorded).
pub const MAX_CANDIDATES: usize = 20;
/// Bytes of one candidate's JSON kept in evidence.
const MAX_CANDIDATE_BYTES: usize = 2048;

/// What a resolve answer came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Exactly one object (or the declared tie-break picked one): its captures, and the
    /// candidates when there were several.
    One {
        vendor: BTreeMap<String, String>,
        candidates: Option<Value>,
    },
    /// The vendor knows no such object.
    NotFound,
    /// More than one object and no tie-break decided: refuse.
    Ambiguous { candidates: Value, why: Ambiguity },
}

/// Reads `json` (the resolve answer) through `l`, for `target` (the value the lookup was made
/// with).
pub fn pick(l: &Lookup, json: &Value, target: &str) -> Resolution {
    let (one, candidates) = match &l.list {
        None => (json, None),
        Some(list) => {
            let items: &[Value] = match json.pointer(list) {
                None | Some(Value::Null) => &[],
                Some(Value::Array(a)) => a,
                Some(_) => {
                    return Resolution::Ambiguous {
                        candidates: evidence(&[], l),
                        why: Ambiguity::NotAList(list.clone()),
                    };
                }
            };
            if let Some(why) = incomplete(json, items.len()) {
                return Resolution::Ambiguous {
                    candidates: evidence(items, l),
                    why,
                };
            }
            match items {
                [] => return Resolution::NotFound,
                [one] => (one, None),
                many => {
                    let candidates = evidence(many, l);
                    let Some(tb) = &l.tie_break else {
                        return Resolution::Ambiguous {
                            candidates,
                            why: Ambiguity::TooMany(many.len()),
                        };
                    };
                    match newest(many, &tb.newest) {
                        Ok(i) => (&many[i], Some(candidates)),
                        Err(why) => return Resolution::Ambiguous { candidates, why },
                    }
                }
            }
        }
    };
    let Some(vendor) = capture(&l.capture, one) else {
        return match candidates {
            None => Resolution::NotFound,
            Some(candidates) => Resolution::Ambiguous {
                candidates,
                why: Ambiguity::NewestUncaptured,
            },
        };
    };
    if !names(l, one, target) {
        return Resolution::Ambiguous {
            candidates: candidates.unwrap_or_else(|| evidence(std::slice::from_ref(one), l)),
            why: Ambiguity::NotNamed(l.names_target.clone()),
        };
    }
    Resolution::One { vendor, candidates }
}

/// Whether `object` names `target` at one of the lookup's `names_target` pointers (always, when
/// it declares none).
fn names(l: &Lookup, object: &Value, target: &str) -> bool {
    l.names_target.is_empty()
        || l.names_target.iter().any(|p| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(target))
        })
}

/// Why a list answer cannot be all the candidates there are, from the signals vendors use: a
/// next page (OData `@odata.nextLink`, Jira `nextPageToken` or `isLast: false`, a Falcon
/// `meta.pagination.total` above the list's length) or errors reported next to the list (Falcon's
/// `errors`, a partial answer). "Exactly one" cannot be read from such an answer.
fn incomplete(json: &Value, len: usize) -> Option<Ambiguity> {
    if json.get("@odata.nextLink").is_some_and(|v| !v.is_null()) {
        return Some(Ambiguity::MorePages("@odata.nextLink".into()));
    }
    if json
        .get("nextPageToken")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        || json.get("isLast") == Some(&Value::Bool(false))
    {
        return Some(Ambiguity::MorePages("a next-page token".into()));
    }
    if let Some(total) = json
        .pointer("/meta/pagination/total")
        .and_then(Value::as_u64)
        && total > len as u64
    {
        return Some(Ambiguity::MorePages(format!(
            "{total} in total, {len} listed"
        )));
    }
    match json.get("errors").and_then(Value::as_array) {
        Some(errors) if !errors.is_empty() => Some(Ambiguity::Partial(errors.len())),
        _ => None,
    }
}

/// The index of the one item with the strictly newest time at `ptr`.
fn newest(items: &[Value], ptr: &str) -> Result<usize, Ambiguity> {
    let mut times = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let t = it
            .pointer(ptr)
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| Ambiguity::NoTime {
                index: i,
                ptr: ptr.to_string(),
            })?;
        times.push(t);
    }
    let max = times.iter().max().copied().unwrap_or_default();
    let at_max: Vec<usize> = (0..times.len()).filter(|&i| times[i] == max).collect();
    match at_max.as_slice() {
        [one] => Ok(*one),
        _ => Err(Ambiguity::Tie {
            count: at_max.len(),
            ptr: ptr.to_string(),
        }),
    }
}

/// The candidates as evidence: their count, and for each (up to [`MAX_CANDIDATES`]) the
/// captured values, the tie-break value, and the object itself (cut to a bound).
fn evidence(items: &[Value], l: &Lookup) -> Value {
    let shown: Vec<Value> = items
        .iter()
        .take(MAX_CANDIDATES)
        .map(|it| {
            let caps: BTreeMap<&str, Value> = l
                .capture
                .iter()
                .map(|(n, p)| (n.as_str(), it.pointer(p).cloned().unwrap_or(Value::Null)))
                .collect();
            let text = it.to_string();
            let object = if text.len() > MAX_CANDIDATE_BYTES {
                json!({"truncated": true, "bytes": text.len(), "head": text.chars().take(MAX_CANDIDATE_BYTES).collect::<String>()})
            } else {
                it.clone()
            };
            let mut c = json!({"captured": caps, "object": object});
            if let Some(tb) = &l.tie_break {
                c["tie_break_value"] = it.pointer(&tb.newest).cloned().unwrap_or(Value::Null);
            }
            c
        })
        .collect();
    json!({"count": items.len(), "shown": shown})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::spec::{RequestSpec, TieBreak};

    fn lookup(list: Option<&str>, capture: &[(&str, &str)], tie: Option<&str>) -> Lookup {
        Lookup {
            request: RequestSpec {
                method: "GET".into(),
                path: "/x".into(),
                body: None,
                form: Default::default(),
                headers: Default::default(),
            },
            list: list.map(String::from),
            tie_break: tie.map(|p| TieBreak { newest: p.into() }),
            capture: capture
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            names_target: Vec::new(),
        }
    }

    /// The lookups below name no `names_target`: the target does not matter to them.
    fn pick(l: &Lookup, json: &Value) -> Resolution {
        super::pick(l, json, "any-target")
    }

    /// With `names_target`, the object found is taken only when it names the target at one of
    /// the pointers (case aside); a looser match of the vendor's is refused with the object in
    /// the evidence, whether it came by key, as the one match, or by the tie-break.
    #[test]
    fn an_object_that_does_not_name_the_target_is_refused() {
        let mut okta = lookup(None, &[("user_id", "/id")], None);
        okta.names_target = vec!["/id".into(), "/profile/login".into()];
        let alice = json!({"id": "00u1alice", "profile": {"login": "alice@example.com"}});
        for named in ["alice@example.com", "Alice@Example.com", "00u1alice"] {
            assert_eq!(
                super::pick(&okta, &alice, named),
                one(&[("user_id", "00u1alice")]),
                "{named}"
            );
        }
        // Okta's answer for the short name `alice`, and for a name it does not hold at all.
        for loose in ["alice", "alice@example.co", ""] {
            let Resolution::Ambiguous { candidates, why } = super::pick(&okta, &alice, loose)
            else {
                panic!("{loose:?} must be refused");
            };
            assert_eq!(
                why,
                Ambiguity::NotNamed(vec!["/id".into(), "/profile/login".into()])
            );
            assert_eq!(candidates["count"], json!(1));
            assert_eq!(candidates["shown"][0]["object"], alice);
        }
        // A value that is not a string names nothing.
        let odd = json!({"id": 7, "profile": {"login": ["alice"]}});
        assert!(matches!(
            super::pick(&okta, &odd, "7"),
            Resolution::NotFound | Resolution::Ambiguous { .. }
        ));
        // The one match of a list, and the tie-break's pick.
        let mut mde = lookup(Some("/value"), &[("id", "/id")], Some("/lastSeen"));
        mde.names_target = vec!["/computerDnsName".into()];
        let answer = json!({"value": [
            {"id": "m1", "computerDnsName": "ws-1.corp", "lastSeen": "2026-12-01T00:00:00Z"},
            {"id": "m2", "computerDnsName": "ws-1", "lastSeen": "2026-12-02T00:00:00Z"}]});
        let Resolution::One { vendor, candidates } = super::pick(&mde, &answer, "WS-1") else {
            panic!("the newest names ws-1");
        };
        assert_eq!(vendor["id"], "m2");
        assert_eq!(candidates.unwrap()["count"], json!(2));
        let Resolution::Ambiguous { candidates, why } = super::pick(&mde, &answer, "ws-1.corp")
        else {
            panic!("the newest does not name ws-1.corp");
        };
        assert!(matches!(why, Ambiguity::NotNamed(_)), "{why}");
        assert_eq!(candidates["count"], json!(2));
        let single = json!({"value": [{"id": "m1", "computerDnsName": "ws-1.corp", "lastSeen": "2026-12-01T00:00:00Z"}]});
        assert_eq!(
            super::pick(&mde, &single, "ws-1.corp"),
            one(&[("id", "m1")])
        );
        assert!(matches!(
            super::pick(&mde, &single, "ws-1"),
            Resolution::Ambiguous {
                why: Ambiguity::NotNamed(_),
                ..
            }
        ));
    }

    fn one(v: &[(&str, &str)]) -> Resolution {
        Resolution::One {
            vendor: v
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            candidates: None,
        }
    }

    /// One candidate on a page of more, or next to vendor errors, is not "exactly one".
    #[test]
    fn a_partial_or_paged_answer_never_resolves() {
        let cs = lookup(Some("/resources"), &[("aid", "")], None);
        let mde = lookup(Some("/value"), &[("id", "/id")], None);
        let refused = |l: &Lookup, v: Value, want: &str| match pick(l, &v) {
            Resolution::Ambiguous { why, .. } => {
                assert!(why.to_string().contains(want), "{v}: {why}")
            }
            other => panic!("{v} resolved: {other:?}"),
        };
        refused(
            &cs,
            json!({"meta": {"pagination": {"total": 2}}, "resources": ["aid-1"], "errors": []}),
            "2 in total, 1 listed",
        );
        refused(
            &cs,
            json!({"meta": {"pagination": {"total": 1}}, "resources": ["aid-1"], "errors": [{"code": 500}]}),
            "1 error(s)",
        );
        refused(
            &cs,
            json!({"resources": [], "errors": [{"code": 500, "message": "partial"}]}),
            "partial answer",
        );
        refused(
            &mde,
            json!({"value": [{"id": "m1"}], "@odata.nextLink": "https://api/next"}),
            "@odata.nextLink",
        );
        refused(
            &mde,
            json!({"value": [{"id": "m1"}], "nextPageToken": "t2"}),
            "next-page token",
        );
        // The ordinary answers still resolve.
        assert_eq!(
            pick(
                &cs,
                &json!({"meta": {"pagination": {"total": 1}}, "resources": ["aid-1"], "errors": []})
            ),
            one(&[("aid", "aid-1")])
        );
        assert_eq!(
            pick(
                &mde,
                &json!({"value": [{"id": "m1"}], "@odata.nextLink": null})
            ),
            one(&[("id", "m1")])
        );
    }

    #[test]
    fn exactly_one_candidate_resolves_and_none_is_not_found() {
        let cs = lookup(Some("/resources"), &[("aid", "")], None);
        assert_eq!(
            pick(&cs, &json!({"resources": ["aid-1"]})),
            one(&[("aid", "aid-1")])
        );
        assert_eq!(pick(&cs, &json!({"resources": []})), Resolution::NotFound);
        assert_eq!(pick(&cs, &json!({"meta": {}})), Resolution::NotFound);
        assert_eq!(pick(&cs, &json!({"resources": null})), Resolution::NotFound);
        let direct = lookup(None, &[("user_id", "/id")], None);
        assert_eq!(
            pick(&direct, &json!({"id": "00u1"})),
            one(&[("user_id", "00u1")])
        );
        assert_eq!(
            pick(&direct, &json!({"errorCode": "E0000007"})),
            Resolution::NotFound
        );
    }

    #[test]
    fn several_candidates_are_refused_with_every_candidate_in_evidence() {
        let cs = lookup(Some("/resources"), &[("aid", "")], None);
        let Resolution::Ambiguous { candidates, why } =
            pick(&cs, &json!({"resources": ["aid-old", "aid-new"]}))
        else {
            panic!("two devices must be ambiguous");
        };
        assert_eq!(candidates["count"], json!(2));
        assert_eq!(candidates["shown"][0]["captured"]["aid"], json!("aid-old"));
        assert_eq!(candidates["shown"][1]["captured"]["aid"], json!("aid-new"));
        assert_eq!(why, Ambiguity::TooMany(2));
        assert!(why.to_string().contains("2 vendor objects"), "{why}");
        // A list where an object was expected is refused too.
        assert!(matches!(
            pick(&cs, &json!({"resources": "aid-1"})),
            Resolution::Ambiguous { .. }
        ));
    }

    #[test]
    fn a_declared_tie_break_picks_the_strictly_newest_and_keeps_the_candidates() {
        let mde = lookup(Some("/value"), &[("machine_id", "/id")], Some("/lastSeen"));
        let answer = json!({"value": [
            {"id": "m-old", "lastSeen": "2026-01-01T00:00:00Z"},
            {"id": "m-new", "lastSeen": "2026-11-30T08:00:00.123Z"},
        ]});
        match pick(&mde, &answer) {
            Resolution::One { vendor, candidates } => {
                assert_eq!(vendor["machine_id"], "m-new");
                let c = candidates.expect("candidates kept");
                assert_eq!(c["count"], json!(2));
                assert_eq!(
                    c["shown"][0]["tie_break_value"],
                    json!("2026-01-01T00:00:00Z")
                );
            }
            other => panic!("{other:?}"),
        }
        // A tie, or a candidate without a time, decides nothing.
        let tie = json!({"value": [
            {"id": "a", "lastSeen": "2026-01-01T00:00:00Z"},
            {"id": "b", "lastSeen": "2026-01-01T00:00:00Z"},
        ]});
        assert!(matches!(pick(&mde, &tie), Resolution::Ambiguous { .. }));
        let missing =
            json!({"value": [{"id": "a", "lastSeen": "2026-01-01T00:00:00Z"}, {"id": "b"}]});
        assert!(matches!(pick(&mde, &missing), Resolution::Ambiguous { .. }));
    }

    #[test]
    fn evidence_is_bounded() {
        let cs = lookup(Some("/resources"), &[("aid", "")], None);
        let many: Vec<Value> = (0..500).map(|i| json!(format!("aid-{i}"))).collect();
        let Resolution::Ambiguous { candidates, .. } = pick(&cs, &json!({"resources": many}))
        else {
            panic!()
        };
        assert_eq!(candidates["count"], json!(500));
        assert_eq!(
            candidates["shown"].as_array().unwrap().len(),
            MAX_CANDIDATES
        );
    }
}
