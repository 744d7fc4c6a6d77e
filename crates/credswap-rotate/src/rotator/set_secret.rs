//! setSecret: [`Rotator::set_secret`] changes the database so the `AWSPENDING` credential
//! logs in, as a single user or through the master login (alternating users).

use super::{Rotator, check_token};
use crate::Error;
use crate::db::{self, Login};
use crate::secret::SecretValue;
use crate::sessions::{self, SessionsFound};
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, CURRENT, PENDING, PREVIOUS};
use crate::strategy::{self, Master, Strategy};

impl Rotator {
    /// setSecret: changes the database so the `AWSPENDING` credential logs in. Skipped when it
    /// already does.
    ///
    /// Single user: logs in with the current (else the previous) credential and runs
    /// `ALTER ROLE CURRENT_USER PASSWORD`. Alternating users: checks the current credential
    /// logs in, logs in as the master, applies the [`SessionPolicy`](crate::SessionPolicy) to
    /// the inactive user's sessions, then creates the clone (first rotation) or changes the
    /// inactive user's password. Passwords reach the server only as SCRAM-SHA-256 verifiers.
    ///
    /// # Errors
    ///
    /// [`Error::is_version`] (the token is not pending), [`Error::is_malformed`] (the pending
    /// value names another user or host), [`Error::is_auth_failure`],
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
            db::login(&self.database, &pending, self.connect_timeout).await?
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

    async fn set_single(&self, current: &SecretValue, pending: &SecretValue) -> Result<(), Error> {
        let mut session = match db::login(&self.database, current, self.connect_timeout).await? {
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
                        match db::login(&self.database, &previous, self.connect_timeout).await? {
                            Login::Accepted(session) => Some(session),
                            Login::Refused(_) => None,
                        }
                    }
                    None => None,
                };
                session.ok_or_else(|| {
                    Error::auth_failure(
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
        current: &SecretValue,
        pending: &SecretValue,
    ) -> Result<(bool, SessionsFound), Error> {
        // The current credential must work: a secret that does not log in is not ours to
        // rotate (AWS's templates guard against a confused deputy the same way).
        match db::login(&self.database, current, self.connect_timeout).await? {
            Login::Accepted(session) => session.close().await,
            Login::Refused(e) => {
                return Err(Error::auth_failure(
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
        let mut session = match db::login(&self.database, &master, self.connect_timeout).await? {
            Login::Accepted(session) => session,
            Login::Refused(e) => {
                return Err(Error::auth_failure(
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
    async fn master(&self, master: &Master, current: &SecretValue) -> Result<SecretValue, Error> {
        let login = match master {
            Master::FromSecret => {
                let Some(arn) = current.masterarn() else {
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
}
