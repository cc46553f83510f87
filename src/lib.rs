//! cordon: a policy-driven SOAR orchestration daemon.
//!
//! SIEM alerts come in over HTTP (`http`) in one of the `ingest` formats and become normalized
//! [`alert::Alert`]s; the `engine` task groups them into `case`s, applies `suppress`ion and
//! `enrich`ment, lets `playbook`s propose `action` requests, asks `policy` (Cedar) for each
//! step's tier, and records every input and output in the hash-chained `store`. The `executor`
//! runs approved actions through `connector`s. See
//! ARCHITECTURE.md for the code map and the invariants.

pub mod action;
pub mod agent;
pub mod alert;
pub mod api;
pub mod audit;
pub mod case;
pub mod chat;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod connector;
pub mod console;
pub mod daemon;
pub mod engine;
pub mod enrich;
pub mod executor;
pub mod explain;
pub mod http;
pub mod ingest;
pub mod learn;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod nice;
pub mod oidc;
pub mod playbook;
pub mod policy;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod suppress;
