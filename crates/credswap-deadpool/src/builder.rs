use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use credswap_core::{BoxError, Credential, RotatingCredentials, Validate};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, PoolConfig, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::connect::{HANDOFF, RotatingConnect, open_with};
use crate::state::{Rotation, State};
use crate::{Error, watcher};

/// Builds a rotating `deadpool_postgres::Pool` from a `tokio_postgres::Config`.
///
/// The config gives host, port, database, TLS mode and options; the username and password come
/// from the provider at every connect (any set in the config are overridden).
pub struct Builder<T> {
    pg_config: tokio_postgres::Config,
    tls: T,
    credentials: RotatingCredentials,
    manager_config: ManagerConfig,
    pool_config: PoolConfig,
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
        }
    }

    /// Sets the manager configuration (the recycling method).
    pub fn manager_config(mut self, config: ManagerConfig) -> Self {
        self.manager_config = config;
        self
    }

    /// Sets the pool configuration (max size, timeouts, queue mode).
    pub fn pool_config(mut self, config: PoolConfig) -> Self {
        self.pool_config = config;
        self
    }

    /// Sets the pool's maximum number of connections.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.pool_config.max_size = max_size;
        self
    }

    /// Builds the pool and starts its watcher. Must run inside a Tokio runtime.
    pub fn build(self) -> Result<(Pool, Rotation), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::no_runtime())?;
        let state = Arc::new(State::new(self.credentials));
        let (alive, alive_rx) = oneshot::channel();
        let connect = RotatingConnect {
            tls: self.tls,
            state: Arc::clone(&state),
            _alive: alive,
        };
        let mut pg_config = self.pg_config;
        // The provider's login overrides the config's; keep no password in the manager.
        pg_config.password(Vec::<u8>::new());
        let manager = Manager::from_connect(pg_config, connect, self.manager_config);
        let on_create = Arc::clone(&state);
        let on_recycle = Arc::clone(&state);
        let pool = Pool::builder(manager)
            .config(self.pool_config)
            .runtime(Runtime::Tokio1)
            .post_create(Hook::sync_fn(move |client, _| {
                let generation = HANDOFF.with(|slot| slot.take());
                on_create.tag(client, generation);
                Ok(())
            }))
            .pre_recycle(Hook::sync_fn(move |client, metrics| {
                let current = on_recycle.credentials.load();
                if on_recycle.is_stale(client, metrics, &current) {
                    on_recycle.stale_closed.fetch_add(1, Ordering::Relaxed);
                    return Err(HookError::Message(
                        "connection authenticated with a stale credential".into(),
                    ));
                }
                Ok(())
            }))
            .build()
            .map_err(Error::build)?;
        runtime.spawn(watcher::run(pool.weak(), Arc::clone(&state), alive_rx));
        Ok((pool, Rotation { state }))
    }
}

/// Creates a rotating pool from a `deadpool_postgres::Config`: the one-line replacement for
/// `cfg.create_pool(Some(Runtime::Tokio1), tls)`.
///
/// The config's `user` and `password` are ignored (leave them unset); the provider's are used.
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
    let pg_config = config.get_pg_config().map_err(Error::config)?;
    Builder::new(pg_config, tls, credentials)
        .manager_config(config.get_manager_config())
        .pool_config(config.get_pool_config())
        .build()
}

/// Creates a rotating pool from a `tokio_postgres::Config` and a `PoolConfig`.
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

/// A validate-before-swap check that opens one real connection with the candidate credential
/// and runs `SELECT 1`; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
pub fn connection_validator<T>(pg_config: tokio_postgres::Config, tls: T) -> impl Validate
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    ConnectionValidator { pg_config, tls }
}

struct ConnectionValidator<T> {
    pg_config: tokio_postgres::Config,
    tls: T,
}

#[async_trait::async_trait]
impl<T> Validate for ConnectionValidator<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        let (client, task) = open_with(&self.pg_config, credential, self.tls.clone()).await?;
        client.simple_query("SELECT 1").await?;
        drop(client);
        let _ = task.await;
        Ok(())
    }
}
