//! The crate's one error type.

use std::fmt;
use std::io;

use tokio_postgres::error::SqlState;

/// What went wrong in the test kit.
///
/// The type is opaque: ask it questions ([`is_missing_binaries`](Error::is_missing_binaries),
/// [`is_startup`](Error::is_startup), [`is_query`](Error::is_query),
/// [`is_invalid_url`](Error::is_invalid_url), [`code`](Error::code)) rather than matching on it.
///
/// Neither `Display` nor `Debug` ever contains a password: passwords are never put into SQL text
/// or into error messages, and an invalid admin URL is reported without echoing any part of it.
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Source>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MissingBinaries,
    Startup,
    InvalidUrl,
    Query,
}

#[derive(Debug)]
enum Source {
    Io(io::Error),
    Postgres(tokio_postgres::Error),
}

impl Error {
    pub(crate) fn missing_binaries(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::MissingBinaries,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn startup(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Startup,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn startup_io(message: impl Into<String>, source: io::Error) -> Self {
        Self {
            kind: Kind::Startup,
            message: message.into(),
            source: Some(Source::Io(source)),
        }
    }

    pub(crate) fn startup_postgres(
        message: impl Into<String>,
        source: tokio_postgres::Error,
    ) -> Self {
        Self {
            kind: Kind::Startup,
            message: message.into(),
            source: Some(Source::Postgres(source)),
        }
    }

    pub(crate) fn invalid_url(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::InvalidUrl,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn query(message: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Self {
            kind: Kind::Query,
            message: message.into(),
            source: Some(Source::Postgres(source)),
        }
    }

    /// The PostgreSQL server binaries (`initdb`, `postgres`), or `pgbouncer` for
    /// [`TestPgBouncer::start`](crate::TestPgBouncer::start), could not be found.
    ///
    /// The message names where they were looked for and how to install them.
    pub fn is_missing_binaries(&self) -> bool {
        self.kind == Kind::MissingBinaries
    }

    /// Preparing or starting the embedded cluster or a [`TestPgBouncer`](crate::TestPgBouncer)
    /// failed (temp dir, `initdb`, the process, or it not accepting logins in time). The message
    /// includes the tail of the process's log when there is one.
    pub fn is_startup(&self) -> bool {
        self.kind == Kind::Startup
    }

    /// The admin URL given to [`TestPostgres::from_admin_url`](crate::TestPostgres::from_admin_url)
    /// could not be used (unparsable, or without host or user).
    pub fn is_invalid_url(&self) -> bool {
        self.kind == Kind::InvalidUrl
    }

    /// Connecting to the server or running a statement on it failed.
    pub fn is_query(&self) -> bool {
        self.kind == Kind::Query
    }

    /// The SQLSTATE reported by the server, when the failure came from the server
    /// (for example [`SqlState::INVALID_PASSWORD`] or [`SqlState::DUPLICATE_OBJECT`]).
    pub fn code(&self) -> Option<&SqlState> {
        match &self.source {
            Some(Source::Postgres(e)) => e.code(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.source {
            Some(Source::Io(e)) => write!(f, ": {e}"),
            Some(Source::Postgres(e)) => match e.as_db_error() {
                Some(db) => write!(
                    f,
                    ": {}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                ),
                None => write!(f, ": {e}"),
            },
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        match &self.source {
            Some(Source::Io(e)) => d.field("source", e),
            Some(Source::Postgres(e)) => d.field("source", e),
            None => d.field("source", &None::<()>),
        };
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(Source::Io(e)) => Some(e),
            Some(Source::Postgres(e)) => Some(e),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_follow_the_kind() {
        let e = Error::missing_binaries("nothing here");
        assert!(e.is_missing_binaries());
        assert!(!e.is_startup() && !e.is_query() && !e.is_invalid_url());
        assert!(e.code().is_none());

        let e = Error::startup_io("creating dir", io::Error::other("boom"));
        assert!(e.is_startup());
        assert_eq!(e.to_string(), "creating dir: boom");
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::invalid_url("bad");
        assert!(e.is_invalid_url());
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_traits<T: Send + Sync + 'static + std::error::Error>() {}
        assert_traits::<Error>();
    }
}
