//! [`DsqlTokenSource`]: Aurora DSQL authentication tokens, minted on every fetch.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_dsql::auth_token::{AuthTokenGenerator, Config};
use credswap_core::source::BuildError;
use credswap_core::{Credential, CredentialSource, SourceError};

use crate::minted::{self, Signing, SigningOptions, required};

/// The `admin` role of every Aurora DSQL cluster, which logs in with `DbConnectAdmin` tokens.
pub const DSQL_ADMIN: &str = "admin";

/// The longest an Aurora DSQL token may live: one week.
pub const DSQL_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A [`CredentialSource`] of Aurora DSQL authentication tokens: each
/// [`fetch`](CredentialSource::fetch) signs a new token for the cluster endpoint with the SDK's
/// `aws_sdk_dsql::auth_token::AuthTokenGenerator` and returns it as a
/// [minted](Credential::minted) credential: a `DbConnectAdmin` token for the `admin` role
/// ([`admin`](DsqlTokenSourceBuilder::admin)), a `DbConnect` token for a custom database role
/// ([`username`](DsqlTokenSourceBuilder::username), which the IAM identity must be allowed to
/// assume: `AWS IAM GRANT`).
///
/// The credential expires when the token does (`expires_in` after it was signed, 15 minutes
/// by default), or when the AWS credentials that signed it do, whichever is first.
///
/// Aurora DSQL ends every session after one hour, whatever the token: give the pool a maximum
/// session age below that, e.g. the adapters' `max_session_age(Duration::from_secs(55 * 60))`,
/// so connections are replaced before the server closes them. DSQL accepts only TLS
/// connections: check the connect options with [`require_tls`](crate::require_tls).
///
/// `Debug` prints the endpoint, user, region and lifetime, never a token or an AWS key.
#[derive(Clone)]
pub struct DsqlTokenSource {
    hostname: String,
    username: String,
    signing: Signing,
}

impl DsqlTokenSource {
    /// A builder; [`hostname`](DsqlTokenSourceBuilder::hostname) and a user
    /// ([`admin`](DsqlTokenSourceBuilder::admin) or
    /// [`username`](DsqlTokenSourceBuilder::username)) are required.
    pub fn builder() -> DsqlTokenSourceBuilder {
        DsqlTokenSourceBuilder::default()
    }

    /// The cluster endpoint the tokens are signed for.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The database role: `admin`, or a custom role.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether the tokens are `DbConnectAdmin` tokens (the `admin` role).
    pub fn is_admin(&self) -> bool {
        self.username == DSQL_ADMIN
    }

    /// The region the tokens are signed for.
    pub fn region(&self) -> &str {
        self.signing.region.as_ref()
    }

    /// How long a token lives (before the signing credentials' expiry cuts it short).
    pub fn expires_in(&self) -> Duration {
        self.signing.expires_in
    }
}

#[async_trait]
impl CredentialSource for DsqlTokenSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let what = format!(
            "Aurora DSQL auth token for role \"{}\" at {}",
            self.username, self.hostname
        );
        let prepared = self.signing.prepare(&what).await?;
        let config = Config::builder()
            .hostname(&self.hostname)
            .region(self.signing.region.clone())
            .expires_in(self.signing.expires_in.as_secs())
            .credentials(prepared.credentials.clone())
            .build()
            .map_err(|e| minted::sign_failed(&what, e))?;
        let generator = AuthTokenGenerator::new(config);
        let token = if self.is_admin() {
            generator
                .db_connect_admin_auth_token(&prepared.sdk_config)
                .await
        } else {
            generator.db_connect_auth_token(&prepared.sdk_config).await
        }
        .map_err(|e| minted::sign_failed(&what, e))?;
        tracing::debug!(role = %self.username, host = %self.hostname, "minted an Aurora DSQL auth token");
        Ok(prepared.credential(&self.username, token.to_string()))
    }

    /// Every fetch mints a token good for its whole lifetime.
    fn replaces_before_expiry(&self) -> Option<Duration> {
        Some(self.signing.expires_in)
    }
}

impl fmt::Debug for DsqlTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsqlTokenSource")
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .field("region", &self.region())
            .field("expires_in", &self.signing.expires_in)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DsqlTokenSource`]; see [`DsqlTokenSource::builder`].
///
/// The region and the credentials that sign come from the [`sdk_config`](Self::sdk_config)
/// given (its time source too), unless set with [`region`](Self::region) and
/// [`credentials_provider`](Self::credentials_provider); [`build_from_env`](Self::build_from_env)
/// loads the usual AWS configuration chain for what is missing.
#[must_use]
#[derive(Default)]
pub struct DsqlTokenSourceBuilder {
    hostname: Option<String>,
    username: Option<String>,
    signing: SigningOptions,
}

impl DsqlTokenSourceBuilder {
    /// The cluster endpoint (`<id>.dsql.<region>.on.aws`), as in the connect options.
    /// Required.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Logs in as the cluster's `admin` role, with `DbConnectAdmin` tokens (the IAM action
    /// `dsql:DbConnectAdmin`). The same as `username("admin")`.
    pub fn admin(self) -> Self {
        self.username(DSQL_ADMIN)
    }

    /// Logs in as this custom database role, with `DbConnect` tokens (the IAM action
    /// `dsql:DbConnect`; the role must be linked to the IAM identity with `AWS IAM GRANT`).
    /// `admin` means [`admin`](Self::admin).
    pub fn username(mut self, role: impl Into<String>) -> Self {
        self.username = Some(role.into());
        self
    }

    /// The cluster's region (e.g. `us-east-1`); default: the config's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.signing.region = Some(region.into());
        self
    }

    /// How long each token lives: at least a second, at most a week; default 15 minutes.
    /// Whole seconds; a fraction is dropped. A token is needed only at login, so a short one
    /// is enough.
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.signing.expires_in = Some(expires_in);
        self
    }

    /// Signs with these AWS credentials (default: the config's credentials provider). They are
    /// resolved at every fetch, so a caching provider's refreshed credentials are used.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.signing.credentials_provider(provider);
        self
    }

    /// Takes the region, the credentials provider and the time source from this config.
    pub fn sdk_config(mut self, config: &SdkConfig) -> Self {
        self.signing.sdk_config = Some(config.clone());
        self
    }

    /// Builds the source.
    ///
    /// Fails when the hostname or the user is missing or empty, when `expires_in` is over a
    /// week or under a second, or when no region or no credentials provider was given
    /// (through [`sdk_config`](Self::sdk_config) or directly; or use
    /// [`build_from_env`](Self::build_from_env)).
    pub fn build(self) -> Result<DsqlTokenSource, BuildError> {
        let (hostname, username) = self.check()?;
        let signing = self
            .signing
            .resolve("DsqlTokenSource", DSQL_MAX_TOKEN_LIFETIME)?;
        Ok(DsqlTokenSource {
            hostname,
            username,
            signing,
        })
    }

    /// Builds the source, loading `aws_config::defaults(BehaviorVersion::latest())` for a
    /// region or credentials provider not given.
    pub async fn build_from_env(mut self) -> Result<DsqlTokenSource, BuildError> {
        self.check()?;
        self.signing.load_env().await;
        self.build()
    }

    fn check(&self) -> Result<(String, String), BuildError> {
        let hostname = required(&self.hostname, "hostname", "the cluster endpoint")?;
        if self.username.is_none() {
            return Err(BuildError::new(
                "no user: call `admin()` for the `admin` role or `username(..)` for a custom \
                 database role",
            ));
        }
        let username = required(&self.username, "username", "the database role")?;
        Ok((hostname, username))
    }
}

impl fmt::Debug for DsqlTokenSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsqlTokenSourceBuilder")
            .field("hostname", &self.hostname)
            .field("username", &self.username)
            .field("signing", &self.signing)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minted::tests::{SECRET_KEY, fixed_config, fixed_now};
    use secrecy::ExposeSecret;

    const HOST: &str = "peccy.dsql.us-east-1.on.aws";

    fn builder(config: &SdkConfig) -> DsqlTokenSourceBuilder {
        DsqlTokenSource::builder().hostname(HOST).sdk_config(config)
    }

    fn generator() -> AuthTokenGenerator {
        AuthTokenGenerator::new(Config::builder().hostname(HOST).build().unwrap())
    }

    #[tokio::test]
    async fn admin_and_role_tokens_are_the_sdk_generators() {
        let config = fixed_config(None);
        let admin = builder(&config).admin().build().unwrap();
        assert!(admin.is_admin());
        let credential = admin.fetch().await.unwrap();
        let expected = generator()
            .db_connect_admin_auth_token(&config)
            .await
            .unwrap();
        let token = credential.password().expose_secret();
        assert_eq!(token, expected.as_str());
        assert!(token.starts_with(
            "peccy.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&X-Amz-Algorithm=AWS4-HMAC-SHA256&\
             X-Amz-Credential=AKIDEXAMPLE%2F20240826%2Fus-east-1%2Fdsql%2Faws4_request&\
             X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&"
        ));
        assert_eq!(credential.username(), "admin");
        assert!(credential.is_minted());
        assert!(credential.requires_tls(), "IAM tokens travel over TLS only");
        assert_eq!(credential.issued_at(), Some(fixed_now()));
        assert_eq!(
            credential.expires_at(),
            Some(fixed_now() + Duration::from_secs(900))
        );

        let role = builder(&config)
            .username("app_reader")
            .expires_in(Duration::from_secs(3600))
            .build()
            .unwrap();
        assert!(!role.is_admin());
        let credential = role.fetch().await.unwrap();
        assert_eq!(credential.username(), "app_reader");
        let token = credential.password().expose_secret();
        assert!(
            token.starts_with("peccy.dsql.us-east-1.on.aws/?Action=DbConnect&"),
            "{token}"
        );
        assert!(token.contains("X-Amz-Expires=3600&"), "{token}");
        assert_eq!(
            credential.expires_at(),
            Some(fixed_now() + Duration::from_secs(3600))
        );
    }

    #[tokio::test]
    async fn a_token_ends_no_later_than_its_signing_credentials_and_never_prints() {
        let expiry = fixed_now() + Duration::from_secs(300);
        let source = builder(&fixed_config(Some(expiry)))
            .admin()
            .build()
            .unwrap();
        let credential = source.fetch().await.unwrap();
        assert_eq!(credential.expires_at(), Some(expiry));
        let token = credential.password().expose_secret().to_owned();
        let printed = format!(
            "{source:?} {credential:?} {:?}",
            builder(&fixed_config(None))
        );
        for secret in [
            token.as_str(),
            SECRET_KEY,
            "X-Amz-Signature",
            "session-token",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let expired = builder(&fixed_config(Some(fixed_now())))
            .admin()
            .build()
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(expired.is_unavailable());
        let printed = format!("{expired:?} {expired}");
        assert!(
            !printed.contains(SECRET_KEY) && !printed.contains("X-Amz"),
            "{printed}"
        );
    }

    #[test]
    fn build_errors_name_what_is_missing() {
        let config = fixed_config(None);
        let err = DsqlTokenSource::builder()
            .admin()
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no hostname"), "{err}");
        let err = builder(&config).build().unwrap_err();
        assert!(err.to_string().contains("`admin()`"), "{err}");
        let err = builder(&SdkConfig::builder().build())
            .admin()
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no region"), "{err}");
        let err = builder(&config)
            .admin()
            .expires_in(DSQL_MAX_TOKEN_LIFETIME + Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        assert_eq!(
            builder(&config)
                .admin()
                .build()
                .unwrap()
                .replaces_before_expiry(),
            Some(Duration::from_secs(900))
        );
    }
}
