//! Command-line arguments: [`Cli`] and its [`Command`]s, with the parsers they share. Each
//! subcommand's arguments are in the module named after them: `drill_args` ([`DrillArgs`] and
//! its value types), `rotate_args` ([`RotateArgs`]); `credswap check`'s are beside the check
//! (`crate::check`).

use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use credswap_rotate::SslMode;
use credswap_testkit::scenario::Strategy;

mod drill_args;
mod fleet_args;
mod rotate_args;

pub use drill_args::{AdapterName, DrillArgs, PoolerName, ScenarioName, SourceName};
pub use rotate_args::RotateArgs;

/// Zero-downtime database credential rotation for Rust connection pools.
#[derive(Debug, Parser)]
#[command(name = "credswap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments, with the checks clap cannot express (which drill
    /// scenarios go with which source and strategy); exits 2 with a usage error otherwise.
    pub fn parse_checked() -> Cli {
        Self::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`parse_checked`](Self::parse_checked) without exiting.
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Self::try_parse_from(args)?;
        if let Command::Drill(drill) = &cli.command
            && let Err(message) = drill.check()
        {
            let mut command = Cli::command();
            // Built, so that the usage names the subcommand as `credswap drill`.
            command.build();
            let error = match command.find_subcommand_mut("drill") {
                Some(drill) => drill.error(ErrorKind::ArgumentConflict, message),
                None => command.error(ErrorKind::ArgumentConflict, message),
            };
            return Err(error);
        }
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rotate credentials under load and measure every pool, side by side.
    ///
    /// Starts an embedded PostgreSQL (scram-sha-256) unless --database-url is given, then for
    /// each adapter and strategy: N workers loop `SELECT current_user` through the pool while the
    /// credential rotates on a schedule. Exit status 1 when a credswap adapter failed a request
    /// or left a stale session after the drain (with --scenario stuck-pending|revert: when it
    /// failed more requests, or had more logins refused at the server, than the static peer;
    /// with --source minted: when its `minted` run failed a request, closed a session for a new
    /// token or logged in with an expired token); 2 for bad arguments.
    Drill(DrillArgs),

    /// Rotate a database secret in AWS Secrets Manager now, with Secrets Manager's four-step
    /// rotation protocol (createSecret, setSecret, testSecret, finishSecret).
    ///
    /// The secret is an RDS/Aurora-style JSON secret (host, port, dbname, username, password;
    /// engine postgres). Region, credentials and endpoint come from the usual AWS environment
    /// (AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...). Connections to the
    /// database use TLS as --sslmode and --ca-file say (default prefer). Prints what happened,
    /// never a password.
    ///
    /// Exit status: 0 done; 1 the rotation failed; 2 bad arguments; 3 another rotation's
    /// version is AWSPENDING (finish it with --token ID, or give --takeover; nothing changed);
    /// 4 the --token's rotation already finished (its version is AWSCURRENT or AWSPREVIOUS;
    /// nothing changed); 5 the server's pg_hba.conf rejected the connection (e.g. TLS
    /// required: see --sslmode).
    Rotate(RotateArgs),

    /// Check a credential for cron jobs and Kubernetes probes: read it through a source,
    /// optionally open one connection with it, and exit non-zero with a one-line reason.
    ///
    /// Exit status: 0 fresh (and accepted, with --connect); 3 the store cannot be read
    /// (unreachable, denied, missing, malformed); 4 the database refuses it; 5 it expires within
    /// --expiry-margin (or has expired); 6 it is older than its rotation interval; 7 the
    /// database cannot be reached; 8 a bad source configuration; 9 a rotation is stuck (with
    /// --source aws: an AWSPENDING version older than --stuck-after; a younger one is reported
    /// as rotating, exit 0); 2 bad arguments. Never prints the secret.
    Check(crate::check::CheckArgs),
}
/// A rotation strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum StrategyName {
    /// Two roles take turns, with an overlap.
    AlternatingUsers,
    /// One role, zero overlap.
    SingleUser,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        Strategy::from(self).as_str()
    }
}

impl From<StrategyName> for Strategy {
    fn from(s: StrategyName) -> Self {
        match s {
            StrategyName::AlternatingUsers => Strategy::AlternatingUsers,
            StrategyName::SingleUser => Strategy::SingleUser,
        }
    }
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 15s, 500ms or 1m"))?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    if d > Duration::from_secs(24 * 3600) {
        return Err(format!("`{text}` is longer than a day; is the unit right?"));
    }
    Ok(d)
}
fn parse_pause(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 1s or 500ms"))?;
    if d > Duration::from_secs(15 * 60) {
        return Err(format!(
            "`{text}` is longer than 15 minutes (a rotation function's limit); is the unit right?"
        ));
    }
    Ok(d)
}
pub(crate) fn parse_sslmode(text: &str) -> Result<SslMode, String> {
    text.parse::<SslMode>().map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `credswap <args>`, parsed as clap does (without the drill's extra checks).
    pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("credswap").chain(args.iter().copied()))
    }
}
