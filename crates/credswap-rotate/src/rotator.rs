//! [`Rotator`]: the four steps of the protocol for one secret, and [`Rotator::rotate`], which
//! runs them all.

use std::fmt;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::AsyncSleep;
use rand::Rng;

use crate::db::{self, Connector, Login};
use crate::secret::DbSecret;
use crate::sessions::{self, SessionPolicy, SessionsFound};
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, CURRENT, PENDING, PREVIOUS};
use crate::strategy::{self, Master, Strategy, alternate_username};
use crate::{Error, PasswordPolicy};

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
    connector: Connector,
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
            .field("connector", &self.connector)
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
            connector: Connector::default(),
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

    /// How database connections are opened (TLS or not).
    pub fn connector(mut self, connector: Connector) -> Rotator {
        self.connector = connector;
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

    /// createSecret: stores a new credential as `AWSPENDING` under `token`: the current value
    /// with a new password and (alternating users) the other user. Skipped when the token's
    /// version already has a value (or is already `AWSCURRENT`).
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`] (no such secret, or no `AWSCURRENT` version),
    /// [`Error::is_malformed`], [`Error::is_store`], [`Error::is_config`] (password policy).
    pub async fn create_secret(&self, token: &str) -> Result<StepReport, Error> {
        let step = Step::CreateSecret;
        self.create(token).await.map_err(|e| e.in_step(step))
    }

    async fn create(&self, token: &str) -> Result<StepReport, Error> {
        check_token(token)?;
        let step = Step::CreateSecret;
        let versions = store::describe(&self.client, &self.secret_id).await?;
        if versions.has(token, CURRENT) {
            return Ok(self.already(step, token, "the version is already AWSCURRENT"));
        }
        if versions.has(token, PREVIOUS) {
            return Err(Error::token_finished(&self.secret_id, token, PREVIOUS));
        }
        let (current, current_created) =
            store::get_dated(&self.client, &self.secret_id, Some(CURRENT), None).await?;
        let other = versions.pending_other_than(token);
        if versions.stages(token).is_some() {
            match store::get_dated(&self.client, &self.secret_id, None, Some(token)).await {
                Ok((pending, created)) => {
                    if !versions.has(token, PENDING) {
                        // Without a stage: either it lost AWSPENDING to another rotation, or
                        // it was AWSCURRENT once and has been retired since (Secrets Manager
                        // keeps versions without a stage for a while). A retired one is older
                        // than the current version.
                        if let (Some(created), Some(current_created)) = (created, current_created)
                            && created < current_created
                        {
                            return Err(Error::token_finished(
                                &self.secret_id,
                                token,
                                "older than the AWSCURRENT version, without a stage",
                            ));
                        }
                        self.may_take_over(token, other)?;
                        store::update_stage(
                            &self.client,
                            &self.secret_id,
                            PENDING,
                            Some(token),
                            other,
                        )
                        .await?;
                        tracing::info!(secret_id = %self.secret_id, token, "createSecret: AWSPENDING moved back to this version");
                    }
                    return Ok(self
                        .already(step, token, "the pending version exists")
                        .user(pending.username()));
                }
                // Secrets Manager's RotateSecret creates the version without a value.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.may_take_over(token, other)?;
        let username = self.pending_username(&current)?;
        let pending = current.with_login(&username, self.passwords.generate()?);
        // PutSecretValue with the stage moves AWSPENDING from another version, if any.
        store::put_pending(&self.client, &self.secret_id, token, &pending).await?;
        tracing::info!(secret_id = %self.secret_id, token, username, "createSecret: stored the pending version");
        Ok(StepReport::new(step, token, Outcome::Done).user(&username))
    }

    /// An error unless `AWSPENDING` may move from `other` (another rotation's version) to
    /// `token`'s: there is none, or [`takeover`](Self::takeover) is set.
    fn may_take_over(&self, token: &str, other: Option<&str>) -> Result<(), Error> {
        let Some(other) = other else {
            return Ok(());
        };
        if !self.takeover {
            tracing::warn!(
                secret_id = %self.secret_id,
                token,
                pending_version = other,
                "createSecret: another rotation's version is AWSPENDING; not taking it over"
            );
            return Err(Error::takeover_refused(&self.secret_id, other));
        }
        tracing::warn!(
            secret_id = %self.secret_id,
            token,
            pending_version = other,
            "createSecret: taking AWSPENDING over from another rotation's version"
        );
        Ok(())
    }

    /// setSecret: changes the database so the `AWSPENDING` credential logs in. Skipped when it
    /// already does.
    ///
    /// Single user: logs in with the current (else the previous) credential and runs
    /// `ALTER ROLE CURRENT_USER PASSWORD`. Alternating users: checks the current credential
    /// logs in, logs in as the master, applies the [`SessionPolicy`] to the inactive user's
    /// sessions, then creates the clone (first rotation) or changes the inactive user's
    /// password. Passwords reach the server only as SCRAM-SHA-256 verifiers.
    ///
    /// # Errors
    ///
    /// [`Error::is_version`] (the token is not pending), [`Error::is_malformed`] (the pending
    /// value names another user or host), [`Error::is_login_refused`],
    /// [`Error::is_sessions_in_use`], [`Error::is_database`], [`Error::is_store`].
    pub async fn set_secret(&self, token: &str) -> Result<StepReport, Error> {
        self.set(token)
            .await
            .map_err(|e| e.in_step(Step::SetSecret))
    }

    async fn set(&self, token: &str) -> Result<StepReport, Error> {
        check_token(token)?;
        let step = Step::SetSecret;
        if self.check_pending(token).await? {
            return Ok(self.already(step, token, "the version is already AWSCURRENT"));
        }
        let current = store::get(&self.client, &self.secret_id, Some(CURRENT), None).await?;
        let pending = store::get(&self.client, &self.secret_id, Some(PENDING), Some(token)).await?;
        let expected = self.pending_username(&current)?;
        if pending.username() != expected {
            return Err(Error::malformed(format!(
                "the pending version {token} is for user {}, but this rotation changes {expected}",
                pending.username()
            )));
        }
        if (pending.host(), pending.port()) != (current.host(), current.port()) {
            return Err(Error::malformed(format!(
                "the pending version {token} is for {}:{}, but the current one is for {}:{}",
                pending.host(),
                pending.port(),
                current.host(),
                current.port()
            )));
        }
        if let Login::Accepted(session) =
            db::login(&self.connector, &pending, self.connect_timeout).await?
        {
            session.close().await;
            return Ok(self
                .already(step, token, "the pending credential already logs in")
                .user(pending.username()));
        }
        let mut report = StepReport::new(step, token, Outcome::Done).user(pending.username());
        match &self.strategy {
            Strategy::SingleUser => self.set_single(&current, &pending).await?,
            Strategy::AlternatingUsers(master) => {
                let (created, found) = self.set_alternating(master, &current, &pending).await?;
                report.created_role = created;
                report.sessions = Some(found);
            }
        }
        tracing::info!(
            secret_id = %self.secret_id,
            token,
            username = pending.username(),
            created_role = report.created_role,
            "setSecret: the database accepts the pending credential"
        );
        Ok(report)
    }

    async fn set_single(&self, current: &DbSecret, pending: &DbSecret) -> Result<(), Error> {
        let mut session = match db::login(&self.connector, current, self.connect_timeout).await? {
            Login::Accepted(session) => session,
            Login::Refused(refused) => {
                // A rotation that failed after setSecret left the database with a password
                // the store may hold as AWSPREVIOUS.
                let previous =
                    match store::get(&self.client, &self.secret_id, Some(PREVIOUS), None).await {
                        Ok(previous) if previous.username() == current.username() => Some(previous),
                        Ok(_) => None,
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e),
                    };
                let session = match previous {
                    Some(previous) => {
                        match db::login(&self.connector, &previous, self.connect_timeout).await? {
                            Login::Accepted(session) => Some(session),
                            Login::Refused(_) => None,
                        }
                    }
                    None => None,
                };
                session.ok_or_else(|| {
                    Error::login_refused(
                        format!(
                            "neither the current nor the previous credential of user {} logs in",
                            current.username()
                        ),
                        current.username(),
                        Some(refused),
                    )
                })?
            }
        };
        let result =
            strategy::alter_own_password(&mut session, current.username(), pending.password())
                .await;
        session.close().await;
        result
    }

    async fn set_alternating(
        &self,
        master: &Master,
        current: &DbSecret,
        pending: &DbSecret,
    ) -> Result<(bool, SessionsFound), Error> {
        // The current credential must work: a secret that does not log in is not ours to
        // rotate (AWS's templates guard against a confused deputy the same way).
        match db::login(&self.connector, current, self.connect_timeout).await? {
            Login::Accepted(session) => session.close().await,
            Login::Refused(e) => {
                return Err(Error::login_refused(
                    format!(
                        "the current credential of user {} does not log in",
                        current.username()
                    ),
                    current.username(),
                    Some(e),
                ));
            }
        }
        let master = self.master(master, current).await?;
        let mut session = match db::login(&self.connector, &master, self.connect_timeout).await? {
            Login::Accepted(session) => session,
            Login::Refused(e) => {
                return Err(Error::login_refused(
                    format!(
                        "the master credential (user {}) does not log in",
                        master.username()
                    ),
                    master.username(),
                    Some(e),
                ));
            }
        };
        let result = async {
            let target = pending.username();
            let found = sessions::check(
                &mut session,
                target,
                self.sessions,
                self.sleep_impl().as_ref(),
            )
            .await?;
            let created = if strategy::role_exists(&mut session, target).await? {
                strategy::alter_password(&mut session, target, pending.password()).await?;
                false
            } else {
                strategy::create_clone(
                    &mut session,
                    current.username(),
                    target,
                    pending.password(),
                )
                .await?;
                true
            };
            Ok((created, found))
        }
        .await;
        session.close().await;
        result
    }

    /// The master credential, at the database of `current`.
    async fn master(&self, master: &Master, current: &DbSecret) -> Result<DbSecret, Error> {
        let login = match master {
            Master::FromSecret => {
                let Some(arn) = current.master_arn() else {
                    return Err(Error::malformed(format!(
                        "the AWSCURRENT value of secret {} has no \"masterarn\" field \
                         (alternating users need a master credential)",
                        self.secret_id
                    )));
                };
                store::get_master(&self.client, arn).await?
            }
            Master::Secret(id) => store::get_master(&self.client, id).await?,
            Master::Login { username, password } => {
                return Ok(current.with_login(username, password.clone()));
            }
        };
        Ok(login.at_database_of(current))
    }

    /// testSecret: logs in with the `AWSPENDING` credential and runs a query.
    ///
    /// # Errors
    ///
    /// [`Error::is_login_refused`] when the pending credential does not log in,
    /// [`Error::is_version`], [`Error::is_database`], [`Error::is_store`].
    pub async fn test_secret(&self, token: &str) -> Result<StepReport, Error> {
        self.test(token)
            .await
            .map_err(|e| e.in_step(Step::TestSecret))
    }

    async fn test(&self, token: &str) -> Result<StepReport, Error> {
        check_token(token)?;
        let step = Step::TestSecret;
        if self.check_pending(token).await? {
            return Ok(self.already(step, token, "the version is already AWSCURRENT"));
        }
        let pending = store::get(&self.client, &self.secret_id, Some(PENDING), Some(token)).await?;
        let mut session = match db::login(&self.connector, &pending, self.connect_timeout).await? {
            Login::Accepted(session) => session,
            Login::Refused(e) => {
                return Err(Error::login_refused(
                    format!(
                        "the pending credential of user {} does not log in",
                        pending.username()
                    ),
                    pending.username(),
                    Some(e),
                ));
            }
        };
        let result = session
            .driver
            .run(
                session
                    .client
                    .query_one("SELECT current_user::text, now()", &[]),
            )
            .await;
        session.close().await;
        let row = result.map_err(|e| {
            Error::database(
                "querying with the pending credential",
                Some(pending.username()),
                Some(e),
            )
        })?;
        let user: String = row.get(0);
        if user != pending.username() {
            return Err(Error::database(
                format!(
                    "logged in with the pending credential of {} but the session is {user}",
                    pending.username()
                ),
                Some(pending.username()),
                None,
            ));
        }
        tracing::info!(secret_id = %self.secret_id, token, username = user, "testSecret: the pending credential works");
        Ok(StepReport::new(step, token, Outcome::Done).user(&user))
    }

    /// finishSecret: moves `AWSCURRENT` to the token's version (Secrets Manager moves
    /// `AWSPREVIOUS` to the old one) and removes `AWSPENDING` from it.
    ///
    /// # Errors
    ///
    /// [`Error::is_version`] when the token's version is neither pending nor current,
    /// [`Error::is_store`].
    pub async fn finish_secret(&self, token: &str) -> Result<StepReport, Error> {
        self.finish(token)
            .await
            .map_err(|e| e.in_step(Step::FinishSecret))
    }

    async fn finish(&self, token: &str) -> Result<StepReport, Error> {
        check_token(token)?;
        let step = Step::FinishSecret;
        let versions = store::describe(&self.client, &self.secret_id).await?;
        let mut outcome = Outcome::AlreadyDone;
        if !versions.has(token, CURRENT) {
            if !versions.has(token, PENDING) {
                return Err(self.not_pending(token, &versions));
            }
            let old = versions.with_stage(CURRENT);
            store::update_stage(&self.client, &self.secret_id, CURRENT, Some(token), old).await?;
            outcome = Outcome::Done;
        }
        if versions.has(token, PENDING) {
            store::update_stage(&self.client, &self.secret_id, PENDING, None, Some(token)).await?;
            outcome = Outcome::Done;
        }
        tracing::info!(secret_id = %self.secret_id, token, ?outcome, "finishSecret: the version is AWSCURRENT");
        Ok(StepReport::new(step, token, outcome))
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

    fn pending_username(&self, current: &DbSecret) -> Result<String, Error> {
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
