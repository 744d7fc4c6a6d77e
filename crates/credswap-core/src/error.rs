//! Errors of the provider and of credential sources.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{PolicyError, fmt_duration};

/// A boxed error, as validators and sources return them.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a [`CredentialSource`](crate::CredentialSource) reports when it cannot produce a credential.
///
/// Opaque, cheap to clone, and built by kind: [`unavailable`](Self::unavailable) for a store that
/// cannot be reached (worth retrying), [`malformed`](Self::malformed) for a secret that does not
/// parse, [`denied`](Self::denied) for a store that refuses access. A source author must keep
/// secret values out of the message; the message is logged.
///
/// ```
/// use credswap_core::SourceError;
///
/// let err = SourceError::malformed("secret JSON has no \"password\" field");
/// assert!(err.is_malformed());
/// assert_eq!(err.to_string(), "malformed secret: secret JSON has no \"password\" field");
/// ```
#[derive(Clone)]
pub struct SourceError {
    kind: SourceErrorKind,
    message: Cow<'static, str>,
    cause: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceErrorKind {
    Unavailable,
    Malformed,
    Denied,
    Other,
}

impl SourceError {
    fn new(kind: SourceErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    /// The store could not be reached or answered with a transient failure.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(SourceErrorKind::Unavailable, message)
    }

    /// The store answered, but the secret is not a usable credential.
    pub fn malformed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(SourceErrorKind::Malformed, message)
    }

    /// The store refused access to the secret.
    pub fn denied(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(SourceErrorKind::Denied, message)
    }

    /// Any other failure.
    pub fn other(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(SourceErrorKind::Other, message)
    }

    /// Attaches the underlying error (an I/O or HTTP error). It must not carry secret values.
    #[must_use]
    pub fn with_source(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(Arc::from(cause.into()));
        self
    }

    /// Whether the store was unreachable or failed transiently.
    pub fn is_unavailable(&self) -> bool {
        self.kind == SourceErrorKind::Unavailable
    }

    /// Whether the secret did not parse into a credential.
    pub fn is_malformed(&self) -> bool {
        self.kind == SourceErrorKind::Malformed
    }

    /// Whether the store refused access.
    pub fn is_denied(&self) -> bool {
        self.kind == SourceErrorKind::Denied
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("cause", &self.cause.as_ref().map(|c| c.to_string()))
            .finish()
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SourceErrorKind::Unavailable => "secret store unavailable",
            SourceErrorKind::Malformed => "malformed secret",
            SourceErrorKind::Denied => "access to secret denied",
            SourceErrorKind::Other => "credential source failed",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl StdError for SourceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

/// The error of [`RotatingCredentials`](crate::RotatingCredentials): building it, or refreshing it.
///
/// Opaque and cheap to clone (a single-flight refresh hands the same error to every waiter).
/// Ask it what happened with the question methods. It never contains a password.
#[derive(Clone)]
pub struct Error {
    inner: Arc<ErrorKind>,
}

#[derive(Debug)]
enum ErrorKind {
    Source(SourceError),
    Timeout(Duration),
    Validation { username: String, reason: String },
    Policy(PolicyError),
    NoRuntime,
}

impl Error {
    pub(crate) fn source_failed(err: SourceError) -> Self {
        Self::from_kind(ErrorKind::Source(err))
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self::from_kind(ErrorKind::Timeout(after))
    }

    pub(crate) fn validation(username: &str, reason: &BoxError) -> Self {
        Self::from_kind(ErrorKind::Validation {
            username: username.to_owned(),
            reason: reason.to_string(),
        })
    }

    pub(crate) fn policy(err: PolicyError) -> Self {
        Self::from_kind(ErrorKind::Policy(err))
    }

    pub(crate) fn no_runtime() -> Self {
        Self::from_kind(ErrorKind::NoRuntime)
    }

    fn from_kind(kind: ErrorKind) -> Self {
        Self {
            inner: Arc::new(kind),
        }
    }

    /// Whether the credential source reported the failure; see [`source_error`](Self::source_error).
    pub fn is_source(&self) -> bool {
        matches!(*self.inner, ErrorKind::Source(_))
    }

    /// Whether the source did not answer within the policy's `fetch_timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(*self.inner, ErrorKind::Timeout(_))
    }

    /// Whether a new credential failed validate-before-swap and was not published.
    pub fn is_validation(&self) -> bool {
        matches!(*self.inner, ErrorKind::Validation { .. })
    }

    /// Whether the policy does not fit the source, so nothing was built; see
    /// [`policy_error`](Self::policy_error) for the setting to change.
    pub fn is_policy(&self) -> bool {
        matches!(*self.inner, ErrorKind::Policy(_))
    }

    /// The policy's mistake, when [`is_policy`](Self::is_policy).
    pub fn policy_error(&self) -> Option<&PolicyError> {
        match &*self.inner {
            ErrorKind::Policy(e) => Some(e),
            _ => None,
        }
    }

    /// The source's error, when [`is_source`](Self::is_source).
    pub fn source_error(&self) -> Option<&SourceError> {
        match &*self.inner {
            ErrorKind::Source(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            ErrorKind::Source(e) => write!(f, "fetching the credential failed: {e}"),
            ErrorKind::Timeout(d) => write!(
                f,
                "fetching the credential timed out after {}",
                fmt_duration(*d)
            ),
            ErrorKind::Validation { username, reason } => write!(
                f,
                "the new credential for user \"{username}\" failed validation and was not published: {reason}"
            ),
            ErrorKind::Policy(e) => write!(f, "{e}"),
            ErrorKind::NoRuntime => f.write_str(
                "RotatingCredentials must be built inside a Tokio runtime (it spawns its refresher)",
            ),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &*self.inner {
            ErrorKind::Source(e) => Some(e),
            ErrorKind::Policy(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a credential source's builder refused its settings: a setting that is missing, out of
/// range, or that does not apply to the kind of source being built.
///
/// One type for every source crate (`credswap-aws`, `credswap-file`, `credswap-vault` re-export
/// it as their `BuildError`). Opaque: the message says which setting and why. A builder must
/// keep secret values (a password, a token) out of the message; `Display` and `Debug` print
/// the message only.
///
/// ```
/// use credswap_core::source::BuildError;
///
/// let err = BuildError::new("the secret id is empty");
/// assert_eq!(err.to_string(), "the secret id is empty");
/// assert_eq!(err.message(), "the secret id is empty");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BuildError {
    message: Cow<'static, str>,
}

impl BuildError {
    /// An error with this message, which must not contain a secret value.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildError")
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_error_kinds_and_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = SourceError::unavailable("store at 127.0.0.1:1 did not answer").with_source(io);
        assert!(e.is_unavailable() && !e.is_malformed() && !e.is_denied());
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        let wrapped = Error::source_failed(e);
        assert!(wrapped.is_source());
        assert!(
            wrapped
                .source_error()
                .is_some_and(SourceError::is_unavailable)
        );
        assert!(wrapped.to_string().contains("secret store unavailable"));
        assert!(SourceError::denied("x").is_denied());
    }

    #[test]
    fn timeout_and_validation_messages() {
        let t = Error::timeout(Duration::from_secs(30));
        assert!(t.is_timeout());
        assert!(t.to_string().contains("30s"), "{t}");
        let reason: BoxError = "password authentication failed for user \"app\"".into();
        let v = Error::validation("app", &reason);
        assert!(v.is_validation());
        assert!(v.to_string().contains("\"app\""), "{v}");
    }
}
