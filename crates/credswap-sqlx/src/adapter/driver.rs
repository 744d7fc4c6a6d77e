//! [`SqlxDriver`]: sqlx as the contract's [`Driver`], for the sessions the adapter opens
//! itself (probes, the validator, the proof of a login after a refused checkout); the pool's
//! own connections are sqlx's.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use credswap_core::Credential;
use credswap_core::contract::{Driver, Failure};
use tokio::sync::oneshot;

use super::connect::with_login;
use super::error::{classify, code};
use super::sqlx;
use super::sqlx::Connection;
use super::sqlx::postgres::{PgConnectOptions, PgConnection};

/// Opens sessions with a base `PgConnectOptions` (host, port, database, TLS) and a
/// credential's login.
///
/// Each session lives on a thread of its own, with a current-thread runtime. sqlx 0.9 yields
/// to the scheduler every 5 of SCRAM's 4096 rounds; on a runtime busy with the application's
/// requests each yield waits for every other ready task, and one login was measured taking
/// 1–3 s (16 workers on 2 cores). A login the adapter opens must be quick, so that the old
/// connections are retired within the drain's grace.
#[derive(Clone)]
pub(crate) struct SqlxDriver {
    /// Never printed: its `Debug` shows a password.
    base: PgConnectOptions,
}

impl fmt::Debug for SqlxDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxDriver")
            .field("host", &self.base.get_host())
            .field("port", &self.base.get_port())
            .finish_non_exhaustive()
    }
}

/// A session on its own thread: closed when told, or when dropped.
#[derive(Debug)]
pub(crate) struct Session {
    close: oneshot::Sender<()>,
    closed: oneshot::Receiver<()>,
}

impl SqlxDriver {
    pub(crate) fn new(base: PgConnectOptions) -> Self {
        Self { base }
    }
}

impl Driver for SqlxDriver {
    type Connection = Session;
    type Error = sqlx::Error;

    fn open(&self, credential: &Credential) -> impl Future<Output = Result<Session, sqlx::Error>> + Send {
        let options = with_login(&self.base, credential);
        async move {
            let (opened, result) = oneshot::channel();
            let (close, close_rx) = oneshot::channel::<()>();
            let (closed_tx, closed) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("credswap-sqlx-session".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = opened.send(Err(sqlx::Error::Io(error)));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match PgConnection::connect_with(&options).await {
                            Ok(conn) => {
                                // Nobody waits any more (the open timed out): close at once.
                                if opened.send(Ok(())).is_ok() {
                                    let _ = close_rx.await;
                                }
                                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close())
                                    .await;
                            }
                            Err(error) => {
                                let _ = opened.send(Err(error));
                            }
                        }
                        let _ = closed_tx.send(());
                    });
                });
            if let Err(error) = spawned {
                return Err(sqlx::Error::Io(error));
            }
            match result.await {
                Ok(Ok(())) => Ok(Session { close, closed }),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(sqlx::Error::Io(std::io::ErrorKind::ConnectionAborted.into())),
            }
        }
    }

    fn classify(&self, error: &sqlx::Error) -> Failure {
        classify(error)
    }

    async fn close(&self, session: Session) {
        let _ = session.close.send(());
        let _ = session.closed.await;
    }

    fn code(&self, error: &sqlx::Error) -> Option<String> {
        code(error)
    }
}

/// A validate-before-swap check that logs in with the candidate credential outside any pool
/// and closes the session at once, within
/// [`VALIDATION_TIMEOUT`](credswap_core::contract::driver::VALIDATION_TIMEOUT) (the contract's
/// [`validator`](credswap_core::contract::validator) over sqlx); pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
pub fn connection_validator(connect_options: PgConnectOptions) -> impl credswap_core::Validate {
    credswap_core::contract::validator(SqlxDriver::new(connect_options))
}
