//! [`Connector`]: the one connect routine every adapter wraps around its driver.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{SLOT_WAIT_MAX, Slot};
use super::classify::Failure;
use super::error::AdapterError;
use super::handle::Rotation;
use super::stats::{Counters, LiveConnection};
use super::tag::ConnectionTag;
use crate::provider::AUTH_REFRESH_MAX;
use crate::{Generation, Snapshot};

/// The first wait after a refused or transiently failed connect; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(20);

/// The longest wait between two connect attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long a connect in a burst of refusals that has outlived its deadline keeps going after
/// the store's next answer is due: the fetch itself, and the answer after it (one
/// [`AUTH_REFRESH_MAX`] later), so that a secret fixed just after an answer is still seen by
/// the connect a pool is waiting on (bb8 starts no other connect for its waiters meanwhile).
const NEXT_ANSWER_GRACE: Duration = AUTH_REFRESH_MAX.saturating_add(Duration::from_millis(500));

/// The most a connector's deadline stays short of the pool's own timeout.
pub const POOL_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Opens connections with the current credential and follows it through refusals.
///
/// [`connect`](Self::connect) reads the provider's current snapshot, tags the attempt with its
/// generation, and calls the adapter's `open` with it. Then, by the [`Failure`] class of the
/// driver's error:
///
/// - **refused login** (`28P01`, `28000`): reports it to the provider, which refreshes from the
///   store (single-flight, and at most once per `auth_refresh_interval`); a newer credential is
///   tried at once; a credential the database never accepted falls back, once, to the last one
///   it did (a mistyped secret must not stop the pool); otherwise the connect waits for a change or a backoff step (20 ms doubling
///   to 1 s), asks the store again and retries, until the deadline;
/// - **transient** (connection refused, `57P03`, `53300`, ...): backs off and retries until the
///   deadline;
/// - **fatal**: fails at once.
///
/// The deadline is a little under the pool's own connect or wait timeout where the adapter knows
/// it, otherwise the policy's `connect_deadline`. A refused login is always retried once with a newer
/// credential the provider hands back, even past the deadline.
#[derive(Clone)]
pub struct Connector {
    rotation: Rotation,
    deadline: Duration,
}

/// A connection opened by [`Connector::connect`].
#[derive(Debug)]
pub struct Connected<T> {
    /// The driver's connection.
    pub connection: T,
    /// Its generation and opening instant.
    pub tag: ConnectionTag,
    /// Counts it as live until dropped: keep it where the connection's life ends.
    pub live: LiveConnection,
}

/// A connect that failed for good, with the driver's last error and what was tried.
pub struct Refused<E> {
    error: E,
    failure: Failure,
    username: String,
    generation: Generation,
    attempts: u32,
    waited: Duration,
}

impl<E> Refused<E> {
    /// The driver's last error.
    pub fn error(&self) -> &E {
        &self.error
    }

    /// The driver's last error, for a pool whose connect must return the driver's type.
    pub fn into_inner(self) -> E {
        self.error
    }

    /// The class of the last error.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The role of the last attempt.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The credential generation of the last attempt.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Connect attempts made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The [`AdapterError`] for this failure; `code` is the driver error's SQLSTATE.
    pub fn into_error(self, code: Option<&str>) -> AdapterError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        AdapterError::connect(
            &self.username,
            self.generation,
            self.failure,
            code,
            self.attempts,
            self.waited,
            self.error,
        )
    }
}

impl<E: fmt::Display> fmt::Debug for Refused<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error.to_string())
            .field("failure", &self.failure)
            .field("username", &self.username)
            .field("generation", &self.generation)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for the adapter behind `rotation`. `pool_timeout` is the pool's own limit on
    /// a connect or a checkout, if it has one: the connector gives up a little before it (a
    /// tenth of it, at most [`POOL_TIMEOUT_MARGIN`]), so the caller gets the connector's error,
    /// which names the role, the generation and the SQLSTATE, rather than the pool's bare
    /// timeout. `None` takes the policy's `connect_deadline`.
    pub fn new(rotation: Rotation, pool_timeout: Option<Duration>) -> Self {
        let deadline = match pool_timeout {
            Some(limit) => limit.saturating_sub((limit / 10).min(POOL_TIMEOUT_MARGIN)),
            None => rotation.credentials().policy().connect_deadline(),
        };
        Self { rotation, deadline }
    }

    /// The handle of the adapter this connector belongs to.
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    /// How long a connect keeps trying.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Opens a connection with the current credential: `open` connects with the snapshot it is
    /// given; `classify` says what a driver error means. See the type's documentation.
    pub async fn connect<T, E, F, Fut, C>(
        &self,
        classify: C,
        mut open: F,
    ) -> Result<Connected<T>, Refused<E>>
    where
        F: FnMut(Arc<Snapshot>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Failure,
    {
        let credentials = self.rotation.credentials();
        let counters = self.rotation.counters();
        let started = Instant::now();
        let own_until = started + self.deadline;
        let mut until = own_until;
        let mut changes = credentials.subscribe();
        let mut backoff = RETRY_INITIAL;
        let mut attempts = 0u32;
        let mut refused_before = false;
        let mut fallback: Option<Arc<Snapshot>> = None;
        let mut fell_back_from: Option<Generation> = None;
        let mut tried_pending_for: Option<Generation> = None;
        // The store's next answer this connect may wait for in a burst of refusals that has
        // outlived its deadline (decided at the first refusal).
        let mut next_answer: Option<Option<Instant>> = None;
        // The session's place in the pool's budget, held for the connection's life. The pool
        // stays within its size by itself; a probe in flight may hold a slot for a moment.
        let slot = match self
            .rotation
            .budget()
            .slot(SLOT_WAIT_MAX.min(self.deadline))
            .await
        {
            Some(slot) => slot,
            None => {
                Counters::bump(&counters.over_budget);
                tracing::warn!(
                    limit = self.rotation.session_limit(),
                    "no session left in the pool's budget after waiting; opening beyond it"
                );
                Slot::default()
            }
        };
        loop {
            changes.borrow_and_update();
            let is_fallback = fallback.is_some();
            let snapshot = fallback.take().unwrap_or_else(|| credentials.current());
            let generation = snapshot.generation();
            let tag = ConnectionTag::new(&snapshot);
            attempts += 1;
            if attempts > 1 {
                Counters::bump(if refused_before {
                    &counters.auth_retries
                } else {
                    &counters.connect_retries
                });
            }
            let error = match open(Arc::clone(&snapshot)).await {
                Ok(connection) => {
                    let is_pending = is_fallback && generation > credentials.generation();
                    credentials.report_accepted(generation);
                    let live = counters.opened(generation).holding(slot);
                    if is_pending {
                        Counters::bump(&counters.pending_connects);
                    } else if is_fallback {
                        Counters::bump(&counters.fallback_connects);
                    } else if credentials.generation() != generation {
                        Counters::bump(&counters.raced_connects);
                    }
                    return Ok(Connected {
                        connection,
                        tag,
                        live,
                    });
                }
                Err(error) => error,
            };
            let failure = classify(&error);
            let refused = |error| Refused {
                error,
                failure,
                username: snapshot.credential().username().to_owned(),
                generation,
                attempts,
                waited: started.elapsed(),
            };
            match failure {
                Failure::Fatal => {
                    Counters::bump(&counters.connect_failures);
                    return Err(refused(error));
                }
                Failure::Auth => {
                    Counters::bump(&counters.auth_failures);
                    refused_before = true;
                    // A burst of refusals waits for a working credential for one deadline in
                    // all, not one per connect: the connects that come later (queued behind the
                    // first ones) fail as fast as a plain pool's would, with the same error, so
                    // that a pool's checkout never takes its queue time plus a whole deadline.
                    // They still wait for the store's next answer when it is due soon, so a
                    // store that has been fixed is seen by the next checkout.
                    if let Some(since) = credentials.refused_since(generation) {
                        let burst_until = (since + self.deadline).max(started);
                        // One more answer per connect, not one after another.
                        let next_answer = next_answer.get_or_insert_with(|| {
                            credentials
                                .next_refusal_fetch()
                                .filter(|at| *at <= Instant::now() + AUTH_REFRESH_MAX)
                        });
                        until = own_until.min(
                            next_answer
                                .map_or(burst_until, |at| burst_until.max(at + NEXT_ANSWER_GRACE)),
                        );
                    } else if generation == credentials.generation() {
                        // The first refusal of the current generation: a burst of its own
                        // begins. (A refused pending or fallback login changes nothing here.)
                        until = own_until;
                        next_answer = None;
                    }
                    // Shared with every other refused connect; rate-limited by the provider, and
                    // never waited for past the deadline (a slow or black-holed store).
                    let fresh = report_refusal(credentials, generation, until).await;
                    if fresh.is_some_and(|fresh| fresh.generation() != generation) {
                        tracing::debug!(
                            refused = generation.get(),
                            "login refused; retrying with the newer credential"
                        );
                        continue;
                    }
                    // The store may be mid-rotation with the database already on its pending
                    // credential (a single-user rotation between setSecret and finishSecret):
                    // try it; once it opens, the provider publishes it.
                    if tried_pending_for != Some(generation)
                        && let Some(pending) = credentials.pending()
                    {
                        tracing::debug!(
                            refused = generation.get(),
                            pending = pending.generation().get(),
                            "login refused; trying the store's pending credential"
                        );
                        tried_pending_for = Some(generation);
                        fallback = Some(pending);
                        continue;
                    }
                    // A login the database never accepted (a mistyped secret): the last login
                    // it did accept may still work. Tried once per refused generation.
                    if !snapshot.is_proven()
                        && fell_back_from != Some(generation)
                        && let Some(proven) = credentials.proven()
                        && proven.generation() < generation
                    {
                        tracing::debug!(
                            refused = generation.get(),
                            fallback = proven.generation().get(),
                            "the new credential is refused and was never accepted; trying the last accepted one"
                        );
                        fell_back_from = Some(generation);
                        fallback = Some(proven);
                        continue;
                    }
                }
                Failure::Transient => {}
            }
            let now = Instant::now();
            if now >= until {
                Counters::bump(&counters.connect_failures);
                tracing::warn!(
                    username = %snapshot.credential().username(),
                    generation = generation.get(),
                    failure = failure.as_str(),
                    attempts,
                    "connect failed until its deadline"
                );
                return Err(refused(error));
            }
            // Waiting for the store's next answer: ask it the moment it is due.
            let wait = match next_answer.flatten().filter(|at| *at > now) {
                Some(at) => (at - now).min(until - now),
                None => backoff.min(until - now),
            };
            backoff = (backoff * 2).min(RETRY_MAX);
            if failure == Failure::Auth {
                // A new credential ends the wait early.
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(wait) => {
                        // Ask the store again before retrying the refused login.
                        let _ = report_refusal(credentials, generation, until).await;
                    }
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Reports a refused login of `generation` to the provider and waits for the snapshot to retry
/// with, but not past `until`: the report's store fetch (and its pending fetch) runs in a task
/// of its own, so a connect that gives up at its deadline does not cancel a fetch that other
/// connects share; they find its result when it ends.
async fn report_refusal(
    credentials: &crate::RotatingCredentials,
    generation: Generation,
    until: Instant,
) -> Option<Arc<Snapshot>> {
    let credentials = credentials.clone();
    let report = tokio::spawn(async move { credentials.report_auth_failure(generation).await });
    match tokio::time::timeout_at(until, report).await {
        Ok(Ok(Ok(snapshot))) => Some(snapshot),
        Ok(Ok(Err(_)) | Err(_)) => None,
        Err(_) => {
            tracing::debug!(
                generation = generation.get(),
                "the store did not answer before the connect's deadline"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::{Credential, MemorySource, Policy, RotatingCredentials};

    #[derive(Debug)]
    struct DriverError(Failure);

    impl fmt::Display for DriverError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "driver error: {}", self.0.as_str())
        }
    }

    impl std::error::Error for DriverError {}

    async fn setup(policy: Policy) -> (MemorySource, Rotation) {
        let store = MemorySource::new(Credential::new("app", "old"));
        let credentials = RotatingCredentials::builder(store.clone())
            .policy(policy)
            .background_refresh(false)
            .build()
            .await
            .unwrap();
        (store, Rotation::new(credentials))
    }

    fn quick() -> Policy {
        Policy::builder()
            .auth_refresh_interval(Duration::from_millis(50))
            .connect_deadline(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// A server that accepts only `accepts` as the password.
    fn server(
        accepts: &'static Mutex<&'static str>,
        attempts: &'static AtomicU32,
    ) -> impl FnMut(Arc<Snapshot>) -> std::future::Ready<Result<Generation, DriverError>> {
        use secrecy::ExposeSecret;
        move |snapshot| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let ok = snapshot.credential().password().expose_secret() == *accepts.lock().unwrap();
            std::future::ready(if ok {
                Ok(snapshot.generation())
            } else {
                Err(DriverError(Failure::Auth))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_waits_for_the_store_then_connects() {
        static ACCEPTS: Mutex<&str> = Mutex::new("new");
        static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
        let (store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), None);
        let lagging_store = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                store.set(Credential::new("app", "new"));
            })
        };
        let started = Instant::now();
        let connected = connector
            .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
            .await
            .expect("connects once the store has the new password");
        lagging_store.await.unwrap();
        assert_eq!(connected.connection, Generation::new(2));
        assert_eq!(connected.tag.generation(), Generation::new(2));
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert!(
            started.elapsed() < Duration::from_millis(1700),
            "{:?}",
            started.elapsed()
        );
        let stats = rotation.stats();
        assert!(
            stats.auth_failures >= 1 && stats.auth_retries >= 1,
            "{stats:?}"
        );
        assert_eq!(stats.connect_failures, 0);
        assert_eq!(stats.live_per_generation.get(&Generation::new(2)), Some(&1));
        // The store was asked at most once per auth_refresh_interval, not once per attempt.
        let fetches = store.fetch_count();
        assert!(fetches <= 1 + 700 / 50 + 2, "{fetches} fetches");
        assert!(!rotation.credentials().health().is_refused());
        drop(connected);
        assert_eq!(rotation.stats().live(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_fails_at_the_deadline_naming_role_and_generation() {
        static ACCEPTS: Mutex<&str> = Mutex::new("never");
        static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
        let (_store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), Some(Duration::from_secs(2)));
        let started = Instant::now();
        let refused = connector
            .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
            .await
            .expect_err("nothing works");
        let waited = started.elapsed();
        // The pool's 2 s timeout, less the margin (a tenth): the connector gives up at 1.8 s.
        assert!(
            waited >= Duration::from_millis(1800) && waited < Duration::from_millis(2900),
            "{waited:?}"
        );
        assert_eq!(refused.failure(), Failure::Auth);
        assert_eq!(refused.username(), "app");
        assert!(
            refused.attempts() > 2 && refused.attempts() < 20,
            "{}",
            refused.attempts()
        );
        let error = refused.into_error(Some("28P01"));
        assert!(error.is_auth_failure() && error.code() == Some("28P01"));
        assert_eq!(error.generation(), Some(Generation::FIRST));
        let health = rotation.credentials().health();
        assert!(health.is_refused() && !health.is_healthy(), "{health:?}");
        assert_eq!(rotation.stats().connect_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_fatal_ones_are_not() {
        let (_store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), None);
        let calls = AtomicU32::new(0);
        let connected = connector
            .connect(
                |e: &DriverError| e.0,
                |_| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(if n < 5 {
                        Err(DriverError(Failure::Transient))
                    } else {
                        Ok(())
                    })
                },
            )
            .await;
        assert!(connected.is_ok());
        assert_eq!(rotation.stats().connect_retries, 5);

        let calls = AtomicU32::new(0);
        let refused = connector
            .connect(
                |e: &DriverError| e.0,
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(Err::<(), _>(DriverError(Failure::Fatal)))
                },
            )
            .await
            .expect_err("fatal");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(refused.failure(), Failure::Fatal);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_isolated_refusal_does_not_shorten_a_later_wait() {
        static ACCEPTS: Mutex<&str> = Mutex::new("new");
        static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
        let (store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), None);
        // A refusal an hour ago (a blip), then nothing: not the start of today's burst.
        rotation.credentials().report_refused(Generation::FIRST);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let lagging_store = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                store.set(Credential::new("app", "new"));
            })
        };
        let connected = connector
            .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
            .await
            .expect("waits its whole deadline for the store, as a first refusal does");
        lagging_store.await.unwrap();
        assert_eq!(connected.connection, Generation::new(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_queued_behind_a_long_burst_fails_as_fast_as_a_plain_pool() {
        static ACCEPTS: Mutex<&str> = Mutex::new("never");
        static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
        let (store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), Some(Duration::from_secs(2)));
        let started = Instant::now();
        connector
            .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
            .await
            .expect_err("nothing works");
        assert!(started.elapsed() >= Duration::from_millis(1800));
        // Queued behind it: waits at most once for the store's next answer, not a new deadline.
        store.fail_with(crate::SourceError::unavailable("down"));
        let _ = rotation.credentials().refresh().await;
        let queued = Instant::now();
        connector
            .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
            .await
            .expect_err("nothing works");
        assert!(
            queued.elapsed() < Duration::from_millis(500),
            "{:?}",
            queued.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_refused_connects_share_few_fetches() {
        static ACCEPTS: Mutex<&str> = Mutex::new("new");
        static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
        let (store, rotation) = setup(quick()).await;
        let connector = Connector::new(rotation.clone(), None);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let connector = connector.clone();
                tokio::spawn(async move {
                    connector
                        .connect(|e: &DriverError| e.0, server(&ACCEPTS, &ATTEMPTS))
                        .await
                        .map(|c| c.connection)
                        .map_err(|r| r.attempts())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.set(Credential::new("app", "new"));
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Generation::new(2));
        }
        // 200 refused connects over ~300 ms: fetches bounded by the rate limit, not by 200.
        let fetches = store.fetch_count();
        assert!(
            fetches <= 1 + 300 / 50 + 3,
            "{fetches} fetches for 200 refused connects"
        );
    }
}
