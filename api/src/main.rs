use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use sms_api::commands::{self, Cli, Command, IssueToken};
use sms_api::config::Config;
use sms_shared::config::{Env, JwtConfig, LogFormat};

/// Exit status of a configuration error (`EX_CONFIG`).
const CONFIG_ERROR: u8 = 78;

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command();
    let env = Env::process();
    if let Command::IssueToken(args) = &command {
        // Only the JWT settings matter: no database, no broker, nothing else on stdout.
        return match JwtConfig::from_env(&env) {
            Ok(jwt) => finish(print_token(&jwt, args)),
            Err(e) => config_error(e),
        };
    }
    sms_shared::telemetry::init(LogFormat::from_env(&env).unwrap_or(LogFormat::Text));
    match Config::from_env(&env) {
        Ok(config) => finish(run(command, config).await),
        Err(e) => config_error(e),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let state = sms_api::app::build_state(config).await?;
    match command {
        Command::CreateIndexes => commands::create_indexes(&state.db).await,
        Command::SeedAdmin => commands::seed_admin(&state.db, &state.config)
            .await
            .map(|_| ()),
        Command::IssueToken(args) => print_token(&state.config.jwt, &args),
        Command::RecountStats(args) => commands::recount_stats(&state.db, &args).await.map(|_| ()),
        Command::Serve => {
            if state.config.seed.enabled {
                commands::create_indexes(&state.db).await?;
                commands::seed_admin(&state.db, &state.config).await?;
            }
            sms_shared::domain::phone::warm_up();
            let listener = tokio::net::TcpListener::bind(state.config.http.addr).await?;
            sms_api::app::run(listener, state, sms_api::app::shutdown_signal()).await
        }
    }
}

fn print_token(jwt: &JwtConfig, args: &IssueToken) -> anyhow::Result<()> {
    let token = commands::issue_token(jwt, args)?;
    writeln!(std::io::stdout(), "{token}")?;
    Ok(())
}

fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(CONFIG_ERROR)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sms-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
