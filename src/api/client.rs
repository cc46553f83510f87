//! A gRPC client for cordon's own tools (`cordon approvals ...`) and tests: connects over
//! plain HTTP/2, TLS or mTLS and adds the bearer token to every call.

use std::path::PathBuf;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::pb;

/// How to reach and authenticate to the daemon.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `http://127.0.0.1:50051` or `https://host:port`.
    pub addr: String,
    /// Bearer token (never printed).
    pub token: Option<crate::secret::Secret>,
    /// CA that signed the server certificate (TLS).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Server name to verify (defaults to the address's host).
    pub server_name: Option<String>,
}

/// Adds `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Intercepted = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Clients for every service, sharing one channel.
pub struct Clients {
    pub alerts: pb::alerts_client::AlertsClient<Intercepted>,
    pub approvals: pb::approvals_client::ApprovalsClient<Intercepted>,
    pub cases: pb::cases_client::CasesClient<Intercepted>,
    pub learning: pb::learning_client::LearningClient<Intercepted>,

    pub explanations: pb::explanations_client::ExplanationsClient<Intercepted>,

    pub agents: pb::agents_client::AgentsClient<Intercepted>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad address {0}: {1}")]
    Address(String, String),
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the token is not valid header text")]
    Token,
}

pub async fn connect(o: &ClientOptions) -> Result<Clients, ClientError> {
    let mut ep = Endpoint::from_shared(o.addr.clone())
        .map_err(|e| ClientError::Address(o.addr.clone(), e.to_string()))?;
    if o.ca.is_some() || o.cert.is_some() || o.addr.starts_with("https://") {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ClientError::Read(p.display().to_string(), e.to_string()))
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &o.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(c), Some(k)) = (&o.cert, &o.key) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        if let Some(n) = &o.server_name {
            tls = tls.domain_name(n.clone());
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| ClientError::Connect(format!("{e:?}")))?;
    let bearer = match &o.token {
        Some(t) => Some(
            format!("Bearer {}", t.expose())
                .parse()
                .map_err(|_| ClientError::Token)?,
        ),
        None => None,
    };
    let b = Bearer(bearer);
    Ok(Clients {
        alerts: pb::alerts_client::AlertsClient::with_interceptor(channel.clone(), b.clone()),
        approvals: pb::approvals_client::ApprovalsClient::with_interceptor(
            channel.clone(),
            b.clone(),
        ),
        cases: pb::cases_client::CasesClient::with_interceptor(channel.clone(), b.clone()),
        learning: pb::learning_client::LearningClient::with_interceptor(channel.clone(), b.clone()),

        explanations: pb::explanations_client::ExplanationsClient::with_interceptor(
            channel.clone(),
            b.clone(),
        ),

        agents: pb::agents_client::AgentsClient::with_interceptor(channel, b),
    })
}
