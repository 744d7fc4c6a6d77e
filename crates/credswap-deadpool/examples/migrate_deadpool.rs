//! Migrating an existing deadpool-postgres application: one line changes.
//!
//! Runs against an embedded PostgreSQL (or `CREDSWAP_TEST_ADMIN_URL`), rotates the password
//! three times while 8 tasks query through the pool, and shows that no query failed.
//!
//! ```text
//! cargo run -p credswap-deadpool --example migrate_deadpool
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use deadpool_postgres::{Config, Pool};
use tokio_postgres::NoTls;

/// Existing application code: takes a plain `deadpool_postgres::Pool`. Unchanged.
async fn whoami(pool: &Pool) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let row = client.query_one("SELECT current_user", &[]).await?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pg = TestPostgres::from_env().await?;
    let role = unique_name("web");
    let password = random_password();
    pg.create_login_role(&role, &password).await?;

    // The secret store (here in memory; in production AWS Secrets Manager, Vault, a file).
    let store = MemorySource::new(Credential::new(role.clone(), password));

    // The application's configuration, as loaded from the environment today; no password.
    let mut cfg = Config::new();
    cfg.host = Some(pg.host().to_owned());
    cfg.port = Some(pg.port());
    cfg.dbname = Some(pg.database().to_owned());

    let credentials = RotatingCredentials::new(
        store.clone(),
        Policy::builder()
            .refresh_interval(Duration::from_millis(250))
            .build()?,
    )
    .await?;

    // Before: let pool = cfg.create_pool(Some(Runtime::Tokio1), NoTls)?;
    let (pool, rotation) = credswap_deadpool::create_pool(&cfg, NoTls, credentials)?;

    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (pool, ok, failed, done) = (pool.clone(), ok.clone(), failed.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match whoami(&pool).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    // The store rotates single-user style: the database first, the store a moment later.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let new_password = random_password();
        pg.set_password(&role, &new_password).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.set(Credential::new(role.clone(), new_password));
    }
    // Keep querying a little longer than the provider's 250 ms refresh interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }

    let stats = rotation.stats();
    println!(
        "queries ok: {}, failed: {}, generation: {}, connections opened per generation: {:?}, stale closed: {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        stats.generation,
        stats.opened_per_generation,
        stats.stale_closed,
    );
    if failed.load(Ordering::Relaxed) > 0 {
        return Err("some queries failed".into());
    }
    Ok(())
}
