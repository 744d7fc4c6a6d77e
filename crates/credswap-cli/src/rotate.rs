//! `credswap rotate`: one rotation (or one step of one) of a secret in AWS Secrets Manager,
//! with `credswap_rotate::Rotator`.

use std::process::ExitCode;

use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_rotate::{
    Error, Master, Outcome, RotationReport, Rotator, SessionPolicy, SessionsFound, StepReport,
    Strategy,
};

use crate::aws;
use crate::cli::{RotateArgs, StrategyName};

pub async fn main(args: RotateArgs) -> ExitCode {
    let strategy = match strategy(&args) {
        Ok(strategy) => strategy,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let config = aws::from_env(args.endpoint_url.as_deref()).await;
    if config.region().is_none() {
        eprintln!(
            "error: no AWS region: set AWS_REGION (or a profile's region with AWS_PROFILE), as for \
             the AWS CLI"
        );
        return ExitCode::from(2);
    }
    let rotator = Rotator::new(Client::new(&config), &args.secret_id, strategy)
        .session_policy(args.sessions)
        .pause_before_finish(args.pause_before_finish);
    let result = match (args.step, &args.token) {
        (Some(step), Some(token)) => rotator.run_step(step, token).await.map(|report| {
            print_step(&args.secret_id, &report);
        }),
        (Some(_), None) => {
            // clap's `requires` makes this unreachable; keep the exit status of a usage error.
            eprintln!("error: --step needs --token");
            return ExitCode::from(2);
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
            ExitCode::FAILURE
        }
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
        found.found, found.role
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
            e.role().unwrap_or("?")
        ));
    }
    if e.is_login_refused() {
        return Some(format!(
            "the database refused the login of role {}{}: the secret's password does not match \
             the database (for alternating users, check the master login)",
            e.role().unwrap_or("?"),
            e.code()
                .map(|c| format!(" (SQLSTATE {c})"))
                .unwrap_or_default()
        ));
    }
    if e.is_database() {
        return Some(format!(
            "the database failed{}: check the secret's host, port and dbname, and that it is \
             reachable from here (connections use no TLS)",
            e.code()
                .map(|c| format!(" (SQLSTATE {c})"))
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
