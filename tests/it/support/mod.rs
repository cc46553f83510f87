//! Test support, written once and shared by every integration test module:
//! - `daemon`: the daemon in-process on 127.0.0.1:0 (workspace, test clock, start, restart,
//!   stop) and `eventually`, the bounded wait for a condition;
//! - `binary`: the daemon as the real `cordon` binary (one-shot commands, a `serve` child on free
//!   loopback ports, its config file);
//! - `clients`: HTTP calls on the test daemon, a proxy-free HTTP client, gRPC clients signed in
//!   with a bearer token;
//! - `auth`: approver tokens, the fakes' vendor auth (issued tokens, the auth switch, the
//!   Microsoft identity platform token endpoint), token requests, HMAC and base64;
//! - `fakes`: the stateful fake vendor and chat APIs on loopback, one file each, on the shared
//!   `FakeServer` (request log, armed faults);
//! - `live`: all seven vendor fakes at once, the shipped connectors rewired to them in `live`
//!   mode, and helpers that drive an alert through approval to a finished action.
//!
//! The most used items are re-exported here (`support::start`, `support::cordon`, ...).

#![allow(dead_code)]

pub mod auth;
pub mod binary;
pub mod clients;
pub mod daemon;
pub mod fakes;
pub mod live;

pub use auth::{USERS, approvers, sha_ref, token_of};
pub use binary::*;
pub use clients::*;
pub use daemon::*;
