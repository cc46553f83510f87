//! The chat layer's errors: why a post, an update, a thread notice, a token or the Bot
//! Framework signing keys could not be had from a chat platform.
//!
//! Owns: [`ChatError`]. Messages are lowercase fragments naming the platform's status and its
//! own error field, never the request (a URL may carry a token). The engine records the text
//! with a failed delivery, so it is part of the audit format. Chat picks no HTTP status of its
//! own for these: a post that failed is retried, not answered.

/// Why a call to a chat platform failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request did not complete, in words (timed out, connection failed, request failed).
    #[error("{0}")]
    Transport(&'static str),
    /// The platform answered a status other than 2xx, with its error field when it sent one.
    #[error("HTTP {status}{}", colon(.why))]
    Status { status: u16, why: Option<String> },
    /// Slack answered 200 with `ok: false` and its error code.
    #[error("slack {method}: {error}")]
    Slack { method: String, error: String },
    /// The platform accepted a post but its answer lacks the reference cordon keeps.
    #[error("{platform}: {what}")]
    NoReference {
        platform: &'static str,
        what: &'static str,
    },
    #[error("JWKS {url}: {source}")]
    JwksFetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("JWKS {url}: HTTP {status}")]
    JwksStatus {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("teams token: {0}")]
    TokenTransport(&'static str),
    #[error("teams token: HTTP {0}")]
    TokenStatus(reqwest::StatusCode),
    #[error("teams token: not JSON")]
    TokenNotJson,
    #[error("teams token: no access_token")]
    TokenMissing,
    #[error("no chat platform {0:?} is configured")]
    NoPlatform(String),
}

fn colon(why: &Option<String>) -> String {
    why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::ChatError;

    #[test]
    fn texts_stay_as_the_audit_store_records_them() {
        let unauthorized: reqwest::StatusCode = 401u16.try_into().unwrap();
        let table: &[(ChatError, &str)] = &[
            (ChatError::Transport("timed out"), "timed out"),
            (
                ChatError::Status {
                    status: 500,
                    why: None,
                },
                "HTTP 500",
            ),
            (
                ChatError::Status {
                    status: 429,
                    why: Some("ratelimited".into()),
                },
                "HTTP 429: ratelimited",
            ),
            (
                ChatError::Slack {
                    method: "chat.update".into(),
                    error: "message_not_found".into(),
                },
                "slack chat.update: message_not_found",
            ),
            (
                ChatError::NoReference {
                    platform: "teams",
                    what: "the created activity has no id",
                },
                "teams: the created activity has no id",
            ),
            (
                ChatError::TokenStatus(unauthorized),
                "teams token: HTTP 401 Unauthorized",
            ),
            (
                ChatError::NoPlatform("irc".into()),
                "no chat platform \"irc\" is configured",
            ),
        ];
        for (e, text) in table {
            assert_eq!(e.to_string(), *text);
        }
    }
}
