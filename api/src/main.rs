use std::process::ExitCode;

use sms_api::commands::{self, Command};
use sms_api::config::Config;
use sms_shared::config::{Env, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match Command::parse(&args) {
        Ok(c) => c,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let env = Env::process();
    sms_shared::telemetry::init(LogFormat::from_env(&env).unwrap_or(LogFormat::Text));
    let config = match Config::from_env(&env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    match run(command, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sms-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let state = sms_api::app::build_state(config).await?;
    match command {
        Command::CreateIndexes => commands::create_indexes(&state.db).await,
        Command::SeedAdmin => commands::seed_admin(&state.db, &state.config)
            .await
            .map(|_| ()),
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
