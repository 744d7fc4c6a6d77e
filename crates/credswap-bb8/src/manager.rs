use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use credswap_core::{BoxError, Credential, RotatingCredentials, Validate};
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::Error;
use crate::connect::open_with;
use crate::connection::RotatingConnection;
use crate::state::{Rotation, State};

/// A bb8 pool of [`RotatingConnection`]s: what `bb8::Pool<PostgresConnectionManager<Tls>>` was.
pub type Pool<Tls> = bb8::Pool<RotatingConnectionManager<Tls>>;

/// A connection checked out of a [`Pool`]; derefs to [`RotatingConnection`], which derefs to
/// [`tokio_postgres::Client`].
pub type PooledConnection<'a, Tls> = bb8::PooledConnection<'a, RotatingConnectionManager<Tls>>;

/// A [`bb8::ManageConnection`] for tokio-postgres that follows a [`RotatingCredentials`]: the
/// rotating replacement for `bb8_postgres::PostgresConnectionManager`.
///
/// The `tokio_postgres::Config` gives host, port, database, TLS mode and options; the username
/// and password come from the provider at every connect (any set in the config are ignored).
/// `Tls` is any connector `bb8-postgres` takes (`NoTls`, `postgres-native-tls`,
/// `tokio-postgres-rustls`...).
///
/// - `connect` reads the current credential, tags the connection with its generation, and on
///   SQLSTATE `28P01`/`28000` reports the failure to the provider and retries once.
/// - `is_valid` (at checkout) refuses a stale connection without a round trip, otherwise pings
///   with `simple_query("")` as `bb8-postgres` does.
/// - `has_broken` (at return) reports a stale or closed connection, so a busy connection of an
///   older credential is closed when it comes back.
/// - An idle connection of an older credential is closed by its own task as soon as the
///   generation changes (see the crate docs).
///
/// Take the [`rotation`](Self::rotation) handle before moving the manager into the pool.
pub struct RotatingConnectionManager<Tls> {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Tls,
    pub(crate) state: Arc<State>,
}

impl<Tls> RotatingConnectionManager<Tls>
where
    Tls: MakeTlsConnect<Socket>,
{
    /// A manager connecting with `config` (minus its user and password) and the provider's login.
    pub fn new(config: tokio_postgres::Config, tls: Tls, credentials: RotatingCredentials) -> Self {
        let mut config = config;
        // The provider's login overrides the config's; keep no password in the manager.
        config.password(Vec::<u8>::new());
        Self {
            config,
            tls,
            state: Arc::new(State::new(credentials)),
        }
    }

    /// A manager from a connection string (`host=db port=5432 dbname=app` or a `postgres://`
    /// URL), as `PostgresConnectionManager::new_from_stringlike`. Leave user and password out.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when the string does not parse.
    pub fn new_from_stringlike<S>(
        params: S,
        tls: Tls,
        credentials: RotatingCredentials,
    ) -> Result<Self, Error>
    where
        S: ToString,
    {
        let config =
            tokio_postgres::Config::from_str(&params.to_string()).map_err(Error::config)?;
        Ok(Self::new(config, tls, credentials))
    }

    /// The handle with the counters and the last connect error. Clone it before
    /// `bb8::Pool::builder().build(manager)` takes the manager.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            state: Arc::clone(&self.state),
        }
    }

    /// The provider the manager follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.state.credentials
    }
}

impl<Tls> fmt::Debug for RotatingConnectionManager<Tls> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug prints its password: print only what is safe.
        f.debug_struct("RotatingConnectionManager")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("credentials", &self.state.credentials)
            .finish_non_exhaustive()
    }
}

impl<Tls> bb8::ManageConnection for RotatingConnectionManager<Tls>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    Tls::Stream: Send + Sync,
    Tls::TlsConnect: Send,
    <Tls::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = RotatingConnection;
    type Error = Error;

    async fn connect(&self) -> Result<RotatingConnection, Error> {
        self.connect_following().await
    }

    async fn is_valid(&self, conn: &mut RotatingConnection) -> Result<(), Error> {
        self.state.note_validated_checkout();
        let current = self.state.credentials.current();
        conn.tag.check_out(&current, &self.state)?;
        drop(current);
        if conn.client_is_closed() {
            return Err(Error::closed());
        }
        conn.simple_query("").await.map(|_| ()).map_err(Error::ping)
    }

    fn has_broken(&self, conn: &mut RotatingConnection) -> bool {
        let current = self.state.credentials.current();
        conn.tag
            .check_in(conn.client_is_closed(), &current, &self.state)
    }
}

/// A validate-before-swap check that opens one real connection with the candidate credential
/// and runs `SELECT 1`; pass it to
/// [`RotatingCredentialsBuilder::validator`](credswap_core::RotatingCredentialsBuilder::validator).
///
/// Its connection is not the pool's and is closed at once.
pub fn connection_validator<Tls>(config: tokio_postgres::Config, tls: Tls) -> impl Validate
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    Tls::Stream: Send + Sync,
    Tls::TlsConnect: Send,
    <Tls::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    ConnectionValidator { config, tls }
}

struct ConnectionValidator<Tls> {
    config: tokio_postgres::Config,
    tls: Tls,
}

#[async_trait::async_trait]
impl<Tls> Validate for ConnectionValidator<Tls>
where
    Tls: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    Tls::Stream: Send + Sync,
    Tls::TlsConnect: Send,
    <Tls::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn validate(&self, credential: &Credential) -> Result<(), BoxError> {
        let (client, connection) = open_with(&self.config, credential, self.tls.clone()).await?;
        let task = tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        drop(client);
        let _ = task.await;
        Ok(())
    }
}
