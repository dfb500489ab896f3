//! The reconciler: messages stuck in `SENDING` are failed with `SENDING_TIMEOUT`, and the
//! per-agent in-flight gauge follows what agents hold.

use std::time::{Duration, Instant};

use serde_json::json;
use sms_shared::domain::status::Status;

use crate::helpers::*;

#[tokio::test]
async fn the_reconciler_fails_messages_stuck_in_sending() {
    let (app, agent, token) = app_with_agent(&[
        FAST,
        ("SENDING_TIMEOUT_SECONDS", "1"),
        ("RECONCILE_INTERVAL_MS", "200"),
    ])
    .await;
    let stuck = staged(agent, 60, 0);
    let held = staged(agent, 50, 0);
    insert(&app, &[stuck.clone(), held.clone()]).await;
    assert_eq!(job_ids(&poll(&app, &token, 10).await).len(), 2);
    let results = report(
        &app,
        &token,
        json!([{"message_id": stuck.id.to_hex(), "status": "SENDING"}]),
    )
    .await;
    assert_eq!(results[0]["ok"], true);

    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let m = load(&app, stuck.id).await;
        if m.status == Status::Failed {
            break m;
        }
        assert!(Instant::now() < deadline, "still {} after 10 s", m.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.last_error.as_deref(), Some("SENDING_TIMEOUT"));
    let waited = failed.failed_at.unwrap().timestamp_millis()
        - failed.sending_at.unwrap().timestamp_millis();
    assert!(waited >= 1_000, "failed after {waited} ms");
    assert_eq!(load(&app, held.id).await.status, Status::Assigned);
    // The pass counts its timeouts once their messages are failed.
    assert!(
        eventually(10, || async {
            metric(&app, "sms_sending_timeouts_total").await == 1.0
        })
        .await,
        "sms_sending_timeouts_total"
    );

    // Never sent again, and the phone's late success report cannot revive it.
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
    let results = report(
        &app,
        &token,
        json!([{"message_id": stuck.id.to_hex(), "status": "SENT"}]),
    )
    .await;
    assert_eq!(results[0]["error"], "INVALID_TRANSITION");
    assert_eq!(results[0]["status"], "FAILED");

    // The gauge counts what the agent still holds: the one live lease.
    let gauge = format!(
        "sms_agent_in_flight_messages{{agent_id=\"{}\"}}",
        agent.to_hex()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, &gauge).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "in-flight gauge never settled at 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
