//! How new connections get the current credential.
//!
//! sqlx has no connect hook: the pool connects with its connect options, so the adapter keeps
//! those options pointed at the login the pool should use ([`wanted`]: the provider's current
//! credential, or the last accepted one while the current one is refused and unproven;
//! [`Login::swap`], called by the watcher) and judges each new connection last in
//! `after_connect` ([`Login::admit`]): one that may have authenticated with options the watcher
//! has replaced is refused, and sqlx connects again with the current options after a backoff
//! step.
//!
//! The judgement needs no server round trip and sends nothing to the server. sqlx reads its
//! options (an `Arc`) when a connect attempt starts and holds that `Arc` until the attempt's
//! `after_connect` has returned. The adapter keeps every options `Arc` it has replaced while
//! any connect may still hold it: a connect finishing while a replaced `Arc` is still held
//! (by it, or by another connect in flight) may have used it. A current connection finishing
//! at that moment is refused too, and merely reconnects.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credswap_core::contract::connect::{RETRY_INITIAL, RETRY_MAX};
use credswap_core::contract::{ConnectionTag, Counters, Failure, Rotation};
use credswap_core::{Credential, Generation, RotatingCredentials, Snapshot, Validate, validate_fn};
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::{Error, classify, code, is_auth_failure};
use super::sqlx;
use super::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use super::sqlx::{Connection, Executor};
use super::tag::Tags;

/// The pool's connect options, following the provider.
pub(crate) struct Login {
    /// Host, port, database, TLS, options; the login is replaced at every swap. Never printed:
    /// its `Debug` shows the password.
    base: PgConnectOptions,
    /// The generation the pool's options carry.
    generation: AtomicU64,
    /// Options replaced by a swap that a connect in flight may still use.
    replaced: Mutex<Vec<Replaced>>,
    /// How long a connect attempt can last: the pool's `acquire_timeout`.
    attempt_max: Duration,
    /// The generation the options carry, for hooks waiting for a swap.
    swapped: watch::Sender<Generation>,
}

struct Replaced {
    generation: Generation,
    at: Instant,
    options: Arc<PgConnectOptions>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `base` with `credential`'s login.
pub(crate) fn with_login(base: &PgConnectOptions, credential: &Credential) -> PgConnectOptions {
    base.clone()
        .username(credential.username())
        // The only place the password leaves its SecretString: the driver's options.
        .password(credential.password().expose_secret())
}

/// An `after_connect` refusal; sqlx logs it and connects again.
fn refused(message: String) -> sqlx::Error {
    sqlx::Error::Configuration(format!("credswap: {message}; connecting again").into())
}

impl Login {
    /// Follows the provider from `first`; returns the pool's first options too.
    pub(crate) fn new(
        base: PgConnectOptions,
        first: &Snapshot,
        attempt_max: Duration,
    ) -> (Self, PgConnectOptions) {
        let options = with_login(&base, first.credential());
        let login = Self {
            base,
            generation: AtomicU64::new(first.generation().get()),
            replaced: Mutex::default(),
            attempt_max,
            swapped: watch::Sender::new(first.generation()),
        };
        (login, options)
    }

    /// Host, port, database, TLS and options, without a login.
    pub(crate) fn base(&self) -> &PgConnectOptions {
        &self.base
    }

    /// The generation the pool's options carry.
    pub(crate) fn generation(&self) -> Generation {
        Generation::new(self.generation.load(Ordering::SeqCst))
    }

    /// Points `pool`'s connect options at `snapshot`'s credential, a newer login than theirs or
    /// the last accepted one after a refusal (only the watcher calls this). Returns whether it
    /// swapped.
    pub(crate) fn swap(&self, pool: &PgPool, snapshot: &Snapshot) -> bool {
        let old = self.generation();
        let generation = snapshot.generation();
        if generation == old || (generation > old && snapshot.is_same_login(old)) {
            return false;
        }
        // Recorded before the options change: a connect that read the old options and
        // finishes from now on finds them among the replaced ones.
        lock(&self.replaced).push(Replaced {
            generation: old,
            at: Instant::now(),
            options: pool.connect_options(),
        });
        self.generation.store(generation.get(), Ordering::SeqCst);
        pool.set_connect_options(with_login(&self.base, snapshot.credential()));
        self.swapped.send_replace(generation);
        tracing::debug!(
            generation = generation.get(),
            username = %snapshot.credential().username(),
            "pool connect options now use the new credential"
        );
        true
    }

    /// Waits until the options carry `snapshot`'s login, for at most `limit`.
    pub(crate) async fn swapped(&self, snapshot: &Snapshot, limit: Duration) {
        let mut swapped = self.swapped.subscribe();
        let carried = swapped.wait_for(|g| snapshot.is_same_login(*g));
        let _ = tokio::time::timeout(limit, carried).await;
    }

    /// Judges a connection that has just connected, last in `after_connect`: refused if the
    /// options it may have used do not carry the login the pool should use ([`wanted`]: the
    /// watcher has not swapped them yet, or swapped them during the connect); otherwise its tag
    /// is recorded.
    pub(crate) fn admit(&self, tags: &Tags, rotation: &Rotation) -> Result<(), sqlx::Error> {
        let options = self.generation();
        let wanted = wanted(rotation.credentials());
        if !wanted.is_same_login(options) {
            return Err(refused(format!(
                "the pool's connect options carry credential generation {options} while \
                 generation {} is the one to use",
                wanted.generation()
            )));
        }
        let raced = {
            let mut replaced = lock(&self.replaced);
            // Only this list holds a replaced `Arc` once no connect does. A connect attempt
            // ends within the pool's `acquire_timeout`; an `Arc` the application keeps from
            // `PgPool::connect_options` is let go then.
            replaced.retain(|r| {
                Arc::strong_count(&r.options) > 1 && r.at.elapsed() <= self.attempt_max
            });
            replaced
                .iter()
                .map(|r| r.generation)
                .filter(|g| !wanted.is_same_login(*g))
                .min()
        };
        let counters = rotation.counters();
        if let Some(older) = raced {
            for counter in [&counters.raced_connects, &counters.stale_closed] {
                Counters::bump(counter);
            }
            drop(counters.opened(older));
            return Err(refused(format!(
                "a connect that may have read credential generation {older} finished after the \
                 swap to generation {options}"
            )));
        }
        let tag = ConnectionTag::new(&wanted);
        let generation = wanted.generation();
        if generation != rotation.credentials().generation() {
            Counters::bump(&counters.fallback_connects);
        }
        rotation.credentials().report_accepted(generation);
        tags.admitted(tag, counters.opened(generation));
        Ok(())
    }
}

/// The login the pool's connect options should carry: the current credential, unless the
/// database has refused it, never accepted it, and an older login it did accept is still within
/// its lease (**prove before drain**: a mistyped secret is tried once by the adapter's probe,
/// and then the pool's own connects, which sqlx returns to the caller as they fail, go back to
/// the login that works).
pub(crate) fn wanted(credentials: &RotatingCredentials) -> Arc<Snapshot> {
    let current = credentials.current();
    if current.is_proven() || !credentials.is_refused(current.generation()) {
        return current;
    }
    match credentials.proven() {
        Some(proven)
            if proven.generation() < current.generation()
                && proven.retire_at().is_none_or(|at| Instant::now() < at) =>
        {
            proven
        }
        _ => current,
    }
}

/// Opens one connection with `snapshot`'s login outside the pool, runs nothing, and closes it:
/// the adapter's probe (see [`credswap_core::contract::proof`]), within [`VALIDATION_TIMEOUT`].
///
/// It runs on a thread of its own. sqlx 0.9 yields to the scheduler every 5 of SCRAM's 4096
/// rounds; on a runtime busy with the application's requests each yield waits for every other
/// ready task, and one connect was measured taking 1–3 s (16 workers on 2 cores). A login must
/// be proven quickly, so that the old connections are retired within the drain's grace.
pub(crate) async fn probe(base: &PgConnectOptions, snapshot: &Snapshot) -> Result<(), Failure> {
    let options = with_login(base, snapshot.credential());
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("credswap-sqlx-probe".into())
        .spawn(move || {
            let outcome = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(open_and_close(options)),
                Err(_) => Err(Failure::Transient),
            };
            let _ = done.send(outcome);
        });
    if spawned.is_err() {
        return Err(Failure::Transient);
    }
    result.await.unwrap_or(Err(Failure::Transient))
}

async fn open_and_close(options: PgConnectOptions) -> Result<(), Failure> {
    match tokio::time::timeout(VALIDATION_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
            Ok(())
        }
        Ok(Err(error)) => Err(classify(&error)),
        Err(_) => Err(Failure::Transient),
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("generation", &self.generation())
            .field("replaced", &lock(&self.replaced).len())
            .finish_non_exhaustive()
    }
}

/// A retrying checkout that gave up: the last error, and what was tried.
pub(crate) struct Failed {
    pub(crate) error: sqlx::Error,
    tried: Arc<Snapshot>,
    attempts: u32,
    waited: Duration,
}

impl Failed {
    /// The contract's error for it.
    pub(crate) fn into_error(self) -> Error {
        Error::connect(
            self.tried.credential().username(),
            self.tried.generation(),
            classify(&self.error),
            code(&self.error).as_deref(),
            self.attempts,
            self.waited,
            self.error,
        )
    }
}

/// A checkout (`attempt`: `acquire` or `begin`) that follows the credential through refused
/// logins, until the pool's `acquire_timeout`: a refused login is reported to the provider,
/// and the checkout tries again at once if the provider has a newer credential (the pool's
/// options follow it, `after_connect` refuses connects until they do), otherwise after a
/// change or a backoff step, asking the provider again (as the contract's
/// [`Connector`](credswap_core::contract::Connector) does). Other errors are returned as they
/// are.
pub(crate) async fn following<T, F, Fut>(
    rotation: &Rotation,
    pool: &PgPool,
    mut attempt: F,
) -> Result<T, Failed>
where
    F: FnMut(PgPool) -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let credentials = rotation.credentials();
    let counters = rotation.counters();
    let started = Instant::now();
    let until = started + pool.options().get_acquire_timeout();
    let mut changes = credentials.subscribe();
    let mut backoff = RETRY_INITIAL;
    let mut attempts = 0;
    let mut tried_pending_for = None;
    // The refused login of the attempt before: what the caller gets when the next attempt does
    // not finish before the pool's `acquire_timeout` (every await here ends by then).
    let mut refused: Option<Failed> = None;
    loop {
        changes.borrow_and_update();
        let tried = credentials.current();
        if attempts > 0 {
            Counters::bump(&counters.auth_retries);
        }
        attempts += 1;
        let failed = |error| Failed {
            error,
            tried: Arc::clone(&tried),
            attempts,
            waited: started.elapsed(),
        };
        let outcome = match refused.take() {
            None => attempt(pool.clone()).await,
            Some(before) => match tokio::time::timeout_at(until, attempt(pool.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    Counters::bump(&counters.connect_failures);
                    return Err(before);
                }
            },
        };
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) if is_auth_failure(&error) => error,
            Err(error) => return Err(failed(error)),
        };
        Counters::bump(&counters.auth_failures);
        if attempts == 1 {
            let database = error.as_database_error();
            tracing::warn!(
                username = %tried.credential().username(),
                generation = tried.generation().get(),
                sqlstate = database.and_then(|e| e.code()).as_deref().unwrap_or(""),
                message = database.map_or("", |e| e.message()),
                "checkout refused: the login failed; waiting for a working credential"
            );
        }
        let fresh = report_within(credentials, tried.generation(), until).await;
        if fresh.is_some_and(|fresh| fresh.generation() != tried.generation()) {
            refused = Some(failed(error));
            continue;
        }
        // The store may be mid-rotation with the database already on its pending credential:
        // try it outside the pool (this checkout's slot is free); once it opens, the provider
        // publishes it and the pool's options follow.
        if tried_pending_for != Some(tried.generation())
            && let Some(pending) = credentials.pending()
        {
            tried_pending_for = Some(tried.generation());
            let probed =
                tokio::time::timeout_at(until, probe(&pool.connect_options(), &pending)).await;
            if probed.is_ok_and(|probed| probed.is_ok()) {
                Counters::bump(&counters.pending_connects);
                credentials.report_accepted(pending.generation());
                refused = Some(failed(error));
                continue;
            }
        }
        let now = Instant::now();
        if now >= until {
            Counters::bump(&counters.connect_failures);
            tracing::warn!(
                username = %tried.credential().username(),
                generation = tried.generation().get(),
                sqlstate = code(&error).as_deref().unwrap_or(""),
                attempts,
                "checkout refused until the pool's acquire_timeout"
            );
            return Err(failed(error));
        }
        // Wake often enough to meet the store's next answer (refusal fetches are coalesced up
        // to `AUTH_REFRESH_MAX` apart; a report inside the gap costs nothing).
        let wait = backoff.min(until - now).min(REPORT_EVERY);
        backoff = (backoff * 2).min(RETRY_MAX);
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(wait) => {
                // Ask the store again before retrying the refused login.
                let _ = report_within(credentials, tried.generation(), until).await;
            }
        }
        refused = Some(failed(error));
    }
}

/// The longest a checkout waiting for a working credential sleeps between two reports.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Reports a refused login of `generation` and waits for the snapshot to retry with, but not
/// past `until`: the report (and the store fetch it may start) runs in a task of its own, so
/// a checkout that gives up does not cancel a fetch other checkouts share.
async fn report_within(
    credentials: &RotatingCredentials,
    generation: credswap_core::Generation,
    until: Instant,
) -> Option<Arc<Snapshot>> {
    let credentials = credentials.clone();
    let report = tokio::spawn(async move { credentials.report_auth_failure(generation).await });
    match tokio::time::timeout_at(until, report).await {
        Ok(Ok(Ok(snapshot))) => Some(snapshot),
        _ => None,
    }
}

/// The longest a [`connection_validator`] waits for its connection and its `SELECT 1`.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A validate-before-swap check that opens one real connection with the candidate credential
/// and runs `SELECT 1`, within [`VALIDATION_TIMEOUT`]; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
///
/// The connection is opened outside any pool, and closed at once.
pub fn connection_validator(connect_options: PgConnectOptions) -> impl Validate {
    let base = Arc::new(connect_options);
    validate_fn(move |credential: Credential| {
        let base = Arc::clone(&base);
        async move {
            let check = async {
                let mut conn = PgConnection::connect_with(&with_login(&base, &credential)).await?;
                conn.execute("SELECT 1").await?;
                conn.close().await
            };
            match tokio::time::timeout(VALIDATION_TIMEOUT, check).await {
                Ok(result) => Ok(result?),
                Err(_) => {
                    Err(format!("no connection and SELECT 1 within {VALIDATION_TIMEOUT:?}").into())
                }
            }
        }
    })
}
