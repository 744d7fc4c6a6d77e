//! What the cases share: checkouts that panic with the adapter's name, waits, rotations, the
//! load that runs beside a case.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use credswap_core::contract::Rotation;
use credswap_core::{BoxError, Credential, MemorySource, RotatingCredentials};
use tokio::time::Instant;

use super::super::{Adapter, Session, TlsConnect, Whoami};
use crate::harness::{error_chain, session_pids};
use crate::scenario::Workload;
use crate::{TestPostgres, random_password};

pub(crate) async fn build<A: Adapter>(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_size: usize,
) -> (A::Pool, Rotation) {
    match A::build(pg, credentials, max_size).await {
        Ok(built) => built,
        Err(e) => panic!(
            "{}: building the pool failed: {}",
            A::NAME,
            error_chain(&*e)
        ),
    }
}

/// [`Adapter::build_tls`], panicking with the adapter's name and the error.
pub(crate) async fn build_tls<A: Adapter>(
    pg: &TestPostgres,
    tls: &TlsConnect,
    credentials: RotatingCredentials,
    max_size: usize,
) -> (A::Pool, Rotation) {
    match A::build_tls(pg, tls, credentials, max_size).await {
        Ok(built) => built,
        Err(e) => panic!(
            "{}: building the pool over {tls:?} failed: {}",
            A::NAME,
            error_chain(&*e)
        ),
    }
}

pub(crate) async fn checkout<A: Adapter>(pool: &A::Pool) -> Box<dyn Session> {
    match A::checkout(pool).await {
        Ok(session) => session,
        Err(e) => panic!("{}: checkout failed: {}", A::NAME, error_chain(&*e)),
    }
}

pub(crate) async fn whoami<A: Adapter>(pool: &A::Pool) -> Whoami {
    match A::whoami(pool).await {
        Ok(me) => me,
        Err(e) => panic!(
            "{}: checkout and query failed: {}",
            A::NAME,
            error_chain(&*e)
        ),
    }
}

pub(crate) async fn who(session: &mut Box<dyn Session>) -> Whoami {
    match session.whoami().await {
        Ok(me) => me,
        Err(e) => panic!(
            "a query on a checked-out connection failed: {}",
            error_chain(&*e)
        ),
    }
}

pub(crate) async fn execute(session: &mut Box<dyn Session>, sql: &str) {
    if let Err(e) = session.execute(sql).await {
        panic!("`{sql}` failed: {}", error_chain(&*e));
    }
}

/// Checks out `n` connections at once (so `n` distinct sessions) and asks each who it is.
pub(crate) async fn hold<A: Adapter>(pool: &A::Pool, n: usize) -> Vec<(Box<dyn Session>, Whoami)> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut session = checkout::<A>(pool).await;
        let me = who(&mut session).await;
        held.push((session, me));
    }
    held
}

/// Polls `done` every 5 ms until it holds; returns how long that took, or panics with `what`
/// after `limit`.
pub(crate) async fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Waits until session `pid` of `role` (with `None`, every session of `role`) has left
/// `pg_stat_activity`; returns how long that took, or panics with `what` after `limit`.
pub(crate) async fn wait_closed(
    pg: &TestPostgres,
    role: &str,
    pid: Option<i32>,
    limit: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let limit = limit + pooler_slack(pg);
    loop {
        let open = session_pids(pg, role).await;
        if pid.map_or(open.is_empty(), |pid| !open.contains(&pid)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; open: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How much longer a server session may outlive the pool's connection: a pooler keeps it up to
/// its idle timeout (PgBouncer here: 1 s, checked about every second).
pub(crate) fn pooler_slack(pg: &TestPostgres) -> Duration {
    if pg.pooler().is_some() {
        Duration::from_millis(2500)
    } else {
        Duration::ZERO
    }
}

/// Whether session `pid` of `role` is in `pg_stat_activity`.
pub(crate) async fn is_open(pg: &TestPostgres, role: &str, pid: i32) -> bool {
    session_pids(pg, role).await.contains(&pid)
}

/// Single-user rotation, all at once: the database, the store, then the provider.
pub(crate) async fn rotate_single(
    pg: &TestPostgres,
    role: &str,
    store: &MemorySource,
    credentials: &RotatingCredentials,
) {
    let password = random_password();
    pg.set_password(role, &password).await.expect("ALTER ROLE");
    store.set(Credential::new(role, password));
    credentials.refresh().await.expect("refresh");
}

/// A login role with a fresh password; returns the password.
pub(crate) async fn login_role(pg: &TestPostgres, role: &str) -> String {
    let password = random_password();
    pg.create_login_role(role, &password)
        .await
        .expect("create role");
    password
}

/// Panics, naming the place and quoting the line (the password masked), when a text contains
/// one of `secrets`.
pub(crate) fn assert_no_secret(secrets: &[&str], texts: &[(&str, String)]) {
    for secret in secrets {
        for (what, text) in texts {
            if let Some(line) = text.lines().find(|line| line.contains(secret)) {
                panic!(
                    "a password printed in {what}: {}",
                    line.replace(secret, "<the password>")
                );
            }
        }
    }
}

/// `SELECT current_user` through the pool, as a request of the load scenarios.
pub(crate) struct Requests<A: Adapter> {
    pub(crate) pool: A::Pool,
    pub(crate) roles: Vec<String>,
    /// The largest pool size seen after a request.
    pub(crate) peak_size: Arc<AtomicUsize>,
}

#[async_trait]
impl<A: Adapter> Workload for Requests<A> {
    async fn request(&self) -> Result<(), BoxError> {
        let me = A::whoami(&self.pool).await?;
        self.peak_size
            .fetch_max(A::size(&self.pool), Ordering::Relaxed);
        if !self.roles.contains(&me.user) {
            return Err(format!(
                "the session runs as {}, not as an application role",
                me.user
            )
            .into());
        }
        Ok(())
    }
}

/// Requests through the pool from `workers` tasks until `stop`; returns `(ok, failed, first
/// error)`.
pub(crate) fn load<A: Adapter>(
    pool: &A::Pool,
    workers: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, Option<String>)> {
    load_with_pause::<A>(pool, workers, Duration::from_millis(2), stop)
}

/// `workers` checkouts at a time (each a `whoami`), one after another, for `span`: the slowest
/// and how many failed.
pub(crate) async fn slowest_checkout<A: Adapter>(
    pool: &A::Pool,
    workers: usize,
    span: Duration,
) -> (Duration, u64) {
    let until = Instant::now() + span;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut slowest, mut failed) = (Duration::ZERO, 0u64);
                while Instant::now() < until {
                    let started = Instant::now();
                    if A::whoami(&pool).await.is_err() {
                        failed += 1;
                    }
                    slowest = slowest.max(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (slowest, failed)
            })
        })
        .collect();
    let mut total = (Duration::ZERO, 0);
    for task in tasks {
        let (slowest, failed) = task.await.expect("checkout task");
        total = (total.0.max(slowest), total.1 + failed);
    }
    total
}

/// [`load`] with `pause` between a worker's requests (a lighter load for a long case that
/// shares the machine with others).
pub(crate) fn load_with_pause<A: Adapter>(
    pool: &A::Pool,
    workers: usize,
    pause: Duration,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, Option<String>)> {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let pool = pool.clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
                while !stop.load(Ordering::Relaxed) {
                    match A::whoami(&pool).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert_with(|| error_chain(&*e));
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
                (ok, failed, first)
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut total = (0, 0, None);
        for task in tasks {
            let (ok, failed, first) = task.await.expect("load task");
            total.0 += ok;
            total.1 += failed;
            if total.2.is_none() {
                total.2 = first;
            }
        }
        total
    })
}
