//! Removing what a run against a throw-away deployment leaves behind: its database and its
//! RabbitMQ exchanges and queues (named by `AMQP_PREFIX`).

use anyhow::Context;
use sms_shared::amqp::Topology;

/// Drops database `db`.
pub async fn drop_database(mongo_uri: &str, db: &str) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(mongo_uri)
        .await
        .context("connecting to MongoDB")?;
    client
        .database(db)
        .drop()
        .await
        .with_context(|| format!("dropping database {db}"))
}

/// Deletes the queues and exchanges of `prefix` (RabbitMQ treats deleting a missing one as done).
pub async fn remove_amqp(amqp_url: &str, prefix: &str) -> anyhow::Result<()> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let t = Topology::new(prefix);
    let ch = conn.create_channel().await?;
    for q in t.queues() {
        ch.queue_delete(q, Default::default())
            .await
            .with_context(|| format!("deleting queue {q}"))?;
    }
    for e in t.exchanges() {
        ch.exchange_delete(e, Default::default())
            .await
            .with_context(|| format!("deleting exchange {e}"))?;
    }
    let _ = ch.close(200, "done").await;
    let _ = conn.close(200, "done").await;
    Ok(())
}
