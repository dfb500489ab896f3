//! `sms-api` command line: `serve` (the default), `create-indexes`, `seed-admin`,
//! `issue-token` and `recount-stats`, and what the one-shot commands do.

use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{builder::NonEmptyStringValueParser, Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use sms_shared::auth::JwtKeys;
use sms_shared::config::JwtConfig;
use sms_shared::db::stats::{Recounted, SETTLE};
use sms_shared::db::Db;

use crate::config::Config;

/// The command line of `sms-api`.
#[derive(Debug, Parser)]
#[command(
    name = "sms-api",
    version,
    about = "SafeCare SMS HTTP API",
    after_help = "Configuration comes from the environment (see the README); \
                  a configuration error exits with status 78."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// What to do: `serve` when no subcommand is given.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Serve)
    }
}

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the HTTP API (the default); with SEED_ADMIN=1, create the indexes and the seed admin first.
    Serve,
    /// Create every MongoDB index (idempotent) and give live messages without one their job, then exit.
    CreateIndexes,
    /// Create the operator SEED_ADMIN_USERNAME / SEED_ADMIN_PASSWORD unless it exists, then exit.
    SeedAdmin,
    /// Print an operator token (an HS256 JWT signed with JWT_SECRET), then exit.
    ///
    /// The token carries JWT_ISSUER and JWT_AUDIENCE when they are set, as the API's verifier
    /// requires. Only the JWT_* variables are read: no database or broker is needed.
    IssueToken(IssueToken),
    /// Rebuild the report counters of whole UTC days from the messages, then exit.
    ///
    /// Repairs the counts a crash between a message update and its counter update lost, and
    /// makes counters for messages loaded in bulk. Safe while traffic flows: a counter that a
    /// status change moves meanwhile is counted again.
    RecountStats(RecountStats),
}

/// Options of `sms-api recount-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RecountStats {
    /// The first UTC day to recount [default: the oldest message's day].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<NaiveDate>,
    /// The last UTC day to recount, inclusive [default: today, or the newest message's day if
    /// later].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<NaiveDate>,
    /// Milliseconds to let status changes in flight land between counting and writing; 0 when
    /// nothing else writes (e.g. right after a bulk load).
    #[arg(long, value_name = "MS", default_value_t = SETTLE.as_millis() as u64)]
    pub settle_ms: u64,
}

/// Options of `sms-api issue-token`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct IssueToken {
    /// The operator the token names (its `sub` claim), as audit logs will show it.
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub sub: String,
    /// Minutes the token stays valid [default: JWT_ACCESS_MINUTES, 240 when unset].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..=43_200))]
    pub minutes: Option<i64>,
}

/// An operator token as `sms-api issue-token` prints it.
pub fn issue_token(jwt: &JwtConfig, args: &IssueToken) -> anyhow::Result<String> {
    let minutes = args.minutes.unwrap_or(jwt.access_minutes);
    JwtKeys::new(jwt).issue_for(&args.sub, chrono::Duration::minutes(minutes))
}

/// Creates every index of every collection (and the retention TTL index as
/// `MESSAGE_RETENTION_DAYS` says), then gives every live message that has none its job (an
/// upgrade from a version without `sms_jobs`, or a restore).
pub async fn create_indexes(db: &Db) -> anyhow::Result<()> {
    db.create_indexes().await?;
    tracing::info!("indexes are in place");
    let restored = db
        .jobs
        .restore_missing(&db.messages, sms_shared::time::bson_now())
        .await
        .context("restoring the jobs of live messages")?;
    if restored > 0 {
        tracing::info!(restored, "live messages without a job got one");
    }
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

/// Recounts the days `args` name (see [`RecountStats`] for the defaults).
pub async fn recount_stats(db: &Db, args: &RecountStats) -> anyhow::Result<Recounted> {
    let today = sms_shared::time::now().date_naive();
    let days = db.stats.message_days().await?;
    let to = args
        .to
        .unwrap_or_else(|| days.map_or(today, |(_, newest)| newest.max(today)));
    let from = args
        .from
        .unwrap_or_else(|| days.map_or(to, |(oldest, _)| oldest.min(to)));
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    let done = db
        .stats
        .recount(from, to, Duration::from_millis(args.settle_ms))
        .await?;
    tracing::info!(
        %from, %to,
        days = done.days,
        written = done.written,
        removed = done.removed,
        retried = done.retried,
        "report counters rebuilt"
    );
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("sms-api").chain(args.iter().copied()))
            .map(Cli::command)
    }

    fn jwt(issuer: Option<&str>) -> JwtConfig {
        JwtConfig {
            secret: SecretString::from("s3cret".to_owned()),
            access_minutes: 30,
            issuer: issuer.map(Into::into),
            audience: Some("sms".into()),
        }
    }

    #[test]
    fn serve_is_the_default() {
        assert_eq!(parse(&[]).unwrap(), Command::Serve);
        assert_eq!(parse(&["serve"]).unwrap(), Command::Serve);
        assert_eq!(parse(&["create-indexes"]).unwrap(), Command::CreateIndexes);
        assert_eq!(parse(&["seed-admin"]).unwrap(), Command::SeedAdmin);
    }

    #[test]
    fn recount_stats_takes_optional_days() {
        let day = |s: &str| Some(s.parse::<NaiveDate>().unwrap());
        assert_eq!(
            parse(&["recount-stats"]).unwrap(),
            Command::RecountStats(RecountStats {
                from: None,
                to: None,
                settle_ms: 2000
            })
        );
        assert_eq!(
            parse(&[
                "recount-stats",
                "--from",
                "2026-11-25",
                "--to",
                "2026-11-30",
                "--settle-ms",
                "0"
            ])
            .unwrap(),
            Command::RecountStats(RecountStats {
                from: day("2026-11-25"),
                to: day("2026-11-30"),
                settle_ms: 0
            })
        );
    }

    #[test]
    fn unknown_commands_and_bad_options_are_usage_errors() {
        for args in [
            &["migrate"][..],
            &["issue-token"],
            &["issue-token", "--sub", ""],
            &["issue-token", "--sub", "ops", "--minutes", "0"],
            &["issue-token", "--sub", "ops", "--minutes", "many"],
            &["serve", "--port", "1"],
            &["recount-stats", "--from", "yesterday"],
            &["recount-stats", "--to", "2026-11-31"],
            &["recount-stats", "--settle-ms", "-1"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn help_lists_every_command() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        for command in [
            "serve",
            "create-indexes",
            "seed-admin",
            "issue-token",
            "recount-stats",
        ] {
            assert!(help.contains(command), "{command} in {help}");
        }
    }

    #[test]
    fn issued_tokens_pass_the_apis_verifier() {
        let config = jwt(Some("auth"));
        let Command::IssueToken(args) = parse(&["issue-token", "--sub", "ops"]).unwrap() else {
            panic!("issue-token expected");
        };
        let token = issue_token(&config, &args).unwrap();
        let claims = JwtKeys::new(&config).verify(&token).expect("valid token");
        assert_eq!(claims.operator_name(), "ops");
        assert_eq!(
            claims.exp - claims.iat.unwrap(),
            30 * 60,
            "JWT_ACCESS_MINUTES"
        );
        assert!(
            JwtKeys::new(&jwt(Some("other"))).verify(&token).is_none(),
            "the issuer is checked"
        );
    }

    #[test]
    fn minutes_override_the_configured_lifetime() {
        let config = jwt(None);
        let Command::IssueToken(args) =
            parse(&["issue-token", "--sub", "ops", "--minutes", "5"]).unwrap()
        else {
            panic!("issue-token expected");
        };
        let claims = JwtKeys::new(&config)
            .verify(&issue_token(&config, &args).unwrap())
            .unwrap();
        assert_eq!(claims.exp - claims.iat.unwrap(), 5 * 60);
    }
}
