//! The adapter contract against a real PostgreSQL with scram-sha-256 authentication.

mod support;

use credswap_testkit::harness::{
    assert_contract, error_chain as chain, manual_policy, scenario_config, session_pids,
    single_role,
};

use std::time::{Duration, SystemTime};

use credswap_bb8::{Generation, Pool, RotatingConnectionManager};
use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::scenario::Strategy;
use credswap_testkit::{TestPostgres, random_password, unique_name};
use support::{app_policy, pool, pool_with, postgres, postgres_alone, run_scenario};
use tokio::time::Instant;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

async fn assert_scenario_is_clean(strategy: Strategy) {
    let pg = postgres_alone().await;
    let (report, rotation) = run_scenario(&pg, strategy, scenario_config()).await;
    let stats = rotation.stats();
    let summary = format!("{}\n{stats:?}", report.summary());
    assert_contract(&report, &summary);
    assert_eq!(report.requests_failed, 0, "{summary}");
    assert!(
        stats.generation.get() >= 10,
        "the pool followed every rotation: {summary}"
    );
    assert!(stats.stale_closed > 0, "{summary}");
    assert_eq!(stats.consecutive_connect_failures, 0, "{summary}");
    eprintln!("{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_users_rotation_loses_no_request() {
    assert_scenario_is_clean(Strategy::AlternatingUsers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_user_rotation_loses_no_request() {
    assert_scenario_is_clean(Strategy::SingleUser).await;
}

/// Rotates a single role: the database first, then the store, then the provider.
async fn rotate(
    pg: &TestPostgres,
    role: &str,
    store: &MemorySource,
    credentials: &RotatingCredentials,
) {
    let new_password = random_password();
    pg.set_password(role, &new_password).await.unwrap();
    store.set(Credential::new(role, new_password));
    credentials.refresh().await.unwrap();
}

async fn backend_pid(pool: &Pool<NoTls>) -> i32 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// How long after a generation change the last idle stale connection is closed: the number
/// the crate docs quote. Eight idle connections, five rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stale_connections_close_within_milliseconds_of_the_change() {
    let pg = postgres_alone().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 8).await;
    let admin = pg.admin().await.unwrap();
    let mut sockets_closed = Vec::new();
    let mut backends_gone = Vec::new();
    for _ in 0..5 {
        // Eight connections, each checked out once, all idle now.
        let held: Vec<_> = {
            let mut held = Vec::new();
            for _ in 0..8 {
                let conn = pool.get().await.unwrap();
                conn.simple_query("SELECT 1").await.unwrap();
                held.push(conn);
            }
            held
        };
        let old = held[0].generation();
        assert!(held.iter().all(|c| c.generation() == old));
        drop(held);
        assert_eq!(pool.state().idle_connections, 8);
        assert_eq!(rotation.stats().live_per_generation.get(&old), Some(&8));
        let closed_before = rotation.stats().stale_closed_idle;

        let new_password = random_password();
        pg.set_password(&role, &new_password).await.unwrap();
        store.set(Credential::new(role.clone(), new_password));
        let started = Instant::now();
        credentials.refresh().await.unwrap();
        // Client side: every socket of the old generation closed (their tasks ended). Polled
        // without sleeping: the timer's 1 ms granularity would be most of the measurement.
        while rotation.stats().live_per_generation.contains_key(&old) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                rotation.stats()
            );
            tokio::task::yield_now().await;
        }
        sockets_closed.push(started.elapsed());
        // Server side: every backend of the role gone from pg_stat_activity.
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&role],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{n} backends left"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        backends_gone.push(started.elapsed());
        assert_eq!(rotation.stats().stale_closed_idle - closed_before, 8);

        // bb8 still counts them until a checkout pops them: it refuses all eight without a
        // round trip and opens one connection with the new credential.
        assert_eq!(pool.state().connections, 8);
        let conn = pool.get().await.unwrap();
        assert_eq!(conn.generation(), credentials.generation());
        drop(conn);
        assert_eq!(pool.state().connections, 1);
    }
    let worst = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 2]
    };
    eprintln!(
        "8 idle stale connections after a generation change: sockets closed after {sockets_closed:?} \
         (median {:?}, worst {:?}); backends gone from pg_stat_activity after {backends_gone:?} \
         (median {:?}, worst {:?})",
        median(&sockets_closed),
        worst(&sockets_closed),
        median(&backends_gone),
        worst(&backends_gone)
    );
    assert!(
        worst(&sockets_closed) < Duration::from_millis(100),
        "{sockets_closed:?}"
    );
    assert!(
        worst(&backends_gone) < Duration::from_secs(1),
        "{backends_gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connection_commits_across_rotation_then_closes_on_return() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4).await;

    let mut busy = pool.get().await.unwrap();
    let busy_pid: i32 = busy
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let idle_pid = backend_pid(&pool).await; // a second connection, now idle
    let transaction = busy.transaction().await.unwrap();
    transaction
        .batch_execute("CREATE TEMP TABLE t(x int)")
        .await
        .unwrap();
    transaction
        .execute("SELECT pg_sleep(0.5)", &[])
        .await
        .unwrap();

    // Rotate (single user) while the transaction is open.
    rotate(&pg, &role, &store, &credentials).await;

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
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap();
    transaction
        .execute("SELECT pg_sleep(2.5)", &[])
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    let committed: i64 = busy
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
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
    assert_ne!(backend_pid(&pool).await, busy_pid);
    let stats = rotation.stats();
    assert!(stats.stale_closed >= 2, "{stats:?}");
    assert!(stats.stale_closed_idle >= 1, "{stats:?}");
    assert_eq!(
        stats.live_per_generation.keys().copied().max(),
        Some(credentials.generation())
    );
    assert!(pool.state().connections <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_at_connect_refreshes_and_retries_once() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4).await;
    // Zero overlap: the database and the store change; the provider has not refreshed.
    let new_password = random_password();
    pg.set_password(&role, &new_password).await.unwrap();
    store.set(Credential::new(role.clone(), new_password));
    let started = Instant::now();
    let client = pool
        .get()
        .await
        .expect("the retry with the refreshed credential succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no bb8 retry delay: {:?}",
        started.elapsed()
    );
    let user: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, role);
    assert_eq!(client.generation().get(), 2);
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
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert_eq!(credentials.generation().get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_wrong_password_is_visible_long_before_the_timeout() {
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

    // bb8's default connection_timeout: `get` would wait 30 s and say only "timed out".
    let (pool, rotation) =
        pool_with(&pg, credentials.clone(), bb8::Pool::builder().max_size(2)).await;
    let started = Instant::now();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(drop) }
    });
    let err = loop {
        if let Some(err) = rotation.last_connect_error() {
            break err;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no connect error recorded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let visible_after = started.elapsed();
    assert!(
        visible_after < Duration::from_secs(2),
        "visible after {visible_after:?}"
    );
    assert!(
        !waiting.is_finished(),
        "bb8 itself is still waiting for its 30 s timeout"
    );
    waiting.abort();

    assert!(err.is_connect() && err.is_auth_failure(), "{err}");
    assert_eq!(err.username(), Some(role.as_str()));
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    let (display, debug) = (chain(&err), format!("{err:?}"));
    assert!(
        display.contains(&format!("\"{role}\"")),
        "the error names the role: {display}"
    );
    assert!(
        display.contains("password authentication failed"),
        "{display}"
    );
    assert!(
        display.contains("after refreshing the credential"),
        "{display}"
    );
    for text in [
        &display,
        &debug,
        &format!("{rotation:?}"),
        &format!("{pool:?}"),
        &format!("{credentials:?}"),
    ] {
        assert!(!text.contains(wrong), "secret printed: {text}");
    }
    let stats = rotation.stats();
    assert!(
        stats.auth_failures >= 1 && stats.auth_retry_failures >= 1,
        "{stats:?}"
    );
    assert!(
        stats.connect_failures >= 1 && stats.consecutive_connect_failures >= 1,
        "{stats:?}"
    );
    eprintln!("a persistent wrong password was visible after {visible_after:?}: {display}");

    // With a short connection_timeout, as the crate docs advise, `get` gives up quickly too.
    let short = bb8::Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_millis(1500));
    let (pool, rotation) = pool_with(&pg, credentials, short).await;
    let started = Instant::now();
    let err = pool.get().await.map(drop).unwrap_err();
    assert!(matches!(err, bb8::RunError::TimedOut), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let cause = rotation
        .last_connect_error()
        .expect("the cause of the timeout");
    assert!(
        cause.is_auth_failure() && cause.to_string().contains(&role),
        "{cause}"
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
        .validator(credswap_bb8::connection_validator(pg.base_config(), NoTls))
        .build()
        .await
        .unwrap();
    let (pool, rotation) = pool(&pg, credentials.clone(), 4).await;
    assert_eq!(backend_user(&pool).await, role);

    // The store publishes a password the database does not have.
    store.set(Credential::new(role.clone(), "not-the-password"));
    let err = credentials.refresh().await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    // Queries keep working on the old credential, including new connections.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    let clients = hold(&pool, 4).await;
    assert_eq!(clients.len(), 4);
    drop(clients);
    assert!(
        credentials.stats().rejected >= 2,
        "retried on the backoff schedule"
    );
    assert_eq!(rotation.stats().auth_failures, 0);

    // The correct password arrives: published within a refresh interval.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Same login as generation 1, so no new generation was needed.
    assert_eq!(credentials.generation().get(), 1);
    assert!(credentials.health().is_healthy());
}

/// Checks out `n` connections at once, each used once.
async fn hold(pool: &Pool<NoTls>, n: usize) -> Vec<credswap_bb8::PooledConnection<'_, NoTls>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let client = pool.get().await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        clients.push(client);
    }
    clients
}

async fn backend_user(pool: &Pool<NoTls>) -> String {
    pool.get()
        .await
        .unwrap()
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0)
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
    let builder = bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(1));
    let (pool, rotation) = pool_with(&pg, credentials.clone(), builder).await;
    assert_eq!(backend_user(&pool).await, role);

    store.set(Credential::new(role.clone(), "not-the-password"));
    credentials.refresh().await.unwrap();
    // Generation 2 is wrong: the idle connection was closed, new connects fail.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rotation.stats().live(), 0, "{:?}", rotation.stats());
    let err = pool.get().await.map(drop).unwrap_err();
    assert!(matches!(err, bb8::RunError::TimedOut), "{err}");
    // bb8 says only "timed out"; the manager kept the cause.
    let cause = rotation.last_connect_error().expect("the connect error");
    let text = chain(&cause);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains(&role), "{text}");
    assert_eq!(cause.generation(), Some(Generation::new(2)));
    assert!(!format!("{text} {cause:?} {err:?}").contains("not-the-password"));
    assert!(rotation.stats().consecutive_connect_failures > 0);

    // The correct password arrives: the pool recovers at the next refresh.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(backend_user(&pool).await, role);
    assert_eq!(credentials.generation().get(), 3);
    assert_eq!(rotation.stats().consecutive_connect_failures, 0);
    // The last error stays readable after the recovery.
    assert!(rotation.last_connect_error().is_some());
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
    let (pool, rotation) = pool(&pg, credentials, 2).await;
    let first = backend_pid(&pool).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pids = session_pids(&pg, &role).await;
    assert!(
        !pids.contains(&first),
        "the idle leased connection was retired: {pids:?}"
    );
    assert_ne!(backend_pid(&pool).await, first);
    let stats = rotation.stats();
    assert!(
        stats.stale_closed >= 1 && stats.stale_closed_idle >= 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_checkout_validation_a_busy_connection_is_never_closed_under_its_user() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let builder = bb8::Pool::builder()
        .max_size(2)
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(10));
    let (pool, rotation) = pool_with(&pg, credentials.clone(), builder).await;
    let busy = pool.get().await.unwrap();
    let busy_pid: i32 = busy
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    rotate(&pg, &role, &store, &credentials).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The manager cannot tell busy from idle without `is_valid`, so it closes nothing...
    busy.simple_query("SELECT 1").await.expect("still open");
    assert!(session_pids(&pg, &role).await.contains(&busy_pid));
    // ...until the connection is returned: `has_broken` still refuses it.
    drop(busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!session_pids(&pg, &role).await.contains(&busy_pid));
    assert_eq!(rotation.stats().stale_closed_idle, 0);
    assert_eq!(rotation.stats().stale_closed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_connections_close_on_rotation_unless_kept_open() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, _rotation) = pool(&pg, credentials.clone(), 2).await;
    backend_pid(&pool).await; // a validated checkout
    let kept = pool.dedicated_connection().await.unwrap();
    assert!(kept.keep_open_on_rotation());
    let plain = pool.dedicated_connection().await.unwrap();

    rotate(&pg, &role, &store, &credentials).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kept.simple_query("SELECT 1")
        .await
        .expect("kept open across the rotation");
    assert!(
        plain.is_closed(),
        "a dedicated connection looks idle and follows the credential"
    );
    assert!(!plain.keep_open_on_rotation());
}

#[test]
fn the_pool_is_a_bb8_pool_of_connections_that_deref_to_client() {
    fn takes_client(_: &tokio_postgres::Client) {}
    fn takes_pool(_: &bb8::Pool<RotatingConnectionManager<NoTls>>) {}
    // Code written for bb8-postgres compiles unchanged against a checked-out connection.
    #[allow(dead_code)]
    async fn handler(pool: &Pool<NoTls>) -> Result<i32, Box<dyn std::error::Error>> {
        let mut conn = pool.get().await?;
        takes_client(&conn);
        let tx = conn.transaction().await?;
        tx.commit().await?;
        let row = conn.query_one("SELECT 1", &[]).await?;
        Ok(row.get(0))
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new("app", "x")),
            Policy::default(),
        )
        .await
        .unwrap();
        let manager = RotatingConnectionManager::new_from_stringlike(
            "host=127.0.0.1 dbname=postgres",
            NoTls,
            credentials,
        )
        .unwrap();
        // No `min_idle`: building connects nothing.
        let pool: Pool<NoTls> = bb8::Pool::builder().build(manager).await.unwrap();
        takes_pool(&pool);
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
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .user("config-user")
        .password(secret);
    let manager = RotatingConnectionManager::new(config, NoTls, credentials.clone());
    let manager_debug = format!("{manager:?}");
    let rotation = manager.rotation();
    let pool: Pool<NoTls> = bb8::Pool::builder().build_unchecked(manager);
    let bad = RotatingConnectionManager::new_from_stringlike(
        format!("host=x password={secret} port=nope"),
        NoTls,
        credentials.clone(),
    )
    .unwrap_err();
    assert!(bad.is_config(), "{bad}");
    let texts = [
        manager_debug,
        format!("{rotation:?}"),
        format!("{:?}", rotation.stats()),
        format!("{pool:?}"),
        format!("{credentials:?}"),
        format!("{bad} {bad:?}"),
        chain(&bad),
    ];
    for text in texts {
        assert!(!text.contains(secret), "secret printed: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_prints_its_generation_and_no_secret() {
    let pg = postgres().await;
    let (_, password, _, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, _rotation) = pool(&pg, credentials, 1).await;
    let conn = pool.get().await.unwrap();
    let text = format!("{conn:?} {:?}", *conn);
    assert!(text.contains("generation"), "{text}");
    assert!(!text.contains(&password), "secret printed: {text}");
}
