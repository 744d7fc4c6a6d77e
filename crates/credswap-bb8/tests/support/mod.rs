//! Shared setup of the bb8 adapter's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use credswap_bb8::{Pool, RotatingConnectionManager, Rotation};
use credswap_core::{BoxError, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload,
};
use tokio_postgres::NoTls;

pub use credswap_testkit::harness::{app_policy, postgres, postgres_alone};

/// A pool of `max_size` over the test server, with a 10 s `connection_timeout`.
pub async fn pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: u32,
) -> (Pool<NoTls>, Rotation) {
    let builder = bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(10));
    pool_with(pg, credentials, builder).await
}

/// A pool from a bb8 builder.
pub async fn pool_with(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    builder: bb8::Builder<RotatingConnectionManager<NoTls>>,
) -> (Pool<NoTls>, Rotation) {
    let manager = RotatingConnectionManager::new(pg.base_config(), NoTls, credentials);
    let rotation = manager.rotation();
    let pool = builder.build(manager).await.expect("pool");
    (pool, rotation)
}

/// `SELECT current_user` through the pool, in one round trip (the simple query protocol; a
/// tokio-postgres `Client` has no statement cache).
pub struct Select(pub Pool<NoTls>);

#[async_trait::async_trait]
impl Workload for Select {
    async fn request(&self) -> Result<(), BoxError> {
        let client = self.0.get().await?;
        let messages = client.simple_query("SELECT current_user").await?;
        let user = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        });
        if user.is_none() {
            return Err("SELECT current_user returned no row".into());
        }
        Ok(())
    }
}

/// Runs the shared scenario for one strategy with the adapter under test.
pub async fn run_scenario(
    pg: &TestPostgres,
    strategy: Strategy,
    config: ScenarioConfig,
) -> (ScenarioReport, Rotation) {
    let setup = RotationSetup::create(pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
        .await
        .expect("provider");
    let max_size = u32::try_from(config.pool_max_size).expect("pool size");
    let (pool, rotation) = pool(pg, credentials, max_size).await;
    let report = scenario::run(
        pg,
        setup,
        Arc::new(Select(pool.clone())),
        &config,
        Arc::new(Progress::default()),
    )
    .await
    .expect("scenario");
    (report, rotation)
}
