//! What a crash between a job and its message leaves behind is finished by the next step: a
//! report retried after its job step completes the message, a job whose message moved on is
//! never handed out, and `create-indexes` gives live messages without a job their job.

use mongodb::bson::{doc, DateTime};
use serde_json::json;
use sms_shared::db::jobs::Job;
use sms_shared::db::messages::Message;
use sms_shared::domain::status::Status;

use crate::helpers::*;

#[tokio::test]
async fn a_report_retried_after_its_job_step_completes_the_message() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (sent, sending) = (staged(agent, 50, 2), staged(agent, 50, 1));
    insert(&app, &[sent.clone(), sending.clone()]).await;
    let lease = poll(&app, &token, 10).await["jobs"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The API died after the job steps of `SENT` (job removed) and `SENDING` (job moved on),
    // before the messages followed.
    app.db
        .jobs
        .collection()
        .delete_one(doc! {"_id": sent.id})
        .await
        .unwrap();
    app.db
        .jobs
        .collection()
        .update_one(
            doc! {"_id": sending.id},
            doc! {"$set": {"status": "SENDING", "sending_at": DateTime::now()}, "$unset": {"available_at": ""}},
        )
        .await
        .unwrap();
    assert_eq!(load(&app, sent.id).await.status, Status::Assigned);

    let results = report(
        &app,
        &token,
        json!([
            {"message_id": sent.id.to_hex(), "status": "SENT", "lease_id": lease},
            {"message_id": sending.id.to_hex(), "status": "SENDING", "lease_id": lease},
        ]),
    )
    .await;
    assert_eq!(
        results[0],
        json!({"message_id": sent.id.to_hex(), "ok": true, "status": "SENT"})
    );
    assert_eq!(
        results[1],
        json!({"message_id": sending.id.to_hex(), "ok": true, "status": "SENDING"})
    );
    assert_eq!(load(&app, sent.id).await.status, Status::Sent);
    assert_eq!(load(&app, sending.id).await.status, Status::Sending);
    counters_match_a_recount(&app).await;

    // Another lease's retry is still refused.
    let stale = report(
        &app,
        &token,
        json!([{"message_id": sent.id.to_hex(), "status": "DELIVERED", "lease_id": "other"}]),
    )
    .await;
    assert_eq!(stale[0]["error"], "STALE_LEASE");
}

#[tokio::test]
async fn a_job_whose_message_moved_on_is_not_handed_out() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let (settled, sending, fine) = (
        staged(agent, 90, 3),
        staged(agent, 80, 2),
        staged(agent, 10, 1),
    );
    insert(&app, &[settled.clone(), sending.clone(), fine.clone()]).await;
    // The messages moved on while their jobs stayed leasable (as a crash could leave them).
    let messages = app.db.messages.collection();
    let started = DateTime::from_millis(DateTime::now().timestamp_millis() - 5_000);
    messages
        .update_one(doc! {"_id": settled.id}, doc! {"$set": {"status": "SENT"}})
        .await
        .unwrap();
    messages
        .update_one(
            doc! {"_id": sending.id},
            doc! {"$set": {"status": "SENDING", "sending_at": started}},
        )
        .await
        .unwrap();

    let body = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&body), vec![fine.id.to_hex()]);
    assert!(app.db.jobs.find(settled.id).await.unwrap().is_none());
    let j = app.db.jobs.find(sending.id).await.unwrap().unwrap();
    assert_eq!((j.status, j.available_at), (Status::Sending, None));
    assert_eq!(j.sending_at, Some(started), "the reconciler times it out");
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());
    assert_eq!(metric(&app, "sms_leases_total").await, 1.0);
}

#[tokio::test]
async fn create_indexes_gives_live_messages_without_a_job_their_job() {
    let (app, agent, token) = app_with_agent(&[FAST]).await;
    let pending = staged(agent, 50, 3);
    let mut expired = in_status(staged(agent, 50, 2), Status::Assigned);
    expired.lease_expires_at = Some(DateTime::from_millis(0));
    let sending = in_status(staged(agent, 50, 1), Status::Sending);
    let done = in_status(staged(agent, 50, 0), Status::Sent);
    let mut unstaged = staged(agent, 50, 0);
    unstaged.staged = false;
    let all: Vec<Message> = vec![
        pending.clone(),
        expired.clone(),
        sending.clone(),
        done.clone(),
        unstaged.clone(),
    ];
    // As an earlier version left them: messages only.
    app.db.messages.insert_many(&all).await.unwrap();
    assert!(job_ids(&poll(&app, &token, 10).await).is_empty());

    sms_api::commands::create_indexes(&app.db).await.unwrap();
    sms_api::commands::create_indexes(&app.db).await.unwrap();
    assert_eq!(app.count("sms_jobs", doc! {}).await, 3);
    let j: Job = app.db.jobs.find(sending.id).await.unwrap().unwrap();
    assert_eq!(
        (j.status, j.holder, j.available_at),
        (Status::Sending, Some(agent), None)
    );
    let body = poll(&app, &token, 10).await;
    assert_eq!(
        job_ids(&body),
        vec![pending.id.to_hex(), expired.id.to_hex()]
    );
    assert_eq!(body["jobs"][1]["attempts"], 2);
}
