//! The `camsig` binary: parse the command line, load configuration, run.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

use camsig::cli::{self, Cli, Command};
use camsig::config::Settings;
use camsig::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("camsig: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token { user_id, ttl, name, admin } => match cli::token(&settings, &user_id, Duration::from_secs(ttl), name, admin) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("camsig: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            camsig::telemetry::init(&settings.log);
            let result = match Application::build(settings).await {
                Ok(app) => {
                    actix_web::rt::spawn(camsig::drain::on_signals(app.node().clone()));
                    app.run_until_stopped().await.map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("camsig: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
