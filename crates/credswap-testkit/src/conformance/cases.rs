//! The conformance cases: each is generic over an [`Adapter`] and panics with a
//! message that says what broke.
//!
//! Light cases share the machine ([`Route::postgres`]); the load scenarios run alone
//! ([`Route::postgres_alone`]). Each case runs straight to the server ([`Direct`](super::Direct))
//! and, where it applies, through PgBouncer ([`ThroughPgBouncer`](super::ThroughPgBouncer)).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::contract::{AdapterStats, Rotation};
use credswap_core::{BoxError, Credential, Generation, MemorySource, Policy, RotatingCredentials};
use tokio::time::Instant;

use super::{Adapter, Route, Session, Whoami};
use crate::harness::{
    app_policy, assert_contract, error_chain, manual_policy, scenario_config, session_pids,
    single_role,
};
use crate::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy, Workload,
};
use crate::{TestPostgres, random_password, unique_name};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

async fn execute(session: &mut Box<dyn Session>, sql: &str) {
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
async fn is_open(pg: &TestPostgres, role: &str, pid: i32) -> bool {
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
async fn login_role(pg: &TestPostgres, role: &str) -> String {
    let password = random_password();
    pg.create_login_role(role, &password)
        .await
        .expect("create role");
    password
}

/// Panics, naming the place and quoting the line (the password masked), when a text contains
/// one of `secrets`.
fn assert_no_secret(secrets: &[&str], texts: &[(&str, String)]) {
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
struct Requests<A: Adapter> {
    pool: A::Pool,
    roles: Vec<String>,
    /// The largest pool size seen after a request.
    peak_size: Arc<AtomicUsize>,
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

// ---------------------------------------------------------------------------------------------
// The load scenarios
// ---------------------------------------------------------------------------------------------

/// What a load run through a pool of `A` showed.
struct Run {
    report: ScenarioReport,
    stats: AdapterStats,
    summary: String,
}

/// Runs the scenario `config` with `strategy`, the provider on `policy`, `SELECT current_user`
/// as the request; asserts that the pool never counted more than its max size.
async fn run<A: Adapter>(
    pg: &TestPostgres,
    strategy: Strategy,
    policy: Policy,
    config: &ScenarioConfig,
) -> Run {
    // Behind a pooler, server sessions outlive the pool's connections by the pooler's idle
    // timeout: the drain is judged that much later.
    let config = &ScenarioConfig {
        drain_grace: config.drain_grace + pooler_slack(pg),
        ..config.clone()
    };
    let setup = RotationSetup::create(pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), policy)
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(pg, credentials, config.pool_max_size).await;
    let peak_size = Arc::new(AtomicUsize::new(0));
    let workload = Arc::new(Requests::<A> {
        pool,
        roles: setup.roles().to_vec(),
        peak_size: Arc::clone(&peak_size),
    });
    let report = scenario::run(pg, setup, workload, config, Arc::new(Progress::default()))
        .await
        .expect("scenario");
    let stats = rotation.stats();
    let summary = format!("{}: {}\n{stats:?}", A::NAME, report.summary());
    eprintln!("{summary}");
    let peak_size = peak_size.load(Ordering::Relaxed);
    assert!(
        peak_size <= config.pool_max_size && stats.live() <= config.pool_max_size,
        "the pool counted {peak_size} connections: {summary}"
    );
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, &summary).await;
    }
    Run {
        report,
        stats,
        summary,
    }
}

/// The harness's contract on a scenario report; behind a pooler the server's session count is
/// the pooler's (old server sessions linger up to its idle timeout), so the pool's size is judged
/// by the pool's own count, which [`run`] checks.
fn assert_server_side(pg: &TestPostgres, report: &ScenarioReport, summary: &str) {
    if pg.pooler().is_none() {
        assert_contract(report, summary);
        return;
    }
    assert!(report.rotations >= 10, "{summary}");
    assert!(report.requests_ok > 1000, "{summary}");
    assert!(report.peak_backends >= 1, "{summary}");
}

/// Behind a pooler the server sessions are the pooler's: it hands an idle server session of the
/// same role to any client (single user: one opened with the old password), and keeps one of a
/// retired role until its idle timeout. What the adapter controls is its own connections: none of
/// an older generation may be left once the drain is over.
async fn assert_client_side_drained(rotation: &Rotation, summary: &str) {
    wait_for(
        "no connection of an older generation left in the pool",
        Duration::from_secs(2),
        || {
            let stats = rotation.stats();
            stats.live_stale() == 0
        },
    )
    .await;
    eprintln!(
        "{summary}\nthe pool's own connections drained; the server sessions are the pooler's"
    );
}

async fn scenario_is_clean<A: Adapter, R: Route>(strategy: Strategy) {
    let pg = R::postgres_alone().await;
    let Run {
        report,
        stats,
        summary,
        ..
    } = run::<A>(&pg, strategy, app_policy(strategy), &scenario_config()).await;
    assert_server_side(&pg, &report, &summary);
    assert_eq!(report.requests_failed, 0, "{summary}");
    assert!(
        stats.generation.get() >= 10,
        "the pool followed every rotation: {summary}"
    );
    assert!(stats.stale_closed > 0, "{summary}");
    assert_eq!(stats.untagged, 0, "{summary}");
    assert_eq!(
        stats.connect_failures, 0,
        "every connect found a working credential within its deadline: {summary}"
    );
}

/// Two roles take turns, each valid for an overlap after the store moves on; 11 s under 32
/// workers with a rotation every second.
pub async fn alternating_users_rotation_loses_no_request<A: Adapter, R: Route>() {
    scenario_is_clean::<A, R>(Strategy::AlternatingUsers).await;
}

/// One role whose password changes in the database 50 ms before the store knows the new one.
pub async fn single_user_rotation_loses_no_request<A: Adapter, R: Route>() {
    scenario_is_clean::<A, R>(Strategy::SingleUser).await;
}

// ---------------------------------------------------------------------------------------------
// Draining
// ---------------------------------------------------------------------------------------------

/// Four idle connections; the store moves to the other role; without any checkout, every
/// session of the old role leaves `pg_stat_activity` promptly. Four rounds, alternating.
pub async fn idle_stale_connections_close_after_a_change<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let roles = [unique_name("idle_a"), unique_name("idle_b")];
    let first = login_role(&pg, &roles[0]).await;
    login_role(&pg, &roles[1]).await;
    let store = MemorySource::new(Credential::new(roles[0].clone(), first));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let mut latencies = Vec::new();
    for round in 0..4 {
        let (old, new) = (&roles[round % 2], &roles[(round + 1) % 2]);
        let held = hold::<A>(&pool, 4).await;
        let mut pids: Vec<i32> = held.iter().map(|(_, me)| me.pid).collect();
        assert!(held.iter().all(|(_, me)| &me.user == old), "round {round}");
        drop(held);
        // Returns may be asynchronous: let the four reach the idle queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut open = session_pids(&pg, old).await;
        pids.sort_unstable();
        open.sort_unstable();
        assert_eq!(
            open, pids,
            "round {round}: the four connections are open and idle"
        );
        let before = rotation.stats();

        // Provision first, then point the store (and the provider) at the other role.
        let password = random_password();
        pg.set_password(new, &password).await.expect("ALTER ROLE");
        store.set(Credential::new(new.clone(), password));
        credentials.refresh().await.expect("refresh");

        // No checkout from here on: the adapter closes them by itself.
        let gone = wait_closed(
            &pg,
            old,
            None,
            Duration::from_secs(1),
            &format!("round {round}: the idle sessions of {old} leave pg_stat_activity"),
        )
        .await;
        latencies.push(gone);
        wait_for(
            &format!("round {round}: the adapter counts no live stale connection"),
            Duration::from_secs(1),
            || rotation.stats().live_stale() == 0,
        )
        .await;
        let after = rotation.stats();
        assert_eq!(
            after.stale_closed_idle - before.stale_closed_idle,
            4,
            "round {round}: four closed while idle: {after:?}"
        );
        assert!(
            after.stale_closed - before.stale_closed >= 4,
            "round {round}: {after:?}"
        );
    }
    eprintln!(
        "{}: 4 idle stale sessions gone from pg_stat_activity after {latencies:?}",
        A::NAME
    );
    assert_eq!(whoami::<A>(&pool).await.user, roles[0]);
}

/// A transaction open across a rotation commits on its connection, which is closed once
/// returned; the idle connection beside it is closed at once.
pub async fn busy_connection_commits_across_rotation_then_closes_on_return<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;

    let mut busy = checkout::<A>(&pool).await;
    let busy_pid = who(&mut busy).await.pid;
    let idle_pid = whoami::<A>(&pool).await.pid; // a second connection, returned
    assert_ne!(busy_pid, idle_pid);
    tokio::time::sleep(Duration::from_millis(100)).await;
    execute(
        &mut busy,
        "BEGIN; CREATE TEMP TABLE credswap_busy (x int); INSERT INTO credswap_busy VALUES (1)",
    )
    .await;

    rotate_single(&pg, &role, &store, &credentials).await;

    wait_closed(
        &pg,
        &role,
        Some(idle_pid),
        Duration::from_secs(1),
        "the idle connection of the old credential is closed",
    )
    .await;
    assert!(
        is_open(&pg, &role, busy_pid).await,
        "the busy connection must survive until it is returned"
    );
    execute(
        &mut busy,
        "INSERT INTO credswap_busy VALUES (2); SELECT pg_sleep(0.3)",
    )
    .await;
    execute(&mut busy, "COMMIT").await;
    execute(
        &mut busy,
        "DO $$ BEGIN IF (SELECT count(*) FROM credswap_busy) <> 2 THEN \
         RAISE EXCEPTION 'the transaction did not commit both rows'; END IF; END $$",
    )
    .await;
    assert_eq!(who(&mut busy).await.pid, busy_pid);

    drop(busy);
    let closed = wait_closed(
        &pg,
        &role,
        Some(busy_pid),
        Duration::from_secs(1),
        "the busy connection of the old credential is closed after its return",
    )
    .await;
    let me = whoami::<A>(&pool).await;
    assert_eq!(me.user, role);
    assert!(
        me.pid != busy_pid && me.pid != idle_pid,
        "a new connection serves"
    );
    wait_for(
        "the adapter counts no live stale connection",
        Duration::from_secs(1),
        || rotation.stats().live_stale() == 0,
    )
    .await;
    let stats = rotation.stats();
    assert!(stats.stale_closed >= 2, "{stats:?}");
    assert!(stats.stale_closed_idle >= 1, "{stats:?}");
    assert_eq!(
        stats.live_per_generation.keys().copied().max(),
        Some(credentials.generation()),
        "{stats:?}"
    );
    eprintln!(
        "{}: the returned stale connection closed after {closed:?}",
        A::NAME
    );
}

/// 16 workers through a pool of 4 while two roles take turns every 500 ms: never more than 4
/// sessions of the application's roles in `pg_stat_activity`, and not one failed request.
pub async fn never_more_connections_than_max_size<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let max_size = 4;
    let config = ScenarioConfig {
        duration: Duration::from_secs(3),
        rotate_every: Some(Duration::from_millis(500)),
        concurrency: 16,
        pool_max_size: max_size,
        drain_grace: Duration::from_secs(1),
        overlap: Some(Duration::from_millis(250)),
        store_lag: Duration::from_millis(50),
    };
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(100))
        .overlap_window(Duration::from_millis(250))
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .build()
        .expect("policy");
    let Run {
        report, summary, ..
    } = run::<A>(&pg, Strategy::AlternatingUsers, policy, &config).await;
    assert!(report.rotations >= 4, "{summary}");
    assert!(report.requests_ok > 100, "{summary}");
    assert_eq!(report.requests_failed, 0, "{summary}");
    if pg.pooler().is_none() {
        assert!(
            (1..=max_size).contains(&report.peak_backends),
            "sessions seen at once in pg_stat_activity: {summary}"
        );
        assert_eq!(report.stale_after_drain, 0, "{summary}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refused logins
// ---------------------------------------------------------------------------------------------

/// Single user, zero overlap: the database's password changes and the store learns the new one
/// 300 ms later. A checkout in between, through the plain pool API, waits for it and succeeds.
pub async fn auth_failure_at_connect_waits_for_the_new_credential<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    // Busy, so that the next checkout must connect.
    let mut first = checkout::<A>(&pool).await;
    let first_pid = who(&mut first).await.pid;

    let password = random_password();
    pg.set_password(&role, &password).await.expect("ALTER ROLE");
    let fetches_before = store.fetch_count();
    let lag = Duration::from_millis(300);
    let lagging_store = tokio::spawn({
        let (store, role) = (store.clone(), role.clone());
        async move {
            tokio::time::sleep(lag).await;
            store.set(Credential::new(role, password));
        }
    });
    let started = Instant::now();
    let mut second = match A::checkout(&pool).await {
        Ok(session) => session,
        Err(e) => panic!(
            "{}: the checkout must wait for the new credential: {}\n{:?}",
            A::NAME,
            error_chain(&*e),
            rotation.stats()
        ),
    };
    let waited = started.elapsed();
    lagging_store.await.expect("store task");
    let me = who(&mut second).await;
    assert_eq!(me.user, role);
    assert_ne!(me.pid, first_pid);
    assert!(
        waited >= lag - Duration::from_millis(50) && waited < Duration::from_secs(3),
        "the checkout connected once the store had the new password: {waited:?}"
    );
    assert_eq!(credentials.generation().get(), 2);
    let stats = rotation.stats();
    assert!(
        stats.auth_failures >= 1 && stats.auth_retries >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert!(!credentials.health().is_refused());
    let fetches = store.fetch_count() - fetches_before;
    assert!(
        fetches <= 6,
        "{fetches} store fetches in {waited:?}: refused logins ask the store at most once per auth_refresh_interval"
    );

    // The session opened before the change lives on, and is closed once returned.
    execute(&mut first, "SELECT 1").await;
    drop((first, second));
    wait_closed(
        &pg,
        &role,
        Some(first_pid),
        Duration::from_secs(1),
        "the connection of the old password is closed after its return",
    )
    .await;
    eprintln!(
        "{}: a checkout during a 300 ms store lag waited {waited:?}; {stats:?}",
        A::NAME
    );
}

/// A single-user rotation the way Secrets Manager runs it: the new password is stored as
/// *pending* (createSecret), the database takes it (setSecret), and the store makes it current
/// only 3 s later (finishSecret). A checkout in that window, through the plain pool API, opens
/// with the pending credential, and the provider publishes it without waiting for the store;
/// the store's catching up later is not a rotation.
pub async fn the_pending_credential_bridges_a_single_user_rotation<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    // Busy, so that the next checkouts must connect.
    let mut first = checkout::<A>(&pool).await;
    let first_pid = who(&mut first).await.pid;

    let password = random_password();
    store.set_pending(Some(Credential::new(role.clone(), password.clone())));
    pg.set_password(&role, &password).await.expect("ALTER ROLE");
    let finish = Duration::from_secs(3);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut session = match A::checkout(&pool).await {
            Ok(session) => session,
            Err(e) => panic!(
                "{}: a checkout between setSecret and finishSecret must use the pending \
                 credential: {}\n{:?}",
                A::NAME,
                error_chain(&*e),
                rotation.stats()
            ),
        };
        assert_eq!(who(&mut session).await.user, role);
        held.push(session);
    }
    let waited = started.elapsed();
    assert!(
        waited < finish - Duration::from_secs(1),
        "{}: the checkouts waited {waited:?}, as if for the store",
        A::NAME
    );
    assert_eq!(
        credentials.generation().get(),
        2,
        "the pending credential is published once the database accepted it"
    );
    assert!(credentials.current().is_proven());
    assert!(!credentials.health().is_refused());
    let stats = rotation.stats();
    assert!(stats.pending_connects >= 1, "{stats:?}");
    assert_eq!(credentials.stats().pending_published, 1);
    assert_no_secret(
        &[&password],
        &[
            ("the Rotation", format!("{rotation:?}")),
            ("the provider", format!("{credentials:?}")),
        ],
    );

    // Until finishSecret the store still says the old password: a refresh is not a change back.
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);
    assert_eq!(who(&mut held[0]).await.user, role);

    // finishSecret: the store's current is the pending credential now; not a new generation.
    tokio::time::sleep(finish.saturating_sub(started.elapsed())).await;
    store.set(Credential::new(role.clone(), password));
    store.set_pending(None);
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);

    // The session of the old password is drained once returned.
    execute(&mut first, "SELECT 1").await;
    drop(first);
    drop(held);
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, A::NAME).await;
    } else {
        wait_closed(
            &pg,
            &role,
            Some(first_pid),
            Duration::from_secs(2),
            "the connection of the old password is closed after its return",
        )
        .await;
    }
    eprintln!(
        "{}: three checkouts in the setSecret..finishSecret window took {waited:?}; {:?}",
        A::NAME,
        rotation.stats()
    );
}

/// How long a store's rotation may leave its pending credential unproven once the database has
/// it: pending trials come at most [`PENDING_TRIAL_MAX`](credswap_core::contract::proof::PENDING_TRIAL_MAX)
/// apart, and a trial is a connect.
const PENDING_PROVEN_WITHIN: Duration = Duration::from_secs(4);

/// Requests through the pool from `workers` tasks until `stop`; returns `(ok, failed, first
/// error)`.
pub(crate) fn load<A: Adapter>(
    pool: &A::Pool,
    workers: usize,
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
                    tokio::time::sleep(Duration::from_millis(2)).await;
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

/// A store that rotates single-user with its pending credential readable (Secrets Manager's
/// `AWSPENDING`), seen by a pool that never has to connect (full and healthy): the pool tries
/// the pending login now and then (a pending trial), moves to it within
/// `PENDING_PROVEN_WITHIN` of the database having it, and drains the old sessions before the
/// store finishes, idle and under load, without failing a request or passing its size.
pub async fn a_full_pool_moves_to_the_pending_credential_before_the_store_finishes<
    A: Adapter,
    R: Route,
>() {
    let pg = R::postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loaded = None;
    for round in ["idle", "under load"] {
        let old: Vec<i32> = hold::<A>(&pool, 4)
            .await
            .into_iter()
            .map(|(_, me)| me.pid)
            .collect();
        if round == "under load" {
            loaded = Some(load::<A>(&pool, 8, &stop));
        }
        let generation = credentials.generation();

        // createSecret: the store has a pending credential; the refresher sees the rotation.
        let password = random_password();
        store.set_pending(Some(Credential::new(role.clone(), password.clone())));
        credentials.refresh().await.expect("refresh");
        assert!(
            credswap_core::contract::Feedback::new(&credentials)
                .pending()
                .is_some(),
            "the provider reads the pending credential while the store rotates"
        );
        // Before setSecret the database refuses it: the trials fail quietly, nothing moves.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(credentials.generation(), generation, "{round}");
        assert!(!credentials.health().is_refused(), "{round}");

        // setSecret: the database has the new password; the store has not finished.
        pg.set_password(&role, &password).await.expect("ALTER ROLE");
        let took = wait_for(
            "the pool proves the pending credential before the store finishes",
            PENDING_PROVEN_WITHIN,
            || credentials.generation() > generation,
        )
        .await;
        assert!(credentials.current().is_proven());
        if pg.pooler().is_some() {
            assert_client_side_drained(&rotation, A::NAME).await;
        } else {
            for pid in &old {
                wait_closed(
                    &pg,
                    &role,
                    Some(*pid),
                    Duration::from_secs(2),
                    "a session of the old password drains before the store finishes",
                )
                .await;
            }
        }
        eprintln!(
            "{} ({round}): the pending credential was published {took:?} after setSecret; {:?}",
            A::NAME,
            rotation.stats()
        );

        // finishSecret: not a change.
        let published = credentials.generation();
        store.set(Credential::new(role.clone(), password));
        store.set_pending(None);
        credentials.refresh().await.expect("refresh");
        assert_eq!(credentials.generation(), published);
        assert!(
            credswap_core::contract::Feedback::new(&credentials)
                .pending()
                .is_none()
        );
        assert_eq!(whoami::<A>(&pool).await.user, role);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, first) = loaded.expect("load").await.expect("load");
    let stats = rotation.stats();
    assert_eq!(
        failed,
        0,
        "{}: {failed} of {} requests failed, first: {first:?}; {stats:?}",
        A::NAME,
        ok + failed
    );
    assert!(ok > 100, "{}: only {ok} requests ran", A::NAME);
    assert_eq!(credentials.stats().pending_published, 2, "{stats:?}");
    assert!(
        stats.live() <= 4,
        "{}: the pool counted {} connections",
        A::NAME,
        stats.live()
    );
}

/// The store holds a wrong password: a checkout fails within the pool's timeout with an error
/// that names the role or SQLSTATE `28P01` (or, where the pool reports only its timeout, a log
/// line that does) and never the password; once the store holds the right one, the pool
/// recovers.
pub async fn persistent_wrong_password_fails_clearly_without_the_secret<A: Adapter, R: Route>() {
    let logs = capture::start();
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let wrong = format!("wrong-{}", random_password());
    let store = MemorySource::new(Credential::new(role.clone(), wrong.clone()));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;

    let started = Instant::now();
    let err = match A::checkout(&pool).await {
        Ok(_) => panic!("{}: a wrong password logged in", A::NAME),
        Err(e) => e,
    };
    let waited = started.elapsed();
    let (display, debug) = (error_chain(&*err), format!("{err:?}"));
    eprintln!("{}: failed after {waited:?}: {display}", A::NAME);
    assert!(
        waited < Duration::from_secs(12),
        "the checkout fails within the pool's timeout: {waited:?}"
    );
    // Where the pool reports only its own timeout (bb8's `Pool::get` returns nothing else), the
    // adapter's log must name them instead, long before that timeout.
    // PgBouncer refuses a login with its own `08P01` ("SASL authentication failed").
    let code = if pg.pooler().is_some() {
        "08P01"
    } else {
        "28P01"
    };
    let logged = logs.text();
    assert!(
        display.contains(code)
            || display.contains(&role)
            || (logged.contains(code) && logged.contains(&role)),
        "the error, or the adapter's log where the pool reports only a timeout, names SQLSTATE \
         {code} and the role {role}: {display}"
    );
    let stats = rotation.stats();
    assert!(stats.auth_failures >= 1, "{stats:?}");
    assert!(stats.connect_failures >= 1, "{stats:?}");
    let health = credentials.health();
    assert!(health.is_refused(), "{health:?}");
    let fetches = store.fetch_count();
    let bound = 2 + (waited.as_millis() / 200) as u64 + 3;
    assert!(
        fetches <= bound,
        "{fetches} store fetches in {waited:?}: at most one per auth_refresh_interval"
    );
    assert_no_secret(
        &[&wrong],
        &[
            ("the error", display),
            ("the error's Debug", debug),
            ("the Rotation", format!("{rotation:?}")),
            ("the stats", format!("{stats:?}")),
            ("the provider", format!("{credentials:?}")),
            ("the health", format!("{health:?}")),
            ("the logs", logs.text()),
        ],
    );

    // The store is fixed: the next refused login fetches it, and the pool recovers.
    store.set(Credential::new(role.clone(), good.clone()));
    let started = Instant::now();
    assert_eq!(whoami::<A>(&pool).await.user, role);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!credentials.health().is_refused());
    assert_no_secret(&[&wrong, &good], &[("the logs", logs.text())]);
}

/// With the adapter's validator, a wrong password published by the store is never swapped in:
/// the pool keeps working on the old credential, new connections included.
pub async fn validate_before_swap_keeps_the_working_credential<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::builder(store.clone())
        .policy(app_policy(Strategy::SingleUser))
        .validator(A::validator(&pg))
        .build()
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);

    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    let err = credentials
        .refresh()
        .await
        .expect_err("the validator refuses a password the database does not have");
    assert!(err.is_validation(), "{err}");
    assert_no_secret(
        &[&wrong],
        &[("the validation error", format!("{err} {err:?}"))],
    );

    // Refreshes keep being refused; connections, new ones included, use the old credential.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    let held = hold::<A>(&pool, 4).await;
    assert!(held.iter().all(|(_, me)| me.user == role));
    drop(held);
    assert!(
        credentials.stats().rejected >= 2,
        "refreshes retried on the backoff schedule: {:?}",
        credentials.stats()
    );
    let stats = rotation.stats();
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
    assert_eq!(stats.stale_closed, 0, "nothing was drained: {stats:?}");

    // The right password again: the same login as generation 1, so no new generation.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    assert!(
        credentials.health().is_healthy(),
        "{:?}",
        credentials.health()
    );
}

/// A mistyped secret, no validator: the store publishes a password the database does not have.
/// Prove before drain: the sessions of the working login are not drained, every checkout keeps
/// succeeding (a connection the pool opens falls back to the last accepted login), and the
/// provider's health says the database refuses the credential. A flip back to the working
/// password (A→B→A) needs no drain at all; a real rotation afterwards drains the old sessions
/// as soon as the new login has been accepted.
pub async fn a_mistyped_secret_keeps_the_pool_serving<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("app");
    let good = login_role(&pg, &role).await;
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::new(store.clone(), app_policy(Strategy::SingleUser))
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 4).await;
    let first = hold::<A>(&pool, 4).await;
    let first_pids: Vec<i32> = first.iter().map(|(_, me)| me.pid).collect();
    drop(first);

    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    credentials.refresh().await.expect("refresh");
    assert_eq!(credentials.generation().get(), 2);

    // Two seconds of traffic, up to the pool's size at once: not one checkout fails.
    let started = Instant::now();
    let mut checkouts = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let held = hold::<A>(&pool, 4).await;
        assert!(held.iter().all(|(_, me)| me.user == role));
        checkouts += held.len();
        drop(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(
        "the provider's health says the database refuses the new credential",
        Duration::from_secs(3),
        || credentials.health().is_refused(),
    )
    .await;
    let open = session_pids(&pg, &role).await;
    assert!(
        first_pids.iter().any(|pid| open.contains(pid)),
        "{}: the working sessions were drained for a credential never accepted; open {open:?}, \
         first {first_pids:?}",
        A::NAME
    );
    let health = credentials.health();
    assert_eq!(health.generation(), Generation::new(2));
    assert_no_secret(
        &[&wrong],
        &[
            ("the health", format!("{health:?}")),
            ("the Rotation", format!("{rotation:?}")),
        ],
    );
    eprintln!(
        "{}: {checkouts} checkouts served during the mistake; {:?}",
        A::NAME,
        rotation.stats()
    );

    // The store is fixed by flipping back: the same login as generation 1, nothing to drain.
    store.set(Credential::new(role.clone(), good.clone()));
    credentials.refresh().await.expect("refresh");
    let current = credentials.current();
    assert_eq!(current.generation().get(), 3);
    assert!(
        current.is_proven(),
        "the login of generation 1 was accepted before"
    );
    assert!(!credentials.health().is_refused());
    assert_eq!(whoami::<A>(&pool).await.user, role);

    // A real rotation now: the old sessions go once the new login has been accepted (behind a
    // pooler, the pool's own connections; the server sessions are the pooler's).
    let survivors: Vec<i32> = session_pids(&pg, &role).await;
    rotate_single(&pg, &role, &store, &credentials).await;
    assert_eq!(whoami::<A>(&pool).await.user, role);
    if pg.pooler().is_some() {
        assert_client_side_drained(&rotation, A::NAME).await;
        return;
    }
    for pid in survivors {
        wait_closed(
            &pg,
            &role,
            Some(pid),
            Duration::from_secs(2),
            "a session of the old login is drained once the new one is accepted",
        )
        .await;
    }
}

/// A quick server restart under load (a fast shutdown, 250 ms with nothing listening, the same
/// port again): connects during it are retried (connection refused, `57P03`), so the only
/// requests that fail are those in flight on a session the shutdown ended, at most one per
/// worker; requests succeed again right after.
pub async fn a_server_restart_fails_only_requests_in_flight<A: Adapter, R: Route>() {
    let mut pg = R::postgres_alone().await;
    let (role, _, _store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials, 4).await;
    let workers = 16;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (pool, role, stop, restarted) = (
                pool.clone(),
                role.clone(),
                Arc::clone(&stop),
                Arc::clone(&restarted),
            );
            tokio::spawn(async move {
                let (mut ok_after, mut failed, mut errors) = (0u64, 0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match A::whoami(&pool).await {
                        Ok(me) => {
                            assert_eq!(me.user, role);
                            if restarted.load(Ordering::Relaxed) {
                                ok_after += 1;
                            }
                        }
                        Err(e) => {
                            failed += 1;
                            errors.push(error_chain(&*e));
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (ok_after, failed, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.restart(Duration::from_millis(250))
        .await
        .expect("restart");
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok_after, mut failed, mut errors) = (0, 0, Vec::new());
    for task in tasks {
        let (o, f, e) = task.await.expect("worker");
        ok_after += o;
        failed += f;
        errors.extend(e);
    }
    let stats = rotation.stats();
    errors.truncate(3);
    let summary = format!(
        "{}: {failed} failed, {ok_after} ok after the restart; {stats:?}; first errors {errors:?}",
        A::NAME
    );
    eprintln!("{summary}");
    assert!(
        ok_after > 100,
        "requests succeed again after the restart: {summary}"
    );
    assert!(
        failed <= workers,
        "only requests in flight when the server shut down may fail: {summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// Leases, shutdown, secrets
// ---------------------------------------------------------------------------------------------

/// A credential that expires in 3 s with a 2 s `expiry_margin`: its idle connection is closed
/// between the retirement point (1 s) and the expiry, without a checkout; a connection opened
/// after the retirement point (no replacement exists yet) is kept.
pub async fn leased_credential_connections_retire_before_expiry<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let role = unique_name("leased");
    let password = login_role(&pg, &role).await;
    let (lease, margin) = (Duration::from_secs(3), Duration::from_secs(2));
    let started = Instant::now();
    let credential =
        Credential::new(role.clone(), password).with_expires_at(SystemTime::now() + lease);
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .expiry_margin(margin)
        .build()
        .expect("policy");
    let credentials = RotatingCredentials::new(MemorySource::new(credential), policy)
        .await
        .expect("provider");
    let (pool, rotation) = build::<A>(&pg, credentials, 1).await;
    let first = whoami::<A>(&pool).await.pid;

    wait_closed(
        &pg,
        &role,
        Some(first),
        lease - Duration::from_millis(500) - started.elapsed(),
        "the idle leased connection is closed before its credential expires",
    )
    .await;
    let retired_after = started.elapsed();
    assert!(
        retired_after >= lease - margin - Duration::from_millis(200),
        "closed {retired_after:?} after the lease began, before its retirement point"
    );
    let second = whoami::<A>(&pool).await.pid;
    assert_ne!(second, first);
    assert_eq!(
        whoami::<A>(&pool).await.pid,
        second,
        "a connection opened after the retirement point is kept"
    );
    let stats = rotation.stats();
    assert!(
        stats.stale_closed >= 1 && stats.stale_closed_idle >= 1,
        "{stats:?}"
    );
    eprintln!(
        "{}: the leased connection was retired {retired_after:?} into a {lease:?} lease",
        A::NAME
    );
}

/// Dropping the pool, its `Rotation` and the provider ends every task: the role's sessions
/// leave `pg_stat_activity`, every connection is counted gone, and the store is asked no more.
pub async fn dropping_the_pool_stops_every_task<A: Adapter, R: Route>() {
    let pg = R::postgres().await;
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(100))
        .build()
        .expect("policy");
    let (role, _, store, credentials) = single_role(&pg, policy).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;
    drop(hold::<A>(&pool, 2).await);
    // A rotation with a connection out, so that the adapter has stale work in progress.
    let mut busy = checkout::<A>(&pool).await;
    who(&mut busy).await;
    rotate_single(&pg, &role, &store, &credentials).await;
    drop(busy);
    assert_eq!(whoami::<A>(&pool).await.user, role);
    let counters = Arc::clone(credswap_core::contract::Adapter::of(&rotation).counters());

    let before = store.fetch_count();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        store.fetch_count() > before,
        "the provider refreshes on its schedule while the pool lives"
    );
    // The drain may have closed every connection of the old login meanwhile: use the pool once
    // more, so that it holds a session when it is dropped.
    assert_eq!(whoami::<A>(&pool).await.user, role);
    assert!(!session_pids(&pg, &role).await.is_empty());

    drop((pool, rotation, credentials));
    wait_closed(
        &pg,
        &role,
        None,
        Duration::from_secs(2),
        "the role's sessions leave pg_stat_activity once the pool is dropped",
    )
    .await;
    wait_for(
        "every connection is counted gone (its task ended)",
        Duration::from_secs(2),
        || counters.live_total() == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = store.fetch_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.fetch_count(),
        settled,
        "the store is still asked after the pool and every handle were dropped: a task outlives the pool"
    );
}

/// Through a rotation with refused logins and a wrong password, no password appears in the
/// `Debug` of the handle, its stats, the provider, a pool error, or the captured logs.
pub async fn nothing_prints_the_password<A: Adapter, R: Route>() {
    let logs = capture::start();
    let pg = R::postgres().await;
    let (role, first, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = build::<A>(&pg, credentials.clone(), 2).await;
    let mut held = checkout::<A>(&pool).await;
    who(&mut held).await;

    // Single user with a lagging store: refused logins, a wait, a drain.
    let second = random_password();
    pg.set_password(&role, &second).await.expect("ALTER ROLE");
    let lagging_store = tokio::spawn({
        let (store, role, second) = (store.clone(), role.clone(), second.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.set(Credential::new(role, second));
        }
    });
    assert_eq!(whoami::<A>(&pool).await.user, role);
    lagging_store.await.expect("store task");
    drop(held);

    // A wrong password published: the database refuses it (the old sessions keep serving).
    let wrong = format!("wrong-{}", random_password());
    store.set(Credential::new(role.clone(), wrong.clone()));
    credentials.refresh().await.expect("refresh");
    let refused = match tokio::time::timeout(Duration::from_millis(800), A::checkout(&pool)).await {
        Ok(Ok(mut session)) => format!("{:?}", who(&mut session).await),
        Ok(Err(e)) => format!("{} {e:?}", error_chain(&*e)),
        Err(_) => String::new(),
    };
    wait_for(
        "the refused login reaches the provider's health",
        Duration::from_secs(3),
        || credentials.health().is_refused(),
    )
    .await;
    let stats = rotation.stats();
    assert!(stats.auth_failures >= 1, "{stats:?}");
    let text = logs.text();
    assert!(
        text.contains(&role),
        "the captured logs saw the refused logins, which name the role"
    );
    assert_no_secret(
        &[&first, &second, &wrong],
        &[
            ("the Rotation", format!("{rotation:?}")),
            ("the stats", format!("{stats:?}")),
            ("the provider", format!("{credentials:?}")),
            ("the health", format!("{:?}", credentials.health())),
            ("a pool error", refused),
            ("the logs", text),
        ],
    );
}

/// Captures `tracing` events and spans (debug and above) from every thread, for the cases that
/// check what the logs say.
mod capture {
    use std::fmt::{self, Write as _};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Level, Metadata, Subscriber};

    static LOGS: Mutex<String> = Mutex::new(String::new());
    /// Cases capturing now; no event is formatted while none is.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    /// The buffer stops growing here.
    const LIMIT: usize = 16 << 20;

    /// While alive, events are captured.
    pub(super) struct Logs(());

    /// Starts capturing (installing the capturing subscriber as the global default once).
    ///
    /// # Panics
    ///
    /// When another global subscriber is installed in this test binary.
    pub(super) fn start() -> Logs {
        let installed = *INSTALLED.get_or_init(|| {
            tracing::subscriber::set_global_default(Capture {
                next_span: AtomicU64::new(1),
            })
            .is_ok()
        });
        assert!(
            installed,
            "the conformance suite captures logs with its own global tracing subscriber; \
             this test binary already installed another"
        );
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Logs(())
    }

    impl Logs {
        /// Everything captured so far (by every capturing case of this binary).
        pub(super) fn text(&self) -> String {
            LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl Drop for Logs {
        fn drop(&mut self) {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    struct Capture {
        next_span: AtomicU64,
    }

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn append(metadata: &Metadata<'_>, record: impl FnOnce(&mut Line)) {
        let mut line = Line(format!("{} {}:", metadata.level(), metadata.target()));
        record(&mut line);
        let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() < LIMIT {
            logs.push_str(&line.0);
            logs.push('\n');
        }
    }

    impl Subscriber for Capture {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }

        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            ACTIVE.load(Ordering::Relaxed) > 0 && *metadata.level() <= Level::DEBUG
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            append(span.metadata(), |line| span.record(line));
            Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
        }

        fn record(&self, _: &Id, values: &Record<'_>) {
            let mut line = Line(String::from("span record:"));
            values.record(&mut line);
            let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
            if logs.len() < LIMIT {
                logs.push_str(&line.0);
                logs.push('\n');
            }
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            append(event.metadata(), |line| event.record(line));
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}

#[cfg(feature = "vault")]
pub use super::misbehaving::a_vault_lease_revoked_from_outside_is_replaced;
pub use super::misbehaving::{
    a_black_holed_store_bounds_every_checkout,
    a_pending_version_moved_mid_trial_is_never_published_unproven,
    a_reverted_rotation_is_followed_back_without_a_restart,
    a_stuck_pending_version_fails_nothing_and_stops_being_tried,
    a_throttling_store_fails_no_request,
};
#[cfg(feature = "aws")]
pub use super::misbehaving::{
    a_reverted_rotation_on_secrets_manager_is_followed_back,
    a_stuck_awspending_on_secrets_manager_fails_nothing,
};
pub use super::rejected::a_pg_hba_rejection_fails_fast_as_a_configuration_error;
