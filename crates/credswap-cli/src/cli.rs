//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use credswap_testkit::scenario::Strategy;

/// Zero-downtime database credential rotation for Rust connection pools.
#[derive(Debug, Parser)]
#[command(name = "credswap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rotate credentials under load and measure every pool, side by side.
    ///
    /// Starts an embedded PostgreSQL (scram-sha-256) unless --database-url is given, then for
    /// each adapter and strategy: N workers loop `SELECT current_user` through the pool while the
    /// credential rotates on a schedule. Exit status 1 when a credswap adapter failed a request
    /// or left a stale session after the drain; 2 for bad arguments.
    Drill(DrillArgs),
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Pools to drill, comma separated.
    #[arg(long, value_delimiter = ',', default_values = ["deadpool", "bb8", "sqlx"])]
    pub adapter: Vec<AdapterName>,

    /// Rotation strategies, comma separated.
    #[arg(long, value_delimiter = ',', default_values = ["alternating-users", "single-user"])]
    pub strategy: Vec<StrategyName>,

    /// How long each run lasts (e.g. 15s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Rotation interval (e.g. 1s, 500ms), or `off` for a baseline without rotation.
    #[arg(long, default_value = "1s", value_parser = parse_rotate_every)]
    pub rotate_every: RotateEvery,

    /// Concurrent workers.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,

    /// The pool's max_size.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub pool_size: u16,

    /// Put a real PgBouncer (session mode, SCRAM pass-through, `ignore_startup_parameters =
    /// extra_float_digits`, as sqlx users configure it) between the pools and the server. The
    /// session columns then count PgBouncer's server sessions, and only failed requests decide
    /// the exit status.
    #[arg(long, value_enum)]
    pub pooler: Option<PoolerName>,

    /// Server-side time of each request, in milliseconds (`SELECT current_user, pg_sleep(..)`):
    /// with slower queries connections stay busy longer, so a pool rebuilt beside the old one
    /// shows above max_size.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub query_ms: u32,

    /// An existing server with rights to create roles (postgres://admin:password@host:port/db),
    /// instead of the embedded one.
    #[arg(long, env = "CREDSWAP_DRILL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The rotation schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateEvery {
    Off,
    Every(Duration),
}

impl RotateEvery {
    pub fn interval(self) -> Option<Duration> {
        match self {
            RotateEvery::Off => None,
            RotateEvery::Every(d) => Some(d),
        }
    }
}

/// A pool under drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum AdapterName {
    /// credswap-deadpool.
    Deadpool,
    /// credswap-bb8.
    Bb8,
    /// credswap-sqlx, through its recommended `acquire_following`.
    Sqlx,
    /// A plain deadpool-postgres pool built with the first password, never told of rotation.
    Static,
    /// On each rotation a fresh plain deadpool pool, swapped in through ArcSwap.
    NaiveRebuild,
}

impl AdapterName {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterName::Deadpool => "deadpool",
            AdapterName::Bb8 => "bb8",
            AdapterName::Sqlx => "sqlx",
            AdapterName::Static => "static",
            AdapterName::NaiveRebuild => "naive-rebuild",
        }
    }

    /// Whether this is one of credswap's adapters (judged for the exit status), not a peer.
    pub fn is_credswap(self) -> bool {
        !matches!(self, AdapterName::Static | AdapterName::NaiveRebuild)
    }
}

/// A connection pooler between the pools and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum PoolerName {
    /// PgBouncer (Debian package `pgbouncer`), started for the drill.
    Pgbouncer,
}

/// A rotation strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum StrategyName {
    /// Two roles take turns, with an overlap.
    AlternatingUsers,
    /// One role, zero overlap.
    SingleUser,
}

impl From<StrategyName> for Strategy {
    fn from(s: StrategyName) -> Self {
        match s {
            StrategyName::AlternatingUsers => Strategy::AlternatingUsers,
            StrategyName::SingleUser => Strategy::SingleUser,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
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

fn parse_rotate_every(text: &str) -> Result<RotateEvery, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(RotateEvery::Off);
    }
    let d = parse_duration(text)?;
    if d < Duration::from_millis(200) {
        return Err(format!(
            "rotating every {text} leaves no room for the application's 100 ms refresh and the drain; use at least 200ms"
        ));
    }
    Ok(RotateEvery::Every(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("credswap").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let Command::Drill(d) = parse(&["drill"]).unwrap().command;
        assert_eq!(
            d.strategy,
            [StrategyName::AlternatingUsers, StrategyName::SingleUser]
        );
        assert_eq!(d.duration, Duration::from_secs(10));
        assert_eq!(d.rotate_every, RotateEvery::Every(Duration::from_secs(1)));
        assert_eq!((d.concurrency, d.pool_size), (32, 8));
        assert_eq!((d.pooler, d.query_ms), (None, 0));
    }

    #[test]
    fn lists_and_off() {
        let Command::Drill(d) = parse(&[
            "drill",
            "--adapter",
            "deadpool,static,naive-rebuild",
            "--strategy",
            "single-user",
            "--rotate-every",
            "off",
            "--duration",
            "15s",
        ])
        .unwrap()
        .command;
        assert_eq!(
            d.adapter,
            [
                AdapterName::Deadpool,
                AdapterName::Static,
                AdapterName::NaiveRebuild
            ]
        );
        assert_eq!(d.rotate_every, RotateEvery::Off);
        assert_eq!(d.duration, Duration::from_secs(15));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["drill", "--adapter", "hikari"][..],
            &["drill", "--strategy", "both"],
            &["drill", "--duration", "fast"],
            &["drill", "--duration", "0s"],
            &["drill", "--rotate-every", "10ms"],
            &["drill", "--concurrency", "0"],
            &["drill", "--pool-size", "-3"],
            &["drill", "--pooler", "odyssey"],
            &["drill", "--query-ms", "-1"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
        let err = parse(&["drill", "--duration", "fast"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("write it like 15s"), "{err}");
    }
}
