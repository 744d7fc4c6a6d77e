//! What the adapters' integration tests share: a server per test with a fair turn on the
//! machine, and the provider policy the application side uses in the scenarios.

use std::ops::Deref;
use std::time::Duration;

use credswap_core::Policy;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::TestPostgres;
use crate::scenario::Strategy;

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
