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
//! through `credswap_rotate::Database::rustls`.
//!
//! `--source rds-iam` and `--source dsql` mint an IAM authentication token (signed with the
//! AWS environment's credentials) and report its user and expiry, never the token; their
//! `--connect` needs TLS (`--sslmode` defaults to `require` for them, and `disable` or
//! `prefer` is a configuration error).
//!
//! The arguments are in `args` ([`CheckArgs`], [`CheckSource`]), the sources the check reads
//! through in `source`, and the `--connect` probe in `connect`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use credswap_core::{Credential, Error, Health, Policy, RotatingCredentials};
use serde::Serialize;

mod args;
mod connect;
mod source;

pub use args::{CheckArgs, CheckSource};
use connect::{Failed, connect, connect_config};
use source::build_source;

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
        CheckSource::RdsIam => "rds-iam",
        CheckSource::Dsql => "dsql",
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
        if args.source.is_minted()
            && let Err(e) = credswap_aws::require_tls(args.sslmode().as_str())
        {
            let reason = format!("--sslmode {}: {}", args.sslmode(), e.message());
            return fail(report, Verdict::Config, reason);
        }
        let database =
            match credswap_rotate::Database::rustls(args.sslmode(), args.ca_file.as_deref()) {
                Ok(database) => database,
                Err(e) => {
                    let reason = format!("--sslmode {}: {e}", args.sslmode());
                    return fail(report, Verdict::Config, reason);
                }
            };
        match tokio::time::timeout(args.timeout, connect(&database, &base, credential)).await {
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
                        args.sslmode()
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

/// "user app (version v3) from aws"; "user iam_app (minted token)".
fn describe(credential: &Credential) -> String {
    if credential.is_minted() {
        return format!("user {} (minted token)", credential.username());
    }
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
