//! Clients of the daemon under test: the HTTP helpers on [`TestDaemon`], a proxy-free HTTP
//! client and JSON calls for child daemons, and gRPC clients signed in with a bearer token.

use std::time::Duration;

use cordon::api::client::{self, ClientError, ClientOptions, Clients};
use cordon::secret::Secret;
use serde_json::Value;

use super::auth::token_of;
use super::daemon::{TestDaemon, fixture};

impl TestDaemon {
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with(path, body, |b| b).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> (u16, Value) {
        let r = f(self.client.post(format!("{}{path}", self.base)).body(body))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts a fixture and asserts it was accepted; returns the ack.
    pub async fn ingest_fixture(&self, format: &str, file: &str) -> Value {
        let path = if format == "cordon" {
            "/v1/alerts".to_string()
        } else {
            format!("/v1/alerts/{format}")
        };
        let (status, body) = self.post(&path, fixture(file)).await;
        assert_eq!(status, 202, "{format}: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The case and its actions.
    pub async fn case(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/cases/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// The gRPC endpoint, `http://127.0.0.1:<port>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.running().grpc_addr)
    }

    /// gRPC clients over plain HTTP/2, with `token` as the bearer token (or none).
    pub async fn grpc(&self, token: Option<&str>) -> Clients {
        grpc(&self.grpc_url(), token).await
    }

    /// gRPC clients signed in as `user` with the approver token [`token_of`]`(user)`.
    pub async fn grpc_as(&self, user: &str) -> Clients {
        self.grpc(Some(&token_of(user))).await
    }
}

/// gRPC clients for `addr` (`http://127.0.0.1:<port>`) with `token` as the bearer token;
/// `Err` when the daemon cannot be reached (e.g. it was just killed).
pub async fn try_grpc(addr: &str, token: Option<&str>) -> Result<Clients, ClientError> {
    client::connect(&ClientOptions {
        addr: addr.to_string(),
        token: token.map(|t| Secret::new(t.to_string())),
        ..Default::default()
    })
    .await
}

/// [`try_grpc`], panicking when the daemon cannot be reached.
pub async fn grpc(addr: &str, token: Option<&str>) -> Clients {
    try_grpc(addr, token)
        .await
        .expect("connect to the gRPC API")
}

/// An HTTP client that never goes through a proxy (the daemon is on 127.0.0.1).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Posts a JSON body; `Err` when the connection failed (e.g. the daemon was killed).
pub async fn post_json(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

/// `GET base+path` as JSON (a body that is not JSON comes back as a string); panics when the
/// daemon cannot be reached.
pub async fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    get_json_with(&http_client(), base, path).await
}

/// [`get_json`] on a client the caller keeps (building a client reads the system's root
/// certificates: too slow to do per request in a loop).
pub async fn get_json_with(
    c: &reqwest::Client,
    base: &str,
    path: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}
