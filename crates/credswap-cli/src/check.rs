//! `credswap check`: reads the credential through a source, optionally opens one connection with
//! it, and exits with a code that says what is wrong. For cron jobs and Kubernetes probes.
//!
//! Never prints the secret: the output names the source, the username, the version and times.
//!
//! Exit statuses ([`Verdict`]): 0 ok; 3 the store cannot be read; 4 the database refuses the
//! credential (or its `pg_hba.conf` rejects the connection); 5 expiring; 6 overdue; 7 the
//! database cannot be reached; 8 a bad configuration; 9 a rotation is stuck: with
//! `--source aws`, an `AWSPENDING` version (not `AWSCURRENT`) older than `--stuck-after`
//! (default 10 minutes; its age is its `CreatedDate`), what a rotation that died part way
//! leaves behind. A younger pending version is reported as "rotating", exit 0. 2 is clap's,
//! for bad arguments.
//!
//! `--connect` uses TLS as `--sslmode` (libpq's names, default `prefer`) and `--ca-file` say,
//! through `credswap_rotate::Connector::rustls`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// 9: a rotation is stuck: an `AWSPENDING` version older than `--stuck-after`.
    Stuck,
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
            Verdict::Stuck => 9,
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

    /// --connect: TLS as libpq names it: disable, prefer (TLS when the server offers it),
    /// require, verify-ca (the certificate's chain must lead to --ca-file), verify-full (and
    /// name the host). prefer and require verify the chain too when --ca-file is given.
    #[arg(long, default_value = "prefer", value_parser = crate::cli::parse_sslmode)]
    pub sslmode: credswap_rotate::SslMode,

    /// --connect: a PEM file of the CA certificate(s) the server's certificate must lead to
    /// (libpq's sslrootcert). Needed by verify-ca and verify-full.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,

    /// AWS: fail (exit 9, "rotation stuck") when an AWSPENDING version older than this exists
    /// (a rotation that died part way); a younger one is reported as rotating.
    #[arg(long, default_value = "10m", value_parser = parse_long_duration)]
    pub stuck_after: Duration,

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
    /// AWS: `rotating` or `stuck` while an `AWSPENDING` version exists; absent otherwise.
    rotation: Option<&'static str>,
    /// AWS: the `AWSPENDING` version's id.
    pending_version: Option<String>,
    /// AWS: how old the `AWSPENDING` version is (since its `CreatedDate`).
    pending_age_s: Option<f64>,
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
        rotation: None,
        pending_version: None,
        pending_age_s: None,
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

    // A pending version: a rotation in progress, or a stuck one.
    let mut stuck = None;
    if let Some(aws) = &built.aws {
        match tokio::time::timeout(args.timeout, aws.fetch_pending_secret()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(pending))) => {
                let pending = pending.credential();
                let age = pending
                    .issued_at()
                    .and_then(|at| SystemTime::now().duration_since(at).ok());
                report.pending_version = pending.version().map(str::to_owned);
                report.pending_age_s = age.map(|d| d.as_secs_f64());
                let version = pending.version().unwrap_or("?").to_owned();
                match age {
                    Some(age) if age >= args.stuck_after => {
                        report.rotation = Some("stuck");
                        stuck = Some(format!(
                            "rotation stuck since {}: version {version} (user {}) has been \
                             AWSPENDING for longer than --stuck-after {}; the rotation that \
                             created it did not finish (finish it with credswap rotate --token \
                             {version}, or remove its AWSPENDING stage)",
                            secs(age),
                            pending.username(),
                            secs(args.stuck_after)
                        ));
                    }
                    _ => report.rotation = Some("rotating"),
                }
            }
            Ok(Err(e)) => {
                let reason = format!("cannot read the pending version from aws: {e}");
                return fail(report, Verdict::FetchFailed, reason);
            }
            Err(_) => {
                let reason = format!(
                    "reading the pending version took longer than {}",
                    secs(args.timeout)
                );
                return fail(report, Verdict::FetchFailed, reason);
            }
        }
    }

    if args.connect {
        let Some(base) = connect_config(args, &built) else {
            return fail(
                report,
                Verdict::Config,
                "--connect needs --database-url (the secret names no host)".into(),
            );
        };
        let connector =
            match credswap_rotate::Connector::rustls(args.sslmode, args.ca_file.as_deref()) {
                Ok(connector) => connector,
                Err(e) => {
                    let reason = format!("--sslmode {}: {e}", args.sslmode);
                    return fail(report, Verdict::Config, reason);
                }
            };
        match tokio::time::timeout(args.timeout, connect(&connector, &base, credential)).await {
            Ok(Ok(())) => report.connected = Some(true),
            Ok(Err((failure, message))) => {
                report.connected = Some(false);
                let verdict = if failure == Failed::Auth || failure == Failed::Rejected {
                    Verdict::Refused
                } else {
                    Verdict::Unreachable
                };
                let reason = match failure {
                    Failed::Rejected => format!(
                        "the database's pg_hba.conf rejects the connection of {who} (not a \
                         password failure; TLS required? see --sslmode, now {}): {message}",
                        args.sslmode
                    ),
                    Failed::Auth => format!("the database refuses {who}: {message}"),
                    Failed::Other => format!("cannot reach the database with {who}: {message}"),
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
    if let Some(reason) = stuck {
        return fail(report, Verdict::Stuck, reason);
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
        "{who}, {} old{}{}{}",
        secs(health.age()),
        health
            .expires_in()
            .map(|left| format!(", expires in {}", secs(left)))
            .unwrap_or_default(),
        if report.connected == Some(true) {
            ", accepted by the database"
        } else {
            ""
        },
        match (&report.pending_version, report.pending_age_s) {
            (Some(version), Some(age)) => format!(
                ", rotating (version {version} AWSPENDING for {})",
                secs(Duration::from_secs_f64(age))
            ),
            (Some(version), None) => format!(", rotating (version {version} AWSPENDING)"),
            _ => String::new(),
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
    /// The AWS source, for its pending version.
    aws: Option<Arc<credswap_aws::SecretsManagerSource>>,
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
                aws: Some(Arc::clone(&source)),
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
            if args.username.is_some() && args.source != CheckSource::VaultKv {
                return Err(
                    "--username applies to vault-kv only (a database role's credential names its user)"
                        .into(),
                );
            }
            let source = match args.source {
                CheckSource::VaultKv => {
                    let mut builder = VaultSource::kv2(
                        args.mount.clone().unwrap_or_else(|| "secret".into()),
                        args.path.clone().ok_or("--path is required")?,
                    );
                    if let Some(user) = &args.username {
                        builder = builder.username(user.clone());
                    }
                    vault_source(builder, args)?
                }
                // One read, no pool: the lease margin only has to admit --expiry-margin,
                // which here is the alert's threshold (the provider refuses a longer one).
                CheckSource::VaultDynamic => vault_source(
                    VaultSource::dynamic_role(
                        args.mount.clone().unwrap_or_else(|| "database".into()),
                        args.role.clone().ok_or("--role is required")?,
                    )
                    .lease_margin(args.expiry_margin.max(credswap_vault::DEFAULT_LEASE_MARGIN))
                    .revoke_on_drop(true),
                    args,
                )?,
                _ => vault_source(
                    VaultSource::static_role(
                        args.mount.clone().unwrap_or_else(|| "database".into()),
                        args.role.clone().ok_or("--role is required")?,
                    ),
                    args,
                )?,
            };
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
                aws: None,
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
                aws: None,
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
                builder = builder.username_field(var.clone());
            }
            if let Some(user) = &args.username {
                builder = builder.username(user.clone());
            }
            if let Some(var) = &args.password_var {
                builder = builder.password_field(var.clone());
            }
            if let Some(var) = &args.json_var {
                builder = builder.json_var(var.clone());
            }
            let source = builder.build().map_err(|e| e.to_string())?;
            Ok(Built {
                source: Arc::new(source),
                details: no_details(),
                aws: None,
            })
        }
    }
}

/// A Vault source of any kind, with the address and token from the environment.
fn vault_source<K: credswap_vault::kind::SourceKind>(
    builder: credswap_vault::VaultSourceBuilder<K>,
    args: &CheckArgs,
) -> Result<credswap_vault::VaultSource, String> {
    builder
        .from_env()
        .timeout(args.timeout)
        .build()
        .map_err(|e| e.to_string())
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

/// How a `--connect` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// The server refused the login (`28P01`, `28000`, ...).
    Auth,
    /// The server's `pg_hba.conf` rejected the connection (`28000` naming the file).
    Rejected,
    /// Anything else: network, TLS, a server that is down.
    Other,
}

async fn connect(
    connector: &credswap_rotate::Connector,
    base: &tokio_postgres::Config,
    credential: &Credential,
) -> Result<(), (Failed, String)> {
    use secrecy::ExposeSecret;
    let mut config = base.clone();
    config.connect_timeout(Duration::from_secs(10));
    config.user(credential.username());
    config.password(credential.password().expose_secret());
    let describe_error = |e: &tokio_postgres::Error| {
        let failure = match e.as_db_error() {
            Some(db) if db.code().code() == "28000" && db.message().contains("pg_hba.conf") => {
                Failed::Rejected
            }
            _ if credswap_tokio_postgres::classify(e) == Failure::Auth => Failed::Auth,
            _ => Failed::Other,
        };
        let message = match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => error_chain(e),
        };
        (failure, message)
    };
    let opened = connector.connect(config).await;
    let (client, connection) = opened.map_err(|e| describe_error(&e))?;
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

/// An error and its sources, `: `-joined (a TLS failure's reason is in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}
