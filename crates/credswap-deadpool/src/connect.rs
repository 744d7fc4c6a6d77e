use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use credswap_core::{Credential, Generation, Snapshot};
use deadpool_postgres::Connect;
use secrecy::ExposeSecret;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

use crate::error::is_auth_failure;
use crate::state::State;

thread_local! {
    /// Hands the generation a connect used to the `post_create` hook of the same `Pool::get`.
    ///
    /// deadpool runs `Manager::create` (which awaits our connect) and then the `post_create`
    /// hooks in one future, with no suspension point between the connect's completion and the
    /// first hook: both run within one poll, on one thread, so no other connect on this thread
    /// can interleave. If a future deadpool broke that, the hook would find the slot empty or
    /// (at worst) another connection's generation; an empty slot is handled fail-safe.
    pub(crate) static HANDOFF: Cell<Option<Generation>> = const { Cell::new(None) };
}

/// Opens every connection with the credential current at that moment.
pub(crate) struct RotatingConnect<T> {
    pub(crate) tls: T,
    pub(crate) state: Arc<State>,
    /// Dropped with the pool's manager: tells the watcher the pool is gone.
    pub(crate) _alive: oneshot::Sender<()>,
}

impl<T> fmt::Debug for RotatingConnect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnect").finish_non_exhaustive()
    }
}

impl<T> RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn open(
        &self,
        base: &Config,
        snapshot: &Snapshot,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let started = tokio::time::Instant::now();
        let client = open_with(base, snapshot.credential(), self.tls.clone()).await?;
        tracing::debug!(
            generation = snapshot.generation().get(),
            username = %snapshot.credential().username(),
            took_us = started.elapsed().as_micros() as u64,
            "connection opened"
        );
        self.state.record_open(snapshot.generation());
        HANDOFF.with(|slot| slot.set(Some(snapshot.generation())));
        Ok(client)
    }

    async fn connect_following(
        &self,
        base: &Config,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let snapshot = self.state.credentials.current();
        let error = match self.open(base, &snapshot).await {
            Ok(client) => return Ok(client),
            Err(e) if is_auth_failure(&e) => e,
            Err(e) => return Err(e),
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
                return Err(error);
            }
        };
        self.state.auth_retries.fetch_add(1, Ordering::Relaxed);
        match self.open(base, &fresh).await {
            Ok(client) => Ok(client),
            Err(e) => {
                self.state
                    .auth_retry_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    username = %fresh.credential().username(),
                    generation = fresh.generation().get(),
                    error = %e,
                    "connect failed again after refreshing the credential"
                );
                Err(e)
            }
        }
    }
}

/// Connects with `base` (host, port, database, options) and the snapshot's login, and spawns
/// the connection task.
pub(crate) async fn open_with<T>(
    base: &Config,
    credential: &Credential,
    tls: T,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut config = base.clone();
    config.user(credential.username());
    // The only place the password leaves its SecretString: the driver call.
    config.password(credential.password().expose_secret());
    let (client, connection) = config.connect(tls).await?;
    drop(config);
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed with an error");
        }
    });
    Ok((client, task))
}

impl<T> Connect for RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        pg_config: &Config,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>>
                + Send
                + '_,
        >,
    > {
        let base = pg_config.clone();
        Box::pin(async move { self.connect_following(&base).await })
    }
}
