//! Database sessions without spawning: the driver's connection future is polled together with
//! each request, so the steps run on whatever executor awaits them. Also SQL quoting and the
//! [`Connector`] (TLS or not).

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
use crate::secret::DbSecret;

/// A driver connection, type-erased over its TLS stream.
type Connection = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;
/// A connect attempt, type-erased over its TLS connector.
type Connecting =
    Pin<Box<dyn Future<Output = Result<(Client, Connection), tokio_postgres::Error>> + Send>>;

/// How the rotation opens database connections: without TLS ([`Connector::no_tls`], the
/// default) or with any tokio-postgres TLS connector ([`Connector::tls`], for instance
/// `tokio-postgres-rustls` or `postgres-native-tls`, as RDS with `rds.force_ssl` needs).
#[derive(Clone)]
pub struct Connector(Arc<dyn Fn(Config) -> Connecting + Send + Sync>);

impl Connector {
    /// Plain TCP (or a unix socket).
    pub fn no_tls() -> Connector {
        Connector::with(NoTls, false)
    }

    /// Connections through `tls`, which is required (`sslmode=require`): a server, or anything
    /// in between, that declines TLS is refused instead of getting the rotation's logins and
    /// `ALTER ROLE` in plaintext. `tls` verifies the certificate as it is configured to.
    pub fn tls<T>(tls: T) -> Connector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Connector::with(tls, true)
    }

    fn with<T>(tls: T, require: bool) -> Connector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Connector(Arc::new(move |mut config: Config| {
            let tls = tls.clone();
            if require {
                config.ssl_mode(SslMode::Require);
            }
            Box::pin(async move {
                let (client, connection) = config.connect(tls).await?;
                Ok((client, Box::pin(connection) as Connection))
            })
        }))
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::no_tls()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
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
    /// The server refused it (`28P01`, `28000`): wrong password, or no such role.
    Refused(tokio_postgres::Error),
}

/// Logs in as `secret`'s user.
///
/// # Errors
///
/// [`Error::is_database`] when the server cannot be reached or fails otherwise.
pub(crate) async fn login(
    connector: &Connector,
    secret: &DbSecret,
    connect_timeout: Duration,
) -> Result<Login, Error> {
    match (connector.0)(secret.config(connect_timeout)).await {
        Ok((client, connection)) => Ok(Login::Accepted(Session {
            client,
            driver: Driver(Some(connection)),
        })),
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
