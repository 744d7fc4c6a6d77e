//! The adapter contract (the test kit's conformance suite) for the bb8 adapter.

use std::time::Duration;

use async_trait::async_trait;
use credswap_bb8::{Builder, RotatingConnectionManager, Rotation};
use credswap_core::{BoxError, RotatingCredentials, Validate};
use credswap_testkit::TestPostgres;
use credswap_testkit::conformance::{Adapter, Session, Whoami};
use tokio_postgres::NoTls;

struct Bb8;

/// A checked-out connection; dropping it returns it to the pool.
struct Checkout(bb8::PooledConnection<'static, RotatingConnectionManager<NoTls>>);

#[async_trait]
impl Session for Checkout {
    async fn execute(&mut self, sql: &str) -> Result<(), BoxError> {
        Ok(self.0.batch_execute(sql).await?)
    }

    async fn whoami(&mut self) -> Result<Whoami, BoxError> {
        let row = self
            .0
            .query_one("SELECT current_user::text, pg_backend_pid()", &[])
            .await?;
        Ok(Whoami {
            user: row.get(0),
            pid: row.get(1),
        })
    }
}

#[async_trait]
impl Adapter for Bb8 {
    type Pool = bb8::Pool<RotatingConnectionManager<NoTls>>;

    const NAME: &'static str = "bb8";

    async fn build(
        pg: &TestPostgres,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<(Self::Pool, Rotation), BoxError> {
        Ok(Builder::new(pg.base_config(), NoTls, credentials)
            .max_size(u32::try_from(max_size)?)
            .connection_timeout(Duration::from_secs(10))
            .build()
            .await?)
    }

    async fn checkout(pool: &Self::Pool) -> Result<Box<dyn Session>, BoxError> {
        Ok(Box::new(Checkout(pool.get_owned().await?)))
    }

    fn validator(pg: &TestPostgres) -> Box<dyn Validate> {
        Box::new(credswap_bb8::connection_validator(pg.base_config(), NoTls))
    }

    fn size(pool: &Self::Pool) -> usize {
        pool.state().connections as usize
    }
}

credswap_testkit::conformance_suite!(Bb8);
