//! createSecret: [`Rotator::create_secret`] stores a new credential as `AWSPENDING`, and the
//! takeover rule.

use super::{Rotator, check_token};
use crate::Error;
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, CURRENT, PENDING, PREVIOUS};

impl Rotator {
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
}
