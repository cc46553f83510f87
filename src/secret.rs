//! Secrets: where they come from and how they are kept out of logs, errors and the audit store.
//!
//! Owns: [`SecretRef`] (how a config file names a secret: an environment variable, a file, or
//! only its SHA-256), [`Secret`] (a value whose `Debug`/`Display` print `**REDACTED**`), and
//! constant-time comparison of presented tokens against configured ones.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How a config file refers to a secret. Secrets themselves never live in config files. (Its
/// `Deserialize` never repeats the value it was given: an operator who pastes a token where a
/// reference belongs gets an error that does not print the token.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// Read from this environment variable at start.
    Env(String),
    /// Read from this file at start (trailing newline trimmed).
    File(PathBuf),
    /// Only the hex SHA-256 of the token is configured (for tokens cordon verifies but never
    /// sends).
    Sha256(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {0}: {1}")]
    File(String, String),
    #[error("secret from {0} is empty")]
    Empty(String),
    #[error("sha256 must be 64 hex digits")]
    BadHash,
}

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WANT: &str =
            "a secret reference: { env = \"VAR\" }, { file = \"path\" } or { sha256 = \"hex\" }";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(WANT)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(format!(
                    "a literal value is not allowed here (it would put a secret in the config file); use {WANT}"
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SecretRef, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::custom(format!("empty table; use {WANT}")));
                };
                let value: String = map.next_value().map_err(|_| {
                    serde::de::Error::custom(format!("the value of `{key}` must be a string"))
                })?;
                let r = match key.as_str() {
                    "env" => SecretRef::Env(value),
                    "file" => SecretRef::File(PathBuf::from(value)),
                    "sha256" => SecretRef::Sha256(value),
                    _ => {
                        return Err(serde::de::Error::custom(format!(
                            "unknown key `{key}`; use {WANT}"
                        )));
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "use exactly one of env, file, sha256 ({WANT})"
                    )));
                }
                Ok(r)
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret value. Printing it never reveals it.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(SecretString::from(s))
    }

    /// The value, for the one place that must send it (an auth header).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl SecretRef {
    /// Resolves to the secret value. Not valid for `Sha256` references (use [`TokenHash`]).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| SecretError::File(path.display().to_string(), e.to_string()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            SecretRef::Sha256(_) => return Err(SecretError::BadHash),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        Ok(Secret::new(value))
    }

    /// Where the secret comes from, safe to print.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(n) => format!("env {n}"),
            SecretRef::File(p) => format!("file {}", p.display()),
            SecretRef::Sha256(_) => "sha256".to_string(),
        }
    }
}

/// A token cordon verifies (ingest bearer tokens, approver tokens), held only as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(**REDACTED**)")
    }
}

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn from_ref(r: &SecretRef) -> Result<TokenHash, SecretError> {
        match r {
            SecretRef::Sha256(hex_digest) => {
                let bytes = hex::decode(hex_digest.trim()).map_err(|_| SecretError::BadHash)?;
                let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadHash)?;
                Ok(TokenHash(arr))
            }
            other => Ok(TokenHash::of(other.resolve()?.expose())),
        }
    }

    /// Constant-time check of a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("canary-7f3a".into());
        assert_eq!(format!("{s:?} {s}"), "**REDACTED** **REDACTED**");
        let t = TokenHash::of("canary-7f3a");
        assert!(!format!("{t:?}").contains("canary"));
        assert!(t.matches("canary-7f3a"));
        assert!(!t.matches("canary-7f3b"));
    }

    #[test]
    fn a_literal_secret_in_config_is_refused_without_echoing_it() {
        #[derive(Debug, serde::Deserialize)]
        struct C {
            #[allow(dead_code)]
            token: SecretRef,
        }
        // cordon reports `message()` (the TOML source line, which `Display` adds, is never printed).
        let err = toml::from_str::<C>("token = \"s3cret-canary\"")
            .unwrap_err()
            .message()
            .to_string();
        assert!(!err.contains("s3cret-canary"), "{err}");
        assert!(err.contains("literal value is not allowed"), "{err}");
        let err = toml::from_str::<C>("token = { vault = \"s3cret-canary\" }")
            .unwrap_err()
            .message()
            .to_string();
        assert!(!err.contains("s3cret-canary"), "{err}");
        let ok: C = toml::from_str("token = { env = \"X\" }").unwrap();
        assert_eq!(ok.token, SecretRef::Env("X".into()));
    }

    #[test]
    fn hash_refs() {
        let h = hex::encode(Sha256::digest(b"tok"));
        let t = TokenHash::from_ref(&SecretRef::Sha256(h)).unwrap();
        assert!(t.matches("tok"));
        assert_eq!(
            TokenHash::from_ref(&SecretRef::Sha256("zz".into())),
            Err(SecretError::BadHash)
        );
        assert!(matches!(
            SecretRef::Env("CORDON_TEST_SURELY_UNSET_VAR".into()).resolve(),
            Err(SecretError::EnvMissing(_))
        ));
    }
}
