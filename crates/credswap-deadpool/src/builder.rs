//! How to build the pool: [`Builder`] and the drop-in constructors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use credswap_core::RotatingCredentials;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::contract::{Adapter, Rotation};
use credswap_tokio_postgres::PgDriver;
use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, PoolConfig, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::connect::{RotatingConnect, deadline};
use crate::tag::Tags;
use crate::{Error, drain};

/// Builds a rotating `deadpool_postgres::Pool` from a `tokio_postgres::Config`.
///
/// The config gives host, port, database, TLS mode and options; the username and password come
/// from the provider at every connect (any set in the config are ignored).
///
/// ```no_run
/// # async fn example(credentials: credswap_core::RotatingCredentials) -> Result<(), Box<dyn std::error::Error>> {
/// use deadpool_postgres::{Hook, HookError};
/// use tokio_postgres::NoTls;
///
/// let config: tokio_postgres::Config = "host=db.internal dbname=app".parse()?;
/// let (pool, rotation) = credswap_deadpool::Builder::new(config, NoTls, credentials)
///     .max_size(16)
///     .post_create(Hook::async_fn(|client, _| {
///         Box::pin(async move {
///             client
///                 .batch_execute("SET search_path = shop")
///                 .await
///                 .map_err(HookError::Backend)
///         })
///     }))
///     .build()?;
/// # Ok(()) }
/// ```
pub struct Builder<T> {
    pg_config: tokio_postgres::Config,
    tls: T,
    credentials: RotatingCredentials,
    manager_config: ManagerConfig,
    pool_config: PoolConfig,
    post_create: Vec<Hook>,
    pre_recycle: Vec<Hook>,
    post_recycle: Vec<Hook>,
    limits: SessionLimits,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug prints its password: print only what is safe.
        f.debug_struct("Builder")
            .field("hosts", &self.pg_config.get_hosts())
            .field("ports", &self.pg_config.get_ports())
            .field("dbname", &self.pg_config.get_dbname())
            .field("credentials", &self.credentials)
            .field("manager_config", &self.manager_config)
            .field("pool_config", &self.pool_config)
            .field("limits", &self.limits)
            .field(
                "hooks",
                &[
                    self.post_create.len(),
                    self.pre_recycle.len(),
                    self.post_recycle.len(),
                ],
            )
            .finish_non_exhaustive()
    }
}

impl<T> Builder<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// A builder with deadpool's default manager and pool configuration.
    pub fn new(
        pg_config: tokio_postgres::Config,
        tls: T,
        credentials: RotatingCredentials,
    ) -> Self {
        Self {
            pg_config,
            tls,
            credentials,
            manager_config: ManagerConfig::default(),
            pool_config: PoolConfig::default(),
            post_create: Vec::new(),
            pre_recycle: Vec::new(),
            post_recycle: Vec::new(),
            limits: SessionLimits::default(),
        }
    }

    /// Sets the manager configuration (the recycling method).
    pub fn manager_config(mut self, config: ManagerConfig) -> Self {
        self.manager_config = config;
        self
    }

    /// Sets the pool configuration (max size, timeouts, queue mode).
    ///
    /// A connect keeps trying a refused login or a transient failure until shortly before the
    /// smaller of `timeouts.create` and `timeouts.wait`, or for the policy's `connect_deadline`
    /// when neither is set.
    pub fn pool_config(mut self, config: PoolConfig) -> Self {
        self.pool_config = config;
        self
    }

    /// Sets the pool's maximum number of connections.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.pool_config.max_size = max_size;
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

    /// Adds a `post_create` hook; it runs after the adapter's own, which tags the connection.
    pub fn post_create(mut self, hook: impl Into<Hook>) -> Self {
        self.post_create.push(hook.into());
        self
    }

    /// Adds a `pre_recycle` hook; it runs after the adapter's own, which refuses a stale
    /// connection, so it only sees current ones.
    pub fn pre_recycle(mut self, hook: impl Into<Hook>) -> Self {
        self.pre_recycle.push(hook.into());
        self
    }

    /// Adds a `post_recycle` hook.
    pub fn post_recycle(mut self, hook: impl Into<Hook>) -> Self {
        self.post_recycle.push(hook.into());
        self
    }

    /// Builds the pool and starts its watcher.
    ///
    /// # Errors
    ///
    /// [`Error::is_no_runtime`] outside a Tokio runtime; [`Error::is_config`] when deadpool
    /// refuses the pool configuration.
    pub fn build(self) -> Result<(Pool, Rotation), Error> {
        self.build_tagged()
            .map(|(pool, rotation, _)| (pool, rotation))
    }

    pub(crate) fn build_tagged(self) -> Result<(Pool, Rotation, Arc<Tags>), Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::no_runtime("its watcher and its connection tasks"))?;
        let adapter = Adapter::new(self.credentials);
        // The pool's connections and the probes share its size.
        adapter.limit_sessions(self.pool_config.max_size);
        adapter.apply_limits(self.limits)?;
        adapter.check_tls(matches!(
            self.pg_config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        ))?;
        let tags = Arc::new(Tags::default());
        let (alive, alive_rx) = oneshot::channel();
        let mut base = self.pg_config;
        // The provider's login is used; keep no password in the manager.
        base.password(Vec::<u8>::new());
        let driver = Arc::new(PgDriver::new(base.clone(), self.tls));
        adapter.set_driver(Arc::clone(&driver));
        let connect = RotatingConnect {
            driver,
            connector: adapter.connector(deadline(&self.pool_config.timeouts)),
            _alive: alive,
        };
        let manager = Manager::from_connect(base, connect, self.manager_config);
        let (on_create, on_recycle) = (Arc::clone(&tags), Arc::clone(&tags));
        let (counters, recycling) = (Arc::clone(adapter.counters()), adapter.clone());
        let mut builder = Pool::builder(manager)
            .config(self.pool_config)
            .runtime(Runtime::Tokio1)
            // First, and synchronous: it takes the tag the connect handed off (see `tag`).
            .post_create(Hook::sync_fn(move |client, _| {
                on_create.attach(client, &counters);
                Ok(())
            }))
            .pre_recycle(Hook::sync_fn(move |client, _| {
                drain::refuse_stale(&on_recycle, &recycling, client)
            }));
        for hook in self.post_create {
            builder = builder.post_create(hook);
        }
        for hook in self.pre_recycle {
            builder = builder.pre_recycle(hook);
        }
        for hook in self.post_recycle {
            builder = builder.post_recycle(hook);
        }
        let pool = builder.build().map_err(|e| {
            Error::config("deadpool refused the pool configuration", Some(Box::new(e)))
        })?;
        runtime.spawn(drain::watch(
            pool.weak(),
            Arc::clone(&tags),
            adapter.clone(),
            alive_rx,
        ));
        Ok((pool, adapter.rotation(), tags))
    }
}

/// Creates a rotating pool from a `deadpool_postgres::Config`: the one-line replacement for
/// `cfg.create_pool(Some(Runtime::Tokio1), tls)`.
///
/// The config's `user` and `password` are ignored (leave them unset); the provider's are used.
///
/// # Errors
///
/// [`Error::is_config`] when the config cannot be turned into a connection or pool
/// configuration; [`Error::is_no_runtime`] outside a Tokio runtime.
pub fn create_pool<T>(
    config: &deadpool_postgres::Config,
    tls: T,
    credentials: RotatingCredentials,
) -> Result<(Pool, Rotation), Error>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let pg_config = config.get_pg_config().map_err(|e| {
        Error::config(
            "the deadpool_postgres::Config is not a valid connection config",
            Some(Box::new(e)),
        )
    })?;
    Builder::new(pg_config, tls, credentials)
        .manager_config(config.get_manager_config())
        .pool_config(config.get_pool_config())
        .build()
}

/// Creates a rotating pool from a `tokio_postgres::Config` and a `PoolConfig`.
///
/// # Errors
///
/// As [`Builder::build`].
pub fn create_pool_from_pg_config<T>(
    pg_config: tokio_postgres::Config,
    pool_config: PoolConfig,
    tls: T,
    credentials: RotatingCredentials,
) -> Result<(Pool, Rotation), Error>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    Builder::new(pg_config, tls, credentials)
        .pool_config(pool_config)
        .build()
}
