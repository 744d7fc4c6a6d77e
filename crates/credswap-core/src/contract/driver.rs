//! [`Driver`]: the one trait an adapter implements for its database driver.
//!
//! The analogue of deadpool's `Manager`: a driver opens a session with a credential, says what
//! a failed open means ([`Failure`]), and closes a session. Everything the contract does with a
//! login is written once on it: the [`Connector`](super::Connector)'s refused-login loop, the
//! probe that proves a login before the old connections go ([`proof`](super::proof)), and the
//! validate-before-swap check ([`validator`]). `credswap-tokio-postgres` implements it for
//! tokio-postgres (used by the deadpool and bb8 adapters), `credswap-sqlx` for sqlx.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::classify::Failure;
use crate::{BoxError, Credential, Snapshot, Validate};

/// The longest a probe or a [`validator`] waits for a login, unless the driver says otherwise
/// ([`Driver::open_timeout`]).
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What an adapter's driver does for the contract: open, classify, close.
///
/// ```
/// use std::future::Future;
/// use credswap_core::Credential;
/// use credswap_core::contract::{Driver, Failure};
///
/// /// A driver whose database accepts one password.
/// struct OnePassword(&'static str);
///
/// #[derive(Debug)]
/// struct Refused;
/// impl std::fmt::Display for Refused {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("password authentication failed")
///     }
/// }
/// impl std::error::Error for Refused {}
///
/// impl Driver for OnePassword {
///     type Connection = ();
///     type Error = Refused;
///
///     fn open(&self, credential: &Credential) -> impl Future<Output = Result<(), Refused>> + Send {
///         use credswap_core::secrecy::ExposeSecret;
///         let ok = credential.password().expose_secret() == self.0;
///         async move { if ok { Ok(()) } else { Err(Refused) } }
///     }
///
///     fn classify(&self, _: &Refused) -> Failure {
///         Failure::Auth
///     }
///
///     fn close(&self, (): ()) -> impl Future<Output = ()> + Send {
///         async {}
///     }
/// }
/// ```
pub trait Driver: Send + Sync + 'static {
    /// An open session.
    type Connection: Send + 'static;
    /// What a failed open returns.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a session with `credential`'s login. The only place a password leaves its
    /// `SecretString`: into the driver's own connect options, dropped after the call.
    fn open(
        &self,
        credential: &Credential,
    ) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// What a failed open means: a refused login, a transient failure or a fatal one (see
    /// [`Failure::classify_message`]).
    fn classify(&self, error: &Self::Error) -> Failure;

    /// Closes a session opened by [`open`](Self::open).
    fn close(&self, connection: Self::Connection) -> impl Future<Output = ()> + Send;

    /// The SQLSTATE of a server error, for [`AdapterError::code`](super::AdapterError::code)
    /// and the logs. None by default.
    fn code(&self, error: &Self::Error) -> Option<String> {
        let _ = error;
        None
    }

    /// How long a probe's or a [`validator`]'s login may take: [`VALIDATION_TIMEOUT`] by
    /// default.
    fn open_timeout(&self) -> Duration {
        VALIDATION_TIMEOUT
    }
}

/// Opens one session with `snapshot`'s login and closes it, within the driver's
/// [`open_timeout`](Driver::open_timeout): the adapter's probe.
pub(crate) async fn prove<D: Driver>(driver: &D, snapshot: &Snapshot) -> Result<(), Failure> {
    match tokio::time::timeout(driver.open_timeout(), driver.open(snapshot.credential())).await {
        Ok(Ok(connection)) => {
            driver.close(connection).await;
            Ok(())
        }
        Ok(Err(error)) => Err(driver.classify(&error)),
        Err(_) => Err(Failure::Transient),
    }
}

/// A validate-before-swap check that logs in with the candidate credential through `driver`
/// and closes the session at once, within the driver's [`open_timeout`](Driver::open_timeout);
/// pass it to
/// [`RotatingCredentialsBuilder::validator`](crate::RotatingCredentialsBuilder::validator). A
/// completed login is the proof: a credential the database refuses is not published.
pub fn validator<D: Driver>(driver: D) -> impl Validate {
    DriverValidator(Arc::new(driver))
}

struct DriverValidator<D>(Arc<D>);

impl<D> fmt::Debug for DriverValidator<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverValidator").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<D: Driver> Validate for DriverValidator<D> {
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        let driver = &self.0;
        let limit = driver.open_timeout();
        match tokio::time::timeout(limit, driver.open(credential)).await {
            Ok(Ok(connection)) => {
                driver.close(connection).await;
                Ok(())
            }
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(format!("the database did not complete a login within {limit:?}").into()),
        }
    }
}
