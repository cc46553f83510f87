//! Prometheus metrics (`GET /metrics`).
//!
//! Owns: the metric registry and every metric cordon exports. Names are `cordon_*`, counters
//! end in `_total`, durations in `_seconds`; labels are bounded sets (source, outcome, tier),
//! never a case, user or alert id.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub source: String,
    /// `accepted`, `duplicate`, or the error code (`malformed_json`, `unauthorized`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChatLabels {
    pub platform: String,
    /// Posts: `posted` or `failed`. Callbacks: `accepted` or the refusal code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// An ingest source, or `all`.
    pub source: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Labels of `cordon_vote_seconds` and `cordon_store_commit_stage_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Votes: `queued` (handed to the engine until it takes the vote up), `deciding`, or
    /// `durable` (decided until its commit is durable and the caller is answered). Commits:
    /// `start` (handed to the writing thread until it starts), `pack` (building the batch:
    /// compressing values and audit chunks), `apply` (sled's `apply_batch`), `flush` (sled's
    /// flush) and `sync` (`fdatasync`).
    pub stage: String,
}

/// A histogram family whose members share one bucket layout.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The SOC↔CTI loop and operator metrics (`crate::report`), computed from the whole store and
/// set by the scheduler; `NaN` while there is nothing to measure.
#[derive(Clone, Default)]
pub struct LoopGauges {
    pub intel_tagged_ratio: Family<SourceLabels, FloatGauge>,
    pub intel_lead_time_seconds: FloatGauge,
    pub time_to_enriched_case_seconds: FloatGauge,
    pub time_to_first_human_action_seconds: FloatGauge,
    pub escalation_acceptance_ratio: FloatGauge,
    pub approval_wait_seconds: Family<TierLabels, FloatGauge>,
    pub action_success_ratio: FloatGauge,
    pub false_positive_ratio: FloatGauge,
    pub repeat_false_positives: Gauge,
    pub intel_credited_incidents_quarter: Gauge,
}

impl LoopGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "cordon_loop_intel_tagged_ratio",
            "Share of alerts tagged with the intel that motivated their rule, by source (and all)",
            self.intel_tagged_ratio.clone(),
        );
        r.register(
            "cordon_loop_intel_lead_time_seconds",
            "Mean time from an intel finding to its rule's first detection",
            self.intel_lead_time_seconds.clone(),
        );
        r.register(
            "cordon_loop_time_to_enriched_case_seconds",
            "Mean time from an alert's detection to its enriched case",
            self.time_to_enriched_case_seconds.clone(),
        );
        r.register(
            "cordon_loop_time_to_first_human_action_seconds",
            "Mean time from a case's opening to the first human action on it",
            self.time_to_first_human_action_seconds.clone(),
        );
        r.register(
            "cordon_loop_escalation_acceptance_ratio",
            "Share of requests escalated to a human (approval tiers) that were accepted",
            self.escalation_acceptance_ratio.clone(),
        );
        r.register(
            "cordon_loop_approval_wait_seconds",
            "Mean wait of a decided approval request, by tier",
            self.approval_wait_seconds.clone(),
        );
        r.register(
            "cordon_loop_action_success_ratio",
            "Share of finished response actions that succeeded",
            self.action_success_ratio.clone(),
        );
        r.register(
            "cordon_loop_false_positive_ratio",
            "Share of cases closed with a disposition that were false positives",
            self.false_positive_ratio.clone(),
        );
        r.register(
            "cordon_loop_repeat_false_positives",
            "False positives with an earlier one of the same rule and entity within 14 days",
            self.repeat_false_positives.clone(),
        );
        r.register(
            "cordon_loop_intel_credited_incidents_quarter",
            "True positives this quarter whose closure credits intel",
            self.intel_credited_incidents_quarter.clone(),
        );
    }
}

/// Connection counts of one listener (HTTP or gRPC).
#[derive(Clone, Default)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections accepted and closed at once because every slot was taken.
    pub refused: Counter,
    /// Idle connections closed to make room for a new one (HTTP only; not exported for gRPC).
    pub evicted: Counter,
}

/// Every metric, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub alerts_received: Family<AlertLabels, Counter>,
    pub cases_open: Gauge,
    pub store_write_seconds: Histogram,
    /// Where a group commit's time goes, by stage (see [`StageLabels`]).
    pub store_commit_stage_seconds: HistogramFamily<StageLabels>,
    pub store_batch_events: Histogram,
    pub decisions: Family<TierLabels, Counter>,
    pub policy_reloads: Family<OutcomeLabels, Counter>,
    /// 1 while the last policy reload failed (the previous set is in force).
    pub policy_reload_failed: Gauge,
    pub enrichment_failures: Counter,
    /// Actions finished by the executor, by final state.
    pub executions: Family<OutcomeLabels, Counter>,
    /// Escalations raised by the executor (fail-closed refusals, unknown outcomes).
    pub escalations: Counter,
    /// Chat posts, updates and thread notices by platform and outcome.
    pub chat_posts: Family<ChatLabels, Counter>,
    /// Chat callbacks by platform and outcome.
    pub chat_callbacks: Family<ChatLabels, Counter>,
    pub http_connections: ListenerMetrics,
    pub grpc_connections: ListenerMetrics,
    pub loop_metrics: LoopGauges,
    /// Shadow decisions (`[policy.shadow]`) by action kind and whether they agreed.
    pub shadow_decisions: Family<ShadowLabels, Counter>,
    /// Where a vote's time goes inside the engine, by stage (see [`StageLabels`]).
    pub vote_seconds: HistogramFamily<StageLabels>,
}

/// Labels of `cordon_shadow_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub action: String,
    /// `agree` or `diverge`.
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let alerts_received = Family::<AlertLabels, Counter>::default();
        r.register(
            "cordon_alerts_received",
            "Alerts received, by source and outcome",
            alerts_received.clone(),
        );
        let cases_open = Gauge::default();
        r.register(
            "cordon_cases_open",
            "Cases not yet learned, suppressed or closed",
            cases_open.clone(),
        );
        let store_write_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register(
            "cordon_store_write_seconds",
            "Duration of one durable group commit (batch write, flush, fdatasync)",
            store_write_seconds.clone(),
        );
        let store_commit_stage_seconds: HistogramFamily<StageLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));
        r.register(
            "cordon_store_commit_stage_seconds",
            "Where a durable group commit's time goes: start (waiting for the writing thread), pack, apply, flush, sync",
            store_commit_stage_seconds.clone(),
        );
        let store_batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        r.register(
            "cordon_store_batch_events",
            "Events folded into one group commit",
            store_batch_events.clone(),
        );
        let decisions = Family::<TierLabels, Counter>::default();
        r.register(
            "cordon_policy_decisions",
            "Step decisions by tier",
            decisions.clone(),
        );
        let policy_reloads = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "cordon_policy_reloads",
            "Policy reload attempts by outcome",
            policy_reloads.clone(),
        );
        let policy_reload_failed = Gauge::default();
        r.register(
            "cordon_policy_reload_failed",
            "1 while the last policy reload failed and the previous set is in force",
            policy_reload_failed.clone(),
        );
        let enrichment_failures = Counter::default();
        r.register(
            "cordon_enrichment_failures",
            "Enrichment sources that could not be consulted for an alert",
            enrichment_failures.clone(),
        );
        let executions = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "cordon_executions",
            "Actions the executor finished, by final state",
            executions.clone(),
        );
        let escalations = Counter::default();
        r.register(
            "cordon_escalations",
            "Executor escalations: refusals, failures and unknown outcomes handed to a person",
            escalations.clone(),
        );
        let chat_posts = Family::<ChatLabels, Counter>::default();
        r.register(
            "cordon_chat_posts",
            "Chat posts, updates and thread notices, by platform and outcome",
            chat_posts.clone(),
        );
        let chat_callbacks = Family::<ChatLabels, Counter>::default();
        r.register(
            "cordon_chat_callbacks",
            "Chat button callbacks, by platform and outcome (accepted or the refusal code)",
            chat_callbacks.clone(),
        );
        let http_connections = ListenerMetrics::default();
        r.register(
            "cordon_http_connections_open",
            "HTTP connections open now",
            http_connections.open.clone(),
        );
        r.register(
            "cordon_http_connections_refused",
            "HTTP connections closed on accept because every slot held a request in flight",
            http_connections.refused.clone(),
        );
        r.register(
            "cordon_http_connections_evicted",
            "Idle HTTP connections closed to make room for a new one at the connection cap",
            http_connections.evicted.clone(),
        );
        let grpc_connections = ListenerMetrics::default();
        r.register(
            "cordon_grpc_connections_open",
            "gRPC connections open now",
            grpc_connections.open.clone(),
        );
        r.register(
            "cordon_grpc_connections_refused",
            "gRPC connections closed on accept because the connection cap was reached",
            grpc_connections.refused.clone(),
        );
        let shadow_decisions = Family::<ShadowLabels, Counter>::default();
        r.register(
            "cordon_shadow_decisions",
            "Step decisions of the shadow policy set by action kind and agreement with the set in force",
            shadow_decisions.clone(),
        );
        let vote_seconds: HistogramFamily<StageLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));
        r.register(
            "cordon_vote_seconds",
            "Votes (approval API, console and chat callbacks), inside the engine: queued until taken up, deciding, and until durable and answered",
            vote_seconds.clone(),
        );
        let loop_metrics = LoopGauges::default();
        loop_metrics.register(&mut r);
        Metrics {
            vote_seconds,
            shadow_decisions,
            loop_metrics,
            http_connections,
            grpc_connections,
            chat_posts,
            chat_callbacks,
            executions,
            escalations,
            registry: Arc::new(r),
            alerts_received,
            cases_open,
            store_write_seconds,
            store_commit_stage_seconds,
            store_batch_events,
            decisions,
            policy_reloads,
            policy_reload_failed,
            enrichment_failures,
        }
    }

    pub fn alert(&self, source: &str, outcome: &str) {
        self.alerts_received
            .get_or_create(&AlertLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One stage of a vote (`queued`, `deciding`, `durable`) took `d`.
    pub fn vote_stage(family: &HistogramFamily<StageLabels>, stage: &str, d: std::time::Duration) {
        family
            .get_or_create(&StageLabels {
                stage: stage.to_string(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn chat(family: &Family<ChatLabels, Counter>, platform: &str, outcome: &str) {
        family
            .get_or_create(&ChatLabels {
                platform: platform.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
