//! The adapter contract (`credswap_testkit::conformance`) for deadpool-postgres.

use std::time::Duration;

use credswap_core::contract::Rotation;
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Session, Whoami};
use deadpool_postgres::{Pool, PoolConfig};
use tokio_postgres::NoTls;

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
        let mut config = PoolConfig::new(max_size);
        config.timeouts.wait = Some(Duration::from_secs(10));
        config.timeouts.create = Some(Duration::from_secs(10));
        Ok(credswap_deadpool::create_pool_from_pg_config(
            pg.base_config(),
            config,
            NoTls,
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

    fn size(pool: &Pool) -> usize {
        pool.status().size
    }
}

credswap_testkit::conformance_suite!(Deadpool);
