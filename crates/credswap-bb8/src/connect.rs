//! The pool's connect hook: [`bb8::ManageConnection`] for [`RotatingConnectionManager`], built
//! on [`Connector::connect`](credswap_core::contract::Connector::connect).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use credswap_core::Snapshot;
use credswap_core::contract::{Connected, Failure};
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::tag::{RotatingConnection, Tag};
use crate::{Error, RotatingConnectionManager, drain};

impl<Tls> bb8::ManageConnection for RotatingConnectionManager<Tls>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    Tls::Stream: Send + Sync,
    Tls::TlsConnect: Send,
    <Tls::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = RotatingConnection;
    type Error = Error;

    /// Opens a connection with the current credential and spawns its task. Since bb8 reports
    /// only `RunError::TimedOut` to `Pool::get`, the first failed attempt of each connect is
    /// logged at `WARN` and a connect that fails for good at `ERROR`.
    async fn connect(&self) -> Result<RotatingConnection, Error> {
        let rotation = self.connector.rotation();
        if !rotation.has_probe() {
            // Here rather than in the constructor, which takes any `Tls`.
            rotation.set_probe(credswap_tokio_postgres::probe(
                self.config.clone(),
                self.tls.clone(),
            ));
        }
        let first_failure = AtomicBool::new(true);
        let opened = self
            .connector
            .connect(credswap_tokio_postgres::classify, |snapshot: Arc<Snapshot>| {
                let (config, tls, first_failure) = (&self.config, self.tls.clone(), &first_failure);
                async move {
                    let opened = credswap_tokio_postgres::open(config, snapshot.credential(), tls).await;
                    if let Err(e) = &opened
                        && credswap_tokio_postgres::classify(e) != Failure::Fatal
                        && first_failure.swap(false, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            username = snapshot.credential().username(),
                            generation = snapshot.generation().get(),
                            code = credswap_tokio_postgres::code(e).unwrap_or_default(),
                            server = server_message(e),
                            error = %e,
                            "opening a pool connection failed; retrying until the connect deadline"
                        );
                    }
                    opened
                }
            })
            .await;
        match opened {
            Ok(Connected {
                connection: (client, connection),
                tag,
                live,
            }) => {
                let tag = Arc::new(Tag::new(tag));
                drain::spawn(connection, Arc::clone(&tag), live, Arc::clone(&self.shared));
                Ok(RotatingConnection::new(client, tag))
            }
            Err(refused) => {
                let server = server_message(refused.error()).to_owned();
                let code = credswap_tokio_postgres::code(refused.error()).map(str::to_owned);
                let error = refused.into_error(code.as_deref());
                tracing::error!(
                    username = error.username().unwrap_or_default(),
                    generation = error.generation().map(|g| g.get()),
                    server,
                    error = %error,
                    "opening a pool connection failed; bb8 reports only a timeout to `Pool::get`"
                );
                Err(error)
            }
        }
    }

    /// Refuses a stale connection without a round trip, else pings it as `bb8-postgres` does.
    async fn is_valid(&self, conn: &mut RotatingConnection) -> Result<(), Error> {
        conn.tag.check_out(&self.shared)?;
        if conn.client_is_closed() {
            return Err(Error::closed());
        }
        conn.simple_query("").await.map(|_| ()).map_err(Error::ping)
    }

    /// Reports a stale or closed connection.
    fn has_broken(&self, conn: &mut RotatingConnection) -> bool {
        conn.tag.check_in(conn.client_is_closed(), &self.shared)
    }
}

/// The server's message (`password authentication failed for user "app"`), which
/// `tokio_postgres::Error` does not display; empty when the server did not answer.
fn server_message(error: &tokio_postgres::Error) -> &str {
    error.as_db_error().map_or("", |db| db.message())
}
