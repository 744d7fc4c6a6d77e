//! The credential a pool authenticates with, and the generation that names it.

use std::fmt;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};

/// A database login: a username and a password, plus what the secret store said about it.
///
/// The password is a [`SecretString`]: it is zeroized on drop and never printed. `Credential`
/// has a hand-written [`Debug`] that redacts it, and deliberately implements neither `Display`
/// nor `Serialize`, so it cannot end up in a log line or a JSON body by accident.
///
/// ```
/// use credswap_core::Credential;
///
/// let credential = Credential::new("app", "s3cr3t-pa55").with_version("v42");
/// assert_eq!(credential.username(), "app");
/// assert_eq!(credential.version(), Some("v42"));
/// assert!(!format!("{credential:?}").contains("s3cr3t-pa55"));
/// ```
#[derive(Clone)]
pub struct Credential {
    username: String,
    password: SecretString,
    version: Option<String>,
    issued_at: Option<SystemTime>,
    expires_at: Option<SystemTime>,
    rotation_interval: Option<Duration>,
    next_rotation_at: Option<SystemTime>,
    minted: bool,
    requires_tls: bool,
}

impl Credential {
    /// A credential with a username and a password and no metadata.
    pub fn new(username: impl Into<String>, password: impl Into<SecretString>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            version: None,
            issued_at: None,
            expires_at: None,
            rotation_interval: None,
            next_rotation_at: None,
            minted: false,
            requires_tls: false,
        }
    }

    /// A *minted* credential: `token` is a short-lived password for a stable identity (an RDS
    /// IAM or Aurora DSQL auth token, an Entra ID or Cloud SQL access token), needed only at
    /// login. Give it the token's end with [`with_expires_at`](Self::with_expires_at), and
    /// no later than the end of the credentials that signed it.
    ///
    /// The provider treats minted credentials differently from a rotated password:
    ///
    /// - A new token for the same username is **the same login** ([`is_same_login`](Self::is_same_login)):
    ///   it keeps the [`Generation`], so the sessions opened with the previous token stay (the
    ///   database keeps a session after the token that opened it expires). A change of
    ///   username is still a rotation.
    /// - The token's end does not retire sessions; it is when the next token is needed. The
    ///   provider mints ahead of it (`expires_at - expiry_margin`, single flight), and a connect
    ///   never logs in with a token within that margin: it waits for the next one.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use credswap_core::Credential;
    ///
    /// let at = SystemTime::now() + Duration::from_secs(900);
    /// let first = Credential::minted("iam_app", "token-1").with_expires_at(at);
    /// let second = Credential::minted("iam_app", "token-2").with_expires_at(at);
    /// assert!(first.is_minted());
    /// assert!(first.is_same_login(&second), "a new token is not a rotation");
    /// assert!(!first.is_same_login(&Credential::minted("other", "token-2")));
    /// ```
    pub fn minted(username: impl Into<String>, token: impl Into<SecretString>) -> Self {
        Self {
            minted: true,
            ..Self::new(username, token)
        }
    }

    /// Whether this is a [minted](Self::minted) credential (a short-lived token).
    pub fn is_minted(&self) -> bool {
        self.minted
    }

    /// Marks a login that must travel over TLS (an IAM auth token: RDS refuses it without TLS,
    /// and a token sent in the clear is a credential given away). Every adapter refuses to
    /// build a pool whose connect options could log in without TLS (`sslmode` below
    /// `require`) while the provider's credential says this.
    #[must_use]
    pub fn with_tls_required(mut self) -> Self {
        self.requires_tls = true;
        self
    }

    /// Whether this login must travel over TLS (see [`with_tls_required`](Self::with_tls_required)).
    pub fn requires_tls(&self) -> bool {
        self.requires_tls
    }

    /// Records the store's version id (an AWS `VersionId`, a Vault lease id, a file's mtime).
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Records when the store issued this secret; [`health`](crate::RotatingCredentials::health)
    /// measures the credential's age from it.
    #[must_use]
    pub fn with_issued_at(mut self, issued_at: SystemTime) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// The same credential without its issue time (the provider's own copies whose age counts
    /// from when it made them).
    pub(crate) fn without_issued_at(mut self) -> Self {
        self.issued_at = None;
        self
    }

    /// Records when the secret stops working (a lease or token end). The provider refreshes
    /// before it, and adapters retire connections opened with it before it.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Records the store's own rotation schedule (an AWS rotation rule, a Vault static role's
    /// `rotation_period`). [`health`](crate::RotatingCredentials::health) judges the
    /// credential's age against it instead of the policy's `rotation_interval`.
    #[must_use]
    pub fn with_rotation_interval(mut self, interval: Duration) -> Self {
        self.rotation_interval = Some(interval);
        self
    }

    /// Records when the store plans to rotate this secret next (AWS `NextRotationDate`).
    #[must_use]
    pub fn with_next_rotation_at(mut self, at: SystemTime) -> Self {
        self.next_rotation_at = Some(at);
        self
    }

    /// The login role.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password, still wrapped. Call [`ExposeSecret::expose_secret`] only at the driver call.
    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The store's version id, if it gave one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// When the store issued this secret, if it said.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// When this secret stops working, if it has an end.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The store's rotation schedule, if it said.
    pub fn rotation_interval(&self) -> Option<Duration> {
        self.rotation_interval
    }

    /// When the store plans to rotate this secret next, if it said.
    pub fn next_rotation_at(&self) -> Option<SystemTime> {
        self.next_rotation_at
    }

    /// Whether `other` logs in the same way: same username and same password, or, for two
    /// [minted](Self::minted) credentials, the same username (a new token for the same
    /// identity).
    ///
    /// Metadata (version, issue and expiry times) is ignored: a lease renewal that extends
    /// `expires_at` is not a rotation and must not churn the pools.
    pub fn is_same_login(&self, other: &Credential) -> bool {
        self.username == other.username
            && ((self.minted && other.minted) || self.has_same_password(other))
    }

    /// Whether `other` has the same password (for a [minted](Self::minted) credential: the
    /// same token), compared in constant time.
    pub fn has_same_password(&self, other: &Credential) -> bool {
        constant_time_eq(
            self.password.expose_secret().as_bytes(),
            other.password.expose_secret().as_bytes(),
        )
    }
}

/// Compares without an early exit, so the time taken says nothing about where passwords differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("version", &self.version)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("rotation_interval", &self.rotation_interval)
            .field("next_rotation_at", &self.next_rotation_at)
            .field("minted", &self.minted)
            .field("requires_tls", &self.requires_tls)
            .finish()
    }
}

/// Names one published credential. Assigned by [`RotatingCredentials`](crate::RotatingCredentials),
/// starting at 1; it increments only when the username or password actually changes.
///
/// Adapters tag every physical connection with the generation it authenticated with; a
/// connection whose generation is older than the current one is *stale* and is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

impl Generation {
    /// The generation of the credential fetched when the provider was built.
    pub const FIRST: Generation = Generation(1);

    /// A generation from its number (for adapters and tests that store it as an integer).
    pub const fn new(value: u64) -> Self {
        Generation(value)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn next(self) -> Self {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn debug_redacts_password() {
        let c = Credential::new("app", "hunter2-very-secret")
            .with_version("v1")
            .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("hunter2-very-secret"), "{printed}");
        assert!(printed.contains("app"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn same_login_ignores_metadata() {
        let a = Credential::new("app", "pw").with_version("1");
        let b = Credential::new("app", "pw").with_version("2");
        let c = Credential::new("app", "pw2");
        let d = Credential::new("other", "pw");
        assert!(a.is_same_login(&b));
        assert!(!a.is_same_login(&c));
        assert!(!a.is_same_login(&d));
        assert!(!a.is_same_login(&Credential::new("app", "p")));
    }

    #[test]
    fn generation_orders_and_prints() {
        assert!(Generation::FIRST < Generation::FIRST.next());
        assert_eq!(Generation::new(7).to_string(), "7");
        assert_eq!(Generation::new(7).get(), 7);
    }
}
