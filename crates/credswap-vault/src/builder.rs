//! How a [`VaultSource`] is built: the address, the auth method and the options of each kind.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::Auth;
use crate::client::Client;
use crate::kind::{DynamicRole, Kv2, SourceKind};
use crate::source::{Kind, VaultSource};
use credswap_core::source::BuildError;

/// The default [`lease_margin`](VaultSourceBuilder::lease_margin): the provider's default
/// `expiry_margin` (one minute) and a refresh of slack.
pub const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(90);

/// The default [`refused_lease_grace`](VaultSourceBuilder::refused_lease_grace).
pub const DEFAULT_REFUSED_LEASE_GRACE: Duration = Duration::from_secs(10);

/// The default timeout of one request to Vault.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`VaultSource`]; from [`VaultSource::kv2`], [`VaultSource::dynamic_role`] or
/// [`VaultSource::static_role`].
///
/// Give it an address ([`address`](Self::address)) and an auth method ([`token`](Self::token),
/// [`approle`](Self::approle) or [`auth`](Self::auth)), or take them from the environment with
/// [`from_env`](Self::from_env). [`build`](Self::build) makes no request: the first fetch logs in.
///
/// `K` is what it builds ([`Kv2`], [`DynamicRole`], [`StaticRole`](crate::kind::StaticRole)):
/// each has the options that apply to it and no others, so an option of another kind (a KV
/// [`version`](Self::version) on a dynamic role) does not compile; see [`kind`](crate::kind).
#[must_use]
pub struct VaultSourceBuilder<K> {
    kind: K,
    address: Option<String>,
    auth: Option<Auth>,
    namespace: Option<String>,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl<K: SourceKind> VaultSourceBuilder<K> {
    pub(crate) fn new(kind: K) -> Self {
        Self {
            kind,
            address: None,
            auth: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
            http: None,
        }
    }

    /// The server's address, `https://vault.internal:8200` (a path prefix is kept).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Authenticates with this token (renewed while it is renewable).
    pub fn token(self, token: impl Into<SecretString>) -> Self {
        self.auth(Auth::token(token))
    }

    /// Authenticates with AppRole at `auth/approle` (see [`Auth::approle`] for another mount).
    pub fn approle(self, role_id: impl Into<String>, secret_id: impl Into<SecretString>) -> Self {
        self.auth(Auth::approle(role_id, secret_id))
    }

    /// Authenticates this way.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Takes what was not set from the environment: the address from `VAULT_ADDR` (else
    /// `BAO_ADDR`), the token from `VAULT_TOKEN` (else `BAO_TOKEN`), the namespace from
    /// `VAULT_NAMESPACE` (else `BAO_NAMESPACE`).
    pub fn from_env(mut self) -> Self {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        if self.address.is_none() {
            self.address = var(["VAULT_ADDR", "BAO_ADDR"]);
        }
        if self.auth.is_none() {
            self.auth = var(["VAULT_TOKEN", "BAO_TOKEN"]).map(Auth::token);
        }
        if self.namespace.is_none() {
            self.namespace = var(["VAULT_NAMESPACE", "BAO_NAMESPACE"]);
        }
        self
    }

    /// The timeout of one request (default 10 s); ignored with [`http_client`](Self::http_client).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses this HTTP client: for a private CA (`reqwest::ClientBuilder::add_root_certificate`),
    /// client certificates, proxies or timeouts of your own.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Builds the source. Fails without an address or an auth method, with an address that is
    /// not `http(s)://`, or with an empty path or role.
    pub fn build(self) -> Result<VaultSource, BuildError> {
        let address = self.address.ok_or_else(|| {
            BuildError::new(
                "no Vault address: call `address(..)` or set VAULT_ADDR and call `from_env()`",
            )
        })?;
        let trimmed = address.trim();
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(BuildError::new(format!(
                "the Vault address \"{trimmed}\" must start with http:// or https://"
            )));
        }
        let auth = self.auth.ok_or_else(|| {
            BuildError::new(
                "no Vault auth method: call `token(..)`, `approle(..)` or `auth(..)`, or set VAULT_TOKEN and call `from_env()`",
            )
        })?;
        let parts = self.kind.parts();
        let empty = match &parts.kind {
            Kind::Kv2 {
                mount,
                path,
                username_field,
                password_field,
                ..
            } => [mount, path, username_field, password_field]
                .iter()
                .any(|s| s.trim_matches('/').is_empty()),
            Kind::Dynamic { mount, role } | Kind::Static { mount, role } => {
                mount.trim_matches('/').is_empty() || role.trim_matches('/').is_empty()
            }
        };
        if empty {
            return Err(BuildError::new(format!(
                "the mount, path, role or field names of {:?} are empty",
                parts.kind
            )));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(5)))
                .build()
                .map_err(|e| BuildError::new(format!("cannot build the HTTP client: {e}")))?,
        };
        let client = Client::new(http, trimmed, self.namespace);
        Ok(VaultSource::new(
            client,
            parts.kind,
            auth,
            parts.lease_margin,
            parts.refused_lease_grace,
            parts.revoke_on_drop,
        ))
    }
}

/// The options of a KV v2 secret ([`VaultSource::kv2`]).
impl VaultSourceBuilder<Kv2> {
    /// The secret's field holding the username (default `username`). A secret without it uses
    /// the [`username`](Self::username) given, if any.
    pub fn username_field(mut self, name: impl Into<String>) -> Self {
        self.kind.username_field = name.into();
        self
    }

    /// The secret's field holding the password (default `password`).
    pub fn password_field(mut self, name: impl Into<String>) -> Self {
        self.kind.password_field = name.into();
        self
    }

    /// The login role for a secret without a [`username_field`](Self::username_field) (the
    /// secret's own field wins).
    pub fn username(mut self, name: impl Into<String>) -> Self {
        self.kind.username = Some(name.into());
        self
    }

    /// Always read this version instead of the latest.
    pub fn version(mut self, number: u64) -> Self {
        self.kind.version = Some(number);
        self
    }
}

/// The options of a database dynamic role ([`VaultSource::dynamic_role`]).
impl VaultSourceBuilder<DynamicRole> {
    /// A new user is issued when the lease in use ends within this margin and cannot be renewed
    /// past it (default 90 s, and at most half the lease's first duration, so a short lease is
    /// not replaced as soon as it is issued). The provider's
    /// `Policy::expiry_margin` must be at or below it: the provider refreshes at `expires_at -
    /// expiry_margin`, and the new user must be there by then, so `RotatingCredentials`
    /// refuses a longer `expiry_margin` with an error naming both
    /// (`CredentialSource::replaces_before_expiry`).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.kind.lease_margin = margin;
        self
    }

    /// How long the database may keep refusing the lease's user, while Vault says the lease is
    /// alive, before the source issues a new user anyway (default 10 s).
    ///
    /// After a refused login of the lease's user
    /// ([`CredentialSource::login_refused`](credswap_core::CredentialSource::login_refused)),
    /// the next fetch looks the lease up (`sys/leases/lookup`) instead of serving it from the
    /// source's cache. A lease Vault no longer has (revoked from outside, expired, a restore of
    /// Vault) is replaced at once. A lease Vault still has is served again: the refusal may
    /// have another cause that a new user would not cure (a replica or a pooler that has not
    /// seen the new user yet, a `pg_hba.conf` rule), and a new user per refusal would churn
    /// roles. Only when refusals go on for this long (each within this long of the last) is
    /// the user taken to be gone from the database (restored from a backup older than it)
    /// and replaced. `Duration::ZERO` replaces the lease on every refused login, without
    /// waiting.
    pub fn refused_lease_grace(mut self, grace: Duration) -> Self {
        self.kind.refused_lease_grace = grace;
        self
    }

    /// Revokes the leases still running when the source is dropped (with the last provider
    /// handle), on the current Tokio runtime. Off by default: the leases end at their
    /// TTL. [`VaultSource::revoke_leases`] does it awaited.
    pub fn revoke_on_drop(mut self, revoke: bool) -> Self {
        self.kind.revoke_on_drop = revoke;
        self
    }
}

impl<K: fmt::Debug> fmt::Debug for VaultSourceBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSourceBuilder")
            .field("kind", &self.kind)
            .field("address", &self.address)
            .field("auth", &self.auth)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_needs_an_address_an_auth_and_a_path() {
        let err = VaultSource::dynamic_role("database", "app")
            .token("t".to_owned())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("VAULT_ADDR"), "{err}");
        let err = VaultSource::dynamic_role("database", "app")
            .address("http://127.0.0.1:8200")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("token(..)"), "{err}");
        let err = VaultSource::static_role("database", "/")
            .address("http://127.0.0.1:8200")
            .token("t".to_owned())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = VaultSource::kv2("secret", "app")
            .address("127.0.0.1:8200")
            .token("t".to_owned())
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let source = VaultSource::kv2("secret", "app/db")
            .address("http://127.0.0.1:8200/")
            .token("t".to_owned())
            .username_field("user")
            .password_field("pass")
            .build()
            .unwrap();
        assert_eq!(source.address(), "http://127.0.0.1:8200");
        assert_eq!(source.path(), "secret/data/app/db");
    }
}
