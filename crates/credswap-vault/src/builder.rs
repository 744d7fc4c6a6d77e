//! How a [`VaultSource`] is built: the address, the auth method and the options of each kind.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::Auth;
use crate::client::Client;
use crate::error::BuildError;
use crate::source::{Kind, VaultSource};

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
#[must_use]
pub struct VaultSourceBuilder {
    kind: Kind,
    address: Option<String>,
    auth: Option<Auth>,
    namespace: Option<String>,
    timeout: Duration,
    http: Option<reqwest::Client>,
    lease_margin: Duration,
    refused_lease_grace: Duration,
    revoke_on_drop: bool,
}

impl VaultSourceBuilder {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            address: None,
            auth: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
            http: None,
            lease_margin: DEFAULT_LEASE_MARGIN,
            refused_lease_grace: DEFAULT_REFUSED_LEASE_GRACE,
            revoke_on_drop: false,
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

    /// KV v2: the names of the username and password fields (default `username`, `password`).
    pub fn fields(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        if let Kind::Kv2 {
            username_field,
            password_field,
            ..
        } = &mut self.kind
        {
            *username_field = username.into();
            *password_field = password.into();
        }
        self
    }

    /// KV v2: the login role for a secret without a username field (the secret's own field wins).
    pub fn username(mut self, name: impl Into<String>) -> Self {
        if let Kind::Kv2 { username, .. } = &mut self.kind {
            *username = Some(name.into());
        }
        self
    }

    /// KV v2: always read this version instead of the latest.
    pub fn version(mut self, number: u64) -> Self {
        if let Kind::Kv2 { version, .. } = &mut self.kind {
            *version = Some(number);
        }
        self
    }

    /// Dynamic roles: a new user is issued when the lease in use ends within this margin and
    /// cannot be renewed past it (default 90 s, and at most half the lease's first duration, so a
    /// short lease is not replaced as soon as it is issued). The provider's
    /// `Policy::expiry_margin` must be at or below it: the provider refreshes at `expires_at -
    /// expiry_margin`, and the new user must be there by then, so `RotatingCredentials`
    /// refuses a longer `expiry_margin` with an error naming both
    /// (`CredentialSource::replaces_before_expiry`).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
        self
    }

    /// Dynamic roles: how long the database may keep refusing the lease's user, while Vault
    /// says the lease is alive, before the source issues a new user anyway (default 10 s).
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
        self.refused_lease_grace = grace;
        self
    }

    /// Dynamic roles: revoke the leases still running when the source is dropped (with the last
    /// provider handle), on the current Tokio runtime. Off by default: the leases end at their
    /// TTL. [`VaultSource::revoke_leases`] does it awaited.
    pub fn revoke_on_drop(mut self, revoke: bool) -> Self {
        self.revoke_on_drop = revoke;
        self
    }

    /// Builds the source. Fails without an address or an auth method, with an address that is
    /// not `http(s)://`, or with an empty path or role.
    pub fn build(self) -> Result<VaultSource, BuildError> {
        let address = self.address.ok_or_else(|| {
            BuildError(
                "no Vault address: call `address(..)` or set VAULT_ADDR and call `from_env()`"
                    .into(),
            )
        })?;
        let trimmed = address.trim();
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(BuildError(format!(
                "the Vault address \"{trimmed}\" must start with http:// or https://"
            )));
        }
        let auth = self.auth.ok_or_else(|| {
            BuildError(
                "no Vault auth method: call `token(..)`, `approle(..)` or `auth(..)`, or set VAULT_TOKEN and call `from_env()`"
                    .into(),
            )
        })?;
        let empty = match &self.kind {
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
            return Err(BuildError(format!(
                "the mount, path, role or field names of {:?} are empty",
                self.kind
            )));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(5)))
                .build()
                .map_err(|e| BuildError(format!("cannot build the HTTP client: {e}")))?,
        };
        let client = Client::new(http, trimmed, self.namespace);
        Ok(VaultSource::new(
            client,
            self.kind,
            auth,
            self.lease_margin,
            self.refused_lease_grace,
            self.revoke_on_drop,
        ))
    }
}

impl fmt::Debug for VaultSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSourceBuilder")
            .field("kind", &self.kind)
            .field("address", &self.address)
            .field("auth", &self.auth)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("lease_margin", &self.lease_margin)
            .field("refused_lease_grace", &self.refused_lease_grace)
            .field("revoke_on_drop", &self.revoke_on_drop)
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
            .fields("user", "pass")
            .build()
            .unwrap();
        assert_eq!(source.address(), "http://127.0.0.1:8200");
        assert_eq!(source.path(), "secret/data/app/db");
    }
}
