//! The quickstart's settings, from environment variables.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What the environment configures.
#[derive(Debug)]
pub(crate) struct Config {
    /// `PORT`: the port to bind on 127.0.0.1; 0 picks a free one. Default 3000.
    pub(crate) port: u16,
    /// `SHUTDOWN_TIMEOUT_MS`: how long shutdown waits for tasks to end. Default 5000.
    pub(crate) shutdown_timeout: Duration,
    /// `CANCEL_GRACE_MS`: how long cancelled tasks get before they are aborted. Default 1000.
    pub(crate) cancel_grace: Duration,
    /// `DRAIN_DELAY_MS`: how long to keep accepting after the signal. Default 0.
    pub(crate) drain_delay: Duration,
    /// `REQUEST_DRAIN_TIMEOUT_MS`: how long requests in flight get. Default 10000.
    pub(crate) request_drain_timeout: Duration,
    /// `MAX_TASKS`: how many jobs may run at once. Default: no limit.
    pub(crate) max_tasks: Option<usize>,
}

/// A variable that is set to something that does not parse.
#[derive(Debug)]
pub(crate) struct ConfigError {
    variable: &'static str,
    value: String,
    expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl Config {
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            port: var("PORT", "a port number (0-65535)")?.unwrap_or(3000),
            shutdown_timeout: millis("SHUTDOWN_TIMEOUT_MS")?.unwrap_or(Duration::from_secs(5)),
            cancel_grace: millis("CANCEL_GRACE_MS")?.unwrap_or(Duration::from_secs(1)),
            drain_delay: millis("DRAIN_DELAY_MS")?.unwrap_or(Duration::ZERO),
            request_drain_timeout: millis("REQUEST_DRAIN_TIMEOUT_MS")?
                .unwrap_or(Duration::from_secs(10)),
            max_tasks: var("MAX_TASKS", "a whole number of tasks")?,
        })
    }
}

fn millis(variable: &'static str) -> Result<Option<Duration>, ConfigError> {
    Ok(var(variable, "a whole number of milliseconds")?.map(Duration::from_millis))
}

/// The variable's value, `None` when it is unset or empty.
pub(crate) fn var<T: FromStr>(
    variable: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    let value = match std::env::var(variable) {
        Ok(value) if value.trim().is_empty() => return Ok(None),
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => {
            return Err(ConfigError {
                variable,
                value: value.to_string_lossy().into_owned(),
                expected,
            });
        }
    };
    value.trim().parse().map(Some).map_err(|_| ConfigError {
        variable,
        value,
        expected,
    })
}
