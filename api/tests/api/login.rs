//! `POST /auth/login` throttling: failed logins per username and per client address, 429
//! `LOGIN_THROTTLED` with `Retry-After` before any password check, and the counts shared through
//! the database (concurrent attempts never pass more than the limit).

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sms_shared::db::login_throttle::{address_key, user_key};

use crate::helpers::*;

async fn login(app: &TestApp, username: &str, password: &str) -> Response {
    app.post(
        "/sms/auth/login",
        Auth::None,
        json!({"username": username, "password": password}),
    )
    .await
}

/// Asserts a throttled login and returns its `Retry-After`.
async fn assert_throttled(res: Response) -> i64 {
    let retry_after: i64 = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = assert_error(res, StatusCode::TOO_MANY_REQUESTS, "LOGIN_THROTTLED").await;
    assert!(body.get("access_token").is_none());
    retry_after
}

async fn counted(app: &TestApp, key: &str) -> i64 {
    app.db
        .login_throttle
        .count(key, sms_shared::time::now())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_username_is_throttled_after_five_failures_even_with_the_right_password() {
    let app = spawn_app().await;
    for _ in 0..5 {
        assert_error(
            login(&app, ADMIN_USER, "wrong").await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        )
        .await;
    }
    let retry_after = assert_throttled(login(&app, ADMIN_USER, ADMIN_PASSWORD).await).await;
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Throttled attempts are not counted: the count stays at the limit.
    assert_eq!(counted(&app, &user_key(ADMIN_USER)).await, 5);
    assert_eq!(counted(&app, &address_key("127.0.0.1")).await, 5);

    // Other usernames from the same address are not throttled by this one.
    assert_error(
        login(&app, "ghost", "x").await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn unknown_usernames_are_throttled_like_known_ones() {
    let app = spawn_app().await;
    for _ in 0..5 {
        assert_eq!(
            login(&app, "ghost", "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(login(&app, "ghost", "x").await).await;
    assert_eq!(app.count("users", mongodb::bson::doc! {}).await, 1);
}

#[tokio::test]
async fn a_successful_login_clears_the_usernames_failures() {
    let app = spawn_app().await;
    for _ in 0..4 {
        assert_eq!(
            login(&app, ADMIN_USER, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = login(&app, ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert_eq!(counted(&app, &user_key(ADMIN_USER)).await, 0);
    assert_eq!(
        counted(&app, &address_key("127.0.0.1")).await,
        4,
        "the success is not a failure of the address"
    );
    for _ in 0..5 {
        assert_eq!(
            login(&app, ADMIN_USER, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(login(&app, ADMIN_USER, "wrong").await).await;
}

#[tokio::test]
async fn an_address_is_throttled_across_usernames() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_ADDRESS", "3")]).await;
    for name in ["alice", "bob", "carol"] {
        assert_eq!(
            login(&app, name, "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_throttled(login(&app, "dave", "guess").await).await;
    assert_throttled(login(&app, ADMIN_USER, ADMIN_PASSWORD).await).await;
    assert_eq!(counted(&app, &address_key("127.0.0.1")).await, 3);
    // Refused by the address, the attempts were not counted against the usernames.
    assert_eq!(counted(&app, &user_key("dave")).await, 0);
    assert_eq!(counted(&app, &user_key(ADMIN_USER)).await, 0);
}

#[tokio::test]
async fn the_window_ends_and_logins_are_checked_again() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_USER", "2"),
        ("LOGIN_THROTTLE_WINDOW_SECONDS", "1"),
    ])
    .await;
    for _ in 0..2 {
        assert_eq!(
            login(&app, ADMIN_USER, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        assert_throttled(login(&app, ADMIN_USER, ADMIN_PASSWORD).await).await,
        1
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        login(&app, ADMIN_USER, ADMIN_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_attempts_never_pass_more_than_the_limit() {
    let app = spawn_app().await;
    let attempts = (0..20).map(|_| login(&app, ADMIN_USER, "wrong"));
    let answers = futures::future::join_all(attempts).await;
    let (mut refused, mut throttled) = (0, 0);
    for res in answers {
        match res.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_throttled(res).await;
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (refused, throttled),
        (5, 15),
        "exactly the limit was checked"
    );
    assert_eq!(counted(&app, &user_key(ADMIN_USER)).await, 5);
}

#[tokio::test]
async fn concurrent_first_attempts_are_all_counted_and_none_throttled() {
    let app = spawn_app().await;
    // Five fresh usernames at once, each attempt the first of its key: the counters' creation
    // races, and a lost race counts again instead of refusing.
    let attempts = (0..5).map(|i| {
        let app = &app;
        async move { login(app, &format!("user-{i}"), "x").await.status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(counted(&app, &address_key("127.0.0.1")).await, 5);
    let same = (0..5).map(|_| login(&app, "same-user", "x"));
    let statuses: Vec<StatusCode> = futures::future::join_all(same)
        .await
        .iter()
        .map(Response::status)
        .collect();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(counted(&app, &user_key("same-user")).await, 5);
}
