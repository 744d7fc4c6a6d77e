//! finishSecret: [`Rotator::finish_secret`] makes the token's version `AWSCURRENT`.

use super::{Rotator, check_token};
use crate::Error;
use crate::step::{Outcome, Step, StepReport};
use crate::store::{self, CURRENT, PENDING};

impl Rotator {
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
}
