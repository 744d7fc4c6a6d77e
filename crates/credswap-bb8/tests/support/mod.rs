//! Shared setup of the bb8 adapter's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use credswap_bb8::{Pool, Rotation, RotatingConnectionManager};
use credswap_core::{BoxError, Policy, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload};
use tokio_postgres::NoTls;

/// Starts an embedded cluster (or uses `CREDSWAP_TEST_ADMIN_URL`); fails loudly with the
/// install hint when PostgreSQL binaries are missing.
pub async fn postgres() -> TestPostgres {
    match TestPostgres::from_env().await {
        Ok(pg) => pg,
        Err(e) => panic!("these tests need a PostgreSQL server: {e}"),
    }
}

/// The refresh schedule the tests and the drill give the application: a 250 ms cache TTL.
pub fn app_policy(strategy: Strategy) -> Policy {
    let builder = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        .backoff(Duration::from_millis(100), Duration::from_secs(2));
    match strategy {
        Strategy::AlternatingUsers => builder.overlap_window(Duration::from_millis(500)),
        Strategy::SingleUser => builder,
    }
    .build()
    .expect("valid policy")
}

/// A pool of `max_size` over the test server, with a 10 s `connection_timeout`.
pub async fn pool(pg: &TestPostgres, credentials: RotatingCredentials, max_size: u32) -> (Pool<NoTls>, Rotation) {
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

/// `SELECT current_user` through the pool.
pub struct Select(pub Pool<NoTls>);

#[async_trait::async_trait]
impl Workload for Select {
    async fn request(&self) -> Result<(), BoxError> {
        let client = self.0.get().await?;
        let row = client.query_one("SELECT current_user", &[]).await?;
        let _user: String = row.get(0);
        Ok(())
    }
}

/// Runs the shared scenario for one strategy with the adapter under test.
pub async fn run_scenario(pg: &TestPostgres, strategy: Strategy, config: ScenarioConfig) -> (ScenarioReport, Rotation) {
    let setup = RotationSetup::create(pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
        .await
        .expect("provider");
    let max_size = u32::try_from(config.pool_max_size).expect("pool size");
    let (pool, rotation) = pool(pg, credentials, max_size).await;
    let report = scenario::run(pg, setup, Arc::new(Select(pool.clone())), &config, Arc::new(Progress::default()))
        .await
        .expect("scenario");
    (report, rotation)
}
