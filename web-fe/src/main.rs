use std::process::ExitCode;

use web_fe::configuration::Settings;
use web_fe::startup::Application;
use web_fe::{build_info, healthcheck, privileges, telemetry};

const USAGE: &str = "usage: web-fe [healthcheck | --version | --help]

  (no command)   serve the counter; settings come from the environment (see README)
  healthcheck    exit 0 if the local /healthz answers 200, else 1
";

/// Exit code for a setting that cannot be used, so scripts can tell it from a crash.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => serve(),
        Some("healthcheck") => healthcheck::run(),
        Some("--version" | "-V") => {
            println!("web-fe {}", build_info::VERSION);
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprint!("web-fe: unknown command {other:?}\n{USAGE}");
            ExitCode::from(BAD_CONFIG)
        }
    }
}

fn serve() -> ExitCode {
    let settings = match Settings::from_env().and_then(|s| {
        telemetry::init_subscriber(&s)?;
        Ok(s)
    }) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("web-fe: {e}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    if let Err(e) = privileges::forbid_new_privileges() {
        tracing::warn!(error = %e, "could not set no_new_privs");
    }
    let result = actix_web::rt::System::new().block_on(async {
        Application::build(&settings)
            .map_err(|e| format!("cannot listen on {}:{}: {e}", settings.host, settings.port))?
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
