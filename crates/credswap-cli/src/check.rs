//! `credswap check`: reads the credential through a source, optionally opens one connection with
//! it, and exits with a code that says what is wrong. For cron jobs and Kubernetes probes.
//!
//! Never prints the secret: the output names the source, the username, the version and times.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use credswap_core::contract::Failure;
use credswap_core::{Credential, CredentialSource, Error, Health, Policy, RotatingCredentials};
use serde::Serialize;

/// Exit statuses of `credswap check`, one per reason (2 is clap's, for bad arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// 0: the credential is fresh (and the database accepted it, with `--connect`).
    Ok,
    /// 3: the store could not be read (unreachable, denied, the secret missing or malformed).
    FetchFailed,
    /// 4: the database refused the credential (`28P01`, `28000`).
    Refused,
    /// 5: the credential expires within `--expiry-margin` (or has expired).
    Expiring,
    /// 6: the credential is older than its rotation interval (the store's schedule, else
    /// `--max-age`).
    Overdue,
    /// 7: the database could not be reached (no refusal: network, TLS, a server that is down).
    Unreachable,
    /// 8: the check could not run (a bad source configuration).
    Config,
}

impl Verdict {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::FetchFailed => 3,
            Verdict::Refused => 4,
            Verdict::Expiring => 5,
            Verdict::Overdue => 6,
            Verdict::Unreachable => 7,
            Verdict::Config => 8,
        }
    }
}

/// Which store the credential is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckSource {
    /// AWS Secrets Manager (`--secret-id`; region, credentials and endpoint from the AWS
    /// environment, or `--endpoint-url`).
    Aws,
    /// Vault/OpenBao KV v2 (`--mount`, default `secret`; `--path`; address and token from
    /// VAULT_ADDR/BAO_ADDR and VAULT_TOKEN/BAO_TOKEN).
    VaultKv,
    /// Vault/OpenBao database dynamic role (`--mount`, default `database`; `--role`). The lease
    /// the check creates is revoked when it ends.
    VaultDynamic,
    /// Vault/OpenBao database static role (`--mount`, default `database`; `--role`).
    VaultStatic,
    /// A mounted file or directory (`--path`: a Kubernetes secret volume, a password file with
    /// `--username`, or an RDS-style JSON file).
    File,
    /// Environment variables (PGUSER/PGPASSWORD, or `--username-var`, `--password-var`,
    /// `--json-var`).
    Env,
}

/// `credswap check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where to read the credential.
    #[arg(long)]
    pub source: CheckSource,

    /// AWS: the secret's name or ARN.
    #[arg(long, required_if_eq("source", "aws"))]
    pub secret_id: Option<String>,

    /// AWS: the Secrets Manager endpoint (LocalStack, moto); default from the AWS environment.
    #[arg(long)]
    pub endpoint_url: Option<String>,

    /// Vault: the secrets engine's mount (default `secret` for KV, `database` for roles).
    #[arg(long)]
    pub mount: Option<String>,

    /// Vault KV: the secret's path under the mount. File: the file or directory.
    #[arg(long, required_if_eq_any([("source", "vault-kv"), ("source", "file")]))]
    pub path: Option<String>,

    /// Vault database roles: the role's name.
    #[arg(long, required_if_eq_any([("source", "vault-dynamic"), ("source", "vault-static")]))]
    pub role: Option<String>,

    /// The username, where the secret holds only a password (AWS plain-string secret, a
    /// password file, Vault KV without a username field, the environment).
    #[arg(long)]
    pub username: Option<String>,

    /// Env: the variable holding the username (default PGUSER).
    #[arg(long)]
    pub username_var: Option<String>,

    /// Env: the variable holding the password (default PGPASSWORD).
    #[arg(long)]
    pub password_var: Option<String>,

    /// Env: one variable holding RDS-style JSON instead.
    #[arg(long)]
    pub json_var: Option<String>,

    /// Also open one connection with the credential (and run `SELECT 1`): to this server,
    /// e.g. `postgres://db.internal:5432/app` (no user or password in it: they come from the
    /// source). Without it, the secret's own host, port and dbname where it has them.
    #[arg(long)]
    pub connect: bool,

    /// The server for `--connect`.
    #[arg(long, env = "CREDSWAP_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Fail when the credential expires within this long (e.g. 5m).
    #[arg(long, default_value = "1m", value_parser = crate::cli::parse_duration)]
    pub expiry_margin: Duration,

    /// Fail when the credential is older than this, unless the store says its own rotation
    /// schedule (Secrets Manager's rotation rules, a static role's rotation period).
    #[arg(long, default_value = "30days", value_parser = parse_long_duration)]
    pub max_age: Duration,

    /// How long reading the store and connecting may take, each.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,

    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// A duration of any length (`90days`, `12h`): rotation intervals are measured in days.
fn parse_long_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

/// What the check found, printed as a line or JSON. Never the password.
#[derive(Debug, Serialize)]
struct Report {
    status: Verdict,
    exit_code: u8,
    reason: String,
    source: &'static str,
    username: Option<String>,
    version: Option<String>,
    age_s: Option<f64>,
    rotation_interval_s: Option<f64>,
    next_rotation_in_s: Option<f64>,
    expires_in_s: Option<f64>,
    connected: Option<bool>,
}

/// Runs the check; returns the exit status.
pub async fn main(args: CheckArgs) -> ExitCode {
    let report = run(&args).await;
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("error: cannot write JSON: {e}"),
        }
    } else {
        println!(
            "{}: {}",
            if report.status == Verdict::Ok {
                "ok"
            } else {
                "FAIL"
            },
            report.reason
        );
    }
    ExitCode::from(report.exit_code)
}

fn source_name(source: CheckSource) -> &'static str {
    match source {
        CheckSource::Aws => "aws",
        CheckSource::VaultKv => "vault-kv",
        CheckSource::VaultDynamic => "vault-dynamic",
        CheckSource::VaultStatic => "vault-static",
        CheckSource::File => "file",
        CheckSource::Env => "env",
    }
}

async fn run(args: &CheckArgs) -> Report {
    let mut report = Report {
        status: Verdict::Ok,
        exit_code: 0,
        reason: String::new(),
        source: source_name(args.source),
        username: None,
        version: None,
        age_s: None,
        rotation_interval_s: None,
        next_rotation_in_s: None,
        expires_in_s: None,
        connected: None,
    };
    let fail = |mut report: Report, verdict: Verdict, reason: String| {
        report.status = verdict;
        report.exit_code = verdict.code();
        report.reason = reason;
        report
    };
    let built = match build_source(args).await {
        Ok(built) => built,
        Err(reason) => return fail(report, Verdict::Config, reason),
    };
    let policy = match Policy::builder()
        .rotation_interval(args.max_age)
        .expiry_margin(args.expiry_margin)
        .fetch_timeout(args.timeout)
        .build()
    {
        Ok(policy) => policy,
        Err(e) => return fail(report, Verdict::Config, e.to_string()),
    };
    let credentials = match RotatingCredentials::builder_from_arc(Arc::clone(&built.source))
        .policy(policy)
        .background_refresh(false)
        .build()
        .await
    {
        Ok(credentials) => credentials,
        Err(e) => {
            let reason = format!("cannot read the credential from {}: {e}", report.source);
            return fail(report, fetch_verdict(&e), reason);
        }
    };
    let snapshot = credentials.current();
    let credential = snapshot.credential();
    report.username = Some(credential.username().to_owned());
    report.version = credential.version().map(str::to_owned);
    let health = credentials.health();
    fill_times(&mut report, &health);
    let who = describe(credential);

    if args.connect {
        let Some(base) = connect_config(args, &built) else {
            return fail(
                report,
                Verdict::Config,
                "--connect needs --database-url (the secret names no host)".into(),
            );
        };
        match tokio::time::timeout(args.timeout, connect(&base, credential)).await {
            Ok(Ok(())) => report.connected = Some(true),
            Ok(Err((failure, message))) => {
                report.connected = Some(false);
                let verdict = if failure == Failure::Auth {
                    Verdict::Refused
                } else {
                    Verdict::Unreachable
                };
                let reason = match verdict {
                    Verdict::Refused => format!("the database refuses {who}: {message}"),
                    _ => format!("cannot reach the database with {who}: {message}"),
                };
                return fail(report, verdict, reason);
            }
            Err(_) => {
                report.connected = Some(false);
                let reason = format!(
                    "the database did not answer within {} (stalled?)",
                    humantime::format_duration(args.timeout)
                );
                return fail(report, Verdict::Unreachable, reason);
            }
        }
    }
    if health.is_expiring() {
        let left = health.expires_in().unwrap_or_default();
        let reason = if health.is_expired() {
            format!("{who} has expired")
        } else {
            format!(
                "{who} expires in {}, within the margin of {}",
                secs(left),
                secs(args.expiry_margin)
            )
        };
        return fail(report, Verdict::Expiring, reason);
    }
    if health.is_overdue() {
        let reason = format!(
            "{who} is {} old, older than its rotation interval of {}: the store has not rotated it",
            secs(health.age()),
            secs(health.rotation_interval())
        );
        return fail(report, Verdict::Overdue, reason);
    }
    report.reason = format!(
        "{who}, {} old{}{}",
        secs(health.age()),
        health
            .expires_in()
            .map(|left| format!(", expires in {}", secs(left)))
            .unwrap_or_default(),
        if report.connected == Some(true) {
            ", accepted by the database"
        } else {
            ""
        }
    );
    report
}

/// "user app (version v3) from aws".
fn describe(credential: &Credential) -> String {
    match credential.version() {
        Some(version) => format!("user {} (version {version})", credential.username()),
        None => format!("user {}", credential.username()),
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn fill_times(report: &mut Report, health: &Health) {
    report.age_s = Some(health.age().as_secs_f64());
    report.rotation_interval_s = Some(health.rotation_interval().as_secs_f64());
    report.next_rotation_in_s = health.next_rotation_in().map(|d| d.as_secs_f64());
    report.expires_in_s = health.expires_in().map(|d| d.as_secs_f64());
}

fn fetch_verdict(e: &Error) -> Verdict {
    if e.is_source() || e.is_timeout() {
        Verdict::FetchFailed
    } else {
        Verdict::Config
    }
}

/// Host, port and dbname, as a secret names them.
type Where = (Option<String>, Option<u16>, Option<String>);

/// A source and, where the secret says, where its database is.
struct Built {
    source: Arc<dyn CredentialSource>,
    /// host, port, dbname from the secret the provider's fetch read (AWS, file JSON): the
    /// sources keep them from their last read, so nothing is fetched twice.
    details: Box<dyn Fn() -> Option<Where> + Send + Sync>,
}

/// No details: the source's secrets never name a server.
fn no_details() -> Box<dyn Fn() -> Option<Where> + Send + Sync> {
    Box::new(|| None)
}

async fn build_source(args: &CheckArgs) -> Result<Built, String> {
    match args.source {
        CheckSource::Aws => {
            let id = args.secret_id.clone().ok_or("--secret-id is required")?;
            let mut builder = credswap_aws::SecretsManagerSource::builder(id);
            if let Some(url) = &args.endpoint_url {
                builder = builder.endpoint_url(url.clone());
            }
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            let source = Arc::new(builder.build_from_env().await.map_err(|e| e.to_string())?);
            let read = Arc::clone(&source);
            Ok(Built {
                source,
                details: Box::new(move || {
                    read.details().map(|d| {
                        (
                            d.host().map(str::to_owned),
                            d.port(),
                            d.dbname().map(str::to_owned),
                        )
                    })
                }),
            })
        }
        CheckSource::VaultKv | CheckSource::VaultDynamic | CheckSource::VaultStatic => {
            use credswap_vault::VaultSource;
            let builder = match args.source {
                CheckSource::VaultKv => VaultSource::kv2(
                    args.mount.clone().unwrap_or_else(|| "secret".into()),
                    args.path.clone().ok_or("--path is required")?,
                ),
                // One read, no pool: the lease margin only has to admit --expiry-margin,
                // which here is the alert's threshold (the provider refuses a longer one).
                CheckSource::VaultDynamic => VaultSource::dynamic_role(
                    args.mount.clone().unwrap_or_else(|| "database".into()),
                    args.role.clone().ok_or("--role is required")?,
                )
                .lease_margin(args.expiry_margin.max(credswap_vault::DEFAULT_LEASE_MARGIN))
                .revoke_on_drop(true),
                _ => VaultSource::static_role(
                    args.mount.clone().unwrap_or_else(|| "database".into()),
                    args.role.clone().ok_or("--role is required")?,
                ),
            };
            let mut builder = builder.from_env().timeout(args.timeout);
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            let source = builder.build().map_err(|e| e.to_string())?;
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
            })
        }
        CheckSource::File => {
            let path = PathBuf::from(args.path.clone().ok_or("--path is required")?);
            let mut builder = credswap_file::FileSource::builder(path);
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            let source = Arc::new(builder.build().map_err(|e| e.to_string())?);
            let read = Arc::clone(&source);
            Ok(Built {
                source,
                details: Box::new(move || {
                    read.details().map(|d| {
                        (
                            d.host().map(str::to_owned),
                            d.port(),
                            d.dbname().map(str::to_owned),
                        )
                    })
                }),
            })
        }
        CheckSource::Env => {
            let mut builder = credswap_file::EnvSource::builder();
            if let Some(var) = &args.username_var {
                builder = builder.username_var(var.clone());
            }
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            if let Some(var) = &args.password_var {
                builder = builder.password_var(var.clone());
            }
            if let Some(var) = &args.json_var {
                builder = builder.json_var(var.clone());
            }
            let source = builder.build().map_err(|e| e.to_string())?;
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
            })
        }
    }
}

/// The server to connect to: `--database-url`, else the secret's host, port and dbname.
fn connect_config(args: &CheckArgs, built: &Built) -> Option<tokio_postgres::Config> {
    if let Some(url) = &args.database_url {
        return url.parse().ok();
    }
    let (host, port, dbname) = (built.details)()?;
    let mut config = tokio_postgres::Config::new();
    config.host(host?);
    config.port(port.unwrap_or(5432));
    if let Some(dbname) = dbname {
        config.dbname(dbname);
    }
    Some(config)
}

async fn connect(
    base: &tokio_postgres::Config,
    credential: &Credential,
) -> Result<(), (Failure, String)> {
    let mut base = base.clone();
    base.connect_timeout(Duration::from_secs(10));
    let describe_error = |e: &tokio_postgres::Error| {
        let failure = credswap_tokio_postgres::classify(e);
        let message = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        (failure, message)
    };
    let (client, connection) =
        credswap_tokio_postgres::open(&base, credential, tokio_postgres::NoTls)
            .await
            .map_err(|e| describe_error(&e))?;
    let driver = tokio::spawn(connection);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| describe_error(&e));
    drop(client);
    let _ = driver.await;
    result
}
