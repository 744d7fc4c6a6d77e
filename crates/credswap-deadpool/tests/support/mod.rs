//! Shared setup of the deadpool adapter's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use credswap_core::{BoxError, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload,
};
use deadpool_postgres::{Pool, PoolConfig};
use tokio_postgres::NoTls;

pub use credswap_testkit::harness::{app_policy, postgres, postgres_alone};

pub fn pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
) -> (Pool, credswap_deadpool::Rotation) {
    let mut pool_config = PoolConfig::new(max_size);
    pool_config.timeouts.wait = Some(Duration::from_secs(10));
    pool_config.timeouts.create = Some(Duration::from_secs(10));
    credswap_deadpool::create_pool_from_pg_config(pg.base_config(), pool_config, NoTls, credentials)
        .expect("pool")
}

/// `SELECT current_user` through the pool.
pub struct Select(pub Pool);

#[async_trait::async_trait]
impl Workload for Select {
    async fn request(&self) -> Result<(), BoxError> {
        let client = self.0.get().await?;
        let statement = client.prepare_cached("SELECT current_user").await?;
        let row = client.query_one(&statement, &[]).await?;
        let _user: String = row.get(0);
        Ok(())
    }
}

/// Runs the shared scenario for one strategy with the adapter under test.
pub async fn run_scenario(
    pg: &TestPostgres,
    strategy: Strategy,
    config: ScenarioConfig,
) -> (ScenarioReport, credswap_deadpool::Rotation) {
    let setup = RotationSetup::create(pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
        .await
        .expect("provider");
    let (pool, rotation) = pool(pg, credentials, config.pool_max_size);
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
