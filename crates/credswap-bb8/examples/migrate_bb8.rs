//! Migrating from `bb8_postgres::PostgresConnectionManager` to a pool that follows a rotating
//! credential.
//!
//! Starts an embedded PostgreSQL (the `postgresql` server binaries must be installed), creates a
//! login role, serves its password from an in-memory store, rotates it twice while the pool is
//! in use, and prints the adapter's counters. Nothing secret is printed.
//!
//! Run: `cargo run -p credswap-bb8 --example migrate_bb8`

use std::time::Duration;

use credswap_bb8::{Pool, RotatingConnectionManager};
use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use tokio_postgres::NoTls;

/// Application code: unchanged by the migration, except the pool's type in the signature
/// (`bb8::Pool<PostgresConnectionManager<NoTls>>` before).
async fn who_am_i(pool: &Pool<NoTls>) -> Result<String, Box<dyn std::error::Error>> {
    let conn = pool.get().await?;
    let row = conn.query_one("SELECT current_user", &[]).await?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pg = TestPostgres::start().await?;
    let role = unique_name("app");
    let password = random_password();
    pg.create_login_role(&role, &password).await?;

    // Where the password lives: in production an AWS Secrets Manager or Vault source.
    let store = MemorySource::new(Credential::new(role.clone(), password));
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        .build()?;
    let credentials = RotatingCredentials::new(store.clone(), policy).await?;

    // Host, port and database, without user or password.
    let config = pg.base_config();

    // Before:
    //     let mut config = pg.base_config();
    //     config.user(&role).password(&password);
    //     let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
    // After: the same config and TLS connector, plus the provider.
    let manager = RotatingConnectionManager::new(config, NoTls, credentials.clone());
    let rotation = manager.rotation();

    // Unchanged. bb8 reports a failed connect to `get` only as a timeout after
    // `connection_timeout`; the manager logs the cause (role, SQLSTATE, server message).
    // (Or in one call: `credswap_bb8::Builder::new(config, NoTls, credentials)
    //     .max_size(4).connection_timeout(..).build().await?` returns the pool and the handle.)
    let pool: Pool<NoTls> = bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)
        .await?;

    println!("connected as {}", who_am_i(&pool).await?);

    for _ in 0..2 {
        // Single-user rotation: the database first, then the store. The provider learns of it
        // at its next refresh, or at once when a connect fails with 28P01; here we refresh.
        let new_password = random_password();
        pg.set_password(&role, &new_password).await?;
        store.set(Credential::new(role.clone(), new_password));
        credentials.refresh().await?;

        let conn = pool.get().await?;
        println!(
            "after the rotation: generation {}, {} connections in the pool",
            conn.generation(),
            pool.state().connections
        );
        drop(conn);
        println!("still {}", who_am_i(&pool).await?);
    }

    let stats = rotation.stats();
    println!(
        "opened per generation {:?}, stale closed {} ({} while idle), auth retries {}",
        stats.opened_per_generation,
        stats.stale_closed,
        stats.stale_closed_idle,
        stats.auth_retries
    );
    Ok(())
}
