//! The `Explanations` gRPC service: the story of an action or a case from the audit store.
//!
//! Owns: turning an `explain::Story` into its protobuf form (each event's facts as the same
//! JSON the HTTP and CLI forms give). Approver credentials, as for `Cases`.

use tonic::{Code, Request, Response, Status};

use super::{ApiState, pb, status, store_status};

#[tonic::async_trait]
impl pb::explanations_server::Explanations for ApiState {
    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Story>, Status> {
        self.auth.approver(&req)?;
        let id = req.into_inner().id;
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || crate::explain::read(&store, &id))
            .await
            .map_err(|e| status(Code::Internal, format!("explain: {e}")))?
            .map_err(store_status)?;
        let story = found.ok_or_else(|| status(Code::NotFound, "no audit record names this id"))?;
        Ok(Response::new(pb::Story {
            subject_kind: story.subject.kind.to_string(),
            subject_id: story.subject.id,
            events: story
                .events
                .into_iter()
                .map(|e| pb::StoryEvent {
                    seq: e.seq,
                    at_unix_ms: e.at.timestamp_millis(),
                    kind: e.kind,
                    action_id: e.action_id.unwrap_or_default(),
                    what: e.what,
                    facts_json: e.facts.to_string(),
                })
                .collect(),
        }))
    }
}
