//! The `camsig` binary: parse the command line, load configuration, run.

use camsig::cli::{self, Cli};
use camsig::config::Settings;
use camsig::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match Cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("camsig: {e}\n{}", cli::USAGE);
            return std::process::ExitCode::from(2);
        }
    };
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("camsig: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli {
        Cli::Token { user, ttl } => match cli::token(&settings, &user, ttl) {
            Ok(t) => {
                println!("{t}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("camsig: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Cli::Serve => {
            camsig::telemetry::init(&settings.log);
            let result = match Application::build(settings).await {
                Ok(app) => {
                    actix_web::rt::spawn(camsig::drain::on_signals(app.node().clone()));
                    app.run_until_stopped().await.map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("camsig: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
