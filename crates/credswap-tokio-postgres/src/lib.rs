//! tokio-postgres glue shared by the credswap adapters for deadpool-postgres and bb8:
//! [`PgDriver`], the contract's [`Driver`] for tokio-postgres (open a session with a
//! [`Credential`], classify a connect error, close), and a validate-before-swap check.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use credswap_core::Credential;
//! use tokio_postgres::NoTls;
//!
//! let base: tokio_postgres::Config = "host=localhost dbname=app".parse()?;
//! let credential = Credential::new("app", "from-the-store");
//! let (client, connection) = credswap_tokio_postgres::open(&base, &credential, NoTls).await?;
//! tokio::spawn(connection);
//! client.simple_query("SELECT 1").await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | (none) | | this crate has no optional features |

#![forbid(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use credswap_core::contract::driver::VALIDATION_TIMEOUT;
use credswap_core::contract::{Driver, Failure};
use credswap_core::{Credential, Validate};
use secrecy::ExposeSecret;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Connection, Socket};

/// Connects with `base` (hosts, ports, database, options, TLS mode) and `credential`'s login.
///
/// The only place the password leaves its `SecretString`: a clone of `base` holds it for the
/// driver call and is dropped right after.
pub async fn open<T>(
    base: &Config,
    credential: &Credential,
    tls: T,
) -> Result<(Client, Connection<Socket, T::Stream>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
{
    let mut config = base.clone();
    config.user(credential.username());
    config.password(credential.password().expose_secret());
    let result = config.connect(tls).await;
    drop(config);
    result
}

/// The class of a connect error, by its SQLSTATE or the I/O error underneath.
pub fn classify(error: &tokio_postgres::Error) -> Failure {
    Failure::classify_message(
        code(error),
        error
            .as_db_error()
            .map(tokio_postgres::error::DbError::message),
        Failure::io_kind(error),
    )
}

/// The SQLSTATE of a server error.
pub fn code(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(tokio_postgres::error::SqlState::code)
}

/// Whether a driver error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry), or a
/// pooler's refused login (PgBouncer's `08P01` "SASL authentication failed").
pub fn is_auth_failure(error: &tokio_postgres::Error) -> bool {
    classify(error) == Failure::Auth
}

/// tokio-postgres as the contract's [`Driver`]: opens sessions with `config` (hosts, ports,
/// database, options, TLS mode) and a credential's login, over `tls`. The deadpool and bb8
/// adapters connect, probe and validate through it.
#[derive(Clone)]
pub struct PgDriver<T> {
    config: Config,
    tls: T,
}

impl<T> fmt::Debug for PgDriver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Config`'s own Debug would print a password set on it.
        f.debug_struct("PgDriver")
            .field("hosts", &self.config.get_hosts().len())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

impl<T> PgDriver<T> {
    /// A driver for `config` (its user and password are replaced by each credential's) over
    /// `tls`.
    pub fn new(config: Config, tls: T) -> Self {
        Self { config, tls }
    }

    /// The connection settings, without a login.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<T> Driver for PgDriver<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = (Client, Connection<Socket, T::Stream>);
    type Error = tokio_postgres::Error;

    fn open(
        &self,
        credential: &Credential,
    ) -> impl Future<Output = Result<Self::Connection, tokio_postgres::Error>> + Send {
        open(&self.config, credential, self.tls.clone())
    }

    fn classify(&self, error: &tokio_postgres::Error) -> Failure {
        classify(error)
    }

    async fn close(&self, (client, connection): Self::Connection) {
        drop(client);
        let _ = connection.await;
    }

    fn code(&self, error: &tokio_postgres::Error) -> Option<String> {
        code(error).map(str::to_owned)
    }

    /// The config's `connect_timeout`, else [`VALIDATION_TIMEOUT`].
    fn open_timeout(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(VALIDATION_TIMEOUT)
    }
}

/// A validate-before-swap check that logs in with the candidate credential and closes the
/// session (the contract's [`validator`](credswap_core::contract::validator) over
/// [`PgDriver`]); pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
///
/// Bounded: it gives up after the config's `connect_timeout` (or [`VALIDATION_TIMEOUT`]), so a
/// database that stalls cannot hold the provider's refresh.
pub fn connection_validator<T>(config: Config, tls: T) -> impl Validate
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    credswap_core::contract::validator(PgDriver::new(config, tls))
}
