// The adapter contract, once per sqlx version: `include!`d by `tests/rotation.rs` into a module
// where `adapter` names `credswap_sqlx::v0_X` and `sqlx` names that version's sqlx.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use adapter::RotatingPoolExt;
use credswap_core::{BoxError, Credential, Generation, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioReport, Strategy, Workload,
};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use tokio::time::Instant;

use crate::support::{
    SCENARIO, app_policy, chain, manual_policy, postgres, rotate_single, session_pids, single_role,
    slow_proxy,
};

/// Host, port and database of the test server; no user, no password.
fn base_options(pg: &TestPostgres) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host(pg.host())
        .port(pg.port())
        .database(pg.database())
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
}

fn pool(
    pg: &TestPostgres,
    credentials: RotatingCredentials,
    max_connections: u32,
) -> (PgPool, adapter::Rotation) {
    adapter::connect_lazy_with(pool_options(max_connections), base_options(pg), credentials)
        .expect("pool")
}

/// `SELECT current_user` on `&PgPool`, as unchanged application code runs it.
struct Plain(PgPool);

#[async_trait::async_trait]
impl Workload for Plain {
    async fn request(&self) -> Result<(), BoxError> {
        let _user: String = sqlx::query_scalar("SELECT current_user")
            .fetch_one(&self.0)
            .await?;
        Ok(())
    }
}

/// `SELECT current_user` on a connection checked out through the retrying path.
struct Following(PgPool);

#[async_trait::async_trait]
impl Workload for Following {
    async fn request(&self) -> Result<(), BoxError> {
        let mut conn = self.0.acquire_following().await?;
        let _user: String = sqlx::query_scalar("SELECT current_user")
            .fetch_one(&mut *conn)
            .await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Plain,
    Following,
}

async fn run_scenario(
    strategy: Strategy,
    path: Path,
) -> (ScenarioReport, adapter::AdapterStats, String) {
    run_scenario_with(strategy, path, None).await
}

/// `max_lifetime`: set it to make the pool reopen connections all the time.
async fn run_scenario_with(
    strategy: Strategy,
    path: Path,
    max_lifetime: Option<Duration>,
) -> (ScenarioReport, adapter::AdapterStats, String) {
    let _one_at_a_time = SCENARIO.lock().await;
    let pg = postgres().await;
    let config = credswap_testkit::harness::scenario_config();
    let setup = RotationSetup::create(&pg, strategy).await.expect("roles");
    let credentials = RotatingCredentials::new(setup.store().clone(), app_policy(strategy))
        .await
        .expect("provider");
    let options = pool_options(config.pool_max_size as u32).max_lifetime(max_lifetime);
    let (pool, rotation) =
        adapter::connect_lazy_with(options, base_options(&pg), credentials).expect("pool");
    let workload: Arc<dyn Workload> = match path {
        Path::Plain => Arc::new(Plain(pool.clone())),
        Path::Following => Arc::new(Following(pool.clone())),
    };
    let report = scenario::run(&pg, setup, workload, &config, Arc::new(Progress::default()))
        .await
        .expect("scenario");
    let stats = rotation.stats();
    pool.close().await;
    let churn = max_lifetime.map_or(String::new(), |d| format!(", max_lifetime {d:?}"));
    let summary = format!(
        "{} [{path:?}{churn}]: {}\n{stats:?}",
        module_path!(),
        report.summary()
    );
    eprintln!("{summary}");
    (report, stats, summary)
}

fn assert_contract(report: &ScenarioReport, stats: &adapter::AdapterStats, summary: &str) {
    credswap_testkit::harness::assert_contract(report, summary);
    assert!(
        stats.generation.get() >= 10,
        "the pool followed every rotation: {summary}"
    );
    assert_eq!(stats.options_generation, stats.generation, "{summary}");
    assert!(stats.stale_closed > 0, "{summary}");
    assert_eq!(stats.untagged, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_rotation_loses_no_request_on_plain_pg_pool() {
    // With an overlap, unchanged code on `&PgPool` is the recommended path.
    let (report, stats, summary) = run_scenario(Strategy::AlternatingUsers, Path::Plain).await;
    assert_contract(&report, &stats, &summary);
    assert_eq!(report.requests_failed, 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_rotation_loses_no_request_through_acquire_following() {
    let (report, stats, summary) = run_scenario(Strategy::SingleUser, Path::Following).await;
    assert_contract(&report, &stats, &summary);
    assert_eq!(report.requests_failed, 0, "{summary}");
    assert_eq!(stats.auth_retry_failures, 0, "{summary}");
}

/// The same scenario on `&PgPool` directly: nothing can report a `28P01` from sqlx's connect.
/// A request fails only when the pool must open a connection between `ALTER ROLE` and the
/// provider's next scheduled refresh (≤ 50 ms store lag + 250 ms refresh). In this workload the
/// pool is full by then (the previous swap's reconnects finish within milliseconds): 0 failures
/// in 7 of 8 runs so far, 2 in one run on an overloaded machine. A pool that reopens connections
/// all the time fails more (`churning_pool_single_user_measurement`: 12-134 of 13 000-45 000
/// requests, all `28P01`, against 0 through `acquire_following`). The bound asserted here, one
/// failed connect per pool slot per rotation, leaves room for an unlucky reconnect without
/// hiding a broken swap (which would fail thousands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_rotation_on_plain_pg_pool_fails_only_connects_in_the_window() {
    let (report, stats, summary) = run_scenario(Strategy::SingleUser, Path::Plain).await;
    assert_contract(&report, &stats, &summary);
    assert!(report.requests_failed <= report.rotations * 8, "{summary}");
    for error in &report.first_errors {
        assert!(
            error.contains("password authentication failed"),
            "only 28P01 remains: {summary}"
        );
    }
    assert_eq!(
        stats.auth_failures, 0,
        "nothing went through the retrying path: {summary}"
    );
}

/// A measurement, not a contract: with connections reopened every 300 ms, connects keep landing
/// in the zero-overlap windows. Plain `&PgPool` fails every connect between `ALTER ROLE` and the
/// provider's next scheduled refresh; `acquire_following` recovers all but those made before the
/// store has the new password (the 50 ms store lag), where the refresh returns the old one.
/// Run: `cargo test -p credswap-sqlx --all-features --test rotation -- --ignored --nocapture churning`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints what remains of zero-overlap failures on each path"]
async fn churning_pool_single_user_measurement() {
    let churn = Some(Duration::from_millis(300));
    let (plain, plain_stats, plain_summary) =
        run_scenario_with(Strategy::SingleUser, Path::Plain, churn).await;
    let (following, stats, summary) =
        run_scenario_with(Strategy::SingleUser, Path::Following, churn).await;
    assert_eq!(plain.stale_after_drain, 0, "{plain_summary}");
    assert_eq!(following.stale_after_drain, 0, "{summary}");
    assert!(
        plain.peak_backends <= 8 && following.peak_backends <= 8,
        "{plain_summary}\n{summary}"
    );
    assert_eq!(plain_stats.auth_failures, 0, "{plain_summary}");
    // Every failure left on the retrying path is a retry that failed again.
    assert!(
        following.requests_failed <= stats.auth_retry_failures,
        "{summary}"
    );
}

async fn backend_pid(conn: &mut sqlx::postgres::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn current_user(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_user")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the pool has `n` idle connections (returns are asynchronous in sqlx).
async fn wait_idle(pool: &PgPool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < n {
        assert!(
            Instant::now() < deadline,
            "{} idle, expected {n}",
            pool.num_idle()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connection_commits_across_rotation_then_closes_on_return() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);

    let mut busy = pool.acquire().await.unwrap();
    let busy_pid = backend_pid(&mut busy).await;
    let idle_pid = {
        let mut second = pool.acquire().await.unwrap();
        backend_pid(&mut second).await
    };
    wait_idle(&pool, 1).await;
    let mut transaction = busy.begin().await.unwrap();
    transaction
        .execute("CREATE TEMP TABLE t(x int)")
        .await
        .unwrap();
    transaction.execute("SELECT pg_sleep(0.5)").await.unwrap();

    // Rotate (single user) while the transaction is open.
    rotate_single(&pg, &role, &store, &credentials).await;

    // The idle connection of the old generation is closed at once...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids = session_pids(&pg, &role).await;
    assert!(
        !pids.contains(&idle_pid),
        "idle stale connection still open: {pids:?}"
    );
    assert!(
        pids.contains(&busy_pid),
        "the busy connection must survive until returned"
    );

    // ...the busy one finishes its 3 s transaction and commits...
    transaction
        .execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    transaction.execute("SELECT pg_sleep(2.5)").await.unwrap();
    transaction.commit().await.unwrap();
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut *busy)
        .await
        .unwrap();
    assert_eq!(committed, 1);
    // ...and is closed when returned.
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids = session_pids(&pg, &role).await;
    assert!(
        !pids.contains(&busy_pid),
        "busy stale connection not closed on return: {pids:?}"
    );
    // New checkouts use the new generation.
    let mut fresh = pool.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut fresh).await, busy_pid);
    drop(fresh);
    let stats = rotation.stats();
    assert!(stats.stale_closed >= 2, "{stats:?}");
    assert_eq!(
        stats.opened_per_generation.keys().copied().max(),
        Some(credentials.generation())
    );
}

/// How fast the last idle stale connection is gone (from `pg_stat_activity`) after a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stale_connections_close_promptly_after_a_change() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    let admin = pg.admin().await.unwrap();
    let mut latencies = Vec::new();
    for _ in 0..5 {
        // Four connections, all returned and idle.
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut conn = pool.acquire().await.unwrap();
            conn.execute("SELECT 1").await.unwrap();
            conns.push(conn);
        }
        drop(conns);
        wait_idle(&pool, 4).await;
        let old: Vec<i32> = session_pids(&pg, &role).await;
        assert_eq!(old.len(), 4, "{old:?}");

        let new_password = random_password();
        pg.set_password(&role, &new_password).await.unwrap();
        store.set(Credential::new(role.clone(), new_password));
        let changed_at = Instant::now();
        credentials.refresh().await.unwrap();
        loop {
            let open: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&old],
                )
                .await
                .unwrap()
                .get(0);
            if open == 0 {
                break;
            }
            assert!(
                changed_at.elapsed() < Duration::from_secs(2),
                "idle stale connections not closed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(changed_at.elapsed());
    }
    let max = latencies.iter().max().copied().unwrap();
    eprintln!(
        "{}: last idle stale connection gone after {:?} (max {max:?}); {:?}",
        module_path!(),
        latencies,
        rotation.stats()
    );
    assert!(max < Duration::from_millis(250), "{latencies:?}");
    assert!(pool.size() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_at_checkout_fails_plain_acquire_and_is_retried_by_acquire_following() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    // Zero overlap: the database and the store change; the provider has not refreshed.
    let new_password = random_password();
    pg.set_password(&role, &new_password).await.unwrap();
    store.set(Credential::new(role.clone(), new_password));

    // Plain `acquire`: sqlx has no connect hook, the 28P01 reaches the caller, nothing reports it.
    let err = pool.acquire().await.unwrap_err();
    assert!(adapter::is_auth_failure(&err), "{err}");
    assert_eq!(credentials.generation().get(), 1);

    // The retrying path reports it, refreshes, swaps the options and retries once.
    let mut conn = pool
        .acquire_following()
        .await
        .expect("the retry with the refreshed credential succeeds");
    let user: String = sqlx::query_scalar("SELECT current_user")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(user, role);
    let stats = rotation.stats();
    assert_eq!(
        (
            stats.auth_failures,
            stats.auth_retries,
            stats.auth_retry_failures
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(credentials.generation().get(), 2);
    assert_eq!(stats.options_generation.get(), 2);
    assert_eq!(
        stats.opened_per_generation,
        BTreeMap::from([(Generation::new(2), 1)])
    );

    // `begin_following` too: the only connection is busy, so the transaction needs a connect.
    rotate_db_and_store(&pg, &role, &store).await;
    let mut transaction = pool.begin_following().await.expect("begin after a refresh");
    transaction.execute("SELECT 1").await.unwrap();
    transaction.commit().await.unwrap();
    let stats = rotation.stats();
    assert_eq!(
        (
            stats.auth_failures,
            stats.auth_retries,
            stats.auth_retry_failures
        ),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(credentials.generation().get(), 3);
    drop(conn);
}

async fn rotate_db_and_store(pg: &TestPostgres, role: &str, store: &MemorySource) {
    let new_password = random_password();
    pg.set_password(role, &new_password).await.unwrap();
    store.set(Credential::new(role.to_owned(), new_password));
}

/// A connect that read the old options and finished after the swap authenticated with the old
/// credential (still valid): it serves the checkout it was opened for and is closed on return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_straddling_a_swap_serves_once_then_closes() {
    let pg = postgres().await;
    let (role_a, role_b) = (unique_name("race_a"), unique_name("race_b"));
    let (password_a, password_b) = (random_password(), random_password());
    pg.create_login_role(&role_a, &password_a).await.unwrap();
    pg.create_login_role(&role_b, &password_b).await.unwrap();
    let store = MemorySource::new(Credential::new(role_a.clone(), password_a));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .unwrap();
    let port = slow_proxy(&pg, Duration::from_millis(400)).await;
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .database(pg.database());
    let (pool, rotation) =
        adapter::connect_lazy_with(pool_options(2), options, credentials.clone()).unwrap();

    let checkout = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await }
    });
    // The connect has read generation 1's options and waits in the proxy; role A stays valid.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.set(Credential::new(role_b.clone(), password_b));
    credentials.refresh().await.unwrap();
    wait_options_generation(&rotation, 2).await;

    let mut conn = checkout
        .await
        .unwrap()
        .expect("the raced connection is admitted");
    let user: String = sqlx::query_scalar("SELECT current_user")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(user, role_a, "it authenticated with the credential it read");
    let stats = rotation.stats();
    assert_eq!(stats.raced_connects, 1, "{stats:?}");
    assert_eq!(
        stats.opened_per_generation,
        BTreeMap::from([(Generation::new(1), 1)]),
        "{stats:?}"
    );
    // Returned, it is recognized by its creation instant and closed.
    drop(conn);
    wait_no_sessions(&pg, &role_a).await;
    assert_eq!(current_user(&pool).await, role_b);
    let stats = rotation.stats();
    assert_eq!(stats.stale_closed, 1, "{stats:?}");
    assert_eq!(
        stats.opened_per_generation,
        BTreeMap::from([(Generation::new(1), 1), (Generation::new(2), 1)]),
        "{stats:?}"
    );
}

/// A raced connection that sqlx puts straight into the idle queue (a `min_connections` refill
/// skips `after_release`) is closed by the sweep its admission asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raced_connection_that_goes_idle_is_swept() {
    let pg = postgres().await;
    let roles = [
        unique_name("idle_a"),
        unique_name("idle_b"),
        unique_name("idle_c"),
    ];
    let passwords = [random_password(), random_password(), random_password()];
    for (role, password) in roles.iter().zip(&passwords) {
        pg.create_login_role(role, password).await.unwrap();
    }
    let store = MemorySource::new(Credential::new(roles[0].clone(), passwords[0].clone()));
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .unwrap();
    let port = slow_proxy(&pg, Duration::from_millis(400)).await;
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .database(pg.database());
    let (pool, rotation) = adapter::connect_lazy_with(
        pool_options(2).min_connections(1),
        options,
        credentials.clone(),
    )
    .unwrap();

    let conn = pool.acquire().await.unwrap();
    store.set(Credential::new(roles[1].clone(), passwords[1].clone()));
    credentials.refresh().await.unwrap();
    wait_options_generation(&rotation, 2).await;
    // Returned, it is stale and closed; sqlx refills `min_connections` with generation 2's
    // options, a connect that the proxy holds for 400 ms...
    drop(conn);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ...during which the credential moves on to generation 3.
    store.set(Credential::new(roles[2].clone(), passwords[2].clone()));
    credentials.refresh().await.unwrap();
    wait_options_generation(&rotation, 3).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    while rotation.stats().raced_connects == 0 {
        assert!(Instant::now() < deadline, "{:?}", rotation.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The raced generation-2 connection went idle, untouched by any hook: the sweep closes it.
    wait_no_sessions(&pg, &roles[1]).await;
    assert!(session_pids(&pg, &roles[0]).await.is_empty());
    let stats = rotation.stats();
    assert_eq!(stats.raced_connects, 1, "{stats:?}");
    assert!(stats.stale_closed >= 2, "{stats:?}");
    assert_eq!(current_user(&pool).await, roles[2]);
}

async fn wait_options_generation(rotation: &adapter::Rotation, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while rotation.stats().options_generation.get() != generation {
        assert!(Instant::now() < deadline, "the watcher did not swap");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_no_sessions(pg: &TestPostgres, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = session_pids(pg, role).await;
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sessions of {role} still open: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_wrong_password_fails_clearly_without_the_secret() {
    let pg = postgres().await;
    let role = unique_name("app");
    pg.create_login_role(&role, &random_password())
        .await
        .unwrap();
    let wrong = "wrong-Pa55word-must-not-print";
    let store = MemorySource::new(Credential::new(role.clone(), wrong));
    let credentials = RotatingCredentials::new(store, manual_policy())
        .await
        .unwrap();

    // `connect_with` opens the first connection, like sqlx's.
    let err = adapter::connect_with(pool_options(2), base_options(&pg), credentials.clone())
        .await
        .unwrap_err();
    assert!(err.is_connect() && err.is_auth_failure(), "{err}");
    let (display, debug) = (chain(&err), format!("{err:?}"));
    assert!(
        display.contains(&role),
        "the error names the role: {display}"
    );
    assert!(
        display.contains("password authentication failed"),
        "{display}"
    );
    for text in [&display, &debug] {
        assert!(!text.contains(wrong), "secret printed: {text}");
    }

    // A lazy pool: the retrying checkout fails once more, clearly.
    let (pool, rotation) = pool(&pg, credentials, 2);
    let err = pool.acquire_following().await.unwrap_err();
    assert!(adapter::is_auth_failure(&err), "{err}");
    let texts = [
        chain(&err),
        format!("{err:?}"),
        format!("{rotation:?}"),
        format!("{pool:?}"),
    ];
    for text in &texts {
        assert!(!text.contains(wrong), "secret printed: {text}");
    }
    let stats = rotation.stats();
    assert_eq!(
        (stats.auth_failures, stats.auth_retry_failures),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_before_swap_keeps_the_working_credential() {
    let pg = postgres().await;
    let role = unique_name("app");
    let good = random_password();
    pg.create_login_role(&role, &good).await.unwrap();
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::builder(store.clone())
        .policy(app_policy(Strategy::SingleUser))
        .validator(adapter::connection_validator(base_options(&pg)))
        .build()
        .await
        .unwrap();
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    assert_eq!(current_user(&pool).await, role);

    // The store publishes a password the database does not have.
    store.set(Credential::new(role.clone(), "not-the-password"));
    let err = credentials.refresh().await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
    // Queries keep working on the old credential, including new connections.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut conn = pool.acquire_following().await.unwrap();
        conn.execute("SELECT 1").await.unwrap();
        conns.push(conn);
    }
    drop(conns);
    assert!(
        credentials.stats().rejected >= 2,
        "retried on the backoff schedule"
    );
    assert_eq!(rotation.stats().auth_failures, 0);
    assert_eq!(rotation.stats().stale_closed, 0, "nothing was drained");

    // The correct password arrives: same login as generation 1, so no new generation.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    assert!(credentials.health().is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_validation_errors_are_clear_and_the_pool_recovers() {
    let pg = postgres().await;
    let role = unique_name("app");
    let good = random_password();
    pg.create_login_role(&role, &good).await.unwrap();
    let store = MemorySource::new(Credential::new(role.clone(), good.clone()));
    let credentials = RotatingCredentials::new(store.clone(), app_policy(Strategy::SingleUser))
        .await
        .unwrap();
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    assert_eq!(current_user(&pool).await, role);

    store.set(Credential::new(role.clone(), "not-the-password"));
    credentials.refresh().await.unwrap();
    // Generation 2 is wrong: idle connections were drained, new connects fail clearly, on both
    // paths (the retry refetches the same wrong password).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains(&role), "{text}");
    assert!(!format!("{text} {err:?}").contains("not-the-password"));
    let err = pool.acquire_following().await.unwrap_err();
    assert!(adapter::is_auth_failure(&err), "{err}");
    assert!(!format!("{} {err:?} {rotation:?}", chain(&err)).contains("not-the-password"));

    // The correct password arrives: the pool recovers at the next refresh.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(current_user(&pool).await, role);
    assert_eq!(credentials.generation().get(), 3);
    assert_eq!(rotation.stats().options_generation.get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_credential_connections_retire_before_expiry() {
    let pg = postgres().await;
    let role = unique_name("leased");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    // A lease ending in 3 s; connections must be gone 2 s before that.
    let lease = Credential::new(role.clone(), password)
        .with_expires_at(SystemTime::now() + Duration::from_secs(3));
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .expiry_margin(Duration::from_secs(2))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(MemorySource::new(lease), policy)
        .await
        .unwrap();
    let (pool, rotation) = pool(&pg, credentials, 2);
    let first = {
        let mut conn = pool.acquire().await.unwrap();
        backend_pid(&mut conn).await
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pids = session_pids(&pg, &role).await;
    assert!(
        !pids.contains(&first),
        "the idle leased connection was retired: {pids:?}"
    );
    let mut conn = pool.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut conn).await, first);
    assert!(rotation.stats().stale_closed >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_hooks_still_run_and_the_tag_stays_out_of_sight() {
    let pg = postgres().await;
    let (role, _, _, credentials) = single_role(&pg, manual_policy()).await;
    let acquired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&acquired);
    let (pool, _rotation) =
        adapter::Builder::new(base_options(&pg).application_name("shop"), credentials)
            .pool_options(pool_options(1))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET search_path = pg_catalog").await?;
                    Ok(())
                })
            })
            .before_acquire(move |_conn, _meta| {
                counter.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(true) })
            })
            .build()
            .unwrap();
    let search_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(search_path, "pg_catalog");
    // Returns are asynchronous: let the connection reach the idle queue so the next query
    // checks it out (through `before_acquire`) instead of waiting for it.
    wait_idle(&pool, 1).await;
    let tag: String = sqlx::query_scalar("SELECT current_setting('credswap.generation')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tag, "1");
    assert!(
        acquired.load(Ordering::Relaxed) >= 1,
        "before_acquire ran on the idle connection"
    );
    let admin = pg.admin().await.unwrap();
    let row = admin
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "shop",
        "the application's name is untouched"
    );
}

#[test]
fn the_pool_is_a_plain_sqlx_pg_pool() {
    fn takes_pool(_: &sqlx::PgPool) {}
    fn returns_pool(p: (sqlx::PgPool, adapter::Rotation)) -> sqlx::PgPool {
        p.0
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new("app", "x")),
            Policy::default(),
        )
        .await
        .unwrap();
        let options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .database("postgres");
        let pool = returns_pool(
            adapter::connect_lazy_with(PgPoolOptions::new(), options, credentials).unwrap(),
        );
        takes_pool(&pool);
        pool.close().await;
    });
}

#[tokio::test]
async fn nothing_prints_the_password() {
    let secret = "Pa55-in-debug-would-be-a-bug";
    let credentials = RotatingCredentials::new(
        MemorySource::new(Credential::new("app", secret)),
        Policy::default(),
    )
    .await
    .unwrap();
    // Nothing listens on port 1: connects are refused.
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(1)
        .username("config-user")
        .password(secret);
    let builder = adapter::Builder::new(options, credentials.clone())
        .pool_options(PgPoolOptions::new().acquire_timeout(Duration::from_millis(300)));
    let builder_debug = format!("{builder:?}");
    let (pool, rotation) = builder.build().unwrap();
    let acquire_error = pool.acquire_following().await.unwrap_err();
    let texts = [
        builder_debug,
        format!("{rotation:?}"),
        format!("{:?}", rotation.stats()),
        format!("{pool:?}"),
        format!("{credentials:?}"),
        format!("{acquire_error} {acquire_error:?}"),
    ];
    for text in texts {
        assert!(!text.contains(secret), "secret printed: {text}");
    }
    pool.close().await;

    // A URL that does not parse: a clear error that does not repeat the URL.
    let url = format!("postgres://app:{secret}@db.example:notaport/app");
    let err = adapter::connect(PgPoolOptions::new(), &url, credentials)
        .await
        .unwrap_err();
    assert!(err.is_url(), "{err}");
    let text = format!("{} {err:?}", chain(&err));
    assert!(text.contains("invalid database URL"), "{text}");
    assert!(!text.contains(secret), "secret printed: {text}");
}

#[test]
fn building_outside_a_runtime_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let credentials = rt
        .block_on(RotatingCredentials::new(
            MemorySource::new(Credential::new("app", "pw")),
            Policy::default(),
        ))
        .unwrap();
    let options = PgConnectOptions::new_without_pgpass().host("127.0.0.1");
    let err = adapter::connect_lazy_with(PgPoolOptions::new(), options, credentials).unwrap_err();
    assert!(err.is_no_runtime(), "{err}");
    assert!(err.to_string().contains("inside a Tokio runtime"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_ends_the_watcher_and_plain_pools_pass_errors_through() {
    let pg = postgres().await;
    let (role, password, _, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, _rotation) = pool(&pg, credentials, 2);
    assert_eq!(current_user(&pool).await, role);
    pool.close().await;
    assert!(matches!(
        pool.acquire_following().await,
        Err(sqlx::Error::PoolClosed)
    ));

    // A pool this crate did not build: `acquire_following` is `acquire`.
    let options = base_options(&pg).username(&role).password("wrong");
    let plain = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let err = plain.acquire_following().await.unwrap_err();
    assert!(adapter::is_auth_failure(&err), "{err}");
    let options = base_options(&pg).username(&role).password(&password);
    let plain = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut conn = plain.acquire_following().await.unwrap();
    conn.execute("SELECT 1").await.unwrap();
}
