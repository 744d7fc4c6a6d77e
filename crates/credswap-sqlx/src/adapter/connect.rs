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
use credswap_core::contract::{Adapter, Event, Feedback};
use credswap_core::{Credential, Generation, RotatingCredentials, Snapshot};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::error::{Error, classify, code, is_auth_failure};
use super::sqlx;
use super::driver::SqlxDriver;
use super::sqlx::postgres::{PgConnectOptions, PgPool};
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
    /// The credential the options carry (for a minted login, its token changes without a
    /// swap). Never printed.
    carried: Mutex<Credential>,
    /// Told of every swap, for hooks and checkouts waiting for one.
    adapter: Adapter,
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
        adapter: &Adapter,
        attempt_max: Duration,
    ) -> (Self, PgConnectOptions) {
        let first = adapter.credentials().current();
        adapter.set_pool_login(first.generation());
        let options = with_login(&base, first.credential());
        let login = Self {
            base,
            generation: AtomicU64::new(first.generation().get()),
            replaced: Mutex::default(),
            carried: Mutex::new(first.credential().clone()),
            attempt_max,
            adapter: adapter.clone(),
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
            self.retoken(pool, snapshot);
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
        *lock(&self.carried) = snapshot.credential().clone();
        self.adapter.set_pool_login(generation);
        tracing::debug!(
            generation = generation.get(),
            username = %snapshot.credential().username(),
            "pool connect options now use the new credential"
        );
        true
    }

    /// A new token of the minted login the options carry (the same generation): the options
    /// take it, so the pool's next connect logs in with it. The connections of the previous
    /// token stay.
    fn retoken(&self, pool: &PgPool, snapshot: &Snapshot) {
        let credential = snapshot.credential();
        let mut carried = lock(&self.carried);
        if !credential.is_minted() || carried.has_same_password(credential) {
            return;
        }
        pool.set_connect_options(with_login(&self.base, credential));
        *carried = credential.clone();
        tracing::debug!(
            generation = snapshot.generation().get(),
            "pool connect options now use the new token"
        );
    }

    /// Waits until the options carry `snapshot`'s login, for at most `limit`.
    pub(crate) async fn swapped(&self, snapshot: &Snapshot, limit: Duration) {
        self.adapter.wait_pool_login(snapshot, limit).await;
    }

    /// Judges a connection that has just connected, last in `after_connect`: refused if the
    /// options it may have used do not carry the login the pool should use ([`wanted`]: the
    /// watcher has not swapped them yet, or swapped them during the connect); otherwise its tag
    /// is recorded.
    pub(crate) fn admit(&self, tags: &Tags, adapter: &Adapter) -> Result<(), sqlx::Error> {
        let options = self.generation();
        let wanted = wanted(adapter.credentials());
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
        let counters = adapter.counters();
        if let Some(older) = raced {
            counters.bump(Event::RacedConnect);
            counters.bump(Event::StaleClosed);
            drop(counters.opened(older));
            return Err(refused(format!(
                "a connect that may have read credential generation {older} finished after the \
                 swap to generation {options}"
            )));
        }
        let tag = adapter.tag(&wanted);
        let generation = wanted.generation();
        if generation != adapter.credentials().generation() {
            counters.bump(Event::FallbackConnect);
        }
        adapter.feedback().report_accepted(generation);
        // The pool's own login: under connect pacing it takes a turn.
        adapter.login_taken();
        tags.admitted(tag, adapter.opened(generation));
        Ok(())
    }
}

/// The login the pool's connect options should carry: the current credential, unless the
/// database has refused it, never accepted it, and an older login it did accept is still within
/// its lease (**prove before drain**: a mistyped secret is tried by the adapter's probe, and
/// then the pool's own connects go back to the login that works).
///
/// Holding the options on the last accepted login until the new one is proven was tried: it
/// kept a mistyped secret from every plain checkout, but after a reverted rotation the last
/// accepted login is the reverted one, which the database refuses, and a probe that finds no
/// slot in a full pool left the pool's connects refused for seconds.
pub(crate) fn wanted(credentials: &RotatingCredentials) -> Arc<Snapshot> {
    let current = credentials.current();
    let feedback = Feedback::new(credentials);
    if current.is_proven() || !feedback.is_refused(current.generation()) {
        return current;
    }
    match feedback.proven() {
        Some(proven)
            if proven.generation() < current.generation()
                && proven.retire_at().is_none_or(|at| Instant::now() < at) =>
        {
            proven
        }
        _ => current,
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

/// How often [`idle_before`] looks at the pool.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// Waits until `pool` has an idle connection, giving up at `until` or as soon as the pool has
/// no session at all; returns whether it has one.
async fn idle_before(pool: &PgPool, until: Instant) -> bool {
    while pool.num_idle() == 0 {
        if pool.size() == 0 || Instant::now() + IDLE_POLL >= until {
            return false;
        }
        tokio::time::sleep(IDLE_POLL).await;
    }
    true
}

/// A checkout that gave up: the pool's error, and the login it was refused with.
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
/// logins, until the pool's `acquire_timeout`: the thin sqlx side of the contract's
/// [`Connector`](credswap_core::contract::Connector). sqlx connects by itself, so the refusal
/// reaches here; the connector reports it and finds the login that works (a newer credential,
/// the store's pending one, or the last accepted one), proving it with one session of the
/// adapter's [`SqlxDriver`] (one proof at a time per pool: the checkouts refused together wait
/// for it, see [`Connector::prove_after_refusal`]); the pool's options follow the provider
/// (`after_connect` refuses connects until they do), and the checkout is tried again. A
/// rotation that comes again meanwhile (a refusal of the newer login) is followed the same
/// way, with a backoff step between tries. Other errors are returned as they are.
///
/// [`Connector::prove_after_refusal`]: credswap_core::contract::Connector::prove_after_refusal
pub(crate) async fn following<T, F, Fut>(
    adapter: &Adapter,
    pool: &PgPool,
    mut attempt: F,
) -> Result<T, Failed>
where
    F: FnMut(PgPool) -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    let until = started + pool.options().get_acquire_timeout();
    let mut tried = adapter.credentials().current();
    let mut attempts = 1;
    let mut error = match attempt(pool.clone()).await {
        Ok(value) => return Ok(value),
        Err(error) if is_auth_failure(&error) => error,
        Err(error) => {
            return Err(Failed {
                error,
                tried,
                attempts,
                waited: started.elapsed(),
            });
        }
    };
    // A copy of the pool's options (host, TLS...): holding the pool's own `Arc` would make the
    // adapter count connects finishing meanwhile as raced.
    let driver = SqlxDriver::new(PgConnectOptions::clone(&pool.connect_options()));
    let mut backoff = Duration::ZERO;
    loop {
        // Connections came back meanwhile (the checkout raced their return and connected in a
        // free place): one of them serves it, as in a plain pool full of them, even when no
        // login the adapter knows works any more (a single-user rotation that went on while
        // the store could not be read).
        if pool.num_idle() > 0 && Instant::now() < until {
            attempts += 1;
            match tokio::time::timeout_at(until, attempt(pool.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(next)) if is_auth_failure(&next) => error = next,
                Ok(Err(next)) => {
                    error = next;
                    break;
                }
                Err(_) => break,
            }
        }
        let connector = adapter.connector(Some(until.saturating_duration_since(Instant::now())));
        match connector
            .prove_after_refusal(&driver, tried.generation())
            .await
        {
            Ok(()) => {}
            Err(Some(refused)) => {
                attempts += refused.attempts();
                error = refused.into_inner();
                // No login the adapter knows works, but the pool's open sessions may (a plain
                // pool full of them would wait for one): one more try once one is idle.
                if idle_before(pool, until).await {
                    attempts += 1;
                    if let Ok(Ok(value)) = tokio::time::timeout_at(until, attempt(pool.clone())).await
                    {
                        return Ok(value);
                    }
                }
                break;
            }
            Err(None) => break,
        }
        // The pool connects with its own options: once they carry the login that works.
        let wanted = wanted(adapter.credentials());
        adapter
            .wait_pool_login(&wanted, until.saturating_duration_since(Instant::now()))
            .await;
        let before = std::mem::replace(&mut tried, wanted);
        attempts += 1;
        match tokio::time::timeout_at(until, attempt(pool.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(next)) if is_auth_failure(&next) => error = next,
            Ok(Err(next)) => {
                error = next;
                break;
            }
            Err(_) => {
                // The error kept is the earlier refusal, of the login tried before.
                tried = before;
                break;
            }
        }
        // Refused again: the credential moved on meanwhile. A step of backoff, so that a
        // login refused for good does not spin until the timeout.
        backoff = (backoff * 2).clamp(RETRY_INITIAL, RETRY_MAX);
        if Instant::now() + backoff >= until {
            break;
        }
        tokio::time::sleep(backoff).await;
    }
    Err(Failed {
        error,
        tried,
        attempts,
        waited: started.elapsed(),
    })
}
