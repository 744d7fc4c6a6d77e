use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use credswap_core::{BoxError, Credential, RotatingCredentials, Validate};
use secrecy::ExposeSecret;

use super::error::Error;
use super::ext::RotatingPoolExt;
use super::hooks::{self, BoxFuture, UserHooks};
use super::sqlx;
use super::sqlx::pool::PoolConnectionMetadata;
use super::sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use super::sqlx::{Connection, Executor};
use super::state::{Registration, Rotation, Shared};
use super::watcher;

/// Builds a rotating `PgPool`, with room for the application's own pool hooks.
///
/// The connect options give host, port, database, TLS and server options; the username and
/// password come from the provider (any set in the options are overridden). The pool options
/// give sizes and timeouts; the adapter installs its own `after_connect`, `before_acquire` and
/// `after_release` on them, replacing any set there, so set yours here: they run after the
/// adapter's (`before_acquire` and `after_release` only for connections it keeps).
pub struct Builder {
    connect_options: PgConnectOptions,
    pool_options: PgPoolOptions,
    credentials: RotatingCredentials,
    hooks: UserHooks,
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
            .field("after_connect", &self.hooks.after_connect.is_some())
            .field("before_acquire", &self.hooks.before_acquire.is_some())
            .field("after_release", &self.hooks.after_release.is_some())
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
            hooks: UserHooks::default(),
        }
    }

    /// Sets the pool options (max and min connections, timeouts, lifetimes, test before
    /// acquire). Hooks set on them are replaced: use [`after_connect`](Self::after_connect),
    /// [`before_acquire`](Self::before_acquire) and [`after_release`](Self::after_release).
    pub fn pool_options(mut self, options: PgPoolOptions) -> Self {
        self.pool_options = options;
        self
    }

    /// Your `PoolOptions::after_connect`, run on each new connection after the adapter has
    /// tagged it.
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
        self.hooks.after_connect = Some(Arc::new(callback));
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
        self.hooks.before_acquire = Some(Arc::new(callback));
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
        self.hooks.after_release = Some(Arc::new(callback));
        self
    }

    /// Builds the pool without connecting (like `PgPoolOptions::connect_lazy_with`) and starts
    /// its watcher. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<(PgPool, Rotation), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
        let (shared, first_options) = Shared::new(self.credentials, self.connect_options);
        let shared = Arc::new(shared);
        let pool_options = hooks::install(self.pool_options, &shared, self.hooks);
        let pool = {
            // sqlx spawns its maintenance tasks on the current runtime.
            let _entered = runtime.enter();
            pool_options.connect_lazy_with(first_options)
        };
        let registration = Registration::new(&pool, &shared);
        runtime.spawn(watcher::run(
            pool.clone(),
            Arc::clone(&shared),
            registration,
        ));
        Ok((pool, Rotation { shared }))
    }

    /// Builds the pool and opens its first connection (like `PgPoolOptions::connect_with`),
    /// with the authentication-failure retry of
    /// [`RotatingPoolExt::acquire_following`]. On failure the pool is closed.
    pub async fn connect(self) -> Result<(PgPool, Rotation), Error> {
        let (pool, rotation) = self.build()?;
        match pool.acquire_following().await {
            Ok(conn) => {
                drop(conn);
                Ok((pool, rotation))
            }
            Err(e) => {
                pool.close().await;
                Err(Error::connect(e))
            }
        }
    }
}

/// Creates a rotating pool from a URL and opens its first connection: the replacement for
/// `pool_options.connect(url)`.
///
/// The URL's user and password are ignored (leave them out); the provider's are used. A URL
/// that does not parse is an [`Error::is_url`] whose message never repeats the URL.
pub async fn connect(
    pool_options: PgPoolOptions,
    url: &str,
    credentials: RotatingCredentials,
) -> Result<(PgPool, Rotation), Error> {
    let connect_options = PgConnectOptions::from_str(url).map_err(Error::url)?;
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

/// A validate-before-swap check that opens one real connection with the candidate credential
/// and runs `SELECT 1`; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
///
/// The connection is opened outside any pool, and closed at once.
pub fn connection_validator(connect_options: PgConnectOptions) -> impl Validate {
    ConnectionValidator { connect_options }
}

struct ConnectionValidator {
    connect_options: PgConnectOptions,
}

#[async_trait::async_trait]
impl Validate for ConnectionValidator {
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        let options = self
            .connect_options
            .clone()
            .username(credential.username())
            .password(credential.password().expose_secret());
        let mut conn = PgConnection::connect_with(&options).await?;
        drop(options);
        conn.execute("SELECT 1").await?;
        conn.close().await?;
        Ok(())
    }
}
