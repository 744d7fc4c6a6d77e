//! Database sessions without spawning: the driver's connection future is polled together with
//! each request, so the steps run on whatever executor awaits them. Also SQL quoting and
//! [`Database`], how the rotator reaches the database (TLS or not).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

use crate::Error;
use crate::secret::SecretValue;

/// A driver connection, type-erased over its TLS stream.
type Connection = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;
/// A connect attempt, type-erased over its TLS connector.
type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, Connection), tokio_postgres::Error>> + Send>>;

/// How the rotator reaches the database: it opens the rotator's own connections (the logins of
/// setSecret and testSecret, the master login) without TLS ([`Database::no_tls`], the
/// default), with libpq's `sslmode` and a CA file ([`Database::rustls`], feature `rustls`, on
/// by default), or with any tokio-postgres TLS connector ([`Database::tls`], for instance
/// `postgres-native-tls`). RDS with `rds.force_ssl` needs TLS.
///
/// Where the database is (host, port, dbname) and who logs in come from the secret
/// ([`SecretValue`](crate::SecretValue)); this says how its connections are opened. One
/// connect, no retry: not the adapters' `credswap_core::contract::Connector`, which waits for
/// a working credential.
#[derive(Clone)]
pub struct Database {
    open: Arc<dyn Fn(Config) -> Connecting + Send + Sync>,
    /// What `Debug` says: the mode.
    describe: &'static str,
}

impl Database {
    /// Plain TCP (or a unix socket).
    pub fn no_tls() -> Database {
        Database::with(NoTls, Some(SslMode::Disable), "no TLS")
    }

    /// Connections through `tls`, which is required (`sslmode=require`): a server, or anything
    /// in between, that declines TLS is refused instead of getting the rotation's logins and
    /// `ALTER ROLE` in plaintext. `tls` verifies the certificate as it is configured to.
    pub fn tls<T>(tls: T) -> Database
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Database::with(tls, Some(SslMode::Require), "TLS required")
    }

    /// Connections as libpq's `sslmode` and `sslrootcert` say, with rustls (the aws-lc-rs
    /// provider): see [`crate::SslMode`] for what each mode checks. `ca_file` is a PEM file of
    /// one or more CA certificates (for RDS, the region's certificate bundle).
    ///
    /// # Errors
    ///
    /// [`Error::is_config`]: `verify-ca` or `verify-full` without a CA file, a CA file with
    /// `disable`, or a CA file that cannot be read or holds no usable certificate.
    #[cfg(feature = "rustls")]
    pub fn rustls(
        mode: crate::SslMode,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Database, Error> {
        use crate::SslMode as Mode;
        if mode == Mode::Disable {
            if let Some(path) = ca_file {
                return Err(Error::config(format!(
                    "a CA file ({}) with sslmode disable: nothing would be verified",
                    path.display()
                )));
            }
            return Ok(Database::no_tls());
        }
        let config = crate::tls::client_config(mode, ca_file)?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
        let (ssl_mode, describe) = match (mode, ca_file.is_some()) {
            (Mode::Prefer, false) => (SslMode::Prefer, "sslmode prefer"),
            (Mode::Prefer, true) => (SslMode::Prefer, "sslmode prefer (chain verified)"),
            (Mode::Require, false) => (SslMode::Require, "sslmode require"),
            (Mode::Require, true) => (SslMode::Require, "sslmode require (chain verified)"),
            (Mode::VerifyCa, _) => (SslMode::Require, "sslmode verify-ca"),
            _ => (SslMode::Require, "sslmode verify-full"),
        };
        Ok(Database::with(tls, Some(ssl_mode), describe))
    }

    fn with<T>(tls: T, mode: Option<SslMode>, describe: &'static str) -> Database
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let open = Arc::new(move |mut config: Config| {
            let tls = tls.clone();
            if let Some(mode) = mode {
                config.ssl_mode(mode);
            }
            Box::pin(async move {
                let (client, connection) = config.connect(tls).await?;
                Ok((client, Box::pin(connection) as Connection))
            }) as Connecting
        });
        Database { open, describe }
    }

    /// Opens one connection with `config` (its user, password, host, ...) as the rotation
    /// does: its TLS and `sslmode` replace the config's. The caller drives the
    /// returned connection future (for instance with `tokio::spawn`) while using the client.
    ///
    /// # Errors
    ///
    /// The driver's error: the server refused or rejected the login, could not be reached, or
    /// the TLS handshake failed.
    pub async fn connect(
        &self,
        config: Config,
    ) -> Result<
        (
            Client,
            impl Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
        ),
        tokio_postgres::Error,
    > {
        (self.open)(config).await
    }
}

impl Default for Database {
    fn default() -> Self {
        Database::no_tls()
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Database").field(&self.describe).finish()
    }
}

/// An open session: the client, and the connection future that [`Driver::run`] polls.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) driver: Driver,
}

/// The connection future of a [`Session`]; `None` once it ended.
pub(crate) struct Driver(Option<Connection>);

impl Driver {
    /// Awaits `request` (a call on the session's client) while driving the connection.
    pub(crate) async fn run<F: Future>(&mut self, request: F) -> F::Output {
        let mut request = pin!(request);
        poll_fn(|cx| {
            if let Poll::Ready(output) = request.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            if let Some(connection) = self.0.as_mut()
                && let Poll::Ready(result) = connection.as_mut().poll(cx)
            {
                // The request fails with "connection closed" once its sender is dropped.
                if let Err(e) = result {
                    tracing::debug!(error = %e, "database connection ended");
                }
                self.0 = None;
                return request.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}

impl Session {
    /// Ends the session politely: without its client the connection sends Terminate.
    pub(crate) async fn close(self) {
        let Session { client, driver } = self;
        drop(client);
        if let Some(connection) = driver.0 {
            let _ = connection.await;
        }
    }
}

/// The result of a login attempt that reached the server.
pub(crate) enum Login {
    /// The server accepted the login.
    Accepted(Session),
    /// The server refused it (`28P01`, `28000` other than a `pg_hba.conf` rejection): wrong
    /// password, or no such role.
    Refused(tokio_postgres::Error),
}

/// Logs in as `secret`'s user.
///
/// # Errors
///
/// [`Error::is_database`] when the server cannot be reached or fails otherwise.
pub(crate) async fn login(
    database: &Database,
    secret: &SecretValue,
    connect_timeout: Duration,
) -> Result<Login, Error> {
    match (database.open)(secret.config(connect_timeout)).await {
        Ok((client, connection)) => Ok(Login::Accepted(Session {
            client,
            driver: Driver(Some(connection)),
        })),
        Err(e) if is_rejection(&e) => Err(Error::rejected(
            format!(
                "the server at {}:{} rejected the connection of user {} before any password \
                 check (its pg_hba.conf has no entry, or a reject entry, for this host, user, \
                 database and encryption): a configuration problem, no password can fix it",
                secret.host(),
                secret.port(),
                secret.username()
            ),
            secret.username(),
            e,
        )),
        Err(e) if is_refusal(&e) => Ok(Login::Refused(e)),
        Err(e) => Err(Error::database(
            format!(
                "connecting to {}:{} as {}",
                secret.host(),
                secret.port(),
                secret.username()
            ),
            Some(secret.username()),
            Some(e),
        )),
    }
}

/// Whether `e` is the server rejecting a connection by its `pg_hba.conf` (SQLSTATE `28000`
/// with a message naming the file: "no pg_hba.conf entry for host ...", "pg_hba.conf rejects
/// connection ...", which is also how RDS's `rds.force_ssl` refuses plaintext): no password
/// changes that answer. The file's name stays in translated messages too.
pub(crate) fn is_rejection(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().contains("pg_hba.conf")
    })
}

/// Whether `e` is the server refusing a login.
fn is_refusal(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

/// `ident` as a quoted SQL identifier: `"..."` with inner `"` doubled.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `text` as a SQL string literal, safe whatever `standard_conforming_strings` is.
pub(crate) fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `PASSWORD '<SCRAM-SHA-256 verifier>'`: the password itself never reaches SQL text, the
/// server or its log.
pub(crate) fn password_clause(password: &secrecy::SecretString) -> String {
    use secrecy::ExposeSecret;
    let verifier = postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
    format!("PASSWORD {}", quote_literal(&verifier))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }

    #[test]
    fn password_clause_carries_a_verifier_only() {
        let clause = password_clause(&SecretString::from("correct-horse".to_owned()));
        assert!(
            clause.starts_with("PASSWORD 'SCRAM-SHA-256$4096:"),
            "{clause}"
        );
        assert!(!clause.contains("correct-horse"));
    }
}
