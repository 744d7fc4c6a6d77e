//! The pool's connect hook: [`bb8::ManageConnection`] for [`RotatingConnectionManager`], built
//! on [`Connector::connect`](credswap_core::contract::Connector::connect).

use std::sync::Arc;

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

    /// Opens a connection with the current credential and spawns its task. bb8 reports only
    /// `RunError::TimedOut` to `Pool::get`: a connect that fails for good is logged by the
    /// contract's connector, at `WARN`, with the role, generation, SQLSTATE and server message.
    async fn connect(&self) -> Result<RotatingConnection, Error> {
        let adapter = self.connector.adapter();
        if !adapter.has_driver() {
            // Here rather than in the constructor, which takes any `Tls`.
            adapter.set_driver(Arc::clone(&self.driver));
        }
        if adapter.session_limit().is_none() {
            // bb8 asks for a replacement the moment it drops a connection; without the pool's
            // size (no budget) wait, briefly, for the dropped ones to end, so the server does
            // not see the replacement beside the session it replaces.
            self.shared
                .closing()
                .wait_closed(crate::tag::CLOSING_WAIT_MAX)
                .await;
        }
        // A connect that fails for good is logged by the connector, once.
        match self.connector.connect(&*self.driver).await {
            Ok(Connected {
                connection: (client, connection),
                tag,
                live,
            }) => {
                let tag = Arc::new(Tag::new(tag, Arc::clone(self.shared.closing())));
                drain::spawn(connection, Arc::clone(&tag), live, Arc::clone(&self.shared));
                Ok(RotatingConnection::new(client, tag))
            }
            Err(refused) => Err(refused.into_error()),
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
