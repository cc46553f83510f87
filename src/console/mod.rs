//! The SOC console: the web pages analysts and approvers use, served by the daemon under `/ui`.
//!
//! Owns: the `[console]` config section, the view models built from the engine's typed reads
//! (`view`: queue, case, approvals inbox, audit chain state), the HTML templates compiled into
//! the binary (`page`, maud: every interpolated value is escaped) and the static assets
//! (`assets`: one stylesheet and one small script, no inline script anywhere). It knows no axum:
//! routes, sessions, CSRF and headers are `http::console`'s; OpenID Connect is `oidc`'s. It owns
//! no case state: it reads committed state and votes through the engine.

pub mod assets;
pub mod page;
pub mod view;

use serde::Deserialize;

use crate::config::Problem;
use crate::secret::SecretRef;

/// `[console]`: the web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// Serve the console under `/ui` on the HTTP listener.
    pub enabled: bool,
    /// A session ends this long after sign-in.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure`: set it when cordon is reached over TLS (a
    /// TLS-terminating proxy in front of the HTTP listener).
    pub secure_cookies: bool,
    /// Approvers may sign in with their `grpc.approvers` token.
    pub token_sign_in: bool,
    /// Most sessions held at once (the oldest is dropped beyond it).
    pub max_sessions: usize,
    /// Enrichment facts older than this are flagged stale in the queue and on the case page.
    pub stale_after_secs: u64,
    /// The origin browsers reach the console at (`https://cordon.example.org`), when a proxy in
    /// front rewrites `Host`: a POST's `Origin` must then be exactly this. Unset: the `Origin`'s
    /// host must be the request's `Host`.
    pub public_origin: Option<String>,
    /// Sign-in with OpenID Connect (authorization code with PKCE).
    pub oidc: Option<OidcConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_ttl_secs: 8 * 3600,
            secure_cookies: false,
            token_sign_in: true,
            max_sessions: 10_000,
            stale_after_secs: 24 * 3600,
            public_origin: None,
            oidc: None,
        }
    }
}

/// `[console.oidc]`: the identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` is read at the first sign-in.
    pub issuer: String,
    pub client_id: String,
    /// The client secret, by reference (`env:`/`file:`); none for a public client (PKCE only).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// Where the provider sends the browser back: `<console URL>/ui/oidc/callback`.
    pub redirect_url: String,
    /// The ID token claim that names the person; matched against the `email` attribute of the
    /// users in the policy entity files, as chat ids are matched.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Timeout of each call to the provider.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_user_claim() -> String {
    "email".into()
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into()]
}
fn default_timeout_secs() -> u64 {
    10
}

/// An `http(s)` URL: `https`, or `http` to a loopback host only.
pub(crate) fn check_url(key: &str, v: &str, out: &mut Vec<(String, String)>) {
    match url::Url::parse(v) {
        Err(e) => out.push((key.into(), format!("not a URL: {e}"))),
        Ok(u) => {
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            };
            if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
                out.push((
                    key.into(),
                    "must be https (plain http only to a loopback host)".into(),
                ));
            }
        }
    }
}

/// A configured origin in the form browsers send it (`scheme://host[:port]`, lowercase, no
/// trailing slash): an `http`/`https` URL with a host and nothing after it.
pub fn origin_of(v: &str) -> Result<String, String> {
    let u = url::Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err("must be an http or https origin (scheme://host[:port])".into());
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return Err("must be an origin only: scheme, host and port, no path".into());
    }
    Ok(u.origin().ascii_serialization())
}

impl ConsoleConfig {
    /// Pure checks; every problem at once.
    pub fn validate(&self, file: &str) -> Vec<Problem> {
        let mut out: Vec<(String, String)> = Vec::new();
        if !(60..=7 * 24 * 3600).contains(&self.session_ttl_secs) {
            out.push((
                "console.session_ttl_secs".into(),
                "must be between 60 and 604800".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_sessions) {
            out.push((
                "console.max_sessions".into(),
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.stale_after_secs == 0 {
            out.push((
                "console.stale_after_secs".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(o) = &self.public_origin
            && let Err(e) = origin_of(o)
        {
            out.push(("console.public_origin".into(), e));
        }
        if let Some(o) = &self.oidc {
            check_url("console.oidc.issuer", &o.issuer, &mut out);
            check_url("console.oidc.redirect_url", &o.redirect_url, &mut out);
            if o.client_id.trim().is_empty() {
                out.push(("console.oidc.client_id".into(), "must not be empty".into()));
            }
            if o.user_claim.trim().is_empty() {
                out.push(("console.oidc.user_claim".into(), "must not be empty".into()));
            }
            if !o.scopes.iter().any(|s| s == "openid") {
                out.push(("console.oidc.scopes".into(), "must include openid".into()));
            }
            if !(1..=120).contains(&o.timeout_secs) {
                out.push((
                    "console.oidc.timeout_secs".into(),
                    "must be between 1 and 120".into(),
                ));
            }
            if let Some(s) = &o.client_secret
                && let Err(e) = s.resolve()
            {
                out.push(("console.oidc.client_secret".into(), e.to_string()));
            }
        }
        out.into_iter()
            .map(|(k, r)| Problem::new(file, &k, r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let (cfg, unknown) = crate::config::Config::parse("c.toml", toml_text).unwrap();
        let mut out: Vec<String> = unknown.iter().map(|p| p.to_string()).collect();
        out.extend(cfg.console.validate("c.toml").iter().map(|p| p.to_string()));
        out
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_each_reported() {
        assert!(problems("").is_empty());
        let p = problems(
            "[console]\nsession_ttl_secs = 5\nmax_sessions = 0\nstale_after_secs = 0\nsesion_ttl_secs = 1\n\
             [console.oidc]\nissuer = \"http://idp.example.org\"\nclient_id = \"\"\n\
             redirect_url = \"not a url\"\nscopes = [\"email\"]\ntimeout_secs = 0\n",
        );
        for key in [
            "console.session_ttl_secs",
            "console.max_sessions",
            "console.stale_after_secs",
            "console.sesion_ttl_secs",
            "console.oidc.issuer",
            "console.oidc.client_id",
            "console.oidc.redirect_url",
            "console.oidc.scopes",
            "console.oidc.timeout_secs",
        ] {
            assert!(
                p.iter().any(|x| x.contains(&format!("{key}:"))),
                "{key} not reported in {p:#?}"
            );
        }
    }

    #[test]
    fn a_public_origin_is_an_origin_and_nothing_more() {
        assert_eq!(
            origin_of("https://Cordon.Example.org/").unwrap(),
            "https://cordon.example.org"
        );
        assert_eq!(
            origin_of("https://cordon.example.org:8443").unwrap(),
            "https://cordon.example.org:8443"
        );
        for bad in [
            "cordon.example.org",
            "ftp://x.example",
            "https://x.example/ui",
            "nope",
        ] {
            assert!(origin_of(bad).is_err(), "{bad}");
        }
        let p = problems("[console]\npublic_origin = \"https://x.example/ui\"\n");
        assert!(
            p.iter().any(|x| x.contains("console.public_origin:")),
            "{p:?}"
        );
    }

    #[test]
    fn an_issuer_must_be_https_unless_it_is_on_loopback() {
        let ok = |u: &str| {
            let mut v = Vec::new();
            check_url("k", u, &mut v);
            v.is_empty()
        };
        assert!(ok("https://login.example.org/realms/soc"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://localhost:9000/"));
        assert!(!ok("http://login.example.org"));
        assert!(!ok("ftp://127.0.0.1"));
    }
}
