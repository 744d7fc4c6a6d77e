//! A deadpool pool over a `FileSource` against a real PostgreSQL (scram-sha-256): the secret
//! volume rotates by Kubernetes' `..data` swap between two roles, the watcher wakes the
//! provider, and the pool follows with no failed query.

#![cfg(unix)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::K8sVolume;
use credswap_core::{Policy, RotatingCredentials};
use credswap_file::FileSource;
use credswap_testkit::{harness, random_password, unique_name};
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_follows_a_rotating_secret_volume_with_no_failed_query() {
    let pg = harness::postgres().await;
    let roles = [unique_name("file_a"), unique_name("file_b")];
    let first = random_password();
    pg.create_login_role(&roles[0], &first).await.unwrap();
    pg.create_login_role(&roles[1], &random_password())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut volume =
        K8sVolume::create(dir.path(), &[("username", &roles[0]), ("password", &first)]);
    let source = FileSource::builder(dir.path())
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    // The periodic refresh is a minute away: the pool can follow only through the watcher.
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        // Exactly a minute: with jitter the first refresh comes at a random point of it.
        .jitter(0.0)
        .overlap_window(Duration::from_secs(600))
        .build()
        .unwrap();
    let credentials = RotatingCredentials::new(source.clone(), policy)
        .await
        .unwrap();
    let watch = source.watch(&credentials).unwrap();
    let (pool, rotation) = credswap_deadpool::create_pool_from_pg_config(
        pg.base_config(),
        deadpool_postgres::PoolConfig::new(4),
        NoTls,
        credentials.clone(),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = async {
                        let client = pool.get().await?;
                        client.query_one("SELECT current_user", &[]).await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    }
                    .await;
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("query failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=3u64 {
        // Alternating users: provision the inactive role, publish it, revoke the old one.
        let (old, new) = (&roles[(round as usize + 1) % 2], &roles[round as usize % 2]);
        let password = random_password();
        pg.set_password(new, &password).await.unwrap();
        let rotated_at = SystemTime::now();
        let start = Instant::now();
        volume.swap(&[("username", new), ("password", &password)]);
        while credentials.generation().get() != round + 1 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: the provider did not follow the volume: {:?}",
                watch.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "round {round}: provider followed after {:?}",
            start.elapsed()
        );
        // The pool drains the old role's sessions in place.
        while pg
            .count_sessions_started_before(&[old.as_str()], rotated_at)
            .await
            .unwrap()
            > 0
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "round {round}: sessions of {old} left open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pg.set_password(old, &random_password()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{ok} queries, {failed} failed; {:?}; {:?}",
        rotation.stats(),
        watch.stats()
    );
    assert_eq!(failed, 0, "queries failed during rotations");
    assert!(ok > 100, "only {ok} queries");
    let client = pool.get().await.unwrap();
    let user: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        user, roles[1],
        "the last rotation published the second role"
    );
    let stats = watch.stats();
    assert!(stats.changes >= 3 && stats.polls == 0, "{stats:?}");
}
