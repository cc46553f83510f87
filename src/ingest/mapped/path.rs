//! The field path language of a source mapping: `a.b[0].c[*].d[key=value]`, parsed once at
//! load and evaluated against each alert's JSON (every value it names, in order).

use super::*;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
    Each,
    /// `[key=value]`: each element that is an object whose `key` holds `value` (as text).
    Filter(String, String),
}

/// Parses `a.b[0].c[*].d[key=value]`.
pub(super) fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let path = path.trim();
    if path.is_empty() {
        return Err("empty path".into());
    }
    let mut steps = Vec::new();
    for seg in path.split('.') {
        let (key, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if key.is_empty() && (rest.is_empty() || steps.is_empty()) {
            return Err(format!("empty key in path {path:?}"));
        }
        if !key.is_empty() {
            if key.contains(']') {
                return Err(format!("unbalanced ] in path {path:?}"));
            }
            steps.push(Step::Key(key.to_string()));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("unclosed [ in path {path:?}"))?;
            let inner = &rest[1..close];
            steps.push(match inner {
                "*" => Step::Each,
                f if f.contains('=') => {
                    let (k, v) = f.split_once('=').unwrap_or((f, ""));
                    if k.trim().is_empty() {
                        return Err(format!("[{f}] in path {path:?}: the filter names no key"));
                    }
                    Step::Filter(k.trim().to_string(), v.trim().to_string())
                }
                n => Step::Index(n.parse().map_err(|_| {
                    format!("[{n}] in path {path:?}: expected [*], [key=value] or an array index")
                })?),
            });
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("unexpected {rest:?} after ] in path {path:?}"));
            }
        }
    }
    Ok(steps)
}

/// Every value `steps` reaches from `v` (`null` counts as absent).
pub(super) fn eval<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some(first) = steps.first() else {
        if !v.is_null() {
            out.push(v);
        }
        return;
    };
    match (first, v) {
        (Step::Key(_), Value::Object(obj)) => {
            // A run of keys may be one flat dotted key (`"kibana.alert.uuid"`): try the longest
            // first, as `value::get` does.
            let run = steps
                .iter()
                .take_while(|s| matches!(s, Step::Key(_)))
                .count();
            for n in (1..=run).rev() {
                let key = steps[..n]
                    .iter()
                    .map(|s| match s {
                        Step::Key(k) => k.as_str(),
                        _ => "",
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(inner) = obj.get(&key) {
                    let before = out.len();
                    eval(inner, &steps[n..], out);
                    if out.len() > before {
                        return;
                    }
                }
            }
        }
        (Step::Index(i), Value::Array(items)) => {
            if let Some(inner) = items.get(*i) {
                eval(inner, &steps[1..], out);
            }
        }
        (Step::Each, Value::Array(items)) => {
            for inner in items {
                eval(inner, &steps[1..], out);
            }
        }
        (Step::Filter(k, want), Value::Array(items)) => {
            for inner in items {
                let hit = inner.get(k).is_some_and(|v| {
                    let mut t = Vec::new();
                    texts_of(v, &mut t);
                    t.len() == 1 && t[0] == *want
                });
                if hit {
                    eval(inner, &steps[1..], out);
                }
            }
        }
        _ => {}
    }
}

/// A scalar as text (strings trimmed, empty ones absent); an array gives its scalar elements.
pub(super) fn texts_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
        }
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(items) => items.iter().for_each(|i| match i {
            Value::Array(_) => {}
            other => texts_of(other, out),
        }),
        _ => {}
    }
}
