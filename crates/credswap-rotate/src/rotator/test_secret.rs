//! testSecret: [`Rotator::test_secret`] logs in with the `AWSPENDING` credential.

use super::{Rotator, check_token};
use crate::Error;
use crate::db::{self, Login};
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, PENDING};

impl Rotator {
    /// testSecret: logs in with the `AWSPENDING` credential and runs a query.
    ///
    /// # Errors
    ///
    /// [`Error::is_auth_failure`] when the pending credential does not log in,
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
        let mut session = match db::login(&self.database, &pending, self.connect_timeout).await? {
            Login::Accepted(session) => session,
            Login::Refused(e) => {
                return Err(Error::auth_failure(
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
}
