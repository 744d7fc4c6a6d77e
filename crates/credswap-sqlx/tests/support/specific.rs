// What is specific to the sqlx adapter, for one sqlx version: `include!`d by
// `tests/rotation.rs` into a module where `adapter` names `credswap_sqlx::v0_X` and `sqlx` that
// version's sqlx.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapter::PoolExt;
use credswap_core::{Credential, Generation, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::harness::{error_chain, manual_policy, postgres, session_pids, single_role};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::time::Instant;

use crate::support::{base_options, slow_proxy};

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
}

async fn current_user(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls `done` every 5 ms for at most 5 s.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_no_sessions(pg: &TestPostgres, role: &str) {
    wait_until(&format!("the sessions of {role} are closed"), async || {
        session_pids(pg, role).await.is_empty()
    })
    .await;
}

/// Waits until the watcher has pointed the pool at `role`.
async fn wait_username(pool: &PgPool, role: &str) {
    wait_until("the watcher swaps the options", async || {
        pool.connect_options().get_username() == role
    })
    .await;
}

/// Roles with fresh passwords, and a provider on the first, behind a proxy that holds every new
/// connection for 400 ms.
async fn slow_pool(
    pg: &TestPostgres,
    n: usize,
    pool_options: PgPoolOptions,
) -> (
    Vec<Credential>,
    MemorySource,
    RotatingCredentials,
    PgPool,
    adapter::Rotation,
) {
    let mut logins = Vec::new();
    for _ in 0..n {
        let (role, password) = (unique_name("race"), random_password());
        pg.create_login_role(&role, &password).await.unwrap();
        logins.push(Credential::new(role, password));
    }
    let store = MemorySource::new(logins[0].clone());
    let credentials = RotatingCredentials::new(store.clone(), manual_policy())
        .await
        .unwrap();
    let port = slow_proxy(pg, Duration::from_millis(400)).await;
    let options = base_options!(sqlx, pg).host("127.0.0.1").port(port);
    let (pool, rotation) =
        adapter::connect_lazy_with(pool_options, options, credentials.clone()).unwrap();
    (logins, store, credentials, pool, rotation)
}

/// A connect that read the old options and finished after the swap authenticated with the old
/// credential (still valid): `after_connect` refuses it, and sqlx connects again with the new
/// options, so the checkout gets a connection of the current credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_straddling_a_swap_is_refused_and_sqlx_connects_again() {
    let pg = postgres().await;
    let (logins, store, credentials, pool, rotation) = slow_pool(&pg, 2, pool_options(2)).await;
    let (role_a, role_b) = (logins[0].username(), logins[1].username());

    let checkout = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await }
    });
    // The connect has read generation 1's options and waits in the proxy; role A stays valid.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.set(logins[1].clone());
    credentials.refresh().await.unwrap();
    wait_username(&pool, role_b).await;

    let mut conn = checkout.await.unwrap().expect("the checkout gets a connection");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(user, role_b, "the raced connection was refused; the next used the new options");
    wait_no_sessions(&pg, role_a).await;
    let stats = rotation.stats();
    assert_eq!(stats.raced_connects, 1, "{stats:?}");
    assert_eq!(stats.stale_closed, 1, "{stats:?}");
    assert_eq!(
        stats.opened_per_generation,
        [(Generation::new(1), 1), (Generation::new(2), 1)].into(),
        "{stats:?}"
    );
    assert_eq!(stats.live_per_generation, [(Generation::new(2), 1)].into(), "{stats:?}");
}

/// The application's hooks run beside the adapter's, its startup options and
/// `application_name` reach the server unchanged, and the adapter sends nothing of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_hooks_compose_and_nothing_of_the_adapter_reaches_the_server() {
    let pg = postgres().await;
    let (role, _, _, credentials) = single_role(&pg, manual_policy()).await;
    let (acquired, released) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (on_acquire, on_release) = (Arc::clone(&acquired), Arc::clone(&released));
    let options = base_options!(sqlx, pg)
        .application_name("shop")
        .options([("statement_timeout", "5s")]);
    let (pool, rotation) = adapter::Builder::new(options, credentials)
        .pool_options(pool_options(1))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET search_path = pg_catalog").await?;
                Ok(())
            })
        })
        .before_acquire(move |_conn, _meta| {
            on_acquire.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Ok(true) })
        })
        .after_release(move |_conn, _meta| {
            on_release.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Ok(true) })
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.unwrap();
        let (search_path, timeout, tag): (String, String, Option<String>) = sqlx::query_as(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
             current_setting('credswap.generation', true)",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((search_path.as_str(), timeout.as_str()), ("pg_catalog", "5s"));
        assert_eq!(tag, None, "no setting of the adapter's");
        drop(conn);
        wait_until("the connection is returned", async || pool.num_idle() == 1).await;
    }
    assert!(acquired.load(Ordering::Relaxed) >= 2, "before_acquire ran");
    assert!(released.load(Ordering::Relaxed) >= 3, "after_release ran");
    let name: String = pg
        .admin()
        .await
        .unwrap()
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "shop", "the application's name is untouched");
    let stats = rotation.stats();
    assert_eq!((stats.opened, stats.stale_closed, stats.untagged), (1, 0, 0), "{stats:?}");
}

/// Zero overlap: plain `acquire` gets the refused login, `Rotation::begin` reports it and
/// waits for the store's new password; so does the pool's first connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_fails_plain_acquire_and_the_rotation_checkouts_follow() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let (pool, rotation) = adapter::connect_lazy_with(
        pool_options(4),
        base_options!(sqlx, pg),
        credentials.clone(),
    )
    .unwrap();
    let password = random_password();
    pg.set_password(&role, &password).await.unwrap();

    // sqlx has no connect hook: the 28P01 reaches the caller, and nothing reports it.
    let err = pool.acquire().await.unwrap_err();
    assert!(adapter::is_auth_failure(&err), "{err}");
    assert_eq!(rotation.stats().auth_failures, 0);

    // The store learns the password 300 ms later; `begin` waits for it.
    let lagging = tokio::spawn({
        let (store, role) = (store.clone(), role.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.set(Credential::new(role, password));
        }
    });
    let mut transaction = pool.begin_following(&rotation).await.expect("begin after the refresh");
    transaction.execute("SELECT 1").await.unwrap();
    transaction.commit().await.unwrap();
    lagging.await.unwrap();
    let stats = rotation.stats();
    assert!(stats.auth_failures >= 1 && stats.auth_retries >= 1, "{stats:?}");
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
    assert_eq!(credentials.generation().get(), 2);

    // The first connection of `connect_with` follows the same way; a wrong password fails
    // within `acquire_timeout`, with the role, the generation and the SQLSTATE.
    pg.set_password(&role, &random_password()).await.unwrap();
    let err = adapter::connect_with(
        pool_options(1).acquire_timeout(Duration::from_millis(500)),
        base_options!(sqlx, pg),
        credentials.clone(),
    )
    .await
    .unwrap_err();
    assert!(err.is_connect() && err.is_auth_failure(), "{err}");
    assert_eq!((err.code(), err.username()), (Some("28P01"), Some(role.as_str())));
    assert_eq!(err.generation(), Some(credentials.generation()));
    assert!(err.attempts().is_some_and(|n| n > 1), "{err}");
}

/// A provider over a fixed login, for the tests that connect nowhere.
async fn fixed_provider() -> RotatingCredentials {
    let login = Credential::new("app", "pw");
    RotatingCredentials::new(MemorySource::new(login), Policy::default())
        .await
        .unwrap()
}

// The pool is a plain `sqlx::PgPool`, with the adapter's `Rotation` beside it.
const _: () = {
    type Built = Result<(sqlx::PgPool, adapter::Rotation), adapter::Error>;
    let _: fn(PgPoolOptions, PgConnectOptions, RotatingCredentials) -> Built =
        adapter::connect_lazy_with;
};

/// A URL that does not parse: a configuration error that does not repeat the URL.
#[tokio::test]
async fn a_url_that_does_not_parse_is_a_config_error_without_the_secret() {
    let secret = "Pa55-in-a-url";
    let url = format!("postgres://app:{secret}@db.example:notaport/app");
    let err = adapter::connect(PgPoolOptions::new(), &url, fixed_provider().await)
        .await
        .unwrap_err();
    assert!(err.is_config(), "{err}");
    let text = format!("{} {err:?}", error_chain(&err));
    assert!(text.contains("invalid database URL"), "{text}");
    assert!(!text.contains(secret), "secret printed: {text}");
}

/// sqlx has no weak pool handle: the watcher holds one, and `PgPool::close` ends it. Once the
/// application's handles are gone too, nothing holds the provider: its refresher stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_pool_ends_the_watcher() {
    let pg = postgres().await;
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (role, _, store, credentials) = single_role(&pg, policy).await;
    let (pool, rotation) = adapter::connect_with(
        pool_options(2),
        base_options!(sqlx, pg),
        credentials.clone(),
    )
    .await
    .unwrap();
    assert_eq!(current_user(&pool).await, role);
    drop(credentials);

    pool.close().await;
    assert!(matches!(pool.acquire_following(&rotation).await, Err(sqlx::Error::PoolClosed)));
    drop((pool, rotation));
    wait_no_sessions(&pg, &role).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = store.fetch_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.fetch_count(), settled, "the refresher stopped with the watcher");
}

/// `SELECT 1` on a connection checked out with `PgPool::acquire` (plain) or
/// `Rotation::acquire` (following).
struct Churn {
    pool: PgPool,
    following: Option<adapter::Rotation>,
}

#[async_trait::async_trait]
impl credswap_testkit::scenario::Workload for Churn {
    async fn request(&self) -> Result<(), credswap_core::BoxError> {
        let mut conn = match &self.following {
            Some(rotation) => self.pool.acquire_following(rotation).await?,
            None => self.pool.acquire().await?,
        };
        conn.execute("SELECT 1").await?;
        Ok(())
    }
}

/// A measurement, not a contract: single-user rotation with connections reopened every 300 ms,
/// so that connects keep landing between `ALTER ROLE` and the provider's next refresh. Prints
/// what fails through `PgPool::acquire` (every such connect: `28P01`, which nothing reports)
/// and through `Rotation::acquire`.
/// Run: `cargo test -p credswap-sqlx --all-features --test rotation -- --ignored --nocapture churn`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints what remains of zero-overlap failures on each path"]
async fn churning_pool_single_user_measurement() {
    use credswap_testkit::harness::{app_policy, postgres_alone, scenario_config};
    use credswap_testkit::scenario::{self, Progress, RotationSetup, Strategy};

    for following in [false, true] {
        let pg = postgres_alone().await;
        let config = scenario_config();
        let setup = RotationSetup::create(&pg, Strategy::SingleUser).await.unwrap();
        let credentials =
            RotatingCredentials::new(setup.store().clone(), app_policy(Strategy::SingleUser))
                .await
                .unwrap();
        let options = pool_options(config.pool_max_size as u32)
            .max_lifetime(Duration::from_millis(300));
        let (pool, rotation) =
            adapter::connect_lazy_with(options, base_options!(sqlx, pg), credentials).unwrap();
        let workload = Arc::new(Churn {
            pool: pool.clone(),
            following: following.then(|| rotation.clone()),
        });
        let report = scenario::run(&pg, setup, workload, &config, Arc::new(Progress::default()))
            .await
            .unwrap();
        let path = if following { "Rotation::acquire" } else { "PgPool::acquire" };
        eprintln!(
            "{path}, max_lifetime 300 ms: {}\n{:?}",
            report.summary(),
            rotation.stats()
        );
        assert_eq!(report.stale_after_drain, 0);
        assert!(report.peak_backends <= config.pool_max_size);
        pool.close().await;
    }
}
