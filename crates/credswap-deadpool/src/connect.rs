//! The pool's [`Connect`]: every connection is opened through the contract's [`Connector`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use credswap_core::contract::{Connected, Connector};
use credswap_tokio_postgres::PgDriver;
use deadpool_postgres::{Connect, Timeouts};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};

use crate::tag;

/// The pool's own limit on a connect: the smaller of `timeouts.create` and `timeouts.wait`
/// (the connector ends a little before it); `None` when the pool sets neither (a zero `wait`,
/// "do not wait for a free slot", does not count).
pub(crate) fn deadline(timeouts: &Timeouts) -> Option<Duration> {
    [timeouts.create, timeouts.wait]
        .into_iter()
        .flatten()
        .filter(|limit| !limit.is_zero())
        .min()
}

/// Opens every connection with the credential current at that moment.
pub(crate) struct RotatingConnect<T> {
    /// Host, port, database, options and TLS; no login.
    pub(crate) driver: Arc<PgDriver<T>>,
    pub(crate) connector: Connector,
    /// Dropped with the pool's manager: tells the watcher the pool is gone.
    pub(crate) _alive: oneshot::Sender<()>,
}

impl<T> fmt::Debug for RotatingConnect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnect")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl<T> RotatingConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn open(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        // A connect that fails for good is logged by the connector.
        let Connected {
            connection: (client, connection),
            tag,
            live,
        } = self
            .connector
            .connect(&*self.driver)
            .await
            .map_err(|refused| refused.into_inner())?;
        // The live guard ends with the task: when the connection closes, or when deadpool
        // drops the client (which aborts the task).
        let task = tokio::spawn(async move {
            let _live = live;
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
        // The last step: nothing may be awaited between this and the `post_create` hook.
        tag::hand_off(tag);
        Ok((client, task))
    }
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
        _manager_config: &Config,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>>
                + Send
                + '_,
        >,
    > {
        Box::pin(self.open())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_limit_is_the_smaller_timeout() {
        let mut timeouts = Timeouts::new();
        assert_eq!(deadline(&timeouts), None);
        timeouts.wait = Some(Duration::from_secs(30));
        timeouts.create = Some(Duration::from_secs(5));
        assert_eq!(deadline(&timeouts), Some(Duration::from_secs(5)));
        timeouts.create = None;
        assert_eq!(deadline(&timeouts), Some(Duration::from_secs(30)));
        timeouts.wait = Some(Duration::ZERO);
        assert_eq!(deadline(&timeouts), None);
    }
}
