//! The database: one pool of the kind chosen on the command line, built from a
//! [`RotatingCredentials`], and the one query the handlers run through it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use credswap::contract::Rotation;
use credswap::sqlx::PoolExt;
use credswap::{BoxError, RotatingCredentials};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

/// Which pool serves the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum PoolKind {
    /// `deadpool_postgres::Pool` (`credswap::deadpool`).
    Deadpool,
    /// `bb8::Pool` of tokio-postgres connections (`credswap::bb8`).
    Bb8,
    /// `sqlx::PgPool` (`credswap::sqlx`), checked out through `Rotation::acquire`.
    Sqlx,
}

impl PoolKind {
    /// Every kind.
    pub const ALL: [PoolKind; 3] = [PoolKind::Deadpool, PoolKind::Bb8, PoolKind::Sqlx];

    /// The name on the command line, in `/health` and in the metrics' `pool` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Deadpool => "deadpool",
            PoolKind::Bb8 => "bb8",
            PoolKind::Sqlx => "sqlx",
        }
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the database is: host, port and database name. No user and no password: those come
/// from the credential provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (TCP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
}

impl FromStr for Target {
    type Err = String;

    /// Parses a `postgres://host:port/dbname` URL (or a `host=... port=... dbname=...` string).
    /// A URL with a user or a password is refused: they come from the credential source, and
    /// a password on a command line ends up in shell histories and process listings.
    fn from_str(url: &str) -> Result<Self, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid database URL: {e}"))?;
        if config.get_password().is_some() || config.get_user().is_some() {
            return Err(
                "the database URL must carry no user and no password: they come from \
                 the credential source (--secret, or PGUSER and PGPASSWORD)"
                    .into(),
            );
        }
        let host = match config.get_hosts() {
            [Host::Tcp(host)] => host.clone(),
            [] => "localhost".to_owned(),
            _ => return Err("the database URL must name one TCP host".into()),
        };
        let port = match config.get_ports() {
            [port] => *port,
            [] => 5432,
            _ => return Err("the database URL must name at most one port".into()),
        };
        let dbname = config.get_dbname().unwrap_or("postgres").to_owned();
        Ok(Target { host, port, dbname })
    }
}

/// What `/query` answers: who the database says we are, and on which session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Whoami {
    /// `current_user`.
    pub user: String,
    /// `pg_backend_pid()`: the server session that ran the query.
    pub backend_pid: i32,
}

/// Server-side time a `/query` may ask for, at most.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long a request waits for a connection before it fails (the pool's own timeout: while the
/// database refuses a credential, connects wait for a working one up to this long).
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

const WHOAMI: &str = "SELECT current_user::text, pg_backend_pid() FROM pg_sleep($1)";

/// The pool, of one of the three kinds, and its adapter's [`Rotation`] handle.
pub enum Database {
    /// deadpool-postgres.
    Deadpool(deadpool_postgres::Pool, Rotation),
    /// bb8 over tokio-postgres.
    Bb8(credswap::bb8::Pool<NoTls>, Rotation),
    /// sqlx.
    Sqlx(sqlx::PgPool, Rotation),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pools' own configs can print passwords (`tokio_postgres::Config`,
        // `PgConnectOptions`): only the kind and the handle, which never do.
        f.debug_struct("Database")
            .field("kind", &self.kind())
            .field("rotation", self.rotation())
            .finish()
    }
}

impl Database {
    /// Builds a pool of `kind` with at most `max_size` connections; the first connection is
    /// opened by the first request.
    ///
    /// # Errors
    ///
    /// When the adapter refuses the configuration, or (bb8, which opens its connections at
    /// build) the database cannot be reached within [`CHECKOUT_TIMEOUT`].
    pub async fn connect(
        kind: PoolKind,
        target: &Target,
        credentials: RotatingCredentials,
        max_size: usize,
    ) -> Result<Self, BoxError> {
        match kind {
            PoolKind::Deadpool => {
                let mut pool_config = deadpool_postgres::PoolConfig::new(max_size);
                pool_config.timeouts.wait = Some(CHECKOUT_TIMEOUT);
                let (pool, rotation) = credswap::deadpool::create_pool_from_pg_config(
                    pg_config(target),
                    pool_config,
                    NoTls,
                    credentials,
                )?;
                Ok(Database::Deadpool(pool, rotation))
            }
            PoolKind::Bb8 => {
                let (pool, rotation) =
                    credswap::bb8::Builder::new(pg_config(target), NoTls, credentials)
                        .max_size(u32::try_from(max_size)?)
                        .connection_timeout(CHECKOUT_TIMEOUT)
                        .build()
                        .await?;
                Ok(Database::Bb8(pool, rotation))
            }
            PoolKind::Sqlx => {
                let options = PgConnectOptions::new_without_pgpass()
                    .host(&target.host)
                    .port(target.port)
                    .database(&target.dbname);
                let pool_options = PgPoolOptions::new()
                    .max_connections(u32::try_from(max_size)?)
                    .acquire_timeout(CHECKOUT_TIMEOUT);
                let (pool, rotation) =
                    credswap::sqlx::connect_lazy_with(pool_options, options, credentials)?;
                Ok(Database::Sqlx(pool, rotation))
            }
        }
    }

    /// The pool's kind.
    pub fn kind(&self) -> PoolKind {
        match self {
            Database::Deadpool(..) => PoolKind::Deadpool,
            Database::Bb8(..) => PoolKind::Bb8,
            Database::Sqlx(..) => PoolKind::Sqlx,
        }
    }

    /// The adapter's handle: its counters and the provider.
    pub fn rotation(&self) -> &Rotation {
        match self {
            Database::Deadpool(_, rotation)
            | Database::Bb8(_, rotation)
            | Database::Sqlx(_, rotation) => rotation,
        }
    }

    /// `SELECT current_user, pg_backend_pid()` after `sleep` of server time, through the pool.
    ///
    /// # Errors
    ///
    /// When no connection could be had within [`CHECKOUT_TIMEOUT`] or the query failed.
    pub async fn whoami(&self, sleep: Duration) -> Result<Whoami, BoxError> {
        let seconds = sleep.min(MAX_SLEEP).as_secs_f64();
        let (user, backend_pid) = match self {
            Database::Deadpool(pool, _) => {
                let client = pool.get().await?;
                let statement = client.prepare_cached(WHOAMI).await?;
                let row = client.query_one(&statement, &[&seconds]).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            Database::Bb8(pool, _) => {
                let client = pool.get().await?;
                let row = client.query_one(WHOAMI, &[&seconds]).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            Database::Sqlx(pool, rotation) => {
                // `pool.acquire_following(rotation)`, not `pool.acquire()`: it follows the credential through
                // refused logins (a single-user rotation's window) instead of failing.
                let mut conn = pool.acquire_following(rotation).await?;
                sqlx::query_as::<_, (String, i32)>(WHOAMI)
                    .bind(seconds)
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        Ok(Whoami { user, backend_pid })
    }

    /// Connections the pool holds, and of those, idle ones (the pool's own numbers).
    pub fn size(&self) -> (usize, usize) {
        match self {
            Database::Deadpool(pool, _) => {
                let status = pool.status();
                (status.size, status.available)
            }
            Database::Bb8(pool, _) => {
                let state = pool.state();
                (state.connections as usize, state.idle_connections as usize)
            }
            Database::Sqlx(pool, _) => (pool.size() as usize, pool.num_idle()),
        }
    }

    /// Closes the pool (sqlx needs it to end its adapter's watcher; the others close on drop).
    pub async fn close(&self) {
        match self {
            Database::Deadpool(pool, _) => pool.close(),
            Database::Bb8(..) => {}
            Database::Sqlx(pool, _) => pool.close().await,
        }
    }
}

fn pg_config(target: &Target) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.dbname)
        .connect_timeout(Duration::from_secs(5))
        .application_name("credswap-example-web");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_host_port_and_database_but_no_login() {
        let target: Target = "postgres://db.internal:6432/orders".parse().unwrap();
        assert_eq!(
            target,
            Target {
                host: "db.internal".into(),
                port: 6432,
                dbname: "orders".into()
            }
        );
        let err = "postgres://app:hunter2@db.internal/orders"
            .parse::<Target>()
            .unwrap_err();
        assert!(err.contains("no user and no password"), "{err}");
        assert!(!err.contains("hunter2"));
    }
}
