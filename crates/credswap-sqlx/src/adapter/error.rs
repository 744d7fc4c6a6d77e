use std::fmt;

use super::sqlx;

/// Building a rotating pool failed. Opaque; never contains a password.
pub struct Error {
    kind: Kind,
}

enum Kind {
    /// The database URL could not be parsed.
    Url(sqlx::Error),
    /// The first connection (of `connect`/`connect_with`) failed.
    Connect(sqlx::Error),
    NoRuntime,
}

impl Error {
    pub(crate) fn url(e: sqlx::Error) -> Self {
        Self { kind: Kind::Url(e) }
    }
    pub(crate) fn connect(e: sqlx::Error) -> Self {
        Self {
            kind: Kind::Connect(e),
        }
    }
    pub(crate) fn no_runtime() -> Self {
        Self {
            kind: Kind::NoRuntime,
        }
    }

    /// The database URL could not be parsed (the message never repeats the URL).
    pub fn is_url(&self) -> bool {
        matches!(self.kind, Kind::Url(_))
    }

    /// The first connection failed (`connect` and `connect_with` open one, as sqlx's do).
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect(_))
    }

    /// The first connection was refused as an authentication failure (`28P01`/`28000`), also
    /// after one refresh of the credential.
    pub fn is_auth_failure(&self) -> bool {
        matches!(&self.kind, Kind::Connect(e) if is_auth_failure(e))
    }

    /// The pool was built outside a Tokio runtime.
    pub fn is_no_runtime(&self) -> bool {
        matches!(self.kind, Kind::NoRuntime)
    }

    /// The sqlx error underneath, if there is one.
    pub fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match &self.kind {
            Kind::Url(e) | Kind::Connect(e) => Some(e),
            Kind::NoRuntime => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // sqlx errors carry no password (connect errors name the user; URL errors name the
        // part that did not parse); print their messages only, never options.
        f.debug_struct("Error")
            .field("message", &self.to_string())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Url(e) => write!(f, "invalid database URL: {e}"),
            Kind::Connect(e) => write!(f, "opening the pool's first connection failed: {e}"),
            Kind::NoRuntime => f.write_str(
                "a rotating sqlx pool must be created inside a Tokio runtime (it spawns its watcher)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Url(e) | Kind::Connect(e) => Some(e),
            Kind::NoRuntime => None,
        }
    }
}

/// Whether a sqlx error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry).
pub fn is_auth_failure(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "28P01" || code == "28000")
}
