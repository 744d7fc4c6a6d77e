//! [`Failure`]: what a failed connect means for the next attempt.

use std::io;

/// The class of a failed connect, which decides what an adapter's connect does next.
///
/// | class | SQLSTATE / I/O error | next |
/// |---|---|---|
/// | [`Auth`](Self::Auth) | `28P01` invalid password, `28000` invalid authorization | report it to the provider and wait for a credential that works |
/// | [`Fatal`](Self::Fatal) | `28000` whose message names `pg_hba.conf` (no entry for this host, user or TLS mode: a server that requires TLS, RDS's `rds.force_ssl`) | fail at once: no password makes the server's configuration accept the connection |
/// | [`Transient`](Self::Transient) | `57P03` cannot connect now (starting up, shutting down), `53300` too many connections, `08000`/`08001`/`08004`/`08006` connection exceptions; I/O connection refused, reset, aborted, not connected, unexpected EOF | back off and retry |
/// | [`Fatal`](Self::Fatal) | anything else (a missing database, a bad host name, a TLS failure) | fail at once |
///
/// Poolers answer with their own codes: PgBouncer reports a refused login as `08P01`
/// ("SASL authentication failed", "password authentication failed", "no such user") and a server
/// it cannot reach as `08P01` too; [`classify_message`](Self::classify_message) reads the message
/// for those.
///
/// ```
/// use credswap_core::contract::Failure;
/// use std::io::ErrorKind;
///
/// assert_eq!(Failure::classify(Some("28P01"), None), Failure::Auth);
/// assert_eq!(Failure::classify(Some("57P03"), None), Failure::Transient);
/// assert_eq!(Failure::classify(None, Some(ErrorKind::ConnectionRefused)), Failure::Transient);
/// assert_eq!(Failure::classify(Some("3D000"), None), Failure::Fatal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The server refused the login.
    Auth,
    /// The server could not take the connection now; a later attempt may succeed.
    Transient,
    /// Retrying will not help.
    Fatal,
}

/// SQLSTATEs of a refused login.
pub const AUTH_SQLSTATES: [&str; 2] = ["28P01", "28000"];

/// SQLSTATEs worth retrying at connect.
pub const TRANSIENT_SQLSTATES: [&str; 6] = ["57P03", "53300", "08000", "08001", "08004", "08006"];

/// `28000`: PostgreSQL's "invalid authorization specification", for a refused role and for a
/// connection its `pg_hba.conf` turns away.
const INVALID_AUTHORIZATION: &str = "28000";

/// What PostgreSQL's message says when `pg_hba.conf` turned a connection away.
const PG_HBA: &str = "pg_hba.conf";

/// `08P01`, which PgBouncer uses for refused logins and unreachable servers alike.
const PROTOCOL_VIOLATION: &str = "08P01";

/// Fragments of a pooler's message for a refused login.
const POOLER_AUTH_MESSAGES: [&str; 3] = [
    "authentication failed",
    "no such user",
    "password authentication",
];

/// Fragments of a pooler's message for a server it cannot reach or use now.
const POOLER_TRANSIENT_MESSAGES: [&str; 5] = [
    "cannot connect to server",
    "server login has been failing",
    "too many connections",
    "no more connections allowed",
    "server conn crashed",
];

impl Failure {
    /// Classifies a connect error by its SQLSTATE (when the server answered) or the kind of the
    /// I/O error underneath it (when it did not).
    pub fn classify(sqlstate: Option<&str>, io: Option<io::ErrorKind>) -> Self {
        if let Some(code) = sqlstate {
            if AUTH_SQLSTATES.contains(&code) {
                return Failure::Auth;
            }
            if TRANSIENT_SQLSTATES.contains(&code) {
                return Failure::Transient;
            }
            return Failure::Fatal;
        }
        match io {
            Some(
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe,
            ) => Failure::Transient,
            _ => Failure::Fatal,
        }
    }

    /// [`classify`](Self::classify), reading the server's message for the codes a pooler uses
    /// for several causes (PgBouncer's `08P01`).
    ///
    /// ```
    /// use credswap_core::contract::Failure;
    ///
    /// let bouncer = |m| Failure::classify_message(Some("08P01"), Some(m), None);
    /// assert_eq!(bouncer("SASL authentication failed"), Failure::Auth);
    /// assert_eq!(bouncer("pgbouncer cannot connect to server"), Failure::Transient);
    /// assert_eq!(bouncer("unsupported startup parameter: options"), Failure::Fatal);
    ///
    /// // A server that takes this login only over TLS: no password helps.
    /// let hba = "no pg_hba.conf entry for host \"10.0.0.5\", user \"app\", database \"app\", no encryption";
    /// assert_eq!(Failure::classify_message(Some("28000"), Some(hba), None), Failure::Fatal);
    /// assert_eq!(Failure::classify_message(Some("28000"), Some("role \"app\" is not permitted to log in"), None), Failure::Auth);
    /// ```
    pub fn classify_message(
        sqlstate: Option<&str>,
        message: Option<&str>,
        io: Option<io::ErrorKind>,
    ) -> Self {
        if sqlstate == Some(INVALID_AUTHORIZATION)
            && message.is_some_and(|m| m.to_ascii_lowercase().contains(PG_HBA))
        {
            // The server's host-based rules turned the connection away before any password was
            // checked: a configuration error, and waiting for another credential cannot help.
            return Failure::Fatal;
        }
        if sqlstate == Some(PROTOCOL_VIOLATION)
            && let Some(message) = message
        {
            let message = message.to_ascii_lowercase();
            if POOLER_AUTH_MESSAGES.iter().any(|m| message.contains(m)) {
                return Failure::Auth;
            }
            if POOLER_TRANSIENT_MESSAGES
                .iter()
                .any(|m| message.contains(m))
            {
                return Failure::Transient;
            }
        }
        Self::classify(sqlstate, io)
    }

    /// Finds the first [`io::Error`] in `error`'s source chain (drivers wrap it).
    pub fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Some(io.kind());
            }
            next = e.source();
        }
        None
    }

    /// A name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Auth => "auth",
            Failure::Transient => "transient",
            Failure::Fatal => "fatal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for code in AUTH_SQLSTATES {
            assert_eq!(Failure::classify(Some(code), None), Failure::Auth);
        }
        for code in TRANSIENT_SQLSTATES {
            assert_eq!(Failure::classify(Some(code), None), Failure::Transient);
        }
        assert_eq!(Failure::classify(Some("42501"), None), Failure::Fatal);
        assert_eq!(
            Failure::classify(None, Some(io::ErrorKind::UnexpectedEof)),
            Failure::Transient
        );
        assert_eq!(
            Failure::classify(None, Some(io::ErrorKind::InvalidData)),
            Failure::Fatal
        );
        assert_eq!(Failure::classify(None, None), Failure::Fatal);
    }

    #[test]
    fn io_kind_walks_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("driver error")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(Failure::io_kind(&e), Some(io::ErrorKind::ConnectionRefused));
    }
}
