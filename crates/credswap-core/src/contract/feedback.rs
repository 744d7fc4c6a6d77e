//! [`Feedback`]: what an adapter tells the provider, and asks it, about logins.

use std::fmt;
use std::sync::Arc;

use crate::{Error, Generation, RotatingCredentials, Snapshot};

/// The provider's side an adapter talks to: refused and accepted logins, and the credentials a
/// connect tries after a refusal. Applications never need it; adapters reach it through
/// [`Adapter::feedback`](super::Adapter::feedback).
#[derive(Clone)]
pub struct Feedback {
    credentials: RotatingCredentials,
}

impl fmt::Debug for Feedback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feedback").finish_non_exhaustive()
    }
}

impl Feedback {
    /// The feedback side of `credentials`.
    pub fn new(credentials: &RotatingCredentials) -> Self {
        Self {
            credentials: credentials.clone(),
        }
    }

    /// Tells the provider that a login with `generation` was refused as an authentication
    /// failure (SQLSTATE `28P01` or `28000`), and returns the snapshot to retry with.
    ///
    /// Nothing is fetched when the generation has moved on already. The fetches of one burst of
    /// refusals are coalesced: the first at once, the next `auth_refresh_interval` later, the
    /// gap doubling up to [`AUTH_REFRESH_MAX`](crate::provider::AUTH_REFRESH_MAX); after the
    /// store answered `unavailable` the next waits the policy's backoff with full jitter. A
    /// report inside a gap fetches nothing and returns the current snapshot (possibly the
    /// refused one). The refusal also counts toward the provider's health (see
    /// [`report_refused`](Self::report_refused)).
    pub async fn report_auth_failure(
        &self,
        generation: Generation,
    ) -> Result<Arc<Snapshot>, Error> {
        self.credentials.report_auth_failure(generation).await
    }

    /// Records that the database refused a login with `generation`: while the current
    /// generation is refused, the provider's health says so, and the first refusal of each
    /// generation is logged once.
    pub fn report_refused(&self, generation: Generation) {
        self.credentials.report_refused(generation);
    }

    /// Records that the database accepted a login with `generation`: the login is proven (the
    /// old connections may go), a refusal of it is cleared, and a pending credential that
    /// opened is published without waiting for the store.
    pub fn report_accepted(&self, generation: Generation) {
        self.credentials.report_accepted(generation);
    }

    /// The store's pending credential, as the generation that would follow the current one,
    /// if a refused login made the provider ask for it and the store had one (see
    /// [`CredentialSource::fetch_pending`](crate::CredentialSource::fetch_pending)).
    pub fn pending(&self) -> Option<Arc<Snapshot>> {
        self.credentials.pending()
    }

    /// The newest snapshot whose credential the database accepted: the fallback a connect
    /// tries when the current credential is refused before it was ever accepted (a mistyped
    /// secret).
    pub fn proven(&self) -> Option<Arc<Snapshot>> {
        self.credentials.proven()
    }

    /// Whether the database has refused a login with `generation` (the current one) and
    /// accepted none since.
    pub fn is_refused(&self, generation: Generation) -> bool {
        self.credentials.is_refused(generation)
    }
}
