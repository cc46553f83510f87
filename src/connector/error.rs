//! The connector layer's errors, one enum per concern.
//!
//! Owns: why a value may not enter a request ([`ValueError`]), why a connector file's template
//! is refused at load ([`TemplateError`]), why a request cannot be rendered ([`RenderError`]),
//! why the HTTP client cannot be built ([`RuntimeError`]), why no credentials could be had
//! ([`AuthError`]), why a resolve answer names no single object ([`Ambiguity`]), and why a
//! connector cannot perform an action ([`LookupError`]). Messages are lowercase fragments; the
//! audit store records some of them, so their text is part of the record format. None of them
//! carries a secret or picks a status: `http` and `api` map them where they are answered.

use crate::action::ActionKind;

use super::ConnectorKind;

/// A value refused on its way into a request URL or header: it could change where the request
/// goes or what a filter matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("refusing {0:?} in a request URL: it contains a control character")]
    Control(String),
    #[error(
        "refusing {value:?} in a {language} filter: {ch:?} would change what the filter matches"
    )]
    FilterChar {
        value: String,
        language: &'static str,
        ch: char,
    },
    #[error("refusing to put {value:?} into a request URL: it contains {ch:?}")]
    UrlChar { value: String, ch: char },
    #[error("refusing to put {0:?} into a request URL path")]
    DotSegment(String),
    #[error("refusing {0:?} in an OData URL: a value starting with `$` names a system resource")]
    OdataSystem(String),
    #[error("refusing {0:?} in a request URL: the vendor reads it as something other than a name")]
    Reserved(String),
    #[error("refusing a header value with control characters")]
    HeaderControl,
}

/// A request template refused when the connector file is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` in {0:?}")]
    Unclosed(String),
    #[error(
        "the query parameter {0:?} looks like a filter expression: declare the connector's filter_language (fql, odata, scim, jql) so values are kept literals"
    )]
    UndeclaredFilter(String),
    #[error(
        "placeholder {{{placeholder}}} in the {language} filter {param:?} must stand inside a {quote}…{quote} string literal"
    )]
    OutsideLiteral {
        placeholder: String,
        language: &'static str,
        param: String,
        quote: char,
    },
    #[error(
        "{ptr:?} reads an array element: only `{unique}/0` (the one match of `unique`) may be read"
    )]
    IndexedUnique { ptr: String, unique: String },
    #[error(
        "{0:?} reads an array element: declare the list with `unique` so that more than one match is refused (never \"take the first\")"
    )]
    Indexed(String),
}

/// Why a request could not be rendered: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unclosed `{{` in {0:?}")]
    Unclosed(String),
    #[error("no value for {{{0}}}")]
    NoValue(String),
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("bad method {0:?}")]
    Method(String),
    #[error("rendered URL is invalid: {0}")]
    Url(#[source] url::ParseError),
    #[error("the rendered path {expected:?} would be rewritten to {actual:?}; refusing")]
    Rewritten { expected: String, actual: String },
    #[error("rendered URL leaves the configured destination {scheme}://{host}")]
    LeavesDestination { scheme: String, host: String },
    #[error(transparent)]
    Body(serde_json::Error),
}

/// Why a connector's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("proxy: {0}")]
    Proxy(#[source] reqwest::Error),
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why no credentials could be had for a request (OAuth2 token endpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not an OAuth2 connector")]
    NotOauth,
    #[error(transparent)]
    TokenUrl(#[from] url::ParseError),
    /// The transport failure in words (its kind and cause, never the URL's secrets).
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("token endpoint answered {0}")]
    Status(u16),
    #[error("token endpoint sent no JSON")]
    NotJson,
    #[error("token endpoint sent no access_token")]
    NoToken,
}

/// Why a resolve answer names no single vendor object although it lists some.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("the answer at {0:?} is not a list")]
    NotAList(String),
    #[error("{0} vendor objects match and the connector declares no tie-break")]
    TooMany(usize),
    #[error("candidate {index} has no RFC 3339 time at {ptr:?}")]
    NoTime { index: usize, ptr: String },
    #[error("{count} candidates share the newest time at {ptr:?}")]
    Tie { count: usize, ptr: String },
    #[error("the newest candidate lacks a captured value")]
    NewestUncaptured,
    /// The answer is one page of more (`@odata.nextLink`, a pagination total above the list,
    /// a next-page token): the candidates seen are not all there are.
    #[error("the answer is one page of more ({0}); the candidates seen are not all there are")]
    MorePages(String),
    /// The vendor reported errors next to the list (a partial answer).
    #[error("the vendor reported {0} error(s) next to the list: a partial answer")]
    Partial(usize),
    /// The object found does not name the target at any of the connector's `names_target`
    /// pointers: the vendor matched it more loosely than the target names it.
    #[error(
        "the object found names the target at none of {0:?}: the vendor matched it more loosely than the target names it"
    )]
    NotNamed(Vec<String>),
}

/// Why a step or a proposal cannot use a connector for an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the built-in connector does not implement {0}")]
    BuiltinLacks(ActionKind),
    #[error("unknown connector {0:?}")]
    Unknown(String),
    #[error("connector {name:?} ({kind}) does not implement {action}")]
    Lacks {
        name: String,
        kind: ConnectorKind,
        action: ActionKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts the audit store and the connector-file problems carry: they must not drift.
    #[test]
    fn texts_stay_as_recorded() {
        let table: &[(&dyn std::fmt::Display, &str)] = &[
            (
                &ValueError::Control("a\nb".into()),
                r#"refusing "a\nb" in a request URL: it contains a control character"#,
            ),
            (
                &ValueError::FilterChar {
                    value: "ws-*".into(),
                    language: "fql",
                    ch: '*',
                },
                r#"refusing "ws-*" in a fql filter: '*' would change what the filter matches"#,
            ),
            (
                &ValueError::Reserved("me".into()),
                r#"refusing "me" in a request URL: the vendor reads it as something other than a name"#,
            ),
            (
                &TemplateError::OutsideLiteral {
                    placeholder: "target".into(),
                    language: "fql",
                    param: "filter".into(),
                    quote: '\'',
                },
                r#"placeholder {target} in the fql filter "filter" must stand inside a '…' string literal"#,
            ),
            (
                &RenderError::NoValue("ioc.type".into()),
                "no value for {ioc.type}",
            ),
            (
                &RenderError::Unclosed("/a/{b".into()),
                r#"unclosed `{` in "/a/{b""#,
            ),
            (&AuthError::Status(500), "token endpoint answered 500"),
            (
                &Ambiguity::TooMany(3),
                "3 vendor objects match and the connector declares no tie-break",
            ),
            (
                &LookupError::Lacks {
                    name: "okta".into(),
                    kind: ConnectorKind::Okta,
                    action: ActionKind::IsolateHost,
                },
                r#"connector "okta" (okta) does not implement isolate_host"#,
            ),
        ];
        for (e, text) in table {
            assert_eq!(e.to_string(), *text);
        }
    }
}
