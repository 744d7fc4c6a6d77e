//! A deadpool-postgres pool whose credential lives in AWS Secrets Manager, rotated by Secrets
//! Manager's four steps while it serves.
//!
//! Runs against a local moto server and an embedded PostgreSQL (`scripts/test` installs both
//! prerequisites when missing):
//!
//! ```text
//! cargo run --example secrets_manager_deadpool --features deadpool,aws,rotate
//! ```

#[path = "support/secrets_manager.rs"]
mod support;

use deadpool_postgres::Config;
use tokio_postgres::NoTls;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let demo = support::Demo::start().await?;
    let (source, credentials) = demo.credentials().await?;

    // Host, port and database from the secret; the login from the provider.
    let secret = source.fetch_secret().await?;
    let mut cfg = Config::new();
    cfg.host = secret.details().host().map(str::to_owned);
    cfg.port = secret.details().port();
    cfg.dbname = secret.details().dbname().map(str::to_owned);
    let (pool, rotation) = credswap::deadpool::create_pool(&cfg, NoTls, credentials.clone())?;

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
