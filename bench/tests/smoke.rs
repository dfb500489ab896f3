//! A small benchmark run against the real API and an in-process dispatcher, on the MongoDB-compatible
//! server of `TEST_MONGO_URI` and the RabbitMQ of `TEST_AMQP_URL` (run through `scripts/test.sh`).

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use sms_bench::progress::Progress;
use sms_bench::Cli;
use sms_shared::config::Env;

const JWT_SECRET: &str = "bench-smoke-secret";

fn mongo_uri() -> String {
    std::env::var("TEST_MONGO_URI")
        .unwrap_or_else(|_| panic!("TEST_MONGO_URI is not set: run the tests with scripts/test.sh"))
}

fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_run_loses_and_duplicates_nothing_and_reports_every_figure() {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let db_name = format!("sms_bench_test_{id}");
    let prefix = format!("bench-test-{id}");
    let vars: HashMap<String, String> = [
        ("MONGO_URI", mongo_uri()),
        ("MONGO_DB", db_name.clone()),
        ("AMQP_URL", amqp_url()),
        ("AMQP_PREFIX", prefix.clone()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("ALLOWED_HOSTS", "127.0.0.1,localhost".to_owned()),
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("AGENT_RATE_LIMIT_PER_MIN", "1000000".to_owned()),
        ("OUTBOX_SWEEP_AFTER_MS", "500".to_owned()),
        ("SEED_ADMIN_PASSWORD", "bench-admin-password".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = sms_api::config::Config::from_env(&Env::from_fn(move |k| vars.get(k).cloned()))
        .expect("valid configuration");

    let state = sms_api::app::build_state(config.clone())
        .await
        .expect("app state");
    sms_api::commands::create_indexes(&state.db)
        .await
        .expect("indexes");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let stop_api = tokio_util::sync::CancellationToken::new();
    let stopped = stop_api.clone();
    let server = tokio::spawn(async move {
        sms_api::app::run(listener, state, async move { stopped.cancelled().await })
            .await
            .expect("API runs");
    });

    let db = sms_shared::db::Db::connect(&config.mongo, "bench-smoke-dispatcher")
        .await
        .expect("dispatcher database");
    let dispatcher = sms_dispatcher::Dispatcher::new(
        db,
        sms_shared::metrics::Metrics::new(),
        config.rules.anti_dup_window,
    );
    let stop_dispatcher = tokio_util::sync::CancellationToken::new();
    let dispatching = tokio::spawn(sms_dispatcher::run(
        config.amqp.clone(),
        64,
        dispatcher,
        stop_dispatcher.clone(),
    ));

    let json = std::env::temp_dir().join(format!("sms-bench-smoke-{id}.json"));
    let cli = Cli::try_parse_from([
        "sms-bench",
        "--api",
        &format!("{address}/sms"),
        "--mongo-uri",
        &mongo_uri(),
        "--mongo-db",
        &db_name,
        "--jwt-secret",
        JWT_SECRET,
        "--messages",
        "300",
        "--agents",
        "3",
        "--timeout-secs",
        "60",
        "--json",
        json.to_str().unwrap(),
    ])
    .expect("bench options");
    let outcome = tokio::time::timeout(
        Duration::from_secs(240),
        sms_bench::bench::run(&cli.bench, &Progress::hidden()),
    )
    .await;

    stop_dispatcher.cancel();
    stop_api.cancel();
    let _ = dispatching.await;
    let _ = server.await;
    let scratch_left = mongodb::Client::with_uri_str(mongo_uri())
        .await
        .unwrap()
        .database(&db_name)
        .list_collection_names()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.starts_with("bench_scratch") || c.starts_with("bench_pipe"))
        .count();
    let _ = sms_testkit::cleanup::drop_database(&mongo_uri(), &db_name).await;
    let _ = sms_testkit::cleanup::remove_amqp(&amqp_url(), &prefix).await;

    let report = outcome
        .expect("the run finished in time")
        .expect("the run succeeded");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).unwrap();
    let _ = std::fs::remove_file(&json);
    eprintln!("{}", report.table());

    assert_eq!(report.lost, 0, "{}", report.table());
    assert_eq!(report.duplicated, 0, "{}", report.table());
    assert_eq!(report.accepted, 300);
    assert_eq!(report.pipeline_accepted, 300);
    assert_eq!(report.pipeline_finished, 300, "{}", report.table());
    assert_eq!(
        report.raw_pipeline_delivered, 300,
        "every raw pipeline step matched"
    );
    assert_eq!(report.otp_idle_received, report.otp_idle_sent);
    assert_eq!(report.otp_received, report.otp_sent);
    assert!(report.otp_idle_sent >= 40 && report.otp_sent > 0);
    assert!(report.accepted_total >= 600 + report.otp_idle_sent);
    assert_eq!(
        report.delivered,
        report.accepted_total,
        "{}",
        report.table()
    );
    assert_eq!(report.report_errors, 0, "{:?}", report.report_rejections);
    assert!(report.timed_out.is_none(), "{:?}", report.timed_out);
    assert_eq!(scratch_left, 0, "the scratch collections are dropped");
    for key in [
        "raw_insert_msgs_per_s",
        "raw_find_and_modify_per_s",
        "submit_msgs_per_s",
        "submit_p50_ms",
        "submit_p99_ms",
        "stage_msgs_per_s",
        "lease_jobs_per_s",
        "e2e_seconds",
        "submit_vs_raw_insert",
        "lease_vs_raw_find_and_modify",
        "raw_pipeline_msgs_per_s",
        "pipeline_msgs_per_s",
        "pipeline_vs_raw_pipeline",
        "otp_idle_p50_ms",
        "otp_idle_p99_ms",
        "otp_p50_ms",
        "otp_p99_ms",
    ] {
        let v = written[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {written}"));
        assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    }
    assert_eq!(written["lost"], 0);
    assert_eq!(written["duplicated"], 0);
    assert_eq!(written["messages"], 300);
    assert_eq!(
        written["raw_leased"], 300,
        "the raw insert stored every document, the lease loop found each"
    );
}
