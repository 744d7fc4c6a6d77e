use std::fmt;

use deadpool_postgres::{BuildError, ConfigError};
use tokio_postgres::error::SqlState;

/// Building a rotating pool failed. Opaque; never contains a password.
pub struct Error {
    kind: Kind,
}

enum Kind {
    Config(ConfigError),
    Build(BuildError),
    NoRuntime,
}

impl Error {
    pub(crate) fn config(e: ConfigError) -> Self {
        Self {
            kind: Kind::Config(e),
        }
    }
    pub(crate) fn build(e: BuildError) -> Self {
        Self {
            kind: Kind::Build(e),
        }
    }
    pub(crate) fn no_runtime() -> Self {
        Self {
            kind: Kind::NoRuntime,
        }
    }

    /// The `deadpool_postgres::Config` could not be turned into a connection config.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_))
    }

    /// The pool builder refused the pool configuration.
    pub fn is_build(&self) -> bool {
        matches!(self.kind, Kind::Build(_))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ConfigError and BuildError carry no password; print their messages only.
        f.debug_struct("Error")
            .field("message", &self.to_string())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Config(e) => write!(f, "invalid deadpool_postgres::Config: {e}"),
            Kind::Build(e) => write!(f, "building the pool failed: {e}"),
            Kind::NoRuntime => f.write_str(
                "a rotating deadpool pool must be created inside a Tokio runtime (it spawns its watcher)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Config(e) => Some(e),
            Kind::Build(e) => Some(e),
            Kind::NoRuntime => None,
        }
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
