//! The pool's connect hook: [`bb8::ManageConnection`] for [`RotatingConnectionManager`], built
//! on [`Connector::connect`](credswap_core::contract::Connector::connect).

use std::sync::Arc;

use credswap_core::Snapshot;
use credswap_core::contract::Connected;
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

    /// Opens a connection with the current credential and spawns its task. A failure is logged
    /// here at `ERROR`, since bb8 reports only `RunError::TimedOut` to `Pool::get`.
    async fn connect(&self) -> Result<RotatingConnection, Error> {
        let opened = self
            .connector
            .connect(
                credswap_tokio_postgres::classify,
                |snapshot: Arc<Snapshot>| {
                    let (config, tls) = (&self.config, self.tls.clone());
                    async move {
                        credswap_tokio_postgres::open(config, snapshot.credential(), tls).await
                    }
                },
            )
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
                let code = credswap_tokio_postgres::code(refused.error()).map(str::to_owned);
                let server = refused
                    .error()
                    .as_db_error()
                    .map(|db| db.message().to_owned());
                let error = refused.into_error(code.as_deref());
                tracing::error!(
                    username = error.username().unwrap_or_default(),
                    generation = error.generation().map(|g| g.get()),
                    server = server.as_deref().unwrap_or_default(),
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
