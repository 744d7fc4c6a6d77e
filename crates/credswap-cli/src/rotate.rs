//! `credswap rotate`: one rotation (or one step of one) of a secret in AWS Secrets Manager,
//! with `credswap_rotate::Rotator`.
//!
//! Exit statuses: 0 done; 1 the rotation failed (see the message and its hint); 2 bad
//! arguments; 3 another rotation's version is `AWSPENDING` and `--takeover` was not given
//! (nothing changed); 4 the `--token`'s rotation already finished (its version is
//! `AWSCURRENT` or `AWSPREVIOUS`; nothing changed); 5 the server's `pg_hba.conf` rejected the
//! connection (a configuration problem such as TLS required: see `--sslmode`).
//!
//! Database connections use `--sslmode` (libpq's names, default `prefer`) and `--ca-file`
//! through `credswap_rotate::Database::rustls`.

use std::process::ExitCode;

use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_rotate::{
    Database, Error, Master, Outcome, RotationReport, Rotator, SessionPolicy, SessionsFound,
    StepReport, Strategy,
};

use crate::aws;
use crate::cli::{RotateArgs, StrategyName};

/// The rotation failed (the message says why).
pub const EXIT_FAILED: u8 = 1;
/// Bad arguments (clap's status too).
pub const EXIT_USAGE: u8 = 2;
/// Another rotation's version is `AWSPENDING`; `--takeover` was not given.
pub const EXIT_TAKEOVER_REFUSED: u8 = 3;
/// The `--token`'s rotation already finished.
pub const EXIT_TOKEN_FINISHED: u8 = 4;
/// The server's `pg_hba.conf` rejected the connection.
pub const EXIT_REJECTED: u8 = 5;

pub async fn main(args: RotateArgs) -> ExitCode {
    let strategy = match strategy(&args) {
        Ok(strategy) => strategy,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let database = match Database::rustls(args.sslmode, args.ca_file.as_deref()) {
        Ok(database) => database,
        Err(e) => {
            eprintln!("error: --sslmode {}: {e}", args.sslmode);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = aws::from_env(args.endpoint_url.as_deref()).await;
    if config.region().is_none() {
        eprintln!(
            "error: no AWS region: set AWS_REGION (or a profile's region with AWS_PROFILE), as for \
             the AWS CLI"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let rotator = Rotator::new(Client::new(&config), &args.secret_id, strategy)
        .session_policy(args.sessions)
        .pause_before_finish(args.pause_before_finish)
        .database(database)
        .takeover(args.takeover);
    let result = match (args.step, &args.token) {
        (Some(step), Some(token)) => rotator.run_step(step, token).await.map(|report| {
            print_step(&args.secret_id, &report);
        }),
        (Some(_), None) => {
            // clap's `requires` makes this unreachable; keep the exit status of a usage error.
            eprintln!("error: --step needs --token");
            return ExitCode::from(EXIT_USAGE);
        }
        (None, token) => {
            println!(
                "rotating {} ({}{})...",
                args.secret_id,
                args.strategy.as_str(),
                if args.pause_before_finish.is_zero() {
                    String::new()
                } else {
                    format!(
                        ", pausing {} before finishSecret",
                        humantime::format_duration(args.pause_before_finish)
                    )
                }
            );
            let rotation = match token {
                Some(token) => rotator.rotate_with_token(token).await,
                None => rotator.rotate().await,
            };
            rotation.map(|report| print_rotation(&args.secret_id, &report))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: rotating {} failed: {e}", args.secret_id);
            if let Some(hint) = hint(&e, &args) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status of a failed rotation.
fn exit_status(e: &Error) -> u8 {
    if e.is_takeover_refused() {
        EXIT_TAKEOVER_REFUSED
    } else if e.is_token_finished() {
        EXIT_TOKEN_FINISHED
    } else if e.is_connection_rejected() {
        EXIT_REJECTED
    } else {
        EXIT_FAILED
    }
}

/// The rotator's strategy from the arguments; an error is a usage error.
fn strategy(args: &RotateArgs) -> Result<Strategy, String> {
    match args.strategy {
        StrategyName::SingleUser => {
            if args.master_secret.is_some() || args.master_from_secret {
                return Err(
                    "--master-secret and --master-from-secret apply to --strategy alternating-users \
                     only (a single-user rotation logs in as the user itself)"
                        .into(),
                );
            }
            if args.sessions != SessionPolicy::Fail {
                return Err(
                    "--sessions applies to --strategy alternating-users only (a single-user \
                     rotation leaves sessions alone)"
                        .into(),
                );
            }
            Ok(Strategy::SingleUser)
        }
        StrategyName::AlternatingUsers => {
            let master = match (&args.master_secret, args.master_from_secret) {
                (Some(secret), false) => Master::Secret(secret.clone()),
                (None, true) => Master::FromSecret,
                (None, false) => {
                    return Err(
                        "--strategy alternating-users needs the master login that changes the \
                         inactive user's password: --master-secret ID, or --master-from-secret \
                         (the secret's `masterarn` field)"
                            .into(),
                    );
                }
                (Some(_), true) => {
                    return Err("give --master-secret or --master-from-secret, not both".into());
                }
            };
            Ok(Strategy::AlternatingUsers(master))
        }
    }
}

fn outcome(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::AlreadyDone => "already done (nothing changed)",
    }
}

fn print_step(secret_id: &str, report: &StepReport) {
    println!(
        "{} of {}: {}",
        report.step,
        secret_id,
        outcome(report.outcome)
    );
    println!("  token:        {}", report.token);
    if let Some(user) = &report.username {
        println!("  user:         {user}");
    }
    if report.created_role {
        println!("  created role: yes");
    }
    if let Some(found) = &report.sessions {
        println!("  sessions:     {}", sessions(found));
    }
}

fn print_rotation(secret_id: &str, report: &RotationReport) {
    println!("rotated {secret_id}: the new version is AWSCURRENT");
    println!("  token:        {}", report.token);
    println!(
        "  user:         {} -> {}",
        report.previous_username, report.username
    );
    println!(
        "  created role: {}",
        if report.created_role {
            format!("yes ({})", report.username)
        } else {
            "no".to_owned()
        }
    );
    if let Some(found) = &report.sessions {
        println!("  sessions:     {}", sessions(found));
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s.step,
                match s.outcome {
                    Outcome::Done => "done",
                    Outcome::AlreadyDone => "already done",
                }
            )
        })
        .collect();
    println!("  steps:        {}", steps.join(", "));
}

/// What setSecret found logged in as the inactive user.
fn sessions(found: &SessionsFound) -> String {
    let policy = match found.policy {
        SessionPolicy::Fail => "fail".to_owned(),
        SessionPolicy::Wait(d) => format!("wait={}", humantime::format_duration(d)),
        SessionPolicy::Terminate => "terminate".to_owned(),
    };
    let mut text = format!(
        "{} logged in as {} (policy {policy})",
        found.found, found.username
    );
    if found.terminated > 0 {
        text.push_str(&format!(", {} terminated", found.terminated));
    }
    if !found.waited.is_zero() {
        text.push_str(&format!(
            ", waited {} ms for them to go",
            found.waited.as_millis()
        ));
    }
    text
}

/// What to do about a failed rotation, from the error's questions.
fn hint(e: &Error, args: &RotateArgs) -> Option<String> {
    if e.is_takeover_refused() {
        let other = e.version_id().unwrap_or("?");
        return Some(format!(
            "finish that rotation with its own token: credswap rotate --secret-id {} --token \
             {other} (setSecret and testSecret are skipped when its password already logs in); \
             only if it never reached setSecret (or with alternating users), start a new one \
             over it with --takeover",
            args.secret_id
        ));
    }
    if e.is_token_finished() {
        return Some(
            "that token's rotation already finished; run credswap rotate without --token for a \
             new rotation"
                .to_owned(),
        );
    }
    if e.is_connection_rejected() {
        return Some(format!(
            "the server's pg_hba.conf turns this connection away (SQLSTATE 28000) before any \
             password check: if it requires TLS (hostssl entries, RDS rds.force_ssl), use \
             --sslmode require or verify-full --ca-file CA.pem (now --sslmode {}); otherwise \
             the server does not admit this user, database or client address",
            args.sslmode
        ));
    }
    if e.is_master_not_found() {
        return Some(match &args.master_secret {
            Some(master) => format!(
                "check --master-secret {master} (and the region or --endpoint-url): Secrets \
                 Manager has no such secret, or it has no AWSCURRENT version"
            ),
            None => "check the secret's masterarn field (--master-from-secret): Secrets Manager \
                     has no secret by that ARN, or it has no AWSCURRENT version"
                .to_owned(),
        });
    }
    if e.is_not_found() {
        return Some(format!(
            "check --secret-id {} (and the region or --endpoint-url): Secrets Manager has no such \
             secret, or it has no AWSCURRENT version",
            args.secret_id
        ));
    }
    if e.is_sessions_in_use() {
        return Some(format!(
            "{} session(s) still use role {}; let them finish with --sessions wait=30s, or end \
             them with --sessions terminate",
            e.sessions().unwrap_or(0),
            e.username().unwrap_or("?")
        ));
    }
    if e.is_auth_failure() {
        return Some(format!(
            "the database refused the login of role {}{}: the secret's password does not match \
             the database (for alternating users, check the master login)",
            e.username().unwrap_or("?"),
            e.code()
                .map(|c| format!(" (SQLSTATE {c})"))
                .unwrap_or_default()
        ));
    }
    if e.is_database() {
        return Some(format!(
            "the database failed{}: check the secret's host, port and dbname, that it is \
             reachable from here, and the TLS settings (now --sslmode {}{})",
            e.code()
                .map(|c| format!(" (SQLSTATE {c})"))
                .unwrap_or_default(),
            args.sslmode,
            args.ca_file
                .as_ref()
                .map(|p| format!(" --ca-file {}", p.display()))
                .unwrap_or_default()
        ));
    }
    if e.is_version() {
        return Some(
            "the secret's version stages do not allow this step with this token; run the whole \
             rotation (without --step) or the steps in order with the same --token"
                .to_owned(),
        );
    }
    if e.is_malformed() {
        return Some(
            "the secret's value must be JSON with username, password, host (and port, dbname, \
             engine postgres)"
                .to_owned(),
        );
    }
    if e.is_store() {
        return Some(format!(
            "Secrets Manager refused or failed{}: check the AWS credentials, the region and the \
             permissions (DescribeSecret, GetSecretValue, PutSecretValue, \
             UpdateSecretVersionStage)",
            e.code().map(|c| format!(" ({c})")).unwrap_or_default()
        ));
    }
    if e.is_config() {
        return Some("the rotator's configuration is unusable (see above)".to_owned());
    }
    None
}
