//! The adapter contract against a real PostgreSQL with scram-sha-256 authentication.

mod support;

use credswap_testkit::harness::{
    assert_contract, error_chain as chain, manual_policy, scenario_config, session_pids,
    single_role,
};

use std::time::{Duration, SystemTime};

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::scenario::Strategy;
use credswap_testkit::{random_password, unique_name};
use deadpool_postgres::Pool;
use support::{app_policy, pool, postgres, postgres_alone, run_scenario};

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
    assert_eq!(stats.untagged, 0, "{summary}");
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

async fn backend_pid(pool: &Pool) -> i32 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connection_commits_across_rotation_then_closes_on_return() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TEMP TABLE IF NOT EXISTS t(x int)")
        .await
        .unwrap();

    let mut busy = pool.get().await.unwrap();
    let busy_pid: i32 = busy
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let idle_pid = backend_pid(&pool).await; // a second connection, now idle
    let transaction = busy.transaction().await.unwrap();
    transaction
        .execute("SELECT pg_sleep(0.5)", &[])
        .await
        .unwrap();

    // Rotate (single user) while the transaction is open.
    let new_password = random_password();
    pg.set_password(&role, &new_password).await.unwrap();
    store.set(Credential::new(role.clone(), new_password));
    credentials.refresh().await.unwrap();

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
        .execute("SELECT pg_sleep(2.5)", &[])
        .await
        .unwrap();
    transaction.commit().await.unwrap();
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
    assert_eq!(
        stats.live_per_generation.keys().copied().max(),
        Some(credentials.generation())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_at_connect_refreshes_and_retries_once() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    // Zero overlap: the database and the store change; the provider has not refreshed.
    let new_password = random_password();
    pg.set_password(&role, &new_password).await.unwrap();
    store.set(Credential::new(role.clone(), new_password));
    let client = pool
        .get()
        .await
        .expect("the retry with the refreshed credential succeeds");
    let user: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
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
    let (pool, rotation) = pool(&pg, credentials, 2);
    let err = pool.get().await.unwrap_err();
    let (display, debug) = (chain(&err), format!("{err:?}"));
    assert!(
        display.contains(&role),
        "the error names the role: {display}"
    );
    assert!(
        display.contains("password authentication failed"),
        "{display}"
    );
    for text in [
        &display,
        &debug,
        &format!("{rotation:?}"),
        &format!("{pool:?}"),
    ] {
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
        .validator(credswap_deadpool::connection_validator(
            pg.base_config(),
            tokio_postgres::NoTls,
        ))
        .build()
        .await
        .unwrap();
    let (pool, rotation) = pool(&pg, credentials.clone(), 4);
    assert_eq!(backend_user(&pool).await, role);

    // The store publishes a password the database does not have.
    store.set(Credential::new(role.clone(), "not-the-password"));
    let err = credentials.refresh().await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    // Queries keep working on the old credential, including new connections.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 1);
    let clients: Vec<_> = futures_join(&pool, 4).await;
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

async fn futures_join(pool: &Pool, n: usize) -> Vec<deadpool_postgres::Client> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let client = pool.get().await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        clients.push(client);
    }
    clients
}

async fn backend_user(pool: &Pool) -> String {
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
    let (pool, _rotation) = pool(&pg, credentials.clone(), 4);
    assert_eq!(backend_user(&pool).await, role);

    store.set(Credential::new(role.clone(), "not-the-password"));
    credentials.refresh().await.unwrap();
    // Generation 2 is wrong: idle connections were drained, new connects fail clearly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = pool.get().await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains(&role), "{text}");
    assert!(!format!("{text} {err:?}").contains("not-the-password"));

    // The correct password arrives: the pool recovers at the next refresh.
    store.set(Credential::new(role.clone(), good));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(backend_user(&pool).await, role);
    assert_eq!(credentials.generation().get(), 3);
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
    let first = backend_pid(&pool).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pids = session_pids(&pg, &role).await;
    assert!(
        !pids.contains(&first),
        "the idle leased connection was retired: {pids:?}"
    );
    assert_ne!(backend_pid(&pool).await, first);
    assert!(rotation.stats().stale_closed >= 1);
}

#[test]
fn the_pool_is_a_plain_deadpool_postgres_pool() {
    fn takes_pool(_: &deadpool_postgres::Pool) {}
    fn returns_pool(
        p: (deadpool_postgres::Pool, credswap_deadpool::Rotation),
    ) -> deadpool_postgres::Pool {
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
        let mut cfg = deadpool_postgres::Config::new();
        cfg.host = Some("127.0.0.1".into());
        cfg.dbname = Some("postgres".into());
        let pool = returns_pool(
            credswap_deadpool::create_pool(&cfg, tokio_postgres::NoTls, credentials).unwrap(),
        );
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
    let mut pg_config = tokio_postgres::Config::new();
    pg_config
        .host("127.0.0.1")
        .user("config-user")
        .password(secret);
    let builder =
        credswap_deadpool::Builder::new(pg_config, tokio_postgres::NoTls, credentials.clone());
    let builder_debug = format!("{builder:?}");
    let (pool, rotation) = builder.build().unwrap();
    let texts = [
        builder_debug,
        format!("{rotation:?}"),
        format!("{:?}", rotation.stats()),
        format!("{pool:?}"),
        format!("{credentials:?}"),
    ];
    for text in texts {
        assert!(!text.contains(secret), "secret printed: {text}");
    }
}

#[test]
fn bad_deadpool_config_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new("app", "pw")),
            Policy::default(),
        )
        .await
        .unwrap();
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some("postgres://[not a url".into());
        let err =
            credswap_deadpool::create_pool(&cfg, tokio_postgres::NoTls, credentials).unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(
            err.to_string()
                .contains("invalid deadpool_postgres::Config"),
            "{err}"
        );
    });
}
