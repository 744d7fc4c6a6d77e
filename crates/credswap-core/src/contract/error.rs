//! [`AdapterError`]: one error vocabulary for every adapter.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::classify::Failure;
use crate::Generation;
use crate::policy::fmt_duration;

type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// The error of every adapter: building a pool, or opening and checking its connections.
///
/// Opaque and cheap to clone; ask it with the question methods, the same in every adapter.
/// It names the role and the credential generation involved and the server's SQLSTATE, and
/// never a password.
///
/// ```
/// use credswap_core::contract::AdapterError;
///
/// let err = AdapterError::config("the connection URL has no host", None);
/// assert!(err.is_config() && !err.is_connect());
/// assert_eq!(err.code(), None);
/// ```
#[derive(Clone)]
pub struct AdapterError {
    inner: Arc<Kind>,
}

enum Kind {
    Config {
        message: String,
        cause: Option<Cause>,
    },
    NoRuntime {
        what: &'static str,
    },
    Connect {
        username: String,
        generation: Generation,
        failure: Failure,
        code: Option<String>,
        attempts: u32,
        waited: Duration,
        cause: Cause,
    },
    Stale {
        connection: Generation,
        current: Generation,
    },
    Closed,
    Ping(Cause),
}

impl AdapterError {
    fn new(kind: Kind) -> Self {
        Self {
            inner: Arc::new(kind),
        }
    }

    /// The pool's configuration was refused (a bad URL, an invalid pool setting).
    pub fn config(
        message: impl Into<String>,
        cause: Option<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::new(Kind::Config {
            message: message.into(),
            cause: cause.map(Arc::from),
        })
    }

    /// The pool was built outside a Tokio runtime; `what` names what the adapter spawns.
    pub fn no_runtime(what: &'static str) -> Self {
        Self::new(Kind::NoRuntime { what })
    }

    /// A connect failed for good: `cause` is the driver's last error.
    #[allow(clippy::too_many_arguments)]
    pub fn connect(
        username: &str,
        generation: Generation,
        failure: Failure,
        code: Option<&str>,
        attempts: u32,
        waited: Duration,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self::new(Kind::Connect {
            username: username.to_owned(),
            generation,
            failure,
            code: code.map(str::to_owned),
            attempts,
            waited,
            cause: Arc::new(cause),
        })
    }

    /// A pooled connection authenticated with an older credential (or one whose lease is
    /// ending) and was closed instead of handed out.
    pub fn stale(connection: Generation, current: Generation) -> Self {
        Self::new(Kind::Stale {
            connection,
            current,
        })
    }

    /// A pooled connection was found closed.
    pub fn closed() -> Self {
        Self::new(Kind::Closed)
    }

    /// A health check of a pooled connection failed.
    pub fn ping(cause: impl StdError + Send + Sync + 'static) -> Self {
        Self::new(Kind::Ping(Arc::new(cause)))
    }

    /// Whether the pool's configuration was refused.
    pub fn is_config(&self) -> bool {
        matches!(*self.inner, Kind::Config { .. })
    }

    /// Whether the pool was built outside a Tokio runtime.
    pub fn is_no_runtime(&self) -> bool {
        matches!(*self.inner, Kind::NoRuntime { .. })
    }

    /// Whether opening a connection failed.
    pub fn is_connect(&self) -> bool {
        matches!(*self.inner, Kind::Connect { .. })
    }

    /// Whether opening a connection failed because the server refused the login
    /// (SQLSTATE `28P01` or `28000`).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            *self.inner,
            Kind::Connect {
                failure: Failure::Auth,
                ..
            }
        )
    }

    /// Whether opening a connection failed for a reason that may pass (the server was
    /// restarting, refused the TCP connection, had no free slot).
    pub fn is_transient(&self) -> bool {
        matches!(
            *self.inner,
            Kind::Connect {
                failure: Failure::Transient,
                ..
            }
        )
    }

    /// Whether a pooled connection was refused because its credential is stale.
    pub fn is_stale(&self) -> bool {
        matches!(*self.inner, Kind::Stale { .. })
    }

    /// Whether a pooled connection was found closed.
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner, Kind::Closed)
    }

    /// Whether a health check of a pooled connection failed.
    pub fn is_ping(&self) -> bool {
        matches!(*self.inner, Kind::Ping(_))
    }

    /// The server's SQLSTATE, when the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match &*self.inner {
            Kind::Connect { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The role a failed connect logged in as.
    pub fn username(&self) -> Option<&str> {
        match &*self.inner {
            Kind::Connect { username, .. } => Some(username),
            _ => None,
        }
    }

    /// The credential generation involved: the one a failed connect used, or the one a stale
    /// connection authenticated with.
    pub fn generation(&self) -> Option<Generation> {
        match &*self.inner {
            Kind::Connect { generation, .. } => Some(*generation),
            Kind::Stale { connection, .. } => Some(*connection),
            _ => None,
        }
    }

    /// How many connects were attempted before giving up.
    pub fn attempts(&self) -> Option<u32> {
        match &*self.inner {
            Kind::Connect { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

impl fmt::Debug for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field is printable (no secret is ever stored); print the message and the kind.
        f.debug_struct("AdapterError")
            .field("message", &self.to_string())
            .finish()
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Kind::Config { message, .. } => write!(f, "invalid pool configuration: {message}"),
            Kind::NoRuntime { what } => write!(
                f,
                "a rotating pool must be built inside a Tokio runtime (it spawns {what})"
            ),
            Kind::Connect {
                username,
                generation,
                failure,
                code,
                attempts,
                waited,
                cause,
            } => {
                let what = match failure {
                    Failure::Auth => "the server refused the login",
                    Failure::Transient => "the server could not take the connection",
                    Failure::Fatal => "the connect failed",
                };
                write!(
                    f,
                    "connecting as \"{username}\" with credential generation {generation} failed: {what}"
                )?;
                if let Some(code) = code {
                    write!(f, " (SQLSTATE {code})")?;
                }
                write!(
                    f,
                    " after {attempts} attempt{} over {}: {cause}",
                    if *attempts == 1 { "" } else { "s" },
                    fmt_duration(*waited)
                )
            }
            Kind::Stale {
                connection,
                current,
            } => write!(
                f,
                "connection authenticated with credential generation {connection}, but generation {current} is current (or its lease is ending)"
            ),
            Kind::Closed => f.write_str("connection is closed"),
            Kind::Ping(cause) => write!(f, "connection health check failed: {cause}"),
        }
    }
}

impl StdError for AdapterError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &*self.inner {
            Kind::Config { cause, .. } => cause.as_deref().map(|c| c as &(dyn StdError + 'static)),
            Kind::Connect { cause, .. } | Kind::Ping(cause) => {
                Some(&**cause as &(dyn StdError + 'static))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_names_role_generation_and_code() {
        let io = std::io::Error::other("password authentication failed for user \"app\"");
        let e = AdapterError::connect(
            "app",
            Generation::new(3),
            Failure::Auth,
            Some("28P01"),
            4,
            Duration::from_millis(1500),
            io,
        );
        assert!(e.is_connect() && e.is_auth_failure() && !e.is_transient());
        assert_eq!(e.code(), Some("28P01"));
        assert_eq!(e.username(), Some("app"));
        assert_eq!(e.generation(), Some(Generation::new(3)));
        assert_eq!(e.attempts(), Some(4));
        let text = e.to_string();
        assert!(
            text.contains("\"app\"") && text.contains("generation 3"),
            "{text}"
        );
        assert!(
            text.contains("28P01") && text.contains("4 attempts"),
            "{text}"
        );
        assert!(format!("{e:?}").contains("28P01"));
    }

    #[test]
    fn other_kinds() {
        assert!(AdapterError::no_runtime("its watcher").is_no_runtime());
        let stale = AdapterError::stale(Generation::new(1), Generation::new(2));
        assert!(stale.is_stale());
        assert_eq!(stale.generation(), Some(Generation::new(1)));
        assert!(AdapterError::closed().is_closed());
        assert!(AdapterError::ping(std::io::Error::other("x")).is_ping());
    }
}
