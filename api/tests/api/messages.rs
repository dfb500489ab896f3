//! Message reads and searches (`GET /messages`, `/messages/all`, `/messages/{id}`): tenants see
//! only their own, and lists filter and page.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn tenants_see_only_their_own_objects() {
    let app = spawn_app().await;
    let a = app.sender().await;
    let mut b = app.sender().await;
    b.agent_id = a.agent_id.clone();
    let ra = app
        .submit(&a, &[("0901234567", "1"), ("0901234568", "2")])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let rb = app
        .submit(&b, &[("0901234569", "3")])
        .await
        .json::<Value>()
        .await
        .unwrap();
    let (ra, rb) = (
        ra["request_id"].as_str().unwrap().to_owned(),
        rb["request_id"].as_str().unwrap().to_owned(),
    );
    let a_msgs: Value = app
        .get("/messages/all", Auth::ApiKey(&a.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a_msgs["total"], 2);
    let a_msg = a_msgs["items"][0]["id"].as_str().unwrap().to_owned();

    // B cannot see any of A's objects, by any route.
    assert_error(
        app.get(&format!("/requests/{ra}"), Auth::ApiKey(&b.key))
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&format!("/messages?request_id={ra}"), Auth::ApiKey(&b.key))
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&format!("/messages/{a_msg}"), Auth::ApiKey(&b.key))
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    let b_all: Value = app
        .get(
            &format!("/messages/all?agent_id={}", a.agent_id),
            Auth::ApiKey(&b.key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b_all["total"], 1);
    assert_eq!(b_all["items"][0]["request_id"], rb.as_str());
    let b_to: Value = app
        .get("/messages/all?to=0901234567", Auth::ApiKey(&b.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b_to["total"], 0);

    // A sees its own; the operator sees everything.
    assert_eq!(
        app.get(&format!("/messages/{a_msg}"), Auth::ApiKey(&a.key))
            .await
            .status(),
        StatusCode::OK
    );
    let all: Value = app
        .get("/messages/all", Auth::Operator)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], 3);
    assert_eq!(
        app.get(&format!("/requests/{rb}"), Auth::Operator)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn message_lists_filter_and_page() {
    let app = spawn_app().await;
    let s = app.sender().await;
    let nums = numbers(7);
    let recipients: Vec<(&str, &str)> = nums.iter().map(|n| (n.as_str(), "9")).collect();
    let r = app
        .submit(&s, &recipients)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let rid = r["request_id"].as_str().unwrap();
    let page: Value = app
        .get(
            &format!("/messages?request_id={rid}&limit=3&skip=5"),
            Auth::ApiKey(&s.key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            page["total"].as_u64(),
            page["limit"].as_i64(),
            page["skip"].as_u64()
        ),
        (Some(7), Some(3), Some(5))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let capped: Value = app
        .get("/messages/all?limit=100000", Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(capped["limit"], 500);
    let pending: Value = app
        .get("/messages/all?status=PENDING", Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["total"], 7);
    let sent: Value = app
        .get("/messages/all?status=SENT", Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sent["total"], 0);
    let one: Value = app
        .get(
            &format!("/messages/all?to={}", nums[3]),
            Auth::ApiKey(&s.key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["total"], 1);
    let future: Value = app
        .get("/messages/all?from=2999-01-01", Auth::ApiKey(&s.key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["total"], 0);
    let past: Value = app
        .get(
            "/messages/all?until=2000-01-01T00:00:00Z",
            Auth::ApiKey(&s.key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["total"], 0);
    for bad in [
        "status=LOST",
        "agent_id=xyz",
        "from=yesterday",
        "limit=0",
        "to=abc",
        "color=red",
    ] {
        let res = app
            .get(&format!("/messages/all?{bad}"), Auth::ApiKey(&s.key))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let missing = app.get("/messages", Auth::ApiKey(&s.key)).await;
    assert_error(missing, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
}
