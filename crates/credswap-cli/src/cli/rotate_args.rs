//! `credswap rotate`'s arguments: [`RotateArgs`] and the parsers of its values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};
use credswap_rotate::{SessionPolicy, SslMode, Step};

use super::{StrategyName, parse_duration, parse_pause, parse_sslmode};

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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::super::Command;
    use super::super::tests::parse;
    use super::*;

    fn rotate(args: &[&str]) -> Result<RotateArgs, clap::Error> {
        match parse(args)?.command {
            Command::Rotate(r) => Ok(r),
            other => panic!("not a rotate: {other:?}"),
        }
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
}
