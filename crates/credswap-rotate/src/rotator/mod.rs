//! [`Rotator`]: the four steps of the protocol for one secret, and [`Rotator::rotate`], which
//! runs them all. Each step is in the module named after it: `create_secret`, `set_secret`,
//! `test_secret`, `finish_secret`; this one holds the rotator, its builder methods, the whole
//! rotation and what the steps share (tokens, the pending checks).

use std::fmt;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::AsyncSleep;
use rand::Rng;

use crate::db::Database;
use crate::secret::SecretValue;
use crate::sessions::{SessionPolicy, SessionsFound};
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, CURRENT, PENDING, PREVIOUS};
use crate::strategy::{Strategy, alternate_username};
use crate::{Error, PasswordPolicy};

mod create_secret;
mod finish_secret;
mod set_secret;
mod test_secret;

/// The default `connect_timeout` of every database login.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Rotates one secret: holds the Secrets Manager client, the secret id, the [`Strategy`], the
/// [`PasswordPolicy`], the [`SessionPolicy`] and how to reach the database.
///
/// The step methods are plain `async fn`s: they spawn nothing, keep no global state and can be
/// called from a Lambda handler (one step per invocation) or in a row ([`rotate`](Self::rotate)).
/// Each one is idempotent per token: running it again with the same token changes nothing
/// more (its [`StepReport::outcome`] says [`Outcome::AlreadyDone`]).
///
/// `Debug` prints no secret (nor the SDK client).
#[derive(Clone)]
pub struct Rotator {
    client: Client,
    secret_id: String,
    strategy: Strategy,
    passwords: PasswordPolicy,
    sessions: SessionPolicy,
    database: Database,
    connect_timeout: Duration,
    pause: Duration,
    takeover: bool,
}

/// What [`Rotator::rotate`] did. Holds no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RotationReport {
    /// The token (version id) of the new version, now `AWSCURRENT`.
    pub token: String,
    /// The user of the version that was `AWSCURRENT` before (now `AWSPREVIOUS`).
    pub previous_username: String,
    /// The user of the new `AWSCURRENT` version.
    pub username: String,
    /// The clone role was created (first rotation with alternating users).
    pub created_role: bool,
    /// Sessions found logged in as the inactive user before its password changed.
    pub sessions: Option<SessionsFound>,
    /// Each step's report, in order.
    pub steps: Vec<StepReport>,
}

/// A new `ClientRequestToken`: a random UUID (version 4) in its 36-character form (Secrets
/// Manager needs 32 to 64 characters).
pub fn new_token() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl fmt::Debug for Rotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotator")
            .field("secret_id", &self.secret_id)
            .field("strategy", &self.strategy)
            .field("passwords", &self.passwords)
            .field("sessions", &self.sessions)
            .field("connect_timeout", &self.connect_timeout)
            .field("pause", &self.pause)
            .field("takeover", &self.takeover)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Secrets Manager's bounds on a `ClientRequestToken`.
const TOKEN_LENGTH: std::ops::RangeInclusive<usize> = 32..=64;

/// An error unless `token` is 32 to 64 characters.
fn check_token(token: &str) -> Result<(), Error> {
    if TOKEN_LENGTH.contains(&token.len()) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "a ClientRequestToken must be 32 to 64 characters, not {} ({token:?})",
            token.len()
        )))
    }
}

impl Rotator {
    /// A rotator for `secret_id` (name or ARN) with the default password policy, the `Fail`
    /// session policy, no TLS, a 5 s connect timeout, no pause, and no takeover of another
    /// rotation's `AWSPENDING` version.
    pub fn new(client: Client, secret_id: impl Into<String>, strategy: Strategy) -> Rotator {
        Rotator {
            client,
            secret_id: secret_id.into(),
            strategy,
            passwords: PasswordPolicy::default(),
            sessions: SessionPolicy::default(),
            database: Database::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pause: Duration::ZERO,
            takeover: false,
        }
    }

    /// Whether createSecret may take `AWSPENDING` over from a version another
    /// `ClientRequestToken` created (another rotation in progress, or one that died). Off by
    /// default: then createSecret fails with [`Error::is_takeover_refused`] and changes
    /// nothing, because a rotation that died between its setSecret and finishSecret left the
    /// database with *its* pending password, which only that version holds. Finish such a
    /// rotation with its own token instead ([`rotate_with_token`](Self::rotate_with_token));
    /// take over only a rotation known not to have reached setSecret (for alternating users
    /// taking over is safe either way: the master login sets the inactive user's password
    /// again).
    pub fn takeover(mut self, takeover: bool) -> Rotator {
        self.takeover = takeover;
        self
    }

    /// How new passwords are generated.
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Rotator {
        self.passwords = policy;
        self
    }

    /// What to do about sessions still logged in as the inactive user (alternating users).
    pub fn session_policy(mut self, policy: SessionPolicy) -> Rotator {
        self.sessions = policy;
        self
    }

    /// How the database is reached: how its connections are opened (TLS or not).
    pub fn database(mut self, database: Database) -> Rotator {
        self.database = database;
        self
    }

    /// The `connect_timeout` of every database login.
    pub fn connect_timeout(mut self, timeout: Duration) -> Rotator {
        self.connect_timeout = timeout;
        self
    }

    /// A pause in [`rotate`](Self::rotate) after testSecret, before finishSecret: the window
    /// in which the database already has the new password and the store still hands out the
    /// old one (what a drill wants to exercise). Zero (the default) for none. It sleeps with
    /// the SDK client's sleep implementation.
    pub fn pause_before_finish(mut self, pause: Duration) -> Rotator {
        self.pause = pause;
        self
    }

    /// The secret rotated.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// Runs one step, as a rotation function does for an event
    /// (`{"SecretId", "ClientRequestToken", "Step"}`).
    ///
    /// # Errors
    ///
    /// Those of the step.
    pub async fn run_step(&self, step: Step, token: &str) -> Result<StepReport, Error> {
        match step {
            Step::CreateSecret => self.create_secret(token).await,
            Step::SetSecret => self.set_secret(token).await,
            Step::TestSecret => self.test_secret(token).await,
            Step::FinishSecret => self.finish_secret(token).await,
        }
    }

    /// A whole rotation with a new token: createSecret, setSecret, testSecret, the pause
    /// ([`pause_before_finish`](Self::pause_before_finish)), finishSecret.
    ///
    /// # Errors
    ///
    /// The first step's error ([`Error::step`] names it). The pending version stays: resume
    /// it with its token ([`rotate_with_token`](Self::rotate_with_token)); a rotation with a
    /// new token is refused ([`Error::is_takeover_refused`]) unless
    /// [`takeover`](Self::takeover) is set.
    pub async fn rotate(&self) -> Result<RotationReport, Error> {
        self.rotate_with_token(&new_token()).await
    }

    /// [`rotate`](Self::rotate) with a given token (32 to 64 characters), for instance to
    /// resume a rotation that failed part way (its own, or one a rotation function left
    /// `AWSPENDING`).
    ///
    /// # Errors
    ///
    /// As [`rotate`](Self::rotate); and [`Error::is_token_finished`] when the token's
    /// rotation already finished (its version is `AWSCURRENT`, `AWSPREVIOUS` or older):
    /// nothing is changed.
    pub async fn rotate_with_token(&self, token: &str) -> Result<RotationReport, Error> {
        check_token(token).map_err(|e| e.in_step(Step::CreateSecret))?;
        let versions = store::describe(&self.client, &self.secret_id)
            .await
            .map_err(|e| e.in_step(Step::CreateSecret))?;
        if versions.has(token, CURRENT) {
            return Err(
                Error::token_finished(&self.secret_id, token, CURRENT).in_step(Step::CreateSecret)
            );
        }
        let created = self.create_secret(token).await?;
        let previous = store::get(&self.client, &self.secret_id, Some(CURRENT), None)
            .await
            .map_err(|e| e.in_step(Step::SetSecret))?;
        let set = self.set_secret(token).await?;
        let test = self.test_secret(token).await?;
        if !self.pause.is_zero() {
            tracing::info!(
                secret_id = %self.secret_id,
                pause_ms = self.pause.as_millis() as u64,
                "pausing before finishSecret"
            );
            self.sleeper()
                .map_err(|e| e.in_step(Step::FinishSecret))?
                .sleep(self.pause)
                .await;
        }
        let finish = self.finish_secret(token).await?;
        Ok(RotationReport {
            token: token.to_owned(),
            previous_username: previous.username().to_owned(),
            username: created
                .username
                .clone()
                .or_else(|| test.username.clone())
                .unwrap_or_default(),
            created_role: set.created_role,
            sessions: set.sessions.clone(),
            steps: vec![created, set, test, finish],
        })
    }

    /// Whether the token's version is already `AWSCURRENT` (the rotation finished); an error
    /// when it is not `AWSPENDING` either.
    async fn check_pending(&self, token: &str) -> Result<bool, Error> {
        let versions = store::describe(&self.client, &self.secret_id).await?;
        if versions.has(token, CURRENT) {
            return Ok(true);
        }
        if !versions.has(token, PENDING) {
            return Err(self.not_pending(token, &versions));
        }
        Ok(false)
    }

    /// The error for a token whose version is not `AWSPENDING` (nor `AWSCURRENT`).
    fn not_pending(&self, token: &str, versions: &store::Versions) -> Error {
        if versions.has(token, PREVIOUS) {
            return Error::token_finished(&self.secret_id, token, PREVIOUS);
        }
        Error::version(format!(
            "version {token} of secret {} is not AWSPENDING (run createSecret with this token \
             first)",
            self.secret_id
        ))
    }

    fn pending_username(&self, current: &SecretValue) -> Result<String, Error> {
        match self.strategy {
            Strategy::SingleUser => Ok(current.username().to_owned()),
            Strategy::AlternatingUsers(_) => alternate_username(current.username()),
        }
    }

    fn already(&self, step: Step, token: &str, why: &str) -> StepReport {
        tracing::info!(secret_id = %self.secret_id, token, %step, why, "nothing to do");
        StepReport::new(step, token, Outcome::AlreadyDone)
    }

    fn sleep_impl(&self) -> Option<aws_sdk_secretsmanager::config::SharedAsyncSleep> {
        self.client.config().sleep_impl()
    }

    fn sleeper(&self) -> Result<aws_sdk_secretsmanager::config::SharedAsyncSleep, Error> {
        self.sleep_impl().ok_or_else(|| {
            Error::config(
                "the Secrets Manager client has no sleep implementation (the pause needs one; \
                 the SDK's default with the rt-tokio feature has it)",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Master;

    fn assert_send<T: Send>(_: &T) {}

    /// A Lambda runtime (or `tokio::spawn`) needs the steps' futures to be `Send`.
    #[test]
    fn step_futures_are_send() {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .build();
        let rotator = Rotator::new(
            Client::from_conf(config),
            "s",
            Strategy::AlternatingUsers(Master::FromSecret),
        );
        assert_send(&rotator.rotate());
        assert_send(&rotator.run_step(Step::SetSecret, "t"));
    }

    #[test]
    fn tokens_are_uuids() {
        let token = new_token();
        check_token(&token).unwrap();
        assert!(check_token("short").unwrap_err().is_config());
        assert_eq!(token.len(), 36);
        assert_eq!(token.as_bytes()[14], b'4');
        assert_ne!(token, new_token());
    }
}
