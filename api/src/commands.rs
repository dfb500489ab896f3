//! `sms-api` subcommands: `serve` (default), `create-indexes`, `seed-admin`.

use anyhow::Context;
use secrecy::ExposeSecret;
use sms_shared::db::Db;

use crate::config::Config;

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    CreateIndexes,
    SeedAdmin,
}

impl Command {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        match args.first().map(String::as_str) {
            None | Some("serve") => Ok(Command::Serve),
            Some("create-indexes") => Ok(Command::CreateIndexes),
            Some("seed-admin") => Ok(Command::SeedAdmin),
            Some("-h" | "--help" | "help") => Err(USAGE.to_owned()),
            Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
        }
    }
}

pub const USAGE: &str = "usage: sms-api [serve | create-indexes | seed-admin]
  serve           run the HTTP API (default); with SEED_ADMIN=1, create indexes and the seed admin first
  create-indexes  create every MongoDB index (idempotent)
  seed-admin      create the operator SEED_ADMIN_USERNAME / SEED_ADMIN_PASSWORD unless it exists";

pub async fn create_indexes(db: &Db) -> anyhow::Result<()> {
    db.create_indexes().await?;
    tracing::info!("indexes are in place");
    Ok(())
}

/// Creates the seed admin unless it exists (argon2 hash). Returns whether it was created.
pub async fn seed_admin(db: &Db, config: &Config) -> anyhow::Result<bool> {
    let password = config
        .seed
        .password
        .as_ref()
        .context("configuration error: SEED_ADMIN_PASSWORD: is required to seed the admin")?;
    let password = password.expose_secret().to_owned();
    let hash =
        tokio::task::spawn_blocking(move || sms_shared::auth::hash_password(&password)).await??;
    let created = db
        .users
        .insert_if_absent(&config.seed.username, &hash)
        .await?;
    if created {
        tracing::info!(username = %config.seed.username, "seed admin created");
    } else {
        tracing::info!(username = %config.seed.username, "seed admin already exists");
    }
    Ok(created)
}
