use std::process::ExitCode;

use web_fe::configuration::{Cli, Command, Settings, StartError};
use web_fe::startup::Application;
use web_fe::{healthcheck, privileges, telemetry};

/// Exit code for a setting that cannot be used, so scripts can tell it from a crash.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let (command, settings) = match Cli::from_env() {
        Ok(read) => read,
        // Help and version exit 0; a bad value exits 2, naming its variable.
        Err(StartError::Cli(e)) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(BAD_CONFIG));
        }
        Err(StartError::Config(e)) => {
            eprintln!("web-fe: {e}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    match command {
        Some(Command::Healthcheck) => healthcheck::run(&settings.server),
        None => serve(&settings),
    }
}

fn serve(settings: &Settings) -> ExitCode {
    if let Err(e) = telemetry::init_subscriber(&settings.log) {
        eprintln!("web-fe: {e}");
        return ExitCode::from(BAD_CONFIG);
    }
    if let Err(e) = privileges::forbid_new_privileges() {
        tracing::warn!(error = %e, "could not set no_new_privs");
    }
    let server = &settings.server;
    let result = actix_web::rt::System::new().block_on(async {
        Application::build(settings)
            .map_err(|e| format!("cannot listen on {}:{}: {e}", server.host, server.port))?
            .run_until_stopped()
            .await
            .map_err(|e| format!("server failed: {e}"))
    });
    match result {
        Ok(()) => {
            tracing::info!("web-fe stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("web-fe: {e}");
            ExitCode::FAILURE
        }
    }
}
