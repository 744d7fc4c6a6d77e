//! Shared setup of the deadpool adapter's integration tests.
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use credswap_core::{BoxError, Policy, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload,
};
use deadpool_postgres::{Pool, PoolConfig};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_postgres::NoTls;

/// A test's PostgreSQL server, and its turn on the machine (see [`postgres_alone`]).
pub struct Postgres {
    server: TestPostgres,
    _turn: Turn,
}

enum Turn {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

impl Deref for Postgres {
    type Target = TestPostgres;

    fn deref(&self) -> &TestPostgres {
        &self.server
    }
}

static MACHINE: RwLock<()> = RwLock::const_new(());

async fn start() -> TestPostgres {
    match TestPostgres::from_env().await {
        Ok(pg) => pg,
        Err(e) => panic!("these tests need a PostgreSQL server: {e}"),
    }
}

/// Starts an embedded cluster (or uses `CREDSWAP_TEST_ADMIN_URL`); fails loudly with the
/// install hint when PostgreSQL binaries are missing. Runs beside other light tests, never
/// beside a heavy one.
pub async fn postgres() -> Postgres {
    let turn = Turn::Shared(MACHINE.read().await);
    Postgres {
        server: start().await,
        _turn: turn,
    }
}

/// [`postgres`] for the load scenarios, which run alone: each reopens eight SCRAM connections
/// per rotation under 32 workers; beside other tests on a 2-core machine they would measure the
/// machine, not the pool.
pub async fn postgres_alone() -> Postgres {
    let turn = Turn::Alone(MACHINE.write().await);
    Postgres {
        server: start().await,
        _turn: turn,
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
