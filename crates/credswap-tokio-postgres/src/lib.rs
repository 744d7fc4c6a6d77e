//! tokio-postgres glue shared by the credswap adapters for deadpool-postgres and bb8: open a
//! connection with a [`Credential`], classify a connect error for the adapter contract's
//! [`Connector`](credswap_core::contract::Connector), and a validate-before-swap check.
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

use std::sync::Arc;
use std::time::Duration;

use credswap_core::contract::Failure;
use credswap_core::contract::proof::ProbeFuture;
use credswap_core::{BoxError, Credential, Snapshot, Validate};
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

/// The adapter's probe for prove-before-drain
/// ([`Rotation::set_probe`](credswap_core::contract::Rotation::set_probe)): opens one connection
/// with the snapshot's login and closes it at once, bounded like [`connection_validator`].
pub fn probe<T>(
    base: Config,
    tls: T,
) -> impl Fn(Arc<Snapshot>) -> ProbeFuture + Send + Sync + 'static
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    move |snapshot| {
        let (base, tls) = (base.clone(), tls.clone());
        Box::pin(async move {
            let limit = base
                .get_connect_timeout()
                .copied()
                .unwrap_or(VALIDATION_TIMEOUT);
            match tokio::time::timeout(limit, open(&base, snapshot.credential(), tls)).await {
                Ok(Ok((client, connection))) => {
                    drop(client);
                    let _ = connection.await;
                    Ok(())
                }
                Ok(Err(e)) => Err(classify(&e)),
                Err(_) => Err(Failure::Transient),
            }
        })
    }
}

/// The longest a [`connection_validator`] waits for its connection and its `SELECT 1` when
/// the config sets no `connect_timeout`.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A validate-before-swap check that opens one real connection with the candidate credential
/// and runs `SELECT 1`; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
///
/// Bounded: it gives up after the config's `connect_timeout` (or [`VALIDATION_TIMEOUT`]), so a
/// database that accepts and then stalls cannot hold the provider's refresh.
pub fn connection_validator<T>(config: Config, tls: T) -> impl Validate
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    ConnectionValidator { config, tls }
}

struct ConnectionValidator<T> {
    config: Config,
    tls: T,
}

#[async_trait::async_trait]
impl<T> Validate for ConnectionValidator<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        let limit = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(VALIDATION_TIMEOUT);
        let check = async {
            let (client, connection) = open(&self.config, credential, self.tls.clone()).await?;
            let task = tokio::spawn(connection);
            client.simple_query("SELECT 1").await?;
            drop(client);
            let _ = task.await;
            Ok::<(), BoxError>(())
        };
        match tokio::time::timeout(limit, check).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the database did not complete a login and SELECT 1 within {limit:?}"
            )
            .into()),
        }
    }
}
