//! `GET /admin/audit-logs`: every operator write is listed, newest first, with filters and
//! paging.

use mongodb::bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

async fn audit_logs(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/sms/admin/audit-logs{query}"), Auth::Operator)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "audit-logs{query}");
    res.json().await.unwrap()
}

fn actions(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["action"].as_str().unwrap().to_owned(),
                i["target_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_logs_list_newest_first_with_filters_and_paging() {
    let app = spawn_app().await;
    let (first, _) = app.create_api_key(&["sms:send"], Some(100)).await;
    // Keep the first entry's time apart from the rest for the `from` check below.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (second, _) = app.create_api_key(&["sms:read"], None).await;
    let alice = sign(
        json!({"sub": "alice", "exp": minutes_from_now(5)}),
        JWT_SECRET,
    );
    let res = app
        .post(
            "/sms/admin/api-keys",
            Auth::Bearer(&alice),
            json!({"client_name": "Clinic", "scopes": ["sms:send"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let third = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .request(
            Method::DELETE,
            &format!("/sms/admin/api-keys/{first}"),
            Auth::Operator,
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let all = audit_logs(&app, "").await;
    assert_eq!(all["total"], 4);
    assert_eq!(all["limit"], 50);
    assert_eq!(all["skip"], 0);
    let revoke = ("api_key.revoke".to_owned(), first.clone());
    let create = |id: &str| ("api_key.create".to_owned(), id.to_owned());
    assert_eq!(
        actions(&all),
        vec![
            revoke.clone(),
            create(&third),
            create(&second),
            create(&first)
        ]
    );
    let newest = &all["items"][0];
    assert_eq!(newest["actor"], "test-operator");
    assert_eq!(newest["target_type"], "api_key");
    assert_eq!(newest["ip"], "127.0.0.1");
    assert_eq!(newest["details"], json!({"client_name": "SafeShop"}));
    assert!(ObjectId::parse_str(newest["id"].as_str().unwrap()).is_ok());
    let oldest = &all["items"][3];
    assert_eq!(
        oldest["details"],
        json!({"client_name": "SafeShop", "scopes": ["sms:send"], "rate_limit_per_day": 100})
    );
    let times: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["at"].as_str().unwrap())
        .collect();
    assert!(times.iter().all(|t| t.ends_with('Z')), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    let created = audit_logs(&app, "?action=api_key.create").await;
    assert_eq!(created["total"], 3);
    assert_eq!(
        actions(&created),
        vec![create(&third), create(&second), create(&first)]
    );

    let by_alice = audit_logs(&app, "?actor=alice").await;
    assert_eq!(by_alice["total"], 1);
    assert_eq!(actions(&by_alice), vec![create(&third)]);
    assert_eq!(by_alice["items"][0]["actor"], "alice");
    let none = audit_logs(&app, "?actor=alice&action=api_key.revoke").await;
    assert_eq!(none["total"], 0);
    assert_eq!(none["items"], json!([]));

    let page = audit_logs(&app, "?limit=2&skip=1").await;
    assert_eq!(page["total"], 4);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["skip"], 1);
    assert_eq!(actions(&page), vec![create(&third), create(&second)]);
    let capped = audit_logs(&app, "?limit=100000&skip=3").await;
    assert_eq!(capped["limit"], 500);
    assert_eq!(actions(&capped), vec![create(&first)]);

    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(
        audit_logs(&app, &format!("?from={today}")).await["total"],
        4
    );
    assert_eq!(
        audit_logs(&app, &format!("?from={tomorrow}")).await["total"],
        0
    );
    assert_eq!(audit_logs(&app, &format!("?to={today}")).await["total"], 0);
    let since_second = audit_logs(
        &app,
        &format!("?from={}", all["items"][2]["at"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        actions(&since_second),
        vec![revoke, create(&third), create(&second)]
    );

    for (query, field) in [
        ("from=now", "from"),
        ("from=2026-11-26&to=2026-11-25", "to"),
        ("limit=0", "limit"),
    ] {
        let res = app
            .get(&format!("/sms/admin/audit-logs?{query}"), Auth::Operator)
            .await;
        let err = assert_error(res, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(err["errors"][field].is_array(), "{query}: {err}");
    }
}
