//! A deadpool-postgres pool whose credential is a mounted secret, as Kubernetes mounts a secret
//! volume: the volume rotates three times by the kubelet's `..data` swap while 8 tasks query,
//! the `FileSource` watcher wakes the provider, and the pool follows.
//!
//! Runs against an embedded PostgreSQL (or `CREDSWAP_TEST_ADMIN_URL`):
//!
//! ```text
//! cargo run --example file_source --features deadpool,file
//! ```

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use credswap::file::FileSource;
use credswap::{Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use tokio_postgres::NoTls;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Publishes `username`/`password` as version `n` of a Kubernetes-style secret volume: a new
/// timestamped directory, then a new `..data` symlink renamed over the old one (atomic).
fn publish(dir: &Path, n: u32, username: &str, password: &str) -> std::io::Result<()> {
    let version = format!("..2026_11_26_10_00_0{n}.000000000");
    std::fs::create_dir(dir.join(&version))?;
    std::fs::write(dir.join(&version).join("username"), username)?;
    std::fs::write(dir.join(&version).join("password"), password)?;
    symlink(&version, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    if n == 0 {
        symlink("..data/username", dir.join("username"))?;
        symlink("..data/password", dir.join("password"))?;
    } else {
        let old = format!("..2026_11_26_10_00_0{}.000000000", n - 1);
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Two roles that take turns (alternating users), and the volume holding the first.
    let pg = TestPostgres::from_env().await?;
    let roles = [unique_name("web_a"), unique_name("web_b")];
    let password = random_password();
    pg.create_login_role(&roles[0], &password).await?;
    pg.create_login_role(&roles[1], &random_password()).await?;
    let volume = tempfile::tempdir()?;
    publish(volume.path(), 0, &roles[0], &password)?;

    // What an application does: the source, the provider, the watch, the pool.
    let source = FileSource::builder(volume.path()).build()?;
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60)) // the fallback; the watcher is faster
        .overlap_window(Duration::from_secs(600))
        .build()?;
    let credentials = RotatingCredentials::new(source.clone(), policy).await?;
    let watch = source.watch(&credentials)?; // keep it as long as the provider
    let (pool, rotation) = credswap::deadpool::create_pool_from_pg_config(
        pg.base_config(),
        deadpool_postgres::PoolConfig::new(8),
        NoTls,
        credentials.clone(),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (pool, stop, ok, failed) = (pool.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let result = async {
                        let client = pool.get().await?;
                        client.query_one("SELECT current_user", &[]).await?;
                        Ok::<_, BoxError>(())
                    }
                    .await;
                    let counter = if result.is_ok() { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for n in 1..=3u32 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (old, new) = (&roles[(n as usize + 1) % 2], &roles[n as usize % 2]);
        let password = random_password();
        pg.set_password(new, &password).await?; // provision the inactive role
        let start = Instant::now();
        publish(volume.path(), n, new, &password)?; // what the kubelet does
        while credentials.generation().get() != u64::from(n) + 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!(
            "rotation {n}: {old} -> {new}, provider followed the volume in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg.set_password(old, &random_password()).await?; // revoke the old one
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{ok} queries, {failed} failed");
    println!("{:?}", rotation.stats());
    println!("{:?}", watch.stats());
    if failed > 0 {
        return Err(format!("{failed} queries failed").into());
    }
    Ok(())
}
