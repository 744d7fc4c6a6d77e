//! What only the deadpool adapter does: a plain `deadpool_postgres::Pool` from a
//! `deadpool_postgres::Config`, and the application's own hooks beside the adapter's. The
//! adapter contract (TLS, building outside a runtime and what the pool prints included) is in
//! `conformance.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::harness::{error_chain, manual_policy, postgres, single_role};
use credswap_testkit::random_password;
use deadpool_postgres::{Hook, HookError, Pool};
use tokio_postgres::NoTls;

async fn provider(password: &str) -> RotatingCredentials {
    RotatingCredentials::new(
        MemorySource::new(Credential::new("app", password)),
        Policy::default(),
    )
    .await
    .expect("provider")
}

// The pool is a plain `deadpool_postgres::Pool` (with the adapter's `Rotation` beside it), for
// a `deadpool_postgres::Config` as for a `tokio_postgres::Config`.
const _: () = {
    type Built = Result<(Pool, credswap_deadpool::Rotation), credswap_deadpool::Error>;
    let _: fn(&deadpool_postgres::Config, NoTls, RotatingCredentials) -> Built =
        credswap_deadpool::create_pool::<NoTls>;
    let _: fn(
        tokio_postgres::Config,
        deadpool_postgres::PoolConfig,
        NoTls,
        RotatingCredentials,
    ) -> Built = credswap_deadpool::create_pool_from_pg_config::<NoTls>;
};

#[tokio::test]
async fn a_bad_deadpool_config_is_a_clear_error() {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some("postgres://[not a url".into());
    let err = credswap_deadpool::create_pool(&cfg, NoTls, provider("pw").await).unwrap_err();
    assert!(err.is_config(), "{err}");
    let text = error_chain(&err);
    assert!(text.contains("deadpool_postgres::Config"), "{text}");
    assert!(text.contains("\"url\" is invalid"), "{text}");
}

/// The application's hooks run after the adapter's: `post_create` on a tagged connection,
/// `pre_recycle` and `post_recycle` only on current ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_hooks_run_after_the_adapters() {
    let pg = postgres().await;
    let (role, _, store, credentials) = single_role(&pg, manual_policy()).await;
    let recycled = Arc::new(AtomicUsize::new(0));
    let (pre, post) = (Arc::clone(&recycled), Arc::clone(&recycled));
    let (pool, rotation) =
        credswap_deadpool::Builder::new(pg.base_config(), NoTls, credentials.clone())
            .max_size(1)
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET application_name = 'shop'")
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .pre_recycle(Hook::sync_fn(move |_, _| {
                pre.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
            .post_recycle(Hook::sync_fn(move |_, _| {
                post.fetch_add(100, Ordering::SeqCst);
                Ok(())
            }))
            .build()
            .expect("pool");
    let name = |client: deadpool_postgres::Client| async move {
        let row = client
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .expect("query");
        row.get::<_, String>(0)
    };
    assert_eq!(name(pool.get().await.expect("get")).await, "shop");
    assert_eq!(name(pool.get().await.expect("get")).await, "shop");
    assert_eq!(
        recycled.load(Ordering::SeqCst),
        101,
        "one recycle, both hooks"
    );

    // A stale connection is refused (or closed by the watcher) before the application's hook
    // sees it.
    let busy = pool.get().await.expect("get");
    assert_eq!(recycled.load(Ordering::SeqCst), 202);
    let password = random_password();
    pg.set_password(&role, &password).await.expect("ALTER ROLE");
    store.set(Credential::new(role, password));
    credentials.refresh().await.expect("refresh");
    drop(busy);
    assert_eq!(name(pool.get().await.expect("get")).await, "shop");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(recycled.load(Ordering::SeqCst), 202);
    assert!(rotation.stats().stale_closed >= 1, "{:?}", rotation.stats());
    assert_eq!(rotation.stats().untagged, 0);
}
