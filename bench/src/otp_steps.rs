//! Where an OTP's time goes inside the service, read from its message's own timestamps:
//! accepted (`created_at`: the API accepted the request) → staging (`staged_at`: a dispatcher
//! took its event and began staging it) → leased (`leased_at`: a poll claimed its job). What
//! `otp_p99_ms` adds to these is the `POST` before acceptance and the poll's answer after the
//! claim.

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use mongodb::Collection;

/// Per OTP, milliseconds from acceptance to staging and from staging to the lease.
#[derive(Debug, Clone, Default)]
pub struct OtpSteps {
    pub to_staged_ms: Vec<f64>,
    pub to_leased_ms: Vec<f64>,
}

/// The steps of the OTPs sent to `agent` since `since`.
pub async fn read(
    messages: &Collection<Document>,
    agent: ObjectId,
    since: DateTime,
) -> anyhow::Result<OtpSteps> {
    let found: Vec<Document> = messages
        .find(doc! {"agent_id": agent, "created_at": {"$gte": since}})
        .projection(doc! {"created_at": 1, "staged_at": 1, "leased_at": 1})
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
        }
    }
    Ok(steps)
}
