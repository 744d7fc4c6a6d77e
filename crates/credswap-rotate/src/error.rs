//! [`Error`]: the one error type of the rotation, with question methods.

use std::fmt;

use crate::step::Step;

/// A boxed source error.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a rotation step failed.
///
/// Opaque: ask it with the `is_*` methods, [`step`](Self::step), [`username`](Self::username),
/// [`sessions`](Self::sessions) and [`code`](Self::code). Neither `Display` nor `Debug` ever
/// contains a password or a secret's value: messages name secrets by id, roles by name, and the
/// JSON of a malformed secret only by the field that is wrong.
pub struct Error {
    kind: Kind,
    step: Option<Step>,
}

/// What went wrong (internal).
#[derive(thiserror::Error)]
enum Kind {
    /// A Secrets Manager call failed.
    #[error("Secrets Manager {operation} failed for {what}{}", code_suffix(.code))]
    Store {
        operation: &'static str,
        what: String,
        code: Option<String>,
        #[source]
        source: Source,
    },
    /// The secret (or the version asked for, or the master secret) does not exist.
    #[error("{what} does not exist (Secrets Manager {operation}: ResourceNotFoundException)")]
    NotFound {
        operation: &'static str,
        what: String,
        master: bool,
    },
    /// A secret's value is not what the rotation needs.
    #[error("{what}")]
    Malformed { what: String },
    /// The secret's versions are not in a state this step can work from.
    #[error("{what}")]
    Version { what: String },
    /// Another rotation's version is `AWSPENDING` and this one was not told to take it over.
    #[error(
        "secret {secret_id} has a rotation in progress: version {version_id} (another \
         ClientRequestToken) is AWSPENDING; taking it over could orphan the password its \
         setSecret gave the database, so this rotation was not started (finish that rotation \
         with its token, or take it over explicitly)"
    )]
    TakeoverRefused {
        secret_id: String,
        version_id: String,
    },
    /// The token's version already finished a rotation: it is `AWSCURRENT` or retired.
    #[error(
        "version {token} of secret {secret_id} is {stage}: its rotation already finished; \
         rotating with this token again would put back {what} (start a new rotation with a \
         new token)"
    )]
    TokenFinished {
        secret_id: String,
        token: String,
        stage: &'static str,
        what: &'static str,
    },
    /// A database call failed.
    #[error("database: {what}")]
    Database {
        what: String,
        username: Option<String>,
        #[source]
        source: Option<tokio_postgres::Error>,
    },
    /// The database refused a login the step needed.
    #[error("database: {what}")]
    AuthFailure {
        what: String,
        username: String,
        #[source]
        source: Option<tokio_postgres::Error>,
    },
    /// The server rejected the connection by its configuration (`pg_hba.conf`), before any
    /// password check.
    #[error("database: {what}")]
    Rejected {
        what: String,
        username: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Sessions are still logged in as the user about to get a new password.
    #[error(
        "{count} session(s) still logged in as role {username} ({policy}); \
         its password was not changed"
    )]
    SessionsInUse {
        username: String,
        count: usize,
        policy: String,
    },
    /// The rotator's own configuration is unusable.
    #[error("configuration: {what}")]
    Config { what: String },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl Error {
    fn new(kind: Kind) -> Error {
        Error { kind, step: None }
    }

    pub(crate) fn in_step(mut self, step: Step) -> Error {
        self.step.get_or_insert(step);
        self
    }

    pub(crate) fn store<E, R>(
        operation: &'static str,
        what: impl Into<String>,
        error: aws_sdk_secretsmanager::error::SdkError<E, R>,
    ) -> Error
    where
        E: aws_sdk_secretsmanager::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
        let what = what.into();
        let code = error.code().map(str::to_owned);
        if code.as_deref() == Some("ResourceNotFoundException") {
            return Error::new(Kind::NotFound {
                operation,
                what,
                master: false,
            });
        }
        // Keep only the rendered message chain: an SdkError's Debug carries the raw HTTP
        // response, which is never needed to understand the failure.
        let message = aws_sdk_secretsmanager::error::DisplayErrorContext(&error).to_string();
        Error::new(Kind::Store {
            operation,
            what,
            code,
            source: message.into(),
        })
    }

    /// The same error, about the master secret: a missing secret is the master's.
    pub(crate) fn of_master(mut self) -> Error {
        if let Kind::NotFound { master, what, .. } = &mut self.kind {
            *master = true;
            *what = what.replacen("secret", "master secret", 1);
        }
        self
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Error {
        Error::new(Kind::Malformed { what: what.into() })
    }

    pub(crate) fn version(what: impl Into<String>) -> Error {
        Error::new(Kind::Version { what: what.into() })
    }

    pub(crate) fn database(
        what: impl Into<String>,
        username: Option<&str>,
        source: Option<tokio_postgres::Error>,
    ) -> Error {
        Error::new(Kind::Database {
            what: what.into(),
            username: username.map(str::to_owned),
            source,
        })
    }

    pub(crate) fn auth_failure(
        what: impl Into<String>,
        username: &str,
        source: Option<tokio_postgres::Error>,
    ) -> Error {
        Error::new(Kind::AuthFailure {
            what: what.into(),
            username: username.to_owned(),
            source,
        })
    }

    pub(crate) fn rejected(
        what: impl Into<String>,
        username: &str,
        source: tokio_postgres::Error,
    ) -> Error {
        Error::new(Kind::Rejected {
            what: what.into(),
            username: username.to_owned(),
            source,
        })
    }

    pub(crate) fn takeover_refused(secret_id: &str, version_id: &str) -> Error {
        Error::new(Kind::TakeoverRefused {
            secret_id: secret_id.to_owned(),
            version_id: version_id.to_owned(),
        })
    }

    /// `stage`: `AWSCURRENT`, `AWSPREVIOUS`, or a description of an older version.
    pub(crate) fn token_finished(secret_id: &str, token: &str, stage: &'static str) -> Error {
        let what = if stage == crate::store::CURRENT {
            "the password already in use (nothing to rotate)"
        } else {
            "a retired password"
        };
        Error::new(Kind::TokenFinished {
            secret_id: secret_id.to_owned(),
            token: token.to_owned(),
            stage,
            what,
        })
    }

    pub(crate) fn sessions_in_use(
        username: &str,
        count: usize,
        policy: impl Into<String>,
    ) -> Error {
        Error::new(Kind::SessionsInUse {
            username: username.to_owned(),
            count,
            policy: policy.into(),
        })
    }

    pub(crate) fn config(what: impl Into<String>) -> Error {
        Error::new(Kind::Config { what: what.into() })
    }

    /// A Secrets Manager call failed (throttling, access denied, network, a service error),
    /// including a missing secret ([`is_not_found`](Self::is_not_found)).
    pub fn is_store(&self) -> bool {
        matches!(self.kind, Kind::Store { .. } | Kind::NotFound { .. })
    }

    /// The secret, the master secret or a version asked for does not exist
    /// (`ResourceNotFoundException`).
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, Kind::NotFound { .. })
    }

    /// The master secret of alternating users ([`Master::Secret`](crate::Master::Secret), or
    /// the one the secret's `masterarn` names) does not exist. Also
    /// [`is_not_found`](Self::is_not_found).
    pub fn is_master_not_found(&self) -> bool {
        matches!(self.kind, Kind::NotFound { master: true, .. })
    }

    /// A secret's value is not usable: not JSON, not an object, a required field (`username`,
    /// `password`, `host`) missing or of the wrong type, an unsupported `engine`, or a pending
    /// value that does not belong to this rotation (another user or host).
    pub fn is_malformed(&self) -> bool {
        matches!(self.kind, Kind::Malformed { .. })
    }

    /// The secret's version stages do not allow this step: the token's version is not
    /// `AWSPENDING` (and not already `AWSCURRENT`), or the secret has no `AWSCURRENT` version;
    /// also every [`is_takeover_refused`](Self::is_takeover_refused) and
    /// [`is_token_finished`](Self::is_token_finished).
    pub fn is_version(&self) -> bool {
        matches!(
            self.kind,
            Kind::Version { .. } | Kind::TakeoverRefused { .. } | Kind::TokenFinished { .. }
        )
    }

    /// Another rotation is in progress: a version created by another `ClientRequestToken` is
    /// `AWSPENDING` (not `AWSCURRENT`), and the rotator was not told to take it over
    /// ([`Rotator::takeover`](crate::Rotator::takeover)). Nothing was changed.
    /// [`version_id`](Self::version_id) names the other version: finish that rotation with it
    /// as the token ([`Rotator::rotate_with_token`](crate::Rotator::rotate_with_token): setSecret
    /// and testSecret are skipped when its credential already logs in).
    pub fn is_takeover_refused(&self) -> bool {
        matches!(self.kind, Kind::TakeoverRefused { .. })
    }

    /// The token's rotation already finished: its version is `AWSCURRENT` (for
    /// [`Rotator::rotate_with_token`](crate::Rotator::rotate_with_token); a single step with
    /// that token reports [`Outcome::AlreadyDone`](crate::Outcome::AlreadyDone) instead, as the
    /// protocol wants), `AWSPREVIOUS`, or an older version without a stage. Going on would put
    /// a retired password back. Nothing was changed; [`version_id`](Self::version_id) is the
    /// token.
    pub fn is_token_finished(&self) -> bool {
        matches!(self.kind, Kind::TokenFinished { .. })
    }

    /// The database failed: it could not be reached, refused a login
    /// ([`is_auth_failure`](Self::is_auth_failure)), rejected the connection by its
    /// configuration ([`is_connection_rejected`](Self::is_connection_rejected)), or a statement
    /// failed.
    pub fn is_database(&self) -> bool {
        matches!(
            self.kind,
            Kind::Database { .. } | Kind::AuthFailure { .. } | Kind::Rejected { .. }
        )
    }

    /// The server rejected the connection before any password check: SQLSTATE `28000` from
    /// its `pg_hba.conf` ("no pg_hba.conf entry for host ...", "pg_hba.conf rejects connection
    /// ..."), which is also how RDS's `rds.force_ssl` turns plaintext away. A configuration
    /// problem (the client's address, the database, TLS: see [`crate::SslMode`]), not a wrong
    /// password, so the step fails at once without trying other credentials. Not
    /// [`is_auth_failure`](Self::is_auth_failure).
    pub fn is_connection_rejected(&self) -> bool {
        matches!(self.kind, Kind::Rejected { .. })
    }

    /// The database refused a login the step needed (the current credential in setSecret, the
    /// pending one in testSecret, the master credential): a wrong password or no such role
    /// (SQLSTATE `28P01`, or `28000` other than a `pg_hba.conf` rejection). Named as the
    /// adapters' `AdapterError::is_auth_failure` (`credswap_core::contract`).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.kind, Kind::AuthFailure { .. })
    }

    /// Sessions were still logged in as the inactive user and the
    /// [`SessionPolicy`](crate::SessionPolicy) did not let the password change
    /// (`Fail`, or `Wait` timed out).
    pub fn is_sessions_in_use(&self) -> bool {
        matches!(self.kind, Kind::SessionsInUse { .. })
    }

    /// The rotator's configuration or a caller's argument is unusable (a password policy with
    /// an empty alphabet, a token not 32 to 64 characters long, no sleep implementation in the
    /// SDK client).
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config { .. })
    }

    /// The step that failed, when the error came from one.
    pub fn step(&self) -> Option<Step> {
        self.step
    }

    /// The database user (role) the error is about, when there is one: the login that was
    /// refused or rejected, the role a statement changed, the user whose sessions are still
    /// logged in. Named as the adapters' `AdapterError::username` (`credswap_core::contract`).
    pub fn username(&self) -> Option<&str> {
        match &self.kind {
            Kind::Database { username, .. } => username.as_deref(),
            Kind::AuthFailure { username, .. }
            | Kind::Rejected { username, .. }
            | Kind::SessionsInUse { username, .. } => Some(username),
            _ => None,
        }
    }

    /// The version id the error is about: the other rotation's `AWSPENDING` version for
    /// [`is_takeover_refused`](Self::is_takeover_refused), the token's version for
    /// [`is_token_finished`](Self::is_token_finished).
    pub fn version_id(&self) -> Option<&str> {
        match &self.kind {
            Kind::TakeoverRefused { version_id, .. } => Some(version_id),
            Kind::TokenFinished { token, .. } => Some(token),
            _ => None,
        }
    }

    /// How many sessions were still logged in, for [`is_sessions_in_use`](Self::is_sessions_in_use).
    pub fn sessions(&self) -> Option<usize> {
        match &self.kind {
            Kind::SessionsInUse { count, .. } => Some(*count),
            _ => None,
        }
    }

    /// The SQLSTATE of a database error, or the error code of a Secrets Manager error
    /// (`AccessDeniedException`, `ResourceNotFoundException`, ...).
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            Kind::Store { code, .. } => code.as_deref(),
            Kind::NotFound { .. } => Some("ResourceNotFoundException"),
            Kind::Database { source, .. } | Kind::AuthFailure { source, .. } => {
                source.as_ref().and_then(|e| e.code()).map(|c| c.code())
            }
            Kind::Rejected { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = self.step {
            write!(f, "{step}: ")?;
        }
        write!(f, "{}", self.kind)?;
        let mut source = std::error::Error::source(&self.kind);
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    /// The kind, the step and the message chain (never a source's own `Debug`, which for an SDK
    /// error carries the raw HTTP response).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Store { .. } => "Store",
            Kind::NotFound { .. } => "NotFound",
            Kind::Malformed { .. } => "Malformed",
            Kind::Version { .. } => "Version",
            Kind::TakeoverRefused { .. } => "TakeoverRefused",
            Kind::TokenFinished { .. } => "TokenFinished",
            Kind::Rejected { .. } => "Rejected",
            Kind::Database { .. } => "Database",
            Kind::AuthFailure { .. } => "AuthFailure",
            Kind::SessionsInUse { .. } => "SessionsInUse",
            Kind::Config { .. } => "Config",
        };
        f.debug_struct("Error")
            .field("kind", &kind)
            .field("step", &self.step)
            .field("code", &self.code())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_step_and_the_username() {
        let e = Error::sessions_in_use("app_clone", 3, "policy Fail").in_step(Step::SetSecret);
        assert!(e.is_sessions_in_use());
        assert_eq!(e.sessions(), Some(3));
        assert_eq!(e.username(), Some("app_clone"));
        assert_eq!(e.step(), Some(Step::SetSecret));
        let text = e.to_string();
        assert!(text.starts_with("setSecret: 3 session(s)"), "{text}");
        assert!(text.contains("app_clone"), "{text}");
        assert!(format!("{e:?}").contains("SessionsInUse"));
    }

    #[test]
    fn a_refused_takeover_names_the_secret_and_the_other_version() {
        let e = Error::takeover_refused("prod/db", "v-other").in_step(Step::CreateSecret);
        assert!(e.is_takeover_refused() && e.is_version(), "{e:?}");
        assert!(!e.is_token_finished());
        assert_eq!(e.version_id(), Some("v-other"));
        let text = e.to_string();
        assert!(text.starts_with("createSecret: secret prod/db"), "{text}");
        assert!(text.contains("version v-other"), "{text}");
        assert!(format!("{e:?}").contains("TakeoverRefused"));

        let e = Error::token_finished("prod/db", "v-old", "AWSPREVIOUS");
        assert!(e.is_token_finished() && e.is_version() && !e.is_takeover_refused());
        assert_eq!(e.version_id(), Some("v-old"));
        assert!(e.to_string().contains("a retired password"), "{e}");
    }

    #[test]
    fn the_first_step_sticks() {
        let e = Error::malformed("x")
            .in_step(Step::CreateSecret)
            .in_step(Step::FinishSecret);
        assert_eq!(e.step(), Some(Step::CreateSecret));
    }
}
