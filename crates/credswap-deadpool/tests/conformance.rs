//! The adapter contract (`credswap_testkit::conformance`) for deadpool-postgres.

use std::time::Duration;

use credswap_core::contract::Rotation;
use credswap_core::contract::limits::SessionLimits;
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Session, TlsConnect, Whoami};
use deadpool_postgres::{Pool, PoolConfig};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

struct Deadpool;

/// A checked-out `deadpool_postgres::Client`.
struct Client(deadpool_postgres::Client);

#[async_trait::async_trait]
impl Session for Client {
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError> {
        Ok(self.0.batch_execute(sql).await?)
    }

    async fn whoami(&mut self) -> Result<Whoami, BoxError> {
        // Through the statement cache, as applications of deadpool-postgres query.
        let statement = self
            .0
            .prepare_cached("SELECT current_user::text, pg_backend_pid()")
            .await?;
        let row = self.0.query_one(&statement, &[]).await?;
        Ok(Whoami {
            user: row.get(0),
            pid: row.get(1),
        })
    }
}

#[async_trait::async_trait]
impl Adapter for Deadpool {
    type Pool = Pool;

    const NAME: &'static str = "deadpool";

    async fn build(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Pool, Rotation), BoxError> {
        Ok(credswap_deadpool::create_pool_from_pg_config(
            pg.base_config(),
            pool_config(max_size),
            NoTls,
            credentials,
        )?)
    }

    async fn build_limited(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
        limits: SessionLimits,
    ) -> Result<(Pool, Rotation), BoxError> {
        let mut builder = credswap_deadpool::Builder::new(pg.base_config(), NoTls, credentials)
            .pool_config(pool_config(max_size));
        if let Some(age) = limits.session_age() {
            builder = builder.max_session_age(age);
        }
        if let Some(pace) = limits.connects_per_second() {
            builder = builder.max_connects_per_second(pace);
        }
        Ok(builder.build()?)
    }

    async fn build_tls(
        pg: &TestPostgres,
        tls: &TlsConnect,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Pool, Rotation), BoxError> {
        Ok(credswap_deadpool::create_pool_from_pg_config(
            tls.tokio_postgres_config(pg),
            pool_config(max_size),
            MakeRustlsConnect::new(tls.client_config()),
            credentials,
        )?)
    }

    async fn checkout(pool: &Pool) -> Result<Box<dyn Session>, BoxError> {
        Ok(Box::new(Client(pool.get().await?)))
    }

    fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
        Box::new(credswap_deadpool::connection_validator(
            pg.base_config(),
            NoTls,
        ))
    }

    fn validator_tls(pg: &TestPostgres, tls: &TlsConnect) -> Box<dyn Validate> {
        Box::new(credswap_deadpool::connection_validator(
            tls.tokio_postgres_config(pg),
            MakeRustlsConnect::new(tls.client_config()),
        ))
    }

    fn size(pool: &Pool) -> usize {
        pool.status().size
    }

    fn build_outside_runtime(credentials: RotatingCredentials) -> Result<(), BoxError> {
        credswap_deadpool::Builder::new(tokio_postgres::Config::new(), NoTls, credentials)
            .build()?;
        Ok(())
    }

    async fn printed(
        credentials: RotatingCredentials,
        secret: &str,
    ) -> Result<Vec<(&'static str, String)>, BoxError> {
        let config = credswap_testkit::harness::config_with_password(secret);
        let builder = credswap_deadpool::Builder::new(config, NoTls, credentials);
        let builder_debug = format!("{builder:?}");
        let (pool, rotation) = builder.build()?;
        Ok(vec![
            ("the builder", builder_debug),
            ("the pool", format!("{pool:?}")),
            ("the Rotation", format!("{rotation:?}")),
        ])
    }
}

fn pool_config(max_size: usize) -> PoolConfig {
    let mut config = PoolConfig::new(max_size);
    config.timeouts.wait = Some(Duration::from_secs(10));
    config.timeouts.create = Some(Duration::from_secs(10));
    config
}

credswap_testkit::conformance_suite!(Deadpool);
