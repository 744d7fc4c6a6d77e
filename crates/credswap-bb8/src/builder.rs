//! Building a bb8 pool that follows the credential: [`Builder`], or the drop-in
//! [`RotatingConnectionManager`] for code that builds its own `bb8::Pool`.

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use credswap_core::RotatingCredentials;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::contract::{Adapter, Connector, Rotation};
use credswap_tokio_postgres::PgDriver;

use crate::tag::Shared;
use crate::{Error, RotatingConnection};

/// A bb8 pool of [`RotatingConnection`](crate::RotatingConnection)s: what
/// `bb8::Pool<PostgresConnectionManager<Tls>>` was.
pub type Pool<Tls> = bb8::Pool<RotatingConnectionManager<Tls>>;

/// A connection checked out of a [`Pool`]; derefs to
/// [`RotatingConnection`](crate::RotatingConnection), which derefs to
/// [`tokio_postgres::Client`].
pub type PooledConnection<'a, Tls> = bb8::PooledConnection<'a, RotatingConnectionManager<Tls>>;

/// bb8's default `max_size`.
const BB8_MAX_SIZE: u32 = 10;

/// bb8's default `connection_timeout`, the connect deadline of a pool built by [`Builder`]
/// without [`Builder::connection_timeout`].
const BB8_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`bb8::ManageConnection`] for tokio-postgres that follows a [`RotatingCredentials`]: the
/// rotating replacement for `bb8_postgres::PostgresConnectionManager`.
///
/// The `tokio_postgres::Config` gives hosts, ports, database, TLS mode and options; the username
/// and password come from the provider at every connect (any set in the config are ignored).
/// `Tls` is any connector `bb8-postgres` takes (`NoTls`, `postgres-native-tls`,
/// `tokio-postgres-rustls`...).
///
/// - `connect` opens a connection with the current credential, tagged with its generation; a
///   login refused with SQLSTATE `28P01`/`28000` is reported to the provider and retried once a
///   working credential is available, and transient failures are retried with backoff, up to
///   the connect deadline (see [`Builder`]).
/// - `is_valid` (at checkout) refuses a stale connection without a round trip, otherwise pings
///   with `simple_query("")` as `bb8-postgres` does.
/// - `has_broken` (at return) reports a stale or closed connection, so a busy connection of an
///   older credential is closed when it comes back.
/// - An idle connection of an older credential is closed by its own task as soon as the
///   generation changes (see the crate docs).
///
/// Take the [`rotation`](Self::rotation) handle before moving the manager into the pool.
pub struct RotatingConnectionManager<Tls> {
    /// Hosts, ports, database, options and TLS; no login.
    pub(crate) driver: Arc<PgDriver<Tls>>,
    pub(crate) connector: Connector,
    pub(crate) shared: Arc<Shared>,
}

impl<Tls> RotatingConnectionManager<Tls> {
    /// A manager connecting with `config` (minus its user and password) and the provider's
    /// login. Its connects keep retrying up to the policy's `connect_deadline`; a pool built by
    /// [`Builder`] uses the pool's `connection_timeout` instead.
    pub fn new(config: tokio_postgres::Config, tls: Tls, credentials: RotatingCredentials) -> Self {
        Self::with_deadline(config, tls, credentials, None)
    }

    fn with_deadline(
        mut config: tokio_postgres::Config,
        tls: Tls,
        credentials: RotatingCredentials,
        deadline: Option<Duration>,
    ) -> Self {
        // The provider's login overrides the config's; keep no password in the manager.
        config.password(Vec::<u8>::new());
        let adapter = Adapter::new(credentials);
        Self {
            driver: Arc::new(PgDriver::new(config, tls)),
            shared: Arc::new(Shared::new(adapter.clone())),
            connector: adapter.connector(deadline),
        }
    }

    /// A manager from a connection string (`host=db port=5432 dbname=app` or a `postgres://`
    /// URL), as `PostgresConnectionManager::new_from_stringlike`. Leave user and password out.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when the string does not parse.
    pub fn new_from_stringlike<S>(
        params: S,
        tls: Tls,
        credentials: RotatingCredentials,
    ) -> Result<Self, Error>
    where
        S: ToString,
    {
        let config = parse(&params.to_string())?;
        Ok(Self::new(config, tls, credentials))
    }

    /// The handle with the adapter's counters and the provider. Clone it before
    /// `bb8::Pool::builder().build(manager)` takes the manager.
    pub fn rotation(&self) -> Rotation {
        self.connector.adapter().rotation()
    }

    /// The provider the manager follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        self.connector.adapter().credentials()
    }
}

fn parse(params: &str) -> Result<tokio_postgres::Config, Error> {
    tokio_postgres::Config::from_str(params)
        .map_err(|e| Error::config("the connection string does not parse", Some(Box::new(e))))
}

impl<Tls> fmt::Debug for RotatingConnectionManager<Tls> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug prints its password: print only what is safe.
        let config = self.driver.config();
        f.debug_struct("RotatingConnectionManager")
            .field("hosts", &config.get_hosts())
            .field("ports", &config.get_ports())
            .field("dbname", &config.get_dbname())
            .field("connector", &self.connector)
            .field("rotation", &self.rotation())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pool`] that follows a [`RotatingCredentials`], and its [`Rotation`] handle.
///
/// ```no_run
/// # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tokio_postgres::NoTls;
///
/// let config: tokio_postgres::Config = "host=db.internal dbname=app".parse()?;
/// let (pool, rotation) = credswap_bb8::Builder::new(config, NoTls, credentials)
///     .max_size(16)
///     .connection_timeout(Duration::from_secs(5))
///     .build()
///     .await?;
/// let conn = pool.get().await?;
/// # drop(conn); drop(rotation); Ok(()) }
/// ```
///
/// The pool's `connection_timeout` is also the connect deadline: how long a connect keeps
/// retrying a refused login or a transient failure before it fails. Set it with
/// [`connection_timeout`](Self::connection_timeout): a timeout set on a bb8 builder given to
/// [`pool_builder`](Self::pool_builder) cannot be read back, so with a bb8 builder,
/// `connection_timeout` is required ([`build`](Self::build) says so) and overrides the bb8
/// builder's.
pub struct Builder<Tls> {
    config: tokio_postgres::Config,
    tls: Tls,
    credentials: RotatingCredentials,
    /// The application's `bb8::Builder<RotatingConnectionManager<Tls>>`, if it gave one: held
    /// without naming its type so that this struct needs no bound on `Tls`.
    pool: Option<Box<dyn Any + Send>>,
    connection_timeout: Option<Duration>,
    /// The pool's `max_size` as far as this builder knows it (`None` after `pool_builder`).
    max_size: Option<u32>,
    limits: SessionLimits,
}

impl<Tls> Builder<Tls>
where
    RotatingConnectionManager<Tls>:
        bb8::ManageConnection<Connection = RotatingConnection, Error = Error>,
{
    /// A builder for a pool on `config` (hosts, port, database, options; no login) following
    /// `credentials`, with bb8's defaults.
    pub fn new(config: tokio_postgres::Config, tls: Tls, credentials: RotatingCredentials) -> Self {
        Self {
            config,
            tls,
            credentials,
            pool: None,
            connection_timeout: None,
            max_size: Some(BB8_MAX_SIZE),
            limits: SessionLimits::default(),
        }
    }

    /// A builder from a connection string (`host=db port=5432 dbname=app` or a `postgres://`
    /// URL). Leave user and password out.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when the string does not parse.
    pub fn new_from_stringlike(
        params: impl ToString,
        tls: Tls,
        credentials: RotatingCredentials,
    ) -> Result<Self, Error> {
        Ok(Self::new(parse(&params.to_string())?, tls, credentials))
    }

    /// Replaces the bb8 builder (queue strategy, `min_idle`, error sink...). Call
    /// [`connection_timeout`](Self::connection_timeout) too (required with a bb8 builder), and
    /// [`max_size`](Self::max_size) after it or set `max_size` on it directly.
    #[must_use]
    pub fn pool_builder(mut self, pool: bb8::Builder<RotatingConnectionManager<Tls>>) -> Self
    where
        Tls: Send + 'static,
    {
        self.pool = Some(Box::new(pool));
        self.max_size = None;
        self
    }

    /// The application's bb8 builder, or bb8's default one.
    fn take_pool(&mut self) -> bb8::Builder<RotatingConnectionManager<Tls>>
    where
        Tls: 'static,
    {
        self.pool
            .take()
            .and_then(|pool| pool.downcast().ok())
            .map_or_else(bb8::Pool::builder, |pool| *pool)
    }

    /// The most connections the pool opens (bb8's `max_size`).
    ///
    /// # Panics
    ///
    /// When `max_size` is 0, as bb8 does.
    #[must_use]
    pub fn max_size(mut self, max_size: u32) -> Self {
        assert!(max_size > 0, "max_size must be greater than zero!");
        if self.pool.is_some() {
            let pool = self.take_pool().max_size(max_size);
            self.pool = Some(Box::new(pool));
        }
        self.max_size = Some(max_size);
        self
    }

    /// How long `Pool::get` waits for a connection (bb8's `connection_timeout`), and how long a
    /// connect keeps retrying.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = Some(timeout);
        self
    }

    /// Retires every connection at this age (less a jitter of up to a tenth), like a stale one:
    /// idle at once, busy when returned, its replacement inside the pool's size. For a database
    /// that ends sessions at a fixed age (Aurora DSQL: one hour), or to let a proxy or a
    /// failover rebalance. See [`credswap_core::contract::limits`].
    #[must_use]
    pub fn max_session_age(mut self, max_age: Duration) -> Self {
        self.limits = self.limits.max_session_age(max_age);
        self
    }

    /// Paces the pool's logins to at most `per_second`, spaced evenly: a rotation's reconnects
    /// are spread instead of burst (RDS IAM authentication throttles new connections; DSQL has
    /// a connection rate quota). See [`credswap_core::contract::limits`].
    #[must_use]
    pub fn max_connects_per_second(mut self, per_second: u32) -> Self {
        self.limits = self.limits.max_connects_per_second(per_second);
        self
    }

    /// Builds the pool (opening `min_idle` connections first, if set) and its handle.
    ///
    /// # Errors
    ///
    /// [`Error::is_no_runtime`] outside a Tokio runtime; [`Error::is_config`] when a bb8
    /// builder was given without [`connection_timeout`](Self::connection_timeout); the connect
    /// error when a `min_idle` connection cannot be opened.
    pub async fn build(mut self) -> Result<(Pool<Tls>, Rotation), Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::no_runtime("a task per connection"));
        }
        if self.pool.is_some() && self.connection_timeout.is_none() {
            return Err(Error::config(
                "a bb8 builder was given with `pool_builder`: set the connection timeout with                  `credswap_bb8::Builder::connection_timeout` (the connect deadline follows it,                  and one set on the bb8 builder cannot be read back)",
                None,
            ));
        }
        let pool = match self.max_size {
            Some(max_size) => self.take_pool().max_size(max_size),
            None => self.take_pool(),
        };
        let always_tls = matches!(
            self.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let timeout = self.connection_timeout.unwrap_or(BB8_CONNECTION_TIMEOUT);
        let manager = RotatingConnectionManager::with_deadline(
            self.config,
            self.tls,
            self.credentials,
            Some(timeout),
        );
        let rotation = manager.rotation();
        manager.shared.adapter().apply_limits(self.limits)?;
        manager.shared.adapter().check_tls(always_tls)?;
        if let Some(max_size) = self.max_size {
            // The pool's connections and the probes share its size.
            manager.shared.adapter().limit_sessions(max_size as usize);
        }
        let pool = pool.connection_timeout(timeout).build(manager).await?;
        Ok((pool, rotation))
    }
}

impl<Tls> fmt::Debug for Builder<Tls> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("credentials", &self.credentials)
            .field("pool_builder", &self.pool.is_some())
            .field("max_size", &self.max_size)
            .field("connection_timeout", &self.connection_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use credswap_core::{Credential, MemorySource, Policy};
    use tokio_postgres::NoTls;

    use super::*;

    #[tokio::test]
    async fn config_errors_and_debug_print_no_secret() {
        let secret = "Pa55-in-debug-would-be-a-bug";
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new("app", secret)),
            Policy::default(),
        )
        .await
        .unwrap();
        let bad = RotatingConnectionManager::new_from_stringlike(
            format!("host=x password={secret} port=nope"),
            NoTls,
            credentials.clone(),
        )
        .unwrap_err();
        assert!(bad.is_config() && !bad.is_connect(), "{bad}");
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .user("config-user")
            .password(secret);
        let manager = RotatingConnectionManager::new(config.clone(), NoTls, credentials.clone());
        let builder = Builder::new(config, NoTls, credentials);
        let pool = bb8::Pool::builder().build_unchecked(manager);
        let mut chain = bad.to_string();
        let mut source = std::error::Error::source(&bad);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(chain.contains("port"), "{chain}");
        for text in [
            chain,
            format!("{bad:?}"),
            format!("{pool:?}"),
            format!("{builder:?}"),
        ] {
            assert!(!text.contains(secret), "secret printed: {text}");
        }
    }
}
