use std::fmt;
use std::sync::Arc;

use credswap_core::Generation;
use tokio_postgres::error::SqlState;

/// What the manager reports: a connect that failed, or a connection refused at checkout.
///
/// Opaque and cheap to clone (the last connect error is kept for
/// [`Rotation::last_connect_error`](crate::Rotation::last_connect_error)); ask it what happened
/// with the question methods. It never contains a password: the display of a refused login is
/// the server's message (`password authentication failed for user "app"`), which names the role
/// and nothing else.
///
/// bb8 hands connect errors to its error sink, not to the caller of `Pool::get`, which times
/// out instead; so does it with checkout refusals. Refusals with [`is_stale`](Self::is_stale)
/// are routine: they are the pool draining connections of an older credential.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Kind>,
}

enum Kind {
    Connect {
        username: String,
        generation: Generation,
        retried: bool,
        source: tokio_postgres::Error,
    },
    Stale {
        generation: Generation,
        current: Generation,
    },
    Closed,
    Ping(tokio_postgres::Error),
    Config(tokio_postgres::Error),
}

impl Error {
    fn from_kind(kind: Kind) -> Self {
        Self {
            inner: Arc::new(kind),
        }
    }

    pub(crate) fn connect(
        username: &str,
        generation: Generation,
        retried: bool,
        source: tokio_postgres::Error,
    ) -> Self {
        Self::from_kind(Kind::Connect {
            username: username.to_owned(),
            generation,
            retried,
            source,
        })
    }

    pub(crate) fn stale(generation: Generation, current: Generation) -> Self {
        Self::from_kind(Kind::Stale {
            generation,
            current,
        })
    }

    pub(crate) fn closed() -> Self {
        Self::from_kind(Kind::Closed)
    }

    pub(crate) fn ping(source: tokio_postgres::Error) -> Self {
        Self::from_kind(Kind::Ping(source))
    }

    pub(crate) fn config(source: tokio_postgres::Error) -> Self {
        Self::from_kind(Kind::Config(source))
    }

    /// Whether opening a connection failed (the server refused the login, or could not be
    /// reached); see [`username`](Self::username) and [`code`](Self::code).
    pub fn is_connect(&self) -> bool {
        matches!(*self.inner, Kind::Connect { .. })
    }

    /// Whether a connect was refused as an authentication failure (SQLSTATE `28P01` or
    /// `28000`), also after the one retry with a refreshed credential.
    pub fn is_auth_failure(&self) -> bool {
        matches!(&*self.inner, Kind::Connect { source, .. } if is_auth_failure(source))
    }

    /// Whether a checkout refused the connection because it authenticated with an older
    /// generation, or its credential's lease is ending. Routine during a drain.
    pub fn is_stale(&self) -> bool {
        matches!(*self.inner, Kind::Stale { .. })
    }

    /// Whether a checkout found the connection closed (by the server or the network).
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner, Kind::Closed)
    }

    /// Whether the checkout ping (`simple_query("")`, as `bb8-postgres` does) failed.
    pub fn is_ping(&self) -> bool {
        matches!(*self.inner, Kind::Ping(_))
    }

    /// Whether the connection string given to
    /// [`RotatingConnectionManager::new_from_stringlike`](crate::RotatingConnectionManager::new_from_stringlike)
    /// did not parse.
    pub fn is_config(&self) -> bool {
        matches!(*self.inner, Kind::Config(_))
    }

    /// The SQLSTATE the server answered with, if it answered with an error.
    pub fn code(&self) -> Option<&SqlState> {
        self.driver_error().and_then(tokio_postgres::Error::code)
    }

    /// The role a failed connect tried to log in as.
    pub fn username(&self) -> Option<&str> {
        match &*self.inner {
            Kind::Connect { username, .. } => Some(username),
            _ => None,
        }
    }

    /// The generation of the credential a failed connect used, or of a refused connection.
    pub fn generation(&self) -> Option<Generation> {
        match &*self.inner {
            Kind::Connect { generation, .. } | Kind::Stale { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    fn driver_error(&self) -> Option<&tokio_postgres::Error> {
        match &*self.inner {
            Kind::Connect { source, .. } | Kind::Ping(source) | Kind::Config(source) => {
                Some(source)
            }
            Kind::Stale { .. } | Kind::Closed => None,
        }
    }

    fn kind_name(&self) -> &'static str {
        match &*self.inner {
            Kind::Connect { .. } => "connect",
            Kind::Stale { .. } => "stale",
            Kind::Closed => "closed",
            Kind::Ping(_) => "ping",
            Kind::Config(_) => "config",
        }
    }
}

/// What went wrong in the driver, in one line: the server's message and SQLSTATE for a
/// database error (`tokio_postgres::Error` itself displays only "db error"), else the error
/// and its causes.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver errors carry no password; print the message only.
        f.debug_struct("Error")
            .field("kind", &self.kind_name())
            .field("message", &self.to_string())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Kind::Connect {
                username,
                generation,
                retried,
                source,
            } => {
                let again = if *retried {
                    ", also after refreshing the credential"
                } else {
                    ""
                };
                write!(
                    f,
                    "connecting to the database as \"{username}\" (credential generation {generation}) failed{again}: {}",
                    describe(source)
                )
            }
            Kind::Stale {
                generation,
                current,
            } if generation == current => write!(
                f,
                "the connection's credential (generation {generation}) is about to expire; the connection is closed"
            ),
            Kind::Stale {
                generation,
                current,
            } => write!(
                f,
                "the connection authenticated with credential generation {generation}, but generation {current} is \
                 current; the connection is closed"
            ),
            Kind::Closed => f.write_str("the connection is closed"),
            Kind::Ping(source) => write!(
                f,
                "the connection failed its checkout ping: {}",
                describe(source)
            ),
            Kind::Config(source) => write!(f, "invalid connection string: {}", describe(source)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.driver_error()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Whether a driver error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry).
pub fn is_auth_failure(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_describe_the_cause() {
        let parse = "port=notaport"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        let e = Error::config(parse);
        assert!(e.is_config() && !e.is_connect() && !e.is_auth_failure());
        assert!(
            e.to_string().starts_with("invalid connection string: "),
            "{e}"
        );
        assert!(e.to_string().contains("port"), "{e}");
        assert!(e.code().is_none());
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn refusals_name_the_generations() {
        let stale = Error::stale(Generation::new(2), Generation::new(3));
        assert!(stale.is_stale());
        assert_eq!(stale.generation(), Some(Generation::new(2)));
        assert!(stale.to_string().contains("generation 2"), "{stale}");
        assert!(
            stale.to_string().contains("generation 3 is current"),
            "{stale}"
        );
        let lease = Error::stale(Generation::new(4), Generation::new(4));
        assert!(lease.to_string().contains("about to expire"), "{lease}");
        let closed = Error::closed();
        assert!(closed.is_closed() && closed.username().is_none());
        assert!(format!("{closed:?}").contains("closed"));
    }
}
