//! `credswap-example-web`: an axum server whose pool follows a rotating database credential.
//!
//! ```text
//! # the credential from a mounted secret (a Kubernetes secret volume with `username` and
//! # `password`, a password file with --user, or RDS-style JSON), watched for rotations:
//! cargo run -p credswap-example-web -- --pool sqlx \
//!     --database-url postgres://127.0.0.1:5432/app --secret /var/run/secrets/db
//! # or, for local development, PGUSER and PGPASSWORD (never rotated):
//! PGUSER=app PGPASSWORD=... cargo run -p credswap-example-web -- --database-url ...
//! curl localhost:3000/query; curl -i localhost:3000/health; curl localhost:3000/metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use credswap::file::{EnvSource, FileSource};
use credswap::{Policy, RotatingCredentials};
use credswap_example_web::{AppState, Config, Database, Metrics, PoolKind, Target, app};
use tracing_subscriber::EnvFilter;

/// A web application whose database pool follows a rotating credential.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The pool that serves the requests.
    #[arg(long, value_enum, default_value_t = PoolKind::Deadpool)]
    pool: PoolKind,

    /// The database: `postgres://host:port/dbname`, with no user and no password.
    // Parsed after clap, whose errors would print a rejected URL (password and all); the
    // environment's values are never shown in `--help` either.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// The mounted secret, watched for rotations: a directory of key files (`username`,
    /// `password`), a file holding the password (with `--user`), or a file of RDS-style JSON.
    /// Without it the credential is `PGUSER` and `PGPASSWORD`, which never rotate.
    #[arg(long, env = "CREDSWAP_SECRET", hide_env_values = true)]
    secret: Option<PathBuf>,

    /// The database role, when the secret does not say.
    #[arg(long, requires = "secret")]
    user: Option<String>,

    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Most connections the pool holds.
    #[arg(long, default_value_t = 8)]
    max_size: usize,

    /// How often the provider reads the secret besides the watcher's wake-ups.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    refresh_interval: Duration,

    /// How long the old password stays valid after a rotation (the store's overlap window);
    /// must be longer than `--refresh-interval`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    overlap_window: Duration,

    /// How long the database may refuse the credential before /health answers 503.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    refused_grace: Duration,
}

#[tokio::main]
async fn main() -> Result<(), credswap::BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let target: Target = match args.database_url.parse() {
        Ok(target) => target,
        Err(message) => {
            eprintln!("error: --database-url/DATABASE_URL: {message}");
            std::process::exit(2);
        }
    };

    let policy = Policy::builder()
        .refresh_interval(args.refresh_interval)
        .overlap_window(args.overlap_window)
        .build()?;
    let (credentials, _watch) = match &args.secret {
        Some(path) => {
            let mut builder = FileSource::builder(path);
            if let Some(user) = &args.user {
                builder = builder.username(user);
            }
            let source = builder.build()?;
            let credentials = RotatingCredentials::new(source.clone(), policy).await?;
            // Refreshes the provider as soon as the files change; kept as long as the provider.
            let watch = source.watch(&credentials)?;
            (credentials, Some(watch))
        }
        None => (
            RotatingCredentials::new(EnvSource::new(), policy).await?,
            None,
        ),
    };
    let db = Database::connect(args.pool, &target, credentials.clone(), args.max_size).await?;
    let metrics = Metrics::install_global()?;
    let state = AppState::new(
        credentials,
        db,
        metrics,
        Config {
            refused_grace: args.refused_grace,
        },
    );

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(
        address = %listener.local_addr()?,
        pool = %args.pool,
        "serving /query, /health and /metrics"
    );
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tracing::info!("shutting down: closing the pool");
    if tokio::time::timeout(Duration::from_secs(5), state.database().close())
        .await
        .is_err()
    {
        tracing::warn!("the pool did not close within 5 s");
    }
    Ok(())
}
