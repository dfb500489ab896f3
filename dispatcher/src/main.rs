use std::process::ExitCode;

use sms_dispatcher::config::Config;
use sms_dispatcher::Dispatcher;
use sms_shared::config::{Env, LogFormat};
use sms_shared::db::Db;
use sms_shared::metrics::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::process();
    sms_shared::telemetry::init(LogFormat::from_env(&env).unwrap_or(LogFormat::Text));
    let config = match Config::from_env(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    // Before anything connects: a taken address stops a second replica at once, with one line.
    let listener = match sms_dispatcher::server::bind(config.metrics_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    match run(config, listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sms-dispatcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, listener: TcpListener) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let db = Db::connect(&config.mongo, "sms-dispatcher").await?;
    let dispatcher = Dispatcher::new(db.clone(), metrics.clone(), config.rules.anti_dup_window);
    let shutdown = CancellationToken::new();
    tracing::info!(addr = %listener.local_addr()?, "dispatcher metrics listening");
    let stop = shutdown.clone();
    let side = tokio::spawn(sms_dispatcher::server::serve(
        listener,
        db,
        metrics,
        async move { stop.cancelled().await },
    ));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        sms_shared::signal::shutdown_signal().await;
        stop.cancel();
    });
    sms_dispatcher::run(config.amqp, config.prefetch, dispatcher, shutdown).await;
    let _ = side.await;
    tracing::info!("sms-dispatcher stopped");
    Ok(())
}
