//! Shared setup of the bb8 adapter's integration tests.
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use credswap_bb8::{Pool, RotatingConnectionManager, Rotation};
use credswap_core::{BoxError, Policy, RotatingCredentials};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload,
};
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

/// [`postgres`] for the heavy tests (the load scenarios, the drain measurement), which run
/// alone: each reopens eight SCRAM connections per rotation, and in a debug build the client's
/// SCRAM-SHA-256 key derivation alone takes about 100 ms of CPU per connect, on the runtime's
/// worker threads. Beside other tests on a small machine they measure the machine, not the pool.
pub async fn postgres_alone() -> Postgres {
    let turn = Turn::Alone(MACHINE.write().await);
    Postgres {
        server: start().await,
        _turn: turn,
    }
}

async fn start() -> TestPostgres {
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
