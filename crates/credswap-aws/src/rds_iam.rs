//! [`RdsIamSource`]: RDS and Aurora IAM database authentication tokens, minted on every fetch.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
use credswap_core::source::BuildError;
use credswap_core::{Credential, CredentialSource, SourceError};

use crate::minted::{self, Signing, SigningOptions, required};

/// The longest an RDS IAM auth token may live: 15 minutes.
pub const RDS_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A [`CredentialSource`] of RDS and Aurora (PostgreSQL) IAM authentication tokens: each
/// [`fetch`](CredentialSource::fetch) signs a new token for one user at one endpoint with the
/// SDK's `aws_sdk_rds::auth_token::AuthTokenGenerator`, and returns it as a
/// [minted](Credential::minted) credential.
///
/// The credential expires when the token does (`expires_in` after it was signed, 15 minutes
/// by default), or when the AWS credentials that signed it do, whichever is first: a token
/// is never used past the expiry of the credentials that signed it. The provider mints the next
/// one ahead of that; sessions opened with an earlier token stay open (a new token is not a
/// rotation).
///
/// A token is signed for one `hostname:port`: a failover, reader or proxy endpoint needs its
/// own source, [`for_host`](Self::for_host) makes it. IAM authentication requires TLS: check
/// the connect options with [`require_tls`](crate::require_tls).
///
/// `Debug` prints the endpoint, user, region and lifetime, never a token or an AWS key.
#[derive(Clone)]
pub struct RdsIamSource {
    hostname: String,
    port: u16,
    username: String,
    signing: Signing,
}

impl RdsIamSource {
    /// A builder; [`hostname`](RdsIamSourceBuilder::hostname) and
    /// [`username`](RdsIamSourceBuilder::username) are required.
    pub fn builder() -> RdsIamSourceBuilder {
        RdsIamSourceBuilder::default()
    }

    /// The same source for another endpoint of the database (a reader, the other side of a
    /// failover, an RDS Proxy), on the same port: its tokens are signed for `hostname`.
    pub fn for_host(&self, hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            ..self.clone()
        }
    }

    /// The endpoint the tokens are signed for.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The endpoint's port the tokens are signed for.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database user (an IAM-enabled role: `GRANT rds_iam TO ...`).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The region the tokens are signed for.
    pub fn region(&self) -> &str {
        self.signing.region.as_ref()
    }

    /// How long a token lives (before the signing credentials' expiry cuts it short).
    pub fn expires_in(&self) -> Duration {
        self.signing.expires_in
    }

    fn what(&self) -> String {
        format!(
            "RDS IAM auth token for user \"{}\" at {}:{}",
            self.username, self.hostname, self.port
        )
    }
}

#[async_trait]
impl CredentialSource for RdsIamSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let what = self.what();
        let prepared = self.signing.prepare(&what).await?;
        let config = Config::builder()
            .hostname(&self.hostname)
            .port(u64::from(self.port))
            .username(&self.username)
            .region(self.signing.region.clone())
            .expires_in(self.signing.expires_in.as_secs())
            .credentials(prepared.credentials.clone())
            .build()
            .map_err(|e| minted::sign_failed(&what, e))?;
        let token = AuthTokenGenerator::new(config)
            .auth_token(&prepared.sdk_config)
            .await
            .map_err(|e| minted::sign_failed(&what, e))?;
        tracing::debug!(user = %self.username, host = %self.hostname, port = self.port, "minted an RDS IAM auth token");
        Ok(prepared.credential(&self.username, token.to_string()))
    }

    /// Every fetch mints a token good for its whole lifetime.
    fn replaces_before_expiry(&self) -> Option<Duration> {
        Some(self.signing.expires_in)
    }
}

impl fmt::Debug for RdsIamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdsIamSource")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("region", &self.region())
            .field("expires_in", &self.signing.expires_in)
            .finish_non_exhaustive()
    }
}

/// Builds an [`RdsIamSource`]; see [`RdsIamSource::builder`].
///
/// The region and the credentials that sign come from the [`sdk_config`](Self::sdk_config)
/// given (its time source too), unless set with [`region`](Self::region) and
/// [`credentials_provider`](Self::credentials_provider); [`build_from_env`](Self::build_from_env)
/// loads the usual AWS configuration chain for what is missing.
#[must_use]
#[derive(Default)]
pub struct RdsIamSourceBuilder {
    hostname: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    signing: SigningOptions,
}

impl RdsIamSourceBuilder {
    /// The database endpoint the client connects to (the instance's, the cluster's writer or
    /// reader endpoint, or an RDS Proxy's), exactly as in the connect options. Required.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// The endpoint's port, as in the connect options (default 5432).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The database user, a role granted `rds_iam`. Required.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The database's region (e.g. `eu-west-1`); default: the config's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.signing.region = Some(region.into());
        self
    }

    /// How long each token lives: at least a second, at most (and by default) 15 minutes.
    /// Whole seconds; a fraction is dropped.
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
    /// Fails when the hostname or the username is missing or empty, when `expires_in` is over
    /// 15 minutes or under a second, or when no region or no credentials provider was given
    /// (through [`sdk_config`](Self::sdk_config) or directly; or use
    /// [`build_from_env`](Self::build_from_env)).
    pub fn build(self) -> Result<RdsIamSource, BuildError> {
        let (hostname, username) = self.check()?;
        let signing = self
            .signing
            .resolve("RdsIamSource", RDS_MAX_TOKEN_LIFETIME)?;
        Ok(RdsIamSource {
            hostname,
            port: self.port.unwrap_or(5432),
            username,
            signing,
        })
    }

    /// Builds the source, loading `aws_config::defaults(BehaviorVersion::latest())` for a
    /// region or credentials provider not given: `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_PROFILE`, web identity, SSO, ECS and EC2 instance metadata, ...
    pub async fn build_from_env(mut self) -> Result<RdsIamSource, BuildError> {
        self.check()?;
        self.signing.load_env().await;
        self.build()
    }

    fn check(&self) -> Result<(String, String), BuildError> {
        let hostname = required(&self.hostname, "hostname", "the database endpoint")?;
        let username = required(&self.username, "username", "the IAM-enabled database user")?;
        if self.port == Some(0) {
            return Err(BuildError::new("RdsIamSource: the port is 0"));
        }
        Ok((hostname, username))
    }
}

impl fmt::Debug for RdsIamSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdsIamSourceBuilder")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
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

    const HOST: &str = "prod-instance.us-east-1.rds.amazonaws.com";

    fn source(config: &SdkConfig) -> RdsIamSource {
        RdsIamSource::builder()
            .hostname(HOST)
            .port(3306)
            .username("peccy")
            .sdk_config(config)
            .build()
            .unwrap()
    }

    /// The SDK's own signing test: same clock, credentials, endpoint and user.
    const SDK_TOKEN: &str = "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=";

    #[tokio::test]
    async fn the_token_is_the_sdk_generators() {
        let config = fixed_config(None);
        let credential = source(&config).fetch().await.unwrap();
        let generated = AuthTokenGenerator::new(
            Config::builder()
                .hostname(HOST)
                .port(3306)
                .username("peccy")
                .build()
                .unwrap(),
        )
        .auth_token(&config)
        .await
        .unwrap();
        let token = credential.password().expose_secret();
        assert_eq!(token, generated.as_str());
        assert!(token.starts_with(SDK_TOKEN), "{token}");
        assert!(credential.is_minted());
        assert!(credential.requires_tls(), "IAM tokens travel over TLS only");
        assert_eq!(credential.username(), "peccy");
        assert_eq!(credential.issued_at(), Some(fixed_now()));
        assert_eq!(
            credential.expires_at(),
            Some(fixed_now() + Duration::from_secs(900))
        );
        // Each fetch mints (with a fixed clock, the same token).
        assert_eq!(
            source(&config)
                .fetch()
                .await
                .unwrap()
                .password()
                .expose_secret(),
            token
        );
    }

    /// The SDK's published test vector (`signing_works` in `aws_sdk_rds::auth_token`), through
    /// the source: the same inputs give the same signature.
    #[tokio::test]
    async fn the_sdks_test_vector() {
        use aws_credential_types::Credentials;
        let source = RdsIamSource::builder()
            .hostname(HOST)
            .port(3306)
            .username("peccy")
            .sdk_config(&fixed_config(None))
            .credentials_provider(Credentials::new("akid", "secret", None, None, "test"))
            .build()
            .unwrap();
        let credential = source.fetch().await.unwrap();
        assert_eq!(
            credential.password().expose_secret(),
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=akid%2F20240826%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20240826T220000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
        );
    }

    #[tokio::test]
    async fn a_token_ends_no_later_than_its_signing_credentials() {
        let expiry = fixed_now() + Duration::from_secs(120);
        let credential = source(&fixed_config(Some(expiry))).fetch().await.unwrap();
        assert_eq!(credential.expires_at(), Some(expiry));
        let short = RdsIamSource::builder()
            .hostname(HOST)
            .username("peccy")
            .expires_in(Duration::from_secs(60))
            .sdk_config(&fixed_config(Some(expiry)))
            .build()
            .unwrap();
        let credential = short.fetch().await.unwrap();
        assert_eq!(
            credential.expires_at(),
            Some(fixed_now() + Duration::from_secs(60))
        );
        assert!(
            credential
                .password()
                .expose_secret()
                .contains(":5432/?Action=connect&DBUser=peccy&")
        );
        assert!(
            credential
                .password()
                .expose_secret()
                .contains("X-Amz-Expires=60&")
        );
        assert!(
            credential
                .password()
                .expose_secret()
                .contains("X-Amz-Security-Token=session-token")
        );

        let expired = fixed_now() - Duration::from_secs(1);
        let err = source(&fixed_config(Some(expired)))
            .fetch()
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("have expired"), "{err}");
    }

    #[tokio::test]
    async fn nothing_prints_the_token_or_the_secret_key() {
        let source = source(&fixed_config(None));
        let credential = source.fetch().await.unwrap();
        let token = credential.password().expose_secret().to_owned();
        let printed = format!(
            "{source:?} {credential:?} {:?} {:?}",
            source.for_host("reader"),
            RdsIamSource::builder().sdk_config(&fixed_config(None))
        );
        for secret in [token.as_str(), SECRET_KEY, "X-Amz-Signature"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains(HOST), "{printed}");
        let expired = fixed_now() - Duration::from_secs(1);
        let err = RdsIamSource::builder()
            .hostname(HOST)
            .username("peccy")
            .sdk_config(&fixed_config(Some(expired)))
            .build()
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        let printed = format!("{err:?} {err}");
        assert!(
            !printed.contains(SECRET_KEY) && !printed.contains("X-Amz"),
            "{printed}"
        );
    }

    #[tokio::test]
    async fn for_host_signs_for_the_other_endpoint() {
        let writer = source(&fixed_config(None));
        let reader = writer.for_host("prod-reader.us-east-1.rds.amazonaws.com");
        assert_eq!(reader.port(), 3306);
        let token = reader.fetch().await.unwrap();
        assert!(token.password().expose_secret().starts_with(
            "prod-reader.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=peccy&"
        ));
        assert_eq!(writer.hostname(), HOST);
    }

    #[test]
    fn build_errors_name_what_is_missing() {
        let config = fixed_config(None);
        let err = RdsIamSource::builder()
            .username("u")
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no hostname"), "{err}");
        let err = RdsIamSource::builder()
            .hostname(HOST)
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no username"), "{err}");
        let err = RdsIamSource::builder()
            .hostname(" ")
            .username("u")
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
        let no_region = SdkConfig::builder().build();
        let err = RdsIamSource::builder()
            .hostname(HOST)
            .username("u")
            .sdk_config(&no_region)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no region"), "{err}");
        let err = RdsIamSource::builder()
            .hostname(HOST)
            .username("u")
            .sdk_config(&config)
            .expires_in(Duration::from_secs(901))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("expires_in of 901s"), "{err}");
        let source = RdsIamSource::builder()
            .hostname(HOST)
            .username("u")
            .region("eu-west-1")
            .sdk_config(&config)
            .build()
            .unwrap();
        assert_eq!((source.port(), source.region()), (5432, "eu-west-1"));
        assert_eq!(
            source.replaces_before_expiry(),
            Some(Duration::from_secs(900))
        );
    }
}
