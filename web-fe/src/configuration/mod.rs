//! The command line and the settings. clap reads and range-checks each value
//! ([`cli`], [`values`]); `TryFrom` turns what was given into [`Settings`], whose fields are
//! all set and checked together ([`redis`] reads the password and finds the target). A bad
//! value stops the process with exit code 2 and a message naming the variable.

mod cli;
mod redis;
mod values;

use std::fmt;

use clap::{CommandFactory, Parser};

pub use cli::{
    Cli, Command, LogFormat, LogSettings, RedisArgs, ReplicaSettings, ServerSettings, SettingsArgs,
};
pub use redis::{RedisSettings, RedisTarget, redact_url};
pub use values::{KeepAlive, parse_duration};

/// Everything web-fe reads at start-up, checked: no field is a placeholder for later.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub replica: ReplicaSettings,
    pub log: LogSettings,
}

impl TryFrom<SettingsArgs> for Settings {
    type Error = ConfigError;

    /// What clap, checking one value at a time, cannot: rules between values, and the
    /// Redis target.
    fn try_from(args: SettingsArgs) -> Result<Self, ConfigError> {
        args.server.check()?;
        Ok(Self {
            redis: RedisSettings::try_from(args.redis)?,
            server: args.server,
            replica: args.replica,
            log: args.log,
        })
    }
}

/// A setting that could not be used: which variable, what it held, what was expected.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Why start-up stops: clap's own message (it names the variable), or ours.
#[derive(Debug)]
pub enum StartError {
    /// Bad or missing input, help or version: clap prints it and picks the exit code.
    Cli(clap::Error),
    Config(ConfigError),
}

impl Cli {
    /// Reads the command line and the environment, and checks what clap cannot: values
    /// that are not UTF-8 (clap would not say which), rules between values, the Redis URL
    /// (whose password an error must not echo) and the password file.
    pub fn from_env() -> Result<(Option<Command>, Settings), StartError> {
        reject_non_utf8()?;
        let cli = Self::try_parse().map_err(StartError::Cli)?;
        let settings = Settings::try_from(cli.settings).map_err(StartError::Config)?;
        Ok((cli.command, settings))
    }
}

impl ServerSettings {
    fn check(&self) -> Result<(), ConfigError> {
        if self.max_board_streams > self.max_connections / 2 {
            return Err(ConfigError {
                var: "MAX_BOARD_STREAMS".into(),
                value: self.max_board_streams.to_string(),
                expected: format!(
                    "at most half of MAX_CONNECTIONS ({}), so views always find a connection",
                    self.max_connections
                ),
            });
        }
        Ok(())
    }
}

/// Every variable the command line declares must hold UTF-8; clap would reject one that
/// does not without naming it.
fn reject_non_utf8() -> Result<(), StartError> {
    let command = Cli::command();
    let vars = command
        .get_arguments()
        .chain(
            command
                .get_subcommands()
                .flat_map(clap::Command::get_arguments),
        )
        .filter_map(clap::Arg::get_env);
    for var in vars {
        if let Some(value) = std::env::var_os(var)
            && value.to_str().is_none()
        {
            return Err(StartError::Config(ConfigError {
                var: var.to_string_lossy().into_owned(),
                value: value.to_string_lossy().into_owned(),
                expected: "text in UTF-8".into(),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
