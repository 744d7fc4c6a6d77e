//! A bb8 pool whose credential lives in AWS Secrets Manager, rotated by Secrets Manager's four
//! steps while it serves.
//!
//! Runs against a local moto server and an embedded PostgreSQL (`scripts/test` installs both
//! prerequisites when missing):
//!
//! ```text
//! cargo run --example secrets_manager_bb8 --features bb8,aws,rotate
//! ```

#[path = "support/secrets_manager.rs"]
mod support;

use credswap::bb8::{Pool, RotatingConnectionManager};
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let demo = support::Demo::start().await?;
    let (source, credentials) = demo.credentials().await?;

    // Host, port and database from the secret; the login from the provider.
    let secret = source.fetch_secret().await?;
    let mut config = tokio_postgres::Config::new();
    config.host(secret.details().host().unwrap_or("localhost"));
    config.port(secret.details().port().unwrap_or(5432));
    config.dbname(secret.details().dbname().unwrap_or("postgres"));
    let manager = RotatingConnectionManager::new(config, NoTls, credentials.clone());
    let rotation = manager.rotation();
    let pool: Pool<NoTls> = bb8::Pool::builder().max_size(8).build(manager).await?;

    let counts = demo
        .rotate_under_load(move || {
            let pool = pool.clone();
            async move {
                let client = pool.get().await?;
                client.query_one("SELECT current_user", &[]).await?;
                Ok(())
            }
        })
        .await?;
    support::report(counts, rotation.stats(), &credentials)
}
