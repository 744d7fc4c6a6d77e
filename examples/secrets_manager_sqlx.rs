//! A sqlx `PgPool` whose credential lives in AWS Secrets Manager, rotated by Secrets Manager's
//! four steps while it serves. Checkouts go through `pool.acquire_following(&rotation)`, which waits for
//! (or tries the pending) credential when a login is refused in the single-user window.
//!
//! Runs against a local moto server and an embedded PostgreSQL (`scripts/test` installs both
//! prerequisites when missing):
//!
//! ```text
//! cargo run --example secrets_manager_sqlx --features sqlx,aws,rotate
//! ```

#[path = "support/secrets_manager.rs"]
mod support;

use credswap::sqlx::PoolExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let demo = support::Demo::start().await?;
    let (source, credentials) = demo.credentials().await?;

    // Host, port and database from the secret; the login from the provider.
    let secret = source.fetch_secret().await?;
    let options = PgConnectOptions::new()
        .host(secret.details().host().unwrap_or("localhost"))
        .port(secret.details().port().unwrap_or(5432))
        .database(secret.details().dbname().unwrap_or("postgres"));
    let (pool, rotation) = credswap::sqlx::connect_with(
        PgPoolOptions::new().max_connections(8),
        options,
        credentials.clone(),
    )
    .await?;

    let counts = {
        let (pool, rotation) = (pool.clone(), rotation.clone());
        demo.rotate_under_load(move || {
            let (pool, rotation) = (pool.clone(), rotation.clone());
            async move {
                let mut conn = pool.acquire_following(&rotation).await?;
                sqlx::query("SELECT current_user")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    pool.close().await;
    support::report(counts, rotation.stats(), &credentials)
}
