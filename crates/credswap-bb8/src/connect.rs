use std::sync::Arc;
use std::sync::atomic::Ordering;

use credswap_core::{Credential, Snapshot};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Connection, Socket};

use crate::connection::{RotatingConnection, Tag};
use crate::error::is_auth_failure;
use crate::{Error, RotatingConnectionManager, driver};

impl<Tls> RotatingConnectionManager<Tls>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    Tls::Stream: Send + Sync,
    Tls::TlsConnect: Send,
    <Tls::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// Opens one connection with the snapshot's login and spawns its task, tagged with the
    /// snapshot's generation: the one read *before* connecting, because a connect that began
    /// under the old credential can finish after a rotation.
    async fn open(&self, snapshot: &Snapshot) -> Result<RotatingConnection, tokio_postgres::Error> {
        let opened_at = Instant::now();
        let (client, connection) =
            open_with(&self.config, snapshot.credential(), self.tls.clone()).await?;
        let tag = Arc::new(Tag::new(snapshot.generation(), opened_at));
        self.state.record_open(snapshot.generation());
        tokio::spawn(driver::drive(
            connection,
            Arc::clone(&tag),
            Arc::clone(&self.state),
        ));
        Ok(RotatingConnection::new(client, tag))
    }

    /// `ManageConnection::connect`: the current credential; on an authentication failure, one
    /// report to the provider and one retry with what it returns. Failures are counted, kept and
    /// logged, since bb8 does not pass them to `Pool::get`.
    pub(crate) async fn connect_following(&self) -> Result<RotatingConnection, Error> {
        match self.try_connect().await {
            Ok(connection) => {
                self.state.record_connect_success();
                Ok(connection)
            }
            Err(error) => {
                self.state.record_connect_failure(&error);
                Err(error)
            }
        }
    }

    async fn try_connect(&self) -> Result<RotatingConnection, Error> {
        let snapshot = self.state.credentials.current();
        let failed = |retried: bool, snapshot: &Snapshot, e| {
            Error::connect(
                snapshot.credential().username(),
                snapshot.generation(),
                retried,
                e,
            )
        };
        let error = match self.open(&snapshot).await {
            Ok(connection) => return Ok(connection),
            Err(e) if is_auth_failure(&e) => e,
            Err(e) => return Err(failed(false, &snapshot, e)),
        };
        self.state.auth_failures.fetch_add(1, Ordering::Relaxed);
        let fresh = match self
            .state
            .credentials
            .report_auth_failure(snapshot.generation())
            .await
        {
            Ok(fresh) => fresh,
            Err(refresh_error) => {
                tracing::error!(
                    username = %snapshot.credential().username(),
                    error = %refresh_error,
                    "authentication failed and the credential could not be refreshed"
                );
                return Err(failed(false, &snapshot, error));
            }
        };
        self.state.auth_retries.fetch_add(1, Ordering::Relaxed);
        match self.open(&fresh).await {
            Ok(connection) => Ok(connection),
            Err(e) => {
                self.state
                    .auth_retry_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(failed(true, &fresh, e))
            }
        }
    }
}

/// Connects with `base` (host, port, database, options) and the credential's login. The
/// caller spawns the returned connection.
pub(crate) async fn open_with<Tls>(
    base: &Config,
    credential: &Credential,
    tls: Tls,
) -> Result<(Client, Connection<Socket, Tls::Stream>), tokio_postgres::Error>
where
    Tls: MakeTlsConnect<Socket>,
{
    let mut config = base.clone();
    config.user(credential.username());
    // The only place the password leaves its SecretString: the driver call.
    config.password(credential.password().expose_secret());
    let result = config.connect(tls).await;
    drop(config);
    result
}
