//! Integration tests: the real daemon in-process on 127.0.0.1:0, driven over real HTTP (and the
//! real binary as a child process where a crash or an exit status is the point).

mod common;
mod fakes;
mod live;

mod approvals_cli;
mod audit_checkpoints;
mod audit_tamper;
mod bad_input;
mod cases;
mod chat;
mod cli;
mod conn_limits;
mod connector_faults;
mod console;
mod console_browser;
mod crash;
mod crash_loop;
mod decisions;
mod exec_crash;
mod executor;
mod executor_safety;
mod expiry_paused;
mod fail_closed;
mod fanout;
mod grpc;
mod ingest;
mod log_escape;
mod policy_props;
mod policy_prove;
mod policy_reload;
mod python_client;
mod resume_guard;
mod secrets;
mod sources;
mod store_damage;
mod strict_input;
mod target_resolve;
mod tidy;
