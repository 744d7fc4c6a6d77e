//! How to build the pool: [`Builder`], and the drop-in replacements for `PgPoolOptions`'
//! `connect`, `connect_with` and `connect_lazy_with`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use credswap_core::{RotatingCredentials, Snapshot};
use credswap_core::contract::limits::SessionLimits;
use credswap_core::contract::{Adapter, Rotation};

use super::connect::{self, Login};
use super::driver::SqlxDriver;
use super::drain;
use super::error::Error;
use super::sqlx;
use super::sqlx::pool::PoolConnectionMetadata;
use super::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use super::tag::Tags;

/// The future a pool hook returns (sqlx's `BoxFuture`).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An `after_connect` hook, as `PgPoolOptions::after_connect` takes it.
type ConnectHook = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            PoolConnectionMetadata,
        ) -> BoxFuture<'c, Result<(), sqlx::Error>>
        + Send
        + Sync,
>;

/// A `before_acquire` or `after_release` hook.
pub(crate) type CheckHook = Arc<
    dyn for<'c> Fn(
            &'c mut PgConnection,
            PoolConnectionMetadata,
        ) -> BoxFuture<'c, Result<bool, sqlx::Error>>
        + Send
        + Sync,
>;

/// What the adapter's hooks and watcher share. It holds no pool handle: the pool's hooks hold
/// it.
pub(crate) struct Shared {
    pub(crate) adapter: Adapter,
    pub(crate) login: Login,
    pub(crate) tags: Tags,
    /// Connections the watcher's sweep popped whose return has not been judged yet.
    pub(crate) swept: AtomicUsize,
    /// A login to prove in the slot of the next connection returned (see [`drain::check`]).
    canary: Mutex<Option<Arc<Snapshot>>>,
    /// Whether `canary` holds one (read on every return without taking the lock).
    canary_wanted: AtomicBool,
    /// Whether the pool's connections reach the server itself, not a pooler (asked of the
    /// first connection `drain::end_session` ends, once it gets an answer).
    pub(crate) direct: std::sync::OnceLock<bool>,
}

impl Shared {
    /// Whether a return is one the sweep caused (counts it down).
    pub(crate) fn take_swept(&self) -> bool {
        self.swept
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Asks for the next returned connection to make room for a probe of `login`.
    pub(crate) fn request_canary(&self, login: Arc<Snapshot>) {
        *lock(&self.canary) = Some(login);
        self.canary_wanted.store(true, Ordering::SeqCst);
    }

    /// The login to prove in a returned connection's slot, if one was asked for (taken).
    pub(crate) fn take_canary(&self) -> Option<Arc<Snapshot>> {
        if !self.canary_wanted.load(Ordering::Relaxed) {
            return None;
        }
        let taken = lock(&self.canary).take();
        self.canary_wanted.store(false, Ordering::SeqCst);
        taken
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds a rotating `PgPool`, with room for the application's own pool hooks.
///
/// The connect options give host, port, database, TLS and server options; the username and
/// password come from the provider (any set in the options are overridden). The pool options
/// give sizes and timeouts; the adapter installs its own `after_connect`, `before_acquire` and
/// `after_release` on them, replacing any set there, so set yours here: `after_connect` runs
/// before the adapter's, `before_acquire` and `after_release` after it, for the connections it
/// keeps.
pub struct Builder {
    connect_options: PgConnectOptions,
    pool_options: PgPoolOptions,
    credentials: RotatingCredentials,
    after_connect: Option<ConnectHook>,
    before_acquire: Option<CheckHook>,
    after_release: Option<CheckHook>,
    limits: SessionLimits,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // PgConnectOptions' Debug prints its password: print only what is safe.
        let o = &self.connect_options;
        f.debug_struct("Builder")
            .field("host", &o.get_host())
            .field("port", &o.get_port())
            .field("socket", &o.get_socket())
            .field("database", &o.get_database())
            .field("ssl_mode", &o.get_ssl_mode())
            .field("credentials", &self.credentials)
            .field("pool_options", &self.pool_options)
            .field("after_connect", &self.after_connect.is_some())
            .field("before_acquire", &self.before_acquire.is_some())
            .field("after_release", &self.after_release.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder with sqlx's default pool options (`PgPoolOptions::new()`).
    pub fn new(connect_options: PgConnectOptions, credentials: RotatingCredentials) -> Self {
        Self {
            connect_options,
            pool_options: PgPoolOptions::new(),
            credentials,
            after_connect: None,
            before_acquire: None,
            after_release: None,
            limits: SessionLimits::default(),
        }
    }

    /// Sets the pool options (max and min connections, timeouts, lifetimes, test before
    /// acquire). Hooks set on them are replaced: use [`after_connect`](Self::after_connect),
    /// [`before_acquire`](Self::before_acquire) and [`after_release`](Self::after_release).
    pub fn pool_options(mut self, options: PgPoolOptions) -> Self {
        self.pool_options = options;
        self
    }

    /// Your `PoolOptions::after_connect`, run on each new connection before the adapter
    /// records it.
    pub fn after_connect<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.after_connect = Some(Arc::new(callback));
        self
    }

    /// Your `PoolOptions::before_acquire`, run on idle connections the adapter keeps.
    pub fn before_acquire<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, Result<bool, sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.before_acquire = Some(Arc::new(callback));
        self
    }

    /// Your `PoolOptions::after_release`, run on returned connections the adapter keeps.
    pub fn after_release<F>(mut self, callback: F) -> Self
    where
        F: for<'c> Fn(
                &'c mut PgConnection,
                PoolConnectionMetadata,
            ) -> BoxFuture<'c, Result<bool, sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.after_release = Some(Arc::new(callback));
        self
    }

    /// Retires every connection at this age (less a jitter of up to a tenth), like a stale one:
    /// idle at once, busy when returned, its replacement inside the pool's size. For a database
    /// that ends sessions at a fixed age (Aurora DSQL: one hour), or to let a proxy or a
    /// failover rebalance. Unlike sqlx's `max_lifetime`, it is jittered per connection, so
    /// connections opened together do not all reconnect at once. See
    /// [`credswap_core::contract::limits`].
    #[must_use]
    pub fn max_session_age(mut self, max_age: Duration) -> Self {
        self.limits = self.limits.max_session_age(max_age);
        self
    }

    /// Paces the logins credswap causes to at most `per_second`: a retired connection (stale,
    /// aged, a canary) is let go only at a turn, the adapter's own logins (following checkouts,
    /// probes) wait for theirs, and every login the pool makes takes a turn too. sqlx opens
    /// connections by itself, without a hook (launchbadge/sqlx#3117), and may defer a
    /// retired connection's replacement and then open several at once; with retirements and
    /// logins both taking turns, the logins stay under the cap (at about half of it while
    /// connections are being replaced). A growing pool's first connections are not paced. See
    /// [`credswap_core::contract::limits`].
    #[must_use]
    pub fn max_connects_per_second(mut self, per_second: u32) -> Self {
        self.limits = self.limits.max_connects_per_second(per_second);
        self
    }

    /// Builds the pool without connecting (like `PgPoolOptions::connect_lazy_with`) and starts
    /// its watcher. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<(PgPool, Rotation), Error> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime("its watcher"))?;
        let adapter = Adapter::new(self.credentials);
        // The pool's connections (admitted in `after_connect`) and the probes share its size.
        adapter.limit_sessions(self.pool_options.get_max_connections() as usize);
        adapter.apply_limits(self.limits)?;
        adapter.check_tls(matches!(
            self.connect_options.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ))?;
        adapter.set_driver(Arc::new(SqlxDriver::new(self.connect_options.clone())));
        let (login, first_options) = Login::new(
            self.connect_options,
            &adapter,
            self.pool_options.get_acquire_timeout(),
        );
        let rotation = adapter.rotation();
        let shared = Arc::new(Shared {
            adapter,
            login,
            tags: Tags::new(self.pool_options.get_max_lifetime()),
            swept: AtomicUsize::new(0),
            direct: std::sync::OnceLock::new(),
            canary: Mutex::default(),
            canary_wanted: AtomicBool::new(false),
        });
        let (on_connect, on_acquire, on_release) = (
            Arc::clone(&shared),
            Arc::clone(&shared),
            Arc::clone(&shared),
        );
        let (after_connect, before_acquire, after_release) =
            (self.after_connect, self.before_acquire, self.after_release);
        let pool_options = self
            .pool_options
            .after_connect(move |conn, meta| {
                let shared = Arc::clone(&on_connect);
                let user = after_connect.clone();
                Box::pin(async move {
                    let admitted = match user {
                        Some(user) => user(conn, meta).await,
                        None => Ok(()),
                    }
                    // Last: sqlx stamps the connection's creation right after.
                    .and_then(|()| shared.login.admit(&shared.tags, &shared.adapter));
                    if admitted.is_err() {
                        // sqlx drops a connection refused here without `Terminate` and
                        // connects again in the same place: its session ends first.
                        drain::end_session(&shared, conn).await;
                    }
                    admitted
                })
            })
            .before_acquire(move |conn, meta| {
                drain::check(&on_acquire, before_acquire.as_ref(), false, conn, meta)
            })
            .after_release(move |conn, meta| {
                drain::check(&on_release, after_release.as_ref(), true, conn, meta)
            });
        let pool = {
            // sqlx spawns its maintenance tasks on the current runtime.
            let _entered = runtime.enter();
            pool_options.connect_lazy_with(first_options)
        };
        runtime.spawn(drain::watch(pool.clone(), shared));
        Ok((pool, rotation))
    }

    /// Builds the pool and opens its first connection (like `PgPoolOptions::connect_with`),
    /// following the credential through refused logins as
    /// [`PoolExt::acquire_following`](super::PoolExt::acquire_following) does. On failure the pool is
    /// closed.
    pub async fn connect(self) -> Result<(PgPool, Rotation), Error> {
        let (pool, rotation) = self.build()?;
        let adapter = Adapter::of(&rotation);
        match connect::following(adapter, &pool, |pool| async move { pool.acquire().await }).await
        {
            Ok(conn) => {
                drop(conn);
                Ok((pool, rotation))
            }
            Err(failed) => {
                pool.close().await;
                Err(failed.into_error())
            }
        }
    }
}

/// Creates a rotating pool from a URL and opens its first connection: the replacement for
/// `pool_options.connect(url)`.
///
/// The URL's user and password are ignored (leave them out); the provider's are used. A URL
/// that does not parse is an [`Error::is_config`] whose message never repeats the URL.
pub async fn connect(
    pool_options: PgPoolOptions,
    url: &str,
    credentials: RotatingCredentials,
) -> Result<(PgPool, Rotation), Error> {
    let connect_options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::config("invalid database URL", Some(Box::new(e))))?;
    connect_with(pool_options, connect_options, credentials).await
}

/// Creates a rotating pool and opens its first connection: the replacement for
/// `pool_options.connect_with(connect_options)`.
pub async fn connect_with(
    pool_options: PgPoolOptions,
    connect_options: PgConnectOptions,
    credentials: RotatingCredentials,
) -> Result<(PgPool, Rotation), Error> {
    Builder::new(connect_options, credentials)
        .pool_options(pool_options)
        .connect()
        .await
}

/// Creates a rotating pool without connecting: the replacement for
/// `pool_options.connect_lazy_with(connect_options)`. Must run inside a Tokio runtime.
pub fn connect_lazy_with(
    pool_options: PgPoolOptions,
    connect_options: PgConnectOptions,
    credentials: RotatingCredentials,
) -> Result<(PgPool, Rotation), Error> {
    Builder::new(connect_options, credentials)
        .pool_options(pool_options)
        .build()
}
