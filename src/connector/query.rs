//! Vendor filter languages and how a value may enter a request URL.
//!
//! Owns: the closed set of filter languages a connector declares (`filter_language`: FQL,
//! OData, SCIM, JQL, or none), which query parameters hold an expression in that language,
//! each language's string literal (its quote and how a value is escaped inside it, or which
//! characters are refused because the language has no escape for them: FQL's wildcard `*`),
//! the static check that every placeholder in a filter sits inside such a literal, and the
//! rules for values outside filters (path segments and plain parameters). Pure.
//!
//! Why: an alert names a host `*` or `ws-*`, and a filter `hostname:'{target}'` would match
//! every device. A value that cannot be kept a literal of the language is refused, never sent.

use serde::Deserialize;

use super::error::{TemplateError, ValueError};

/// A vendor's filter language, declared per connector file (`filter_language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FilterLanguage {
    /// No filter expressions: every URL value is a plain value.
    #[default]
    None,
    /// CrowdStrike's Falcon Query Language: `field:'value'`; `*` is a wildcard inside quotes
    /// and there is no escape for a quote, so both are refused.
    Fql,
    /// OData `$filter`/`$search` (Microsoft Graph, Defender): `field eq 'value'`; a quote is
    /// doubled inside a literal; a path segment starting with `$` names a system resource.
    Odata,
    /// SCIM-style filters (Okta `filter`/`search`): `field eq "value"`, JSON string escapes.
    Scim,
    /// Jira Query Language: `field = "value"`; backslash escapes; `*`, `?` and `~` (text
    /// search wildcards and operator) are refused.
    Jql,
}

impl FilterLanguage {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterLanguage::None => "none",
            FilterLanguage::Fql => "fql",
            FilterLanguage::Odata => "odata",
            FilterLanguage::Scim => "scim",
            FilterLanguage::Jql => "jql",
        }
    }

    /// Query parameters whose value is an expression in this language.
    pub fn params(self) -> &'static [&'static str] {
        match self {
            FilterLanguage::None => &[],
            FilterLanguage::Fql => &["filter"],
            FilterLanguage::Odata => &["$filter", "$search"],
            FilterLanguage::Scim => &["filter", "search"],
            FilterLanguage::Jql => &["jql"],
        }
    }

    /// The quote that opens and closes a string literal.
    fn quote(self) -> Option<char> {
        match self {
            FilterLanguage::None => None,
            FilterLanguage::Fql | FilterLanguage::Odata => Some('\''),
            FilterLanguage::Scim | FilterLanguage::Jql => Some('"'),
        }
    }

    /// A value made safe to stand inside this language's string literal, or why not.
    pub fn literal(self, v: &str) -> Result<String, ValueError> {
        refuse_controls(v)?;
        let refused: &[char] = match self {
            FilterLanguage::None => &['\'', '"', '\\', '*'],
            FilterLanguage::Fql => &['\'', '"', '\\', '*'],
            FilterLanguage::Odata => &[],
            FilterLanguage::Scim => &[],
            FilterLanguage::Jql => &['*', '?', '~'],
        };
        if let Some(c) = v.chars().find(|c| refused.contains(c)) {
            return Err(ValueError::FilterChar {
                value: cut(v),
                language: self.as_str(),
                ch: c,
            });
        }
        Ok(match self {
            FilterLanguage::Odata => v.replace('\'', "''"),
            FilterLanguage::Scim | FilterLanguage::Jql => {
                v.replace('\\', "\\\\").replace('"', "\\\"")
            }
            FilterLanguage::None | FilterLanguage::Fql => v.to_string(),
        })
    }

    /// Whether a value may be a path segment or a plain query value. Quotes, backslashes and
    /// `*` have no business in an id and are read as syntax by some vendors; dot segments
    /// would be resolved away; OData reads a segment starting with `$` as a system resource.
    pub fn plain(self, v: &str) -> Result<(), ValueError> {
        refuse_controls(v)?;
        if let Some(c) = v.chars().find(|c| matches!(c, '\'' | '"' | '\\' | '*')) {
            return Err(ValueError::UrlChar {
                value: cut(v),
                ch: c,
            });
        }
        if v == "." || v == ".." {
            return Err(ValueError::DotSegment(v.to_string()));
        }
        if self == FilterLanguage::Odata && v.starts_with('$') {
            return Err(ValueError::OdataSystem(cut(v)));
        }
        Ok(())
    }

    /// Static check of one query parameter's template: in a filter parameter every
    /// placeholder must sit inside a string literal of the language. `Err` says why not.
    pub fn check_param(self, name: &str, template: &str) -> Result<(), TemplateError> {
        if !self.params().contains(&name) {
            if self == FilterLanguage::None
                && ["filter", "$filter", "search", "$search", "jql", "q"].contains(&name)
                && template.contains('{')
            {
                return Err(TemplateError::UndeclaredFilter(name.to_string()));
            }
            return Ok(());
        }
        let Some(q) = self.quote() else {
            return Ok(());
        };
        let mut inside = false;
        let mut rest = template;
        loop {
            let brace = rest.find('{');
            let quote = rest.find(q);
            let brace_first = match (brace, quote) {
                (Some(b), Some(qp)) => b < qp,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if let (true, Some(b)) = (brace_first, brace) {
                let after = &rest[b + 1..];
                let Some(end) = after.find('}') else {
                    return Ok(()); // an unclosed brace is reported by the template check
                };
                if !inside {
                    return Err(TemplateError::OutsideLiteral {
                        placeholder: after[..end].to_string(),
                        language: self.as_str(),
                        param: name.to_string(),
                        quote: q,
                    });
                }
                rest = &after[end + 1..];
            } else if let Some(qp) = quote {
                inside = !inside;
                rest = &rest[qp + q.len_utf8()..];
            } else {
                return Ok(());
            }
        }
    }
}

fn refuse_controls(v: &str) -> Result<(), ValueError> {
    if v.chars().any(char::is_control) {
        return Err(ValueError::Control(cut(v)));
    }
    Ok(())
}

/// At most 64 characters of an outside value, for an error message.
fn cut(v: &str) -> String {
    v.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::FilterLanguage as L;

    #[test]
    fn each_language_keeps_a_value_a_literal_or_refuses_it() {
        // (language, value, expected literal or None for refused)
        let table: &[(L, &str, Option<&str>)] = &[
            (L::Fql, "ws-01", Some("ws-01")),
            (L::Fql, "2001:db8::1", Some("2001:db8::1")),
            (L::Fql, "*", None),
            (L::Fql, "ws-*", None),
            (L::Fql, "x'+hostname:'y", None),
            (L::Fql, "a\"b", None),
            (L::Fql, "a\\", None),
            (L::Fql, "a\r\nb", None),
            (
                L::Odata,
                "o'brien@corp.example",
                Some("o''brien@corp.example"),
            ),
            (
                L::Odata,
                "x' or 1 eq 1 or name eq 'y",
                Some("x'' or 1 eq 1 or name eq ''y"),
            ),
            (L::Odata, "nul\0", None),
            (L::Scim, "a\"b", Some("a\\\"b")),
            (L::Scim, "a\\", Some("a\\\\")),
            (L::Jql, "cordon-1", Some("cordon-1")),
            (
                L::Jql,
                "a\" OR labels = \"b",
                Some("a\\\" OR labels = \\\"b"),
            ),
            (L::Jql, "ab*", None),
            (L::Jql, "a?", None),
            (L::Jql, "~x", None),
            (L::None, "*", None),
            (L::None, "plain", Some("plain")),
        ];
        for (lang, v, want) in table {
            let got = lang.literal(v).ok();
            assert_eq!(got.as_deref(), *want, "{lang:?} {v:?}");
        }
    }

    #[test]
    fn plain_values_refuse_syntax_and_reserved_segments() {
        for v in ["*", "ws-*", "a'b", "a\"b", "a\\b", "a\nb", ".", ".."] {
            assert!(L::None.plain(v).is_err(), "{v:?}");
        }
        assert!(L::Odata.plain("$count").is_err());
        assert!(L::Scim.plain("$count").is_ok());
        assert!(L::Fql.plain("aid-123").is_ok());
    }

    #[test]
    fn filter_placeholders_must_stand_inside_literals() {
        assert!(L::Fql.check_param("filter", "hostname:'{target}'").is_ok());
        assert!(
            L::Fql
                .check_param("filter", "type:'{ioc.type}'+value:'{ioc.value}'")
                .is_ok()
        );
        assert!(L::Fql.check_param("filter", "hostname:{target}").is_err());
        assert!(L::Fql.check_param("filter", "a:'x'+b:{target}").is_err());
        assert!(
            L::Odata
                .check_param("$filter", "computerDnsName eq '{target}'")
                .is_ok()
        );
        assert!(L::Odata.check_param("$filter", "id eq {target}").is_err());
        assert!(
            L::Scim
                .check_param("filter", "target.id eq \"{vendor.user_id}\"")
                .is_ok()
        );
        assert!(
            L::Jql
                .check_param("jql", "labels = {idempotency_label}")
                .is_err()
        );
        // Parameters that are not filters are plain values.
        assert!(L::Fql.check_param("ids", "{vendor.aid}").is_ok());
        // A filter-looking parameter without a declared language is a problem.
        assert!(
            L::None
                .check_param("filter", "hostname:'{target}'")
                .is_err()
        );
        assert!(L::None.check_param("filter", "status:'contained'").is_ok());
    }
}
