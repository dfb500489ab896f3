//! Long polls: `GET /agent/jobs/next?wait=N` answers as soon as a job of the agent is staged
//! (woken through the wake fanout, from any API process), else with no jobs after `N` seconds;
//! a paced agent is answered at once, a waiting poll holds none of its allowance, a lease that
//! runs out reaches a waiting poll without any wake, shutdown answers waiting polls at once, and
//! the OpenAPI document describes `wait`.
//!
//! Most tests set `LONG_POLL_RECHECK_SECONDS=30`: a poll of `wait=25` answered within seconds
//! can then only have been woken.

use std::time::{Duration, Instant};

use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Waiting polls look again only after their whole wait.
const NO_RECHECK: (&str, &str) = ("LONG_POLL_RECHECK_SECONDS", "30");

/// An answered long poll: its body and how long it took.
struct Answered {
    body: Value,
    took: Duration,
}

/// Starts `GET /sms/agent/jobs/next?limit=10&wait={wait}` in the background; the task expects 200.
fn spawn_long_poll(app: &TestApp, token: &str, wait: u64) -> tokio::task::JoinHandle<Answered> {
    let request = app
        .client
        .get(app.url(&format!("/sms/agent/jobs/next?limit=10&wait={wait}")))
        .bearer_auth(token);
    tokio::spawn(async move {
        let started = Instant::now();
        let res = request.send().await.expect("long poll answered");
        assert_eq!(res.status(), StatusCode::OK, "long poll status");
        let body = res.json().await.expect("JSON body");
        Answered {
            body,
            took: started.elapsed(),
        }
    })
}

async fn long_poll(app: &TestApp, token: &str, wait: u64) -> Answered {
    spawn_long_poll(app, token, wait).await.unwrap()
}

/// Waits until `n` long polls wait in `app`.
async fn polls_waiting(app: &TestApp, n: f64) {
    let waiting = eventually(10, || async {
        metric(app, "sms_agent_long_polls").await == n
    })
    .await;
    assert!(waiting, "{n} long polls are not waiting");
}

/// Waits until `app` consumes wakes.
async fn subscribed(app: &TestApp) {
    let up = eventually(10, || async {
        metric(app, "sms_wake_subscribed").await == 1.0
    })
    .await;
    assert!(up, "the API does not consume wakes");
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_its_job_is_staged() {
    let app = spawn_app_with(&[FAST, NO_RECHECK]).await;
    subscribed(&app).await;
    let s = app.sender().await;
    let dispatcher = app.spawn_dispatcher();
    let poll = spawn_long_poll(&app, &s.agent_token, 25);
    polls_waiting(&app, 1.0).await;
    let submitted = Instant::now();
    let res = app.submit(&s, &[("0901234567", "4321")]).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let request_id = res.json::<Value>().await.unwrap()["request_id"].clone();
    let answered = poll.await.unwrap();
    let after = submitted.elapsed();
    assert!(
        after < Duration::from_secs(5),
        "answered {after:?} after the request, in a poll waiting up to 25 s"
    );
    let jobs = answered.body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{}", answered.body);
    assert_eq!(jobs[0]["request_id"], request_id);
    assert!(jobs[0]["text"].as_str().unwrap().contains("4321"));
    assert_eq!(answered.body["retry_after_seconds"], Value::Null);
    assert_eq!(
        app.count("sms_messages", doc! {"status": "ASSIGNED"}).await,
        1
    );
    polls_waiting(&app, 0.0).await;
    assert!(dispatcher
        .metrics
        .render()
        .contains("sms_wakes_sent_total 1"));
    dispatcher.stop().await;
}

#[tokio::test]
async fn an_empty_long_poll_answers_after_its_wait_and_holds_no_allowance() {
    // Header timeouts limit reading requests only, not how long an answer takes.
    let (app, agent, token) = app_with_agent(&[
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("AGENT_RATE_LIMIT_PER_MIN", "5"),
    ])
    .await;
    let answered = long_poll(&app, &token, 3).await;
    assert_eq!(
        answered.body,
        json!({"jobs": [], "retry_after_seconds": 0}),
        "poll again at once"
    );
    assert!(
        answered.took >= Duration::from_millis(2900) && answered.took < Duration::from_secs(10),
        "answered after {:?} of a 3 s wait",
        answered.took
    );
    assert_eq!(
        app.count("agent_rate", doc! {"agent_id": agent}).await,
        0,
        "every look gave its allowance back"
    );
    insert(
        &app,
        &(0..6).map(|i| staged(agent, 50, i)).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(
        job_ids(&poll(&app, &token, 10).await).len(),
        5,
        "the whole allowance is left after waiting"
    );
}

#[tokio::test]
async fn a_paced_agent_is_answered_at_once() {
    let (app, agent, token) = app_with_agent(&[("AGENT_RATE_LIMIT_PER_MIN", "1")]).await;
    insert(&app, &[staged(agent, 50, 2000), staged(agent, 50, 1000)]).await;
    let first = long_poll(&app, &token, 25).await;
    assert_eq!(job_ids(&first.body).len(), 1);
    assert!(first.took < Duration::from_secs(5), "{:?}", first.took);
    let paced = long_poll(&app, &token, 25).await;
    assert_eq!(job_ids(&paced.body), Vec::<String>::new());
    let retry = paced.body["retry_after_seconds"].as_i64().unwrap();
    assert!((1..=60).contains(&retry), "{}", paced.body);
    assert!(
        paced.took < Duration::from_secs(5),
        "a paced poll does not hang: {:?}",
        paced.took
    );
}

#[tokio::test]
async fn wait_is_a_whole_number_of_seconds_up_to_30() {
    let (app, _agent, token) = app_with_agent(&[]).await;
    for bad in ["31", "-1", "soon", "2.5", "99999999999999999999"] {
        let res = app
            .get(
                &format!("/sms/agent/jobs/next?wait={bad}"),
                Auth::Bearer(&token),
            )
            .await;
        let body = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(body["errors"]["wait"].is_array(), "{bad}: {body}");
    }
    assert_eq!(
        app.count("agent_rate", doc! {}).await,
        0,
        "refused polls reserve nothing"
    );
    for plain in ["/sms/agent/jobs/next?wait=0", "/sms/agent/jobs/next?wait="] {
        let started = Instant::now();
        let res = app.get(plain, Auth::Bearer(&token)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body,
            json!({"jobs": [], "retry_after_seconds": 5}),
            "as before"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn a_job_staged_through_another_api_process_wakes_the_waiting_poll() {
    let a = spawn_app_with(&[FAST, NO_RECHECK]).await;
    let b = spawn_app_from(a.vars.clone()).await;
    subscribed(&a).await;
    subscribed(&b).await;
    let s = a.sender().await;
    let dispatcher = a.spawn_dispatcher();
    let poll = spawn_long_poll(&b, &s.agent_token, 25);
    polls_waiting(&b, 1.0).await;
    let submitted = Instant::now();
    assert_eq!(
        a.submit(&s, &[("0901234567", "777")]).await.status(),
        StatusCode::ACCEPTED
    );
    let answered = poll.await.unwrap();
    assert!(
        submitted.elapsed() < Duration::from_secs(5),
        "answered {:?} after the request, in a poll waiting up to 25 s",
        submitted.elapsed()
    );
    assert_eq!(job_ids(&answered.body).len(), 1, "{}", answered.body);
    assert!(metric(&b, "sms_wakes_received_total").await >= 1.0);
    dispatcher.stop().await;
}

#[tokio::test]
async fn a_lease_that_runs_out_reaches_a_waiting_poll_without_a_wake() {
    let (app, agent, token) = app_with_agent(&[
        FAST,
        ("LEASE_SECONDS", "2"),
        ("LONG_POLL_RECHECK_SECONDS", "1"),
    ])
    .await;
    insert(&app, &[staged(agent, 50, 1000)]).await;
    let first = poll(&app, &token, 10).await;
    assert_eq!(job_ids(&first).len(), 1);
    let again = long_poll(&app, &token, 25).await;
    assert_eq!(job_ids(&again.body), job_ids(&first), "leased again");
    assert_eq!(again.body["jobs"][0]["attempts"], 2);
    assert!(
        again.took < Duration::from_secs(10),
        "found on a recheck after the lease ran out: {:?}",
        again.took
    );
}

#[tokio::test]
async fn stopping_the_server_answers_waiting_polls_at_once() {
    let (mut app, _agent, token) = app_with_agent(&[NO_RECHECK]).await;
    let poll = spawn_long_poll(&app, &token, 25);
    polls_waiting(&app, 1.0).await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "the stop waited {:?}",
        stopping.elapsed()
    );
    let answered = poll.await.unwrap();
    assert_eq!(job_ids(&answered.body), Vec::<String>::new());
    assert!(
        answered.took < Duration::from_secs(15),
        "{:?}",
        answered.took
    );
}

#[tokio::test]
async fn the_openapi_document_describes_wait() {
    let app = spawn_app().await;
    let doc: Value = app
        .get("/openapi.json", Auth::None)
        .await
        .json()
        .await
        .unwrap();
    let params = doc["paths"]["/agent/jobs/next"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let wait = params.iter().find(|p| p["name"] == "wait").expect("wait");
    assert_eq!(wait["in"], "query");
    assert_eq!(wait["required"], false);
    assert_eq!(wait["schema"]["type"], "integer", "{wait}");
    assert_eq!(
        (
            wait["schema"]["minimum"].as_i64(),
            wait["schema"]["maximum"].as_i64()
        ),
        (Some(0), Some(30))
    );
}
