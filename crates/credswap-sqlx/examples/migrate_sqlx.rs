//! Migrating an existing sqlx application to a pool that follows a rotating password.
//!
//! Before:
//!
//! ```text
//! let pool = PgPoolOptions::new().max_connections(8).connect(&url).await?;
//! ```
//!
//! After (the URL loses its user and password; they come from the secret store):
//!
//! ```text
//! let credentials = RotatingCredentials::new(store, policy).await?;
//! let (pool, rotation) =
//!     credswap_sqlx::connect(PgPoolOptions::new().max_connections(8), &url, credentials).await?;
//! ```
//!
//! `pool` is still a `sqlx::PgPool`: every `query(...).fetch_one(&pool)` and every function
//! taking `&PgPool` compiles unchanged. Paths that may open connections during a zero-overlap
//! (single-user) rotation check out with `pool.acquire_following(&rotation)` / `pool.begin_following(&rotation)`
//! (`credswap_sqlx::PoolExt`), which wait for the new password instead of failing.
//!
//! Runs against an embedded PostgreSQL (or `CREDSWAP_TEST_ADMIN_URL`):
//!
//! ```text
//! cargo run -p credswap-sqlx --example migrate_sqlx
//! ```

use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_sqlx::PoolExt;
use credswap_testkit::{TestPostgres, random_password, unique_name};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Application code that knows nothing about rotation.
async fn whoami(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT current_user")
        .fetch_one(pool)
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Stand-ins for your database and your secret store (AWS Secrets Manager, Vault, a file).
    let pg = TestPostgres::from_env().await?;
    let role = unique_name("shop");
    let first = random_password();
    pg.create_login_role(&role, &first).await?;
    let store = MemorySource::new(Credential::new(role.clone(), first));

    // The provider: refreshes the store every 250 ms here (minutes in production), and at once
    // when a connect reports an authentication failure.
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        .build()?;
    let credentials = RotatingCredentials::new(store.clone(), policy).await?;

    // The one changed line: no user or password in the URL.
    let url = format!("postgres://{}:{}/{}", pg.host(), pg.port(), pg.database());
    let (pool, rotation) =
        credswap_sqlx::connect(PgPoolOptions::new().max_connections(8), &url, credentials).await?;
    println!("connected as {}", whoami(&pool).await?);

    // Single-user rotation: the database changes first, the store a moment later. Open
    // sessions live on; new logins need the new password.
    let second = random_password();
    pg.set_password(&role, &second).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.set(Credential::new(role.clone(), second));

    // Keep serving: hold a few connections at once so that new ones must be opened, through
    // the retrying checkout.
    for round in 0..10 {
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut conn = pool.acquire_following(&rotation).await?;
            let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?;
            assert_eq!(one, 1);
            held.push(conn);
        }
        drop(held);
        if round % 3 == 0 {
            println!("round {round}: still serving as {}", whoami(&pool).await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stats = rotation.stats();
    println!(
        "generation {}, opened per generation {:?}, stale closed {}, auth retries {}",
        stats.generation, stats.opened_per_generation, stats.stale_closed, stats.auth_retries
    );
    pool.close().await;
    Ok(())
}
