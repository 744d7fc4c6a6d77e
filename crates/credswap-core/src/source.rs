//! Where credentials come from: the [`CredentialSource`] trait and the built-in sources.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Credential, SourceError};

/// The error of a source's builder (re-exported by the source crates).
pub use crate::error::BuildError;

/// Fetches the current credential from a secret store.
///
/// Object-safe: the provider holds an `Arc<dyn CredentialSource>`. `fetch` is called by the
/// background refresher, by [`refresh`](crate::RotatingCredentials::refresh) and after an
/// authentication failure, never concurrently with itself (the provider is single-flight),
/// and under the policy's `fetch_timeout`.
///
/// ```
/// use async_trait::async_trait;
/// use credswap_core::{Credential, CredentialSource, SourceError};
///
/// /// Reads `user:password` from a mounted file.
/// struct FileSource(std::path::PathBuf);
///
/// #[async_trait]
/// impl CredentialSource for FileSource {
///     async fn fetch(&self) -> Result<Credential, SourceError> {
///         // (A real source would use async I/O, e.g. `tokio::fs`.)
///         let text = std::fs::read_to_string(&self.0)
///             .map_err(|e| SourceError::unavailable("cannot read the secret file").with_source(e))?;
///         let (user, password) = text
///             .trim_end()
///             .split_once(':')
///             .ok_or_else(|| SourceError::malformed("expected `user:password`"))?;
///         Ok(Credential::new(user, password))
///     }
/// }
/// ```
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// Returns the credential the store holds now.
    async fn fetch(&self) -> Result<Credential, SourceError>;

    /// Returns the credential the store is rotating to, if a rotation is under way and the
    /// store can tell (AWS Secrets Manager's `AWSPENDING` version).
    ///
    /// In a single-user rotation the database password is changed to the pending value
    /// moments before the store makes it current; in that window the current credential is
    /// refused. The provider asks for the pending credential when a login with the current one
    /// was refused, and after every refresh while [`rotation_pending`](Self::rotation_pending)
    /// says a rotation is under way; it publishes it as soon as the database accepts it,
    /// without waiting for the store. The default has none.
    ///
    /// A source that implements this must also implement
    /// [`rotation_pending`](Self::rotation_pending): once the provider has published a pending
    /// credential, it takes the store's lagging current value for "not finished yet" only while
    /// `rotation_pending` says yes; when it says no, the store's current value is what the
    /// database has (a finished, abandoned or reverted rotation).
    async fn fetch_pending(&self) -> Result<Option<Credential>, SourceError> {
        Ok(None)
    }

    /// Whether the store was rotating when last read: it holds a pending credential besides
    /// the current one (AWS Secrets Manager: a version staged `AWSPENDING`).
    ///
    /// A cheap hint from what the last [`fetch`](Self::fetch) saw, not a call to the store.
    /// While it says yes, the provider fetches the pending credential after each refresh, and
    /// the adapters try it now and then (a *pending trial*), so that a full pool moves to the
    /// new password as soon as the database has it, not only when the store finishes. The
    /// default says no.
    fn rotation_pending(&self) -> bool {
        false
    }

    /// How long before a credential's `expires_at` this source hands out its replacement, for
    /// a source whose credentials expire (a Vault dynamic role replaces a lease its
    /// `lease_margin` before the lease's end). The default says the source has no such lead.
    ///
    /// The provider retires a credential [`Policy::expiry_margin`](crate::Policy::expiry_margin)
    /// before its `expires_at` and fetches again then. A source that would still answer with
    /// the same credential at that point makes every pool reconnect with a login about to end,
    /// at every refresh until the source replaces it; so
    /// [`RotatingCredentialsBuilder::build`](crate::RotatingCredentialsBuilder::build) refuses
    /// a policy whose `expiry_margin` is longer than this lead.
    fn replaces_before_expiry(&self) -> Option<Duration> {
        None
    }
    /// Tells the source that the database refused a login with `credential`, which this source
    /// handed out, and that the provider is about to fetch again.
    ///
    /// A source that answers from a cache should not answer the next [`fetch`](Self::fetch)
    /// with the refused credential without checking the store first: a Vault dynamic role's
    /// lease may have been revoked from outside (`lease revoke -prefix`, a restore), and only a
    /// new lease has a working user. Called once per burst of refusals (the provider coalesces
    /// them), before the fetch it triggers; it must not block. The default does nothing.
    fn login_refused(&self, credential: &Credential) {
        let _ = credential;
    }
}

#[async_trait]
impl<T: CredentialSource + ?Sized> CredentialSource for Arc<T> {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        (**self).fetch().await
    }

    async fn fetch_pending(&self) -> Result<Option<Credential>, SourceError> {
        (**self).fetch_pending().await
    }

    fn rotation_pending(&self) -> bool {
        (**self).rotation_pending()
    }

    fn replaces_before_expiry(&self) -> Option<Duration> {
        (**self).replaces_before_expiry()
    }
    fn login_refused(&self, credential: &Credential) {
        (**self).login_refused(credential)
    }
}

#[async_trait]
impl<T: CredentialSource + ?Sized> CredentialSource for Box<T> {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        (**self).fetch().await
    }

    async fn fetch_pending(&self) -> Result<Option<Credential>, SourceError> {
        (**self).fetch_pending().await
    }

    fn rotation_pending(&self) -> bool {
        (**self).rotation_pending()
    }

    fn replaces_before_expiry(&self) -> Option<Duration> {
        (**self).replaces_before_expiry()
    }
    fn login_refused(&self, credential: &Credential) {
        (**self).login_refused(credential)
    }
}

/// A source that always returns the same credential: for static configuration and for tests.
#[derive(Debug, Clone)]
pub struct StaticSource {
    credential: Credential,
}

impl StaticSource {
    /// A source of this credential.
    pub fn new(credential: Credential) -> Self {
        Self { credential }
    }
}

#[async_trait]
impl CredentialSource for StaticSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        Ok(self.credential.clone())
    }
}

/// A source from an async closure; see [`from_fn`].
pub struct FnSource<F> {
    f: F,
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

/// A source that calls `f` for every fetch.
///
/// ```
/// use credswap_core::{source, Credential, SourceError};
///
/// let source = source::from_fn(|| async {
///     let password = std::env::var("DB_PASSWORD")
///         .map_err(|_| SourceError::malformed("DB_PASSWORD is not set"))?;
///     Ok(Credential::new("app", password))
/// });
/// # let _ = source;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credential, SourceError>> + Send + 'static,
{
    FnSource { f }
}

#[async_trait]
impl<F, Fut> CredentialSource for FnSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credential, SourceError>> + Send + 'static,
{
    async fn fetch(&self) -> Result<Credential, SourceError> {
        (self.f)().await
    }
}

/// An in-memory store that tests, examples and the drill rotate by hand.
///
/// A cheap `Clone` handle: keep one to [`set`](Self::set) new credentials, give the other to the
/// provider. It can also simulate an outage ([`fail_with`](Self::fail_with)) and a slow store
/// ([`set_delay`](Self::set_delay)), and counts its fetches.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use credswap_core::{CredentialSource, Credential, MemorySource};
///
/// let store = MemorySource::new(Credential::new("app", "first"));
/// store.set(Credential::new("app", "second"));
/// assert_eq!(store.fetch().await.unwrap().username(), "app");
/// assert_eq!(store.fetch_count(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct MemorySource {
    inner: Arc<MemoryInner>,
}

struct MemoryInner {
    state: Mutex<MemoryState>,
    fetches: AtomicU64,
}

struct MemoryState {
    credential: Credential,
    pending: Option<Credential>,
    failure: Option<SourceError>,
    delay: Duration,
    /// The fraction of calls answered with a throttling error.
    throttle: f64,
}

impl MemorySource {
    /// A store holding `credential`.
    pub fn new(credential: Credential) -> Self {
        Self {
            inner: Arc::new(MemoryInner {
                state: Mutex::new(MemoryState {
                    credential,
                    pending: None,
                    failure: None,
                    delay: Duration::ZERO,
                    throttle: 0.0,
                }),
                fetches: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the stored credential (what a rotation does to a real store).
    pub fn set(&self, credential: Credential) {
        self.state().credential = credential;
    }

    /// Sets the credential a rotation under way will make current (Secrets Manager's
    /// `AWSPENDING`), returned by [`fetch_pending`](CredentialSource::fetch_pending); `None`
    /// when no rotation is under way. [`set`](Self::set) does not clear it.
    pub fn set_pending(&self, pending: Option<Credential>) {
        self.state().pending = pending;
    }

    /// Makes every fetch fail with `error` until [`recover`](Self::recover).
    pub fn fail_with(&self, error: SourceError) {
        self.state().failure = Some(error);
    }

    /// Ends a simulated outage.
    pub fn recover(&self) {
        self.state().failure = None;
    }

    /// Answers a random `fraction` (in `[0, 1]`) of calls, fetches and pending fetches alike,
    /// with an [`unavailable`](SourceError::unavailable) `ThrottlingException`, as a store over
    /// its request quota does; `0.0` ends it.
    pub fn throttle(&self, fraction: f64) {
        self.state().throttle = fraction.clamp(0.0, 1.0);
    }

    fn throttled(&self) -> Option<SourceError> {
        let fraction = self.state().throttle;
        (fraction > 0.0 && rand::random::<f64>() < fraction).then(|| {
            SourceError::unavailable(
                "ThrottlingException: Rate exceeded (the in-memory store's simulated quota)",
            )
        })
    }

    /// Makes every fetch take `delay` (a slow store).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// How many fetches have been made (also the failed ones).
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::SeqCst)
    }

    /// The username currently stored.
    pub fn username(&self) -> String {
        self.state().credential.username().to_owned()
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemorySource")
            .field("credential", &state.credential)
            .field("pending", &state.pending)
            .field("failure", &state.failure)
            .field("fetches", &self.fetch_count())
            .finish()
    }
}

#[async_trait]
impl CredentialSource for MemorySource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.inner.fetches.fetch_add(1, Ordering::SeqCst);
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(throttled) = self.throttled() {
            return Err(throttled);
        }
        let state = self.state();
        match &state.failure {
            Some(e) => Err(e.clone()),
            None => Ok(state.credential.clone()),
        }
    }

    async fn fetch_pending(&self) -> Result<Option<Credential>, SourceError> {
        if let Some(throttled) = self.throttled() {
            return Err(throttled);
        }
        let state = self.state();
        match &state.failure {
            Some(e) => Err(e.clone()),
            None => Ok(state.pending.clone()),
        }
    }

    fn rotation_pending(&self) -> bool {
        self.state().pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_source_rotates_fails_and_recovers() {
        let store = MemorySource::new(Credential::new("a", "1"));
        assert_eq!(store.fetch().await.unwrap().username(), "a");
        store.set(Credential::new("b", "2"));
        assert_eq!(store.fetch().await.unwrap().username(), "b");
        store.fail_with(SourceError::unavailable("down"));
        assert!(store.fetch().await.unwrap_err().is_unavailable());
        store.recover();
        assert!(store.fetch().await.is_ok());
        assert_eq!(store.fetch_count(), 4);
        assert!(!format!("{store:?}").contains("\"2\""));
    }

    #[tokio::test]
    async fn fn_and_static_sources_fetch() {
        let s = from_fn(|| async { Ok(Credential::new("f", "pw")) });
        assert_eq!(s.fetch().await.unwrap().username(), "f");
        let dynamic: Arc<dyn CredentialSource> =
            Arc::new(StaticSource::new(Credential::new("s", "pw")));
        assert_eq!(dynamic.fetch().await.unwrap().username(), "s");
    }
}
