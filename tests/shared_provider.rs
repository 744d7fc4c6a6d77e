//! One provider, several pools: an application with a deadpool pool for requests and a bb8 pool
//! for background jobs rotates once, and both follow, against a real PostgreSQL.

use std::time::{Duration, SystemTime};

use credswap::{Credential, Policy, RotatingCredentials};
use credswap_testkit::scenario::{RotationSetup, Strategy};
use credswap_testkit::{TestPostgres, random_password};
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pool_of_one_provider_follows_a_rotation() {
    let pg = TestPostgres::from_env()
        .await
        .unwrap_or_else(|e| panic!("this test needs a PostgreSQL server: {e}"));
    let setup = RotationSetup::create(&pg, Strategy::AlternatingUsers)
        .await
        .unwrap();
    let (old_role, new_role) = (setup.roles()[0].clone(), setup.roles()[1].clone());
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(200))
        .overlap_window(Duration::from_secs(2))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(setup.store().clone(), policy)
        .await
        .unwrap();

    let (deadpool, deadpool_rotation) = credswap::deadpool::create_pool_from_pg_config(
        pg.base_config(),
        deadpool_postgres::PoolConfig::new(3),
        NoTls,
        credentials.clone(),
    )
    .unwrap();
    let manager =
        credswap::bb8::RotatingConnectionManager::new(pg.base_config(), NoTls, credentials.clone());
    let bb8_rotation = manager.rotation();
    let bb8 = bb8::Pool::builder()
        .max_size(3)
        .build(manager)
        .await
        .unwrap();

    let whoami_deadpool = || async {
        let c = deadpool.get().await.unwrap();
        c.query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let whoami_bb8 = || async {
        let c = bb8.get().await.unwrap();
        c.query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(whoami_deadpool().await, old_role);
    assert_eq!(whoami_bb8().await, old_role);
    assert!(pg.count_sessions(&[&old_role]).await.unwrap() >= 2);

    // Rotate as the store does: provision the inactive role, point the store at it.
    let password = random_password();
    pg.set_password(&new_role, &password).await.unwrap();
    let rotated_at = SystemTime::now();
    setup
        .store()
        .set(Credential::new(new_role.clone(), password));

    // The provider learns within its 200 ms refresh; both pools drain the old role.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(credentials.generation().get(), 2);
    assert_eq!(whoami_deadpool().await, new_role);
    assert_eq!(whoami_bb8().await, new_role);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = pg
        .count_sessions_started_before(&[&old_role, &new_role], rotated_at)
        .await
        .unwrap();
    assert_eq!(
        stale, 0,
        "sessions of the old credential survived the drain"
    );

    let (d, b) = (deadpool_rotation.stats(), bb8_rotation.stats());
    assert_eq!((d.generation.get(), b.generation.get()), (2, 2));
    assert!(
        d.stale_closed >= 1 && b.stale_closed + b.stale_closed_idle >= 1,
        "{d:?} {b:?}"
    );
    assert!(
        d.opened_per_generation
            .contains_key(&credentials.generation()),
        "{d:?}"
    );
    assert!(
        b.opened_per_generation
            .contains_key(&credentials.generation()),
        "{b:?}"
    );
}
