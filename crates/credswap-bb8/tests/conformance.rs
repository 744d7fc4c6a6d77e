//! The adapter contract (the test kit's conformance suite) for the bb8 adapter.

use std::time::Duration;

use async_trait::async_trait;
use credswap_bb8::{Builder, RotatingConnection, RotatingConnectionManager, Rotation};
use credswap_core::contract::limits::SessionLimits;
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Session, TlsConnect, Whoami, poll_once};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

struct Bb8;

/// A bb8 pool: the suite's plain pools connect without TLS, the TLS cases' pools with rustls
/// (bb8's pool type names its connector).
#[derive(Clone)]
enum Pool {
    Plain(bb8::Pool<RotatingConnectionManager<NoTls>>),
    Tls(bb8::Pool<RotatingConnectionManager<MakeRustlsConnect>>),
}

/// Builds a pool of at most `max_size` connections with a 10 s connection timeout.
async fn build<Tls>(
    config: tokio_postgres::Config,
    tls: Tls,
    credentials: RotatingCredentials,
    max_size: usize,
) -> Result<(bb8::Pool<RotatingConnectionManager<Tls>>, Rotation), BoxError>
where
    RotatingConnectionManager<Tls>:
        bb8::ManageConnection<Connection = RotatingConnection, Error = credswap_bb8::Error>,
{
    build_limited(config, tls, credentials, max_size, SessionLimits::default()).await
}

async fn build_limited<Tls>(
    config: tokio_postgres::Config,
    tls: Tls,
    credentials: RotatingCredentials,
    max_size: usize,
    limits: SessionLimits,
) -> Result<(bb8::Pool<RotatingConnectionManager<Tls>>, Rotation), BoxError>
where
    RotatingConnectionManager<Tls>:
        bb8::ManageConnection<Connection = RotatingConnection, Error = credswap_bb8::Error>,
{
    let mut builder = Builder::new(config, tls, credentials)
        .max_size(u32::try_from(max_size)?)
        .connection_timeout(Duration::from_secs(10));
    if let Some(age) = limits.session_age() {
        builder = builder.max_session_age(age);
    }
    if let Some(pace) = limits.connects_per_second() {
        builder = builder.max_connects_per_second(pace);
    }
    Ok(builder.build().await?)
}

/// A checked-out connection; dropping it returns it to the pool.
struct Checkout<Tls>(bb8::PooledConnection<'static, RotatingConnectionManager<Tls>>)
where
    RotatingConnectionManager<Tls>: bb8::ManageConnection;

/// A connection of the pool's manager outside the pool (`Pool::dedicated_connection`).
struct Dedicated(RotatingConnection);

async fn execute(client: &tokio_postgres::Client, sql: &str) -> Result<(), BoxError> {
    Ok(client.batch_execute(sql).await?)
}

async fn whoami(client: &tokio_postgres::Client) -> Result<Whoami, BoxError> {
    let row = client
        .query_one("SELECT current_user::text, pg_backend_pid()", &[])
        .await?;
    Ok(Whoami {
        user: row.get(0),
        pid: row.get(1),
    })
}

#[async_trait]
impl<Tls> Session for Checkout<Tls>
where
    Tls: Send + Sync + 'static,
    RotatingConnectionManager<Tls>: bb8::ManageConnection<Connection = RotatingConnection>,
{
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError> {
        execute(&self.0, sql).await
    }

    async fn whoami(&mut self) -> Result<Whoami, BoxError> {
        whoami(&self.0).await
    }
}

#[async_trait]
impl Session for Dedicated {
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError> {
        execute(&self.0, sql).await
    }

    async fn whoami(&mut self) -> Result<Whoami, BoxError> {
        whoami(&self.0).await
    }
}

#[async_trait]
impl Adapter for Bb8 {
    type Pool = Pool;

    const NAME: &'static str = "bb8";

    async fn build(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Pool, Rotation), BoxError> {
        let (pool, rotation) = build(pg.base_config(), NoTls, credentials, max_size).await?;
        Ok((Pool::Plain(pool), rotation))
    }

    async fn build_limited(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
        limits: SessionLimits,
    ) -> Result<(Pool, Rotation), BoxError> {
        let (pool, rotation) =
            build_limited(pg.base_config(), NoTls, credentials, max_size, limits).await?;
        Ok((Pool::Plain(pool), rotation))
    }

    async fn build_tls(
        pg: &TestPostgres,
        tls: &TlsConnect,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Pool, Rotation), BoxError> {
        let connector = MakeRustlsConnect::new(tls.client_config());
        let (pool, rotation) = build(
            tls.tokio_postgres_config(pg),
            connector,
            credentials,
            max_size,
        )
        .await?;
        Ok((Pool::Tls(pool), rotation))
    }

    async fn checkout(pool: &Pool) -> Result<Box<dyn Session>, BoxError> {
        Ok(match pool {
            Pool::Plain(pool) => Box::new(Checkout(pool.get_owned().await?)),
            Pool::Tls(pool) => Box::new(Checkout(pool.get_owned().await?)),
        })
    }

    /// bb8's `get` reports only its own timeout: the manager's connect, as
    /// `Pool::dedicated_connection` runs it, returns the connect's error.
    async fn connect(pool: &Pool) -> Result<Box<dyn Session>, BoxError> {
        Ok(Box::new(Dedicated(match pool {
            Pool::Plain(pool) => pool.dedicated_connection().await?,
            Pool::Tls(pool) => pool.dedicated_connection().await?,
        })))
    }

    fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
        Box::new(credswap_bb8::connection_validator(pg.base_config(), NoTls))
    }

    fn validator_tls(pg: &TestPostgres, tls: &TlsConnect) -> Box<dyn Validate> {
        Box::new(credswap_bb8::connection_validator(
            tls.tokio_postgres_config(pg),
            MakeRustlsConnect::new(tls.client_config()),
        ))
    }

    fn size(pool: &Pool) -> usize {
        match pool {
            Pool::Plain(pool) => pool.state().connections as usize,
            Pool::Tls(pool) => pool.state().connections as usize,
        }
    }

    fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError> {
        let built = Builder::new(tokio_postgres::Config::new(), NoTls, credentials).build();
        match poll_once(built) {
            Some(built) => built.map(drop).map_err(Into::into),
            None => {
                Err("Builder::build waited for a runtime instead of saying it needs one".into())
            }
        }
    }

    async fn printed(
        credentials: RotatingCredentials,
        secret: &str,
    ) -> Result<Vec<(&'static str, String)>, BoxError> {
        let config = credswap_testkit::harness::config_with_password(secret);
        let builder = Builder::new(config, NoTls, credentials).max_size(1);
        let builder_debug = format!("{builder:?}");
        // No `min_idle`: building connects nothing.
        let (pool, rotation) = builder.build().await?;
        Ok(vec![
            ("the builder", builder_debug),
            ("the pool", format!("{pool:?}")),
            ("the Rotation", format!("{rotation:?}")),
        ])
    }
}

credswap_testkit::conformance_suite!(Bb8);
