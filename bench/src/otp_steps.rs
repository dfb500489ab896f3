//! Where an OTP's time goes, read from its message's own timestamps and the bench's clock (the
//! same machine's): the `POST` sent → accepted (`created_at`: the API took the request past
//! validation) → staging (`staged_at`: a dispatcher took its event and began staging it) →
//! leased (`leased_at`: a poll claimed its job) → the poll's answer holding it arrived.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::Collection;

/// Per OTP, milliseconds from the `POST` to acceptance, from acceptance to staging, from staging
/// to the lease and from the lease to the poll's answer.
#[derive(Debug, Clone, Default)]
pub struct OtpSteps {
    pub to_accepted_ms: Vec<f64>,
    pub to_staged_ms: Vec<f64>,
    pub to_leased_ms: Vec<f64>,
    pub to_answer_ms: Vec<f64>,
}

/// The steps of the OTPs sent to `agent` since `since`; `wall_ms` holds, per recipient, when
/// its `POST` was sent and its poll answer arrived (Unix milliseconds).
pub async fn read(
    messages: &Collection<Document>,
    agent: ObjectId,
    since: DateTime,
    wall_ms: &HashMap<String, (i64, i64)>,
) -> anyhow::Result<OtpSteps> {
    let found: Vec<Document> = messages
        .find(doc! {"agent_id": agent, "created_at": {"$gte": since}})
        .projection(doc! {"to": 1, "created_at": 1, "staged_at": 1, "leased_at": 1})
        .await?
        .try_collect()
        .await?;
    let mut steps = OtpSteps::default();
    for m in found {
        let at = |field| {
            m.get_datetime(field)
                .ok()
                .map(|t| t.timestamp_millis() as f64)
        };
        if let (Some(created), Some(staged), Some(leased)) =
            (at("created_at"), at("staged_at"), at("leased_at"))
        {
            steps.to_staged_ms.push(staged - created);
            steps.to_leased_ms.push(leased - staged);
            if let Some((sent, answered)) = m.get_str("to").ok().and_then(|to| wall_ms.get(to)) {
                steps.to_accepted_ms.push(created - *sent as f64);
                steps.to_answer_ms.push(*answered as f64 - leased);
            }
        }
    }
    Ok(steps)
}
