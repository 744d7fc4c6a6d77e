//! [`ConnectionTag`]: what an adapter remembers about each physical connection.

use tokio::time::Instant;

use crate::{Generation, Snapshot};

/// The generation a physical connection authenticated with, and when it was opened.
///
/// Taken from the snapshot read *before* connecting: a connect that began under the old
/// credential and finished after a rotation carries the old generation, so it is recognized as
/// stale. `opened_at` is also taken before connecting, so a lease's retirement point that falls
/// during the connect counts against the connection.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use credswap_core::contract::{ConnectionTag, Feedback};
/// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
///
/// let store = MemorySource::new(Credential::new("app", "first"));
/// let credentials = RotatingCredentials::new(store.clone(), Policy::default()).await?;
/// let tag = ConnectionTag::new(&credentials.current());
/// assert!(!tag.is_stale(&credentials.current()));
///
/// store.set(Credential::new("app", "second"));
/// let second = credentials.refresh().await?;
/// // Prove before drain: kept until the database has accepted the new login...
/// assert!(!tag.is_stale(&credentials.current()));
/// // ...as an adapter reports when a connection with it opens.
/// Feedback::new(&credentials).report_accepted(second.generation());
/// assert!(tag.is_stale(&credentials.current()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTag {
    generation: Generation,
    opened_at: Instant,
    retire_at: Option<Instant>,
    age_limit: Option<Instant>,
}

impl ConnectionTag {
    /// A tag for a connection about to be opened with `snapshot`'s credential, now.
    pub fn new(snapshot: &crate::Snapshot) -> Self {
        Self {
            generation: snapshot.generation(),
            opened_at: Instant::now(),
            retire_at: snapshot.retire_at(),
            age_limit: None,
        }
    }

    /// The same tag, retired at `at` whatever its login (a maximum session age; see
    /// [`limits`](super::limits)). [`Adapter::tag`](super::Adapter::tag) sets it.
    #[must_use]
    pub fn with_age_limit(mut self, at: Option<Instant>) -> Self {
        self.age_limit = at;
        self
    }

    /// When the connection reaches the pool's maximum session age, if it has one.
    pub fn age_limit(&self) -> Option<Instant> {
        self.age_limit
    }

    /// Whether the connection has reached the pool's maximum session age at `now`.
    pub fn is_aged_at(&self, now: Instant) -> bool {
        self.age_limit.is_some_and(|at| now >= at)
    }

    /// A tag from its parts, for a credential without an end.
    pub fn at(generation: Generation, opened_at: Instant) -> Self {
        Self {
            generation,
            opened_at,
            retire_at: None,
            age_limit: None,
        }
    }

    /// When the credential the connection used must be retired (`expires_at - expiry_margin`,
    /// as known when it connected), if it has an end.
    pub fn retire_at(&self) -> Option<Instant> {
        self.retire_at
    }

    /// The generation the connection authenticated with.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// When the connect began.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// **The staleness rule**, the one every adapter applies. A connection must be closed rather
    /// than handed out or kept idle when:
    ///
    /// - it has reached the pool's maximum session age, if the adapter has one (see
    ///   [`limits`](super::limits)), whatever its login;
    /// - it logged in with the current login (this generation, or an earlier one with the same
    ///   login after the store flipped back) and the current credential has reached its
    ///   retirement point (`expires_at - expiry_margin`), and it was opened before that point (one
    ///   opened after it, while the store has no replacement yet, is kept: reopening it per
    ///   request would not help);
    /// - it logged in with an older login, and that credential's own retirement point has passed;
    /// - it logged in with an older login, and the database has accepted a newer one (a
    ///   connection opened with it, or the validator passed): **prove before drain**. Until then
    ///   the old connections keep serving, so a store that publishes a password the database
    ///   does not have (a mistyped secret) cannot take a working pool down; the drain lets one go
    ///   now and then as a canary ([`Adapter::should_close`](super::Adapter::should_close)) so
    ///   that the new login gets tried.
    ///
    /// A new token of a [minted](crate::Credential::minted) credential keeps the generation,
    /// and a token's end is no retirement point ([`Snapshot::retire_at`]): the sessions a token
    /// opened stay until the login changes or they reach the session age.
    pub fn is_stale(&self, current: &Snapshot) -> bool {
        self.is_stale_at(current, Instant::now())
    }

    /// [`is_stale`](Self::is_stale) at a given instant.
    pub fn is_stale_at(&self, current: &Snapshot, now: Instant) -> bool {
        if self.is_aged_at(now) {
            return true;
        }
        if current.is_same_login(self.generation) {
            return current
                .retire_at()
                .is_some_and(|at| now >= at && self.opened_at < at);
        }
        // An older login. Its own lease ending retires it whatever else holds.
        if self.retire_at.is_some_and(|at| now >= at) {
            return true;
        }
        // Prove before drain: retired once a newer login has been accepted by the database.
        self.generation < current.proven_generation() && !current.is_proven_login(self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credential, MemorySource, Policy, RotatingCredentials};

    async fn provider(store: &MemorySource) -> RotatingCredentials {
        RotatingCredentials::builder(store.clone())
            .policy(Policy::default())
            .background_refresh(false)
            .build()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_store_that_flips_back_keeps_the_first_login_current() {
        let store = MemorySource::new(Credential::new("app", "A"));
        let credentials = provider(&store).await;
        let tag = ConnectionTag::new(&credentials.current());
        assert!(!credentials.current().is_proven());
        credentials.report_accepted(tag.generation());
        assert!(credentials.current().is_proven());

        store.set(Credential::new("app", "B-mistyped"));
        credentials.refresh().await.unwrap();
        assert!(
            !tag.is_stale(&credentials.current()),
            "prove before drain: B was never accepted"
        );
        assert!(!credentials.current().is_proven());
        assert_eq!(
            credentials.proven().map(|p| p.generation()),
            Some(Generation::FIRST)
        );

        store.set(Credential::new("app", "A"));
        credentials.refresh().await.unwrap();
        let current = credentials.current();
        assert_eq!(current.generation(), Generation::new(3));
        assert_eq!(current.equivalent(), Some(Generation::FIRST));
        assert!(current.is_proven(), "the same login was accepted before");
        assert!(!tag.is_stale(&current), "A's connections are current again");
    }

    #[tokio::test]
    async fn a_lease_retires_connections_opened_before_its_retirement_point() {
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let store = MemorySource::new(Credential::new("app", "leased").with_expires_at(expires));
        let credentials = RotatingCredentials::builder(store.clone())
            .policy(
                Policy::builder()
                    .expiry_margin(std::time::Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .background_refresh(false)
            .build()
            .await
            .unwrap();
        let current = credentials.current();
        let tag = ConnectionTag::new(&current);
        let at = current.retire_at().expect("a lease has a retirement point");
        assert_eq!(tag.retire_at(), Some(at));
        assert!(!tag.is_stale_at(&current, at - std::time::Duration::from_secs(1)));
        assert!(tag.is_stale_at(&current, at));
        let later = ConnectionTag::at(current.generation(), at + std::time::Duration::from_secs(1));
        assert!(
            !later.is_stale_at(&current, at + std::time::Duration::from_secs(2)),
            "opened after the retirement point, with no replacement to be had: kept"
        );
    }
}

#[cfg(test)]
mod flip_back_tests {
    use crate::contract::{ConnectionTag, Feedback};
    use crate::{Credential, MemorySource, Policy, RotatingCredentials};

    #[tokio::test]
    async fn after_a_flip_back_the_old_login_is_stale_once_a_new_one_is_proven() {
        let store = MemorySource::new(Credential::new("app", "good"));
        let credentials = RotatingCredentials::builder(store.clone())
            .policy(Policy::default())
            .background_refresh(false)
            .build()
            .await
            .unwrap();
        let feedback = Feedback::new(&credentials);
        feedback.report_accepted(credentials.generation());
        let first = ConnectionTag::new(&credentials.current());
        store.set(Credential::new("app", "wrong"));
        credentials.refresh().await.unwrap();
        store.set(Credential::new("app", "good"));
        let third = credentials.refresh().await.unwrap();
        assert!(third.is_proven());
        assert!(!first.is_stale(&credentials.current()));
        store.set(Credential::new("app", "next"));
        let fourth = credentials.refresh().await.unwrap();
        assert!(
            !first.is_stale(&credentials.current()),
            "kept until the new login is proven"
        );
        feedback.report_accepted(fourth.generation());
        assert!(credentials.current().is_proven());
        assert!(first.is_stale(&credentials.current()), "stale once it is");
    }
}
