//! What the adapters' integration tests share: a server per test with a fair turn on the
//! machine, and the provider policy the application side uses in the scenarios.

use std::ops::Deref;
use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::scenario::{ScenarioConfig, ScenarioReport, Strategy};
use crate::{TestPostgres, random_password, unique_name};

/// A test's PostgreSQL server and its turn on the machine; derefs to [`TestPostgres`].
///
/// Light tests share the machine; load scenarios ([`postgres_alone`]) run alone. Each reopens
/// eight SCRAM connections per rotation under 32 workers: beside other tests on a small machine
/// they would measure the machine, not the pool.
#[derive(Debug)]
pub struct TestServer {
    server: TestPostgres,
    _turn: Turn,
}

#[derive(Debug)]
enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl TestServer {
    /// The same server with a fresh [`TestPgBouncer`](crate::TestPgBouncer) in front: pools
    /// connect through it, admin work still goes straight to the server.
    ///
    /// # Panics
    ///
    /// When PgBouncer cannot be started, with the error that says how to get it.
    pub async fn through_pgbouncer(self) -> TestServer {
        let TestServer { server, _turn } = self;
        match server.through_pgbouncer().await {
            Ok(server) => TestServer { server, _turn },
            Err(e) => panic!("these tests need PgBouncer: {e}"),
        }
    }
}

impl std::ops::DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut TestPostgres {
        &mut self.server
    }
}

impl Deref for TestServer {
    type Target = TestPostgres;

    fn deref(&self) -> &TestPostgres {
        &self.server
    }
}

/// One per test binary: the turns of the tests of that binary.
static MACHINE: RwLock<()> = RwLock::const_new(());

async fn start() -> TestPostgres {
    match TestPostgres::from_env().await {
        Ok(pg) => pg,
        Err(e) => panic!("these tests need a PostgreSQL server: {e}"),
    }
}

/// Starts an embedded cluster (or uses `CREDSWAP_TEST_ADMIN_URL`) for a light test, which may
/// run beside other light tests but never beside a load scenario.
///
/// # Panics
///
/// When no server can be had, with the error that says how to get one (never a silent skip).
pub async fn postgres() -> TestServer {
    let turn = Turn::Shared(MACHINE.read().await);
    TestServer {
        server: start().await,
        _turn: turn,
    }
}

/// [`postgres`] for a load scenario, which runs alone.
///
/// # Panics
///
/// As [`postgres`].
pub async fn postgres_alone() -> TestServer {
    let turn = Turn::Alone(MACHINE.write().await);
    TestServer {
        server: start().await,
        _turn: turn,
    }
}

/// The application's provider policy in the adapter scenarios: a 250 ms cache TTL, and for
/// alternating users the 500 ms overlap the rotator leaves (half of its 1 s interval).
///
/// # Panics
///
/// Never: the policy is valid.
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

/// The adapters' load scenario: 11 s, a rotation every second (so at least 10), 32 workers,
/// a pool of 8.
pub fn scenario_config() -> ScenarioConfig {
    ScenarioConfig {
        duration: Duration::from_secs(11),
        rotate_every: Some(Duration::from_secs(1)),
        concurrency: 32,
        pool_max_size: 8,
        ..ScenarioConfig::default()
    }
}

/// Asserts what every adapter's scenario must show, whatever the path: at least 10 rotations,
/// real traffic, nothing stale after the drain, and no more sessions than `pool_max_size` (and
/// at least one, so the sampler saw the pool). Failed requests are judged by the caller, since
/// some paths (plain sqlx under zero overlap) have an honest bound instead of zero.
///
/// # Panics
///
/// When the report breaks the contract, with `summary` in the message.
pub fn assert_contract(report: &ScenarioReport, summary: &str) {
    assert!(report.rotations >= 10, "{summary}");
    assert!(report.requests_ok > 1000, "{summary}");
    assert_eq!(report.stale_after_drain, 0, "{summary}");
    assert!(report.peak_backends <= report.pool_max_size, "{summary}");
    assert!(
        report.peak_backends >= 1,
        "the sampler saw the pool's sessions: {summary}"
    );
}

/// A policy that refreshes only when told to (or after an auth-failure report).
///
/// # Panics
///
/// Never: the policy is valid.
pub fn manual_policy() -> Policy {
    Policy::builder()
        .refresh_interval(Duration::from_secs(3600))
        // A fixed schedule: with jitter the first refresh comes at a random point of the hour.
        .jitter(0.0)
        .build()
        .expect("valid policy")
}

/// Creates a login role with a random password, a store holding it, and a provider over the
/// store; returns `(role, password, store, provider)`.
///
/// # Panics
///
/// When the role or the provider cannot be created.
pub async fn single_role(
    pg: &TestPostgres,
    policy: Policy,
) -> (String, String, MemorySource, RotatingCredentials) {
    let role = unique_name("app");
    let password = random_password();
    pg.create_login_role(&role, &password)
        .await
        .expect("create role");
    let store = MemorySource::new(Credential::new(role.clone(), password.clone()));
    let credentials = RotatingCredentials::new(store.clone(), policy)
        .await
        .expect("provider");
    (role, password, store, credentials)
}

/// Backend pids of the sessions of `role`.
///
/// # Panics
///
/// When `pg_stat_activity` cannot be read.
pub async fn session_pids(pg: &TestPostgres, role: &str) -> Vec<i32> {
    pg.admin()
        .await
        .expect("admin connection")
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// An error and its sources, joined with `: `, as an application's error report prints them.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A `tokio_postgres::Config` that carries a user and the password `secret` of its own, as an
/// application's config might: for the building case that checks that neither is printed nor
/// used (the provider's login replaces them).
pub fn config_with_password(secret: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .user("config-user")
        .password(secret);
    config
}
