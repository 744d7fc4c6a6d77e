//! How old the current credential is, how long until it expires, and whether refreshes work.

use std::time::Duration;

use crate::policy::fmt_duration;
use crate::{Error, Generation};

/// A report from [`RotatingCredentials::health`](crate::RotatingCredentials::health).
///
/// The questions map to alerts: [`is_overdue`](Self::is_overdue) means the store has not rotated
/// within its own schedule (is the rotation job dead?); [`is_expiring`](Self::is_expiring) means
/// the credential ends within the expiry margin and no replacement has arrived;
/// [`is_degraded`](Self::is_degraded) means refreshes are failing and the last good credential
/// is being served; [`is_refused`](Self::is_refused) means the database refuses the credential
/// being served; [`is_rotation_stuck`](Self::is_rotation_stuck) means the store began a
/// rotation that did not finish.
#[derive(Debug, Clone)]
pub struct Health {
    pub(crate) generation: Generation,
    pub(crate) username: String,
    pub(crate) age: Duration,
    pub(crate) rotation_interval: Duration,
    pub(crate) next_rotation_in: Option<Duration>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) expiry_margin: Duration,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<Error>,
    /// For how long, and how many times, the database has refused the current credential.
    pub(crate) refused: Option<(Duration, u64)>,
    /// How long the store has held a pending credential the provider knows of.
    pub(crate) rotation_pending_for: Option<Duration>,
    pub(crate) pending_trial_window: Duration,
}

impl Health {
    /// The generation being served.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The username being served.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The credential's age: since the store issued it when it said so, otherwise since this
    /// provider first published it.
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Time left until `expires_at` (zero once past), if the credential has an end.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// Refreshes that failed in a row (0 when the last one succeeded).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The error of the last refresh, if it failed.
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// The database refuses the current credential (adapters report refused logins): for how
    /// long since the first refusal, and how many refusals.
    pub fn refused(&self) -> Option<(Duration, u64)> {
        self.refused
    }

    /// The database refused a login with the current credential, and none has succeeded since.
    pub fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    /// How long the store has been rotating: the age of the pending credential it holds
    /// (Secrets Manager's `AWSPENDING` version) that the provider has read, if any.
    pub fn rotation_pending_for(&self) -> Option<Duration> {
        self.rotation_pending_for
    }

    /// The store's rotation is stuck: its pending credential is older than the policy's
    /// `pending_trial_window` and the store has not finished (a rotation that died after
    /// createSecret or whose setSecret failed). The pools no longer try the pending login;
    /// the credential being served keeps working, but it will not be rotated until someone
    /// finishes or cancels the rotation.
    pub fn is_rotation_stuck(&self) -> bool {
        self.rotation_pending_for
            .is_some_and(|age| age >= self.pending_trial_window)
    }

    /// The rotation schedule the age is judged against: the store's when it said
    /// ([`Credential::with_rotation_interval`](crate::Credential::with_rotation_interval)),
    /// otherwise the policy's `rotation_interval`.
    pub fn rotation_interval(&self) -> Duration {
        self.rotation_interval
    }

    /// Time until the store's next planned rotation (zero once past), if it said.
    pub fn next_rotation_in(&self) -> Option<Duration> {
        self.next_rotation_in
    }

    /// Older than the rotation schedule ([`rotation_interval`](Self::rotation_interval)).
    pub fn is_overdue(&self) -> bool {
        self.age > self.rotation_interval
    }

    /// Within `expiry_margin` of `expires_at` (or past it).
    pub fn is_expiring(&self) -> bool {
        self.expires_in
            .is_some_and(|left| left <= self.expiry_margin)
    }

    /// Past `expires_at`.
    pub fn is_expired(&self) -> bool {
        self.expires_in.is_some_and(|left| left.is_zero())
    }

    /// The last refresh failed; the last good credential is being served.
    pub fn is_degraded(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// None of the above.
    pub fn is_healthy(&self) -> bool {
        !self.is_overdue()
            && !self.is_expiring()
            && !self.is_degraded()
            && !self.is_refused()
            && !self.is_rotation_stuck()
    }

    /// Logs what needs attention through `tracing`, never the secret.
    pub(crate) fn warn_overdue(&self) {
        tracing::warn!(
            generation = self.generation.get(),
            username = %self.username,
            age = %fmt_duration(self.age),
            rotation_interval = %fmt_duration(self.rotation_interval),
            "credential is older than its rotation interval; is the store's rotation running?"
        );
    }

    pub(crate) fn warn_stuck(&self) {
        tracing::warn!(
            generation = self.generation.get(),
            username = %self.username,
            pending_for = %fmt_duration(self.rotation_pending_for.unwrap_or_default()),
            "the store's rotation is stuck: its pending credential is not accepted by the \
             database and the store has not finished; serving the current credential"
        );
    }

    pub(crate) fn warn_expiring(&self) {
        tracing::warn!(
            generation = self.generation.get(),
            username = %self.username,
            expires_in = %fmt_duration(self.expires_in.unwrap_or_default()),
            "credential is about to expire and no replacement has been fetched"
        );
    }
}
