//! What the minted sources ([`RdsIamSource`](crate::RdsIamSource),
//! [`DsqlTokenSource`](crate::DsqlTokenSource)) share: the region, the signing credentials, the
//! clock, and the end of a token ("never past the expiry of the credentials that signed it").

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_async::time::SharedTimeSource;
use credswap_core::source::BuildError;
use credswap_core::{Credential, SourceError};

/// The default lifetime of a token, and the longest an RDS IAM token may have: 15 minutes.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// How a minted source signs: resolved at build time, shared by its clones.
#[derive(Clone)]
pub(crate) struct Signing {
    pub(crate) region: Region,
    pub(crate) credentials: SharedCredentialsProvider,
    pub(crate) time_source: SharedTimeSource,
    pub(crate) expires_in: Duration,
}

/// The builder options every minted source has.
#[derive(Default)]
pub(crate) struct SigningOptions {
    pub(crate) sdk_config: Option<SdkConfig>,
    pub(crate) region: Option<String>,
    pub(crate) credentials: Option<SharedCredentialsProvider>,
    pub(crate) expires_in: Option<Duration>,
}

impl SigningOptions {
    pub(crate) fn credentials_provider(&mut self, provider: impl ProvideCredentials + 'static) {
        self.credentials = Some(SharedCredentialsProvider::new(provider));
    }

    /// Whether [`resolve`](Self::resolve) needs the environment's configuration.
    pub(crate) fn needs_env(&self) -> bool {
        self.sdk_config.is_none() && (self.region.is_none() || self.credentials.is_none())
    }

    /// The signing setup; `kind` names the source in errors, `max` is the longest lifetime.
    pub(crate) fn resolve(&self, kind: &str, max: Duration) -> Result<Signing, BuildError> {
        let expires_in = self.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        if expires_in < Duration::from_secs(1) {
            return Err(BuildError::new(format!(
                "{kind}: expires_in must be at least one second"
            )));
        }
        if expires_in > max {
            return Err(BuildError::new(format!(
                "{kind}: expires_in of {}s is longer than the {}s a token may live",
                expires_in.as_secs(),
                max.as_secs()
            )));
        }
        let config = self.sdk_config.as_ref();
        let region = match (&self.region, config.and_then(SdkConfig::region)) {
            (Some(region), _) if region.trim().is_empty() => {
                return Err(BuildError::new(format!("{kind}: the region is empty")));
            }
            (Some(region), _) => Region::new(region.trim().to_owned()),
            (None, Some(region)) => region.clone(),
            (None, None) => {
                return Err(BuildError::new(format!(
                    "{kind}: no region: call `region(..)`, or give an `sdk_config(..)` with a \
                     region (AWS_REGION for `build_from_env`); tokens are signed for the \
                     database's region"
                )));
            }
        };
        let credentials = match (
            &self.credentials,
            config.and_then(SdkConfig::credentials_provider),
        ) {
            (Some(provider), _) => provider.clone(),
            (None, Some(provider)) => provider,
            (None, None) => {
                return Err(BuildError::new(format!(
                    "{kind}: no AWS credentials to sign with: call `credentials_provider(..)` \
                     or `sdk_config(..)`, or use `build_from_env().await`"
                )));
            }
        };
        let time_source = config.and_then(SdkConfig::time_source).unwrap_or_default();
        Ok(Signing {
            region,
            credentials,
            time_source,
            expires_in: Duration::from_secs(expires_in.as_secs()),
        })
    }

    /// Loads `aws_config::defaults(BehaviorVersion::latest())` when it is needed.
    pub(crate) async fn load_env(&mut self) {
        if self.needs_env() {
            self.sdk_config = Some(aws_config::defaults(BehaviorVersion::latest()).load().await);
        }
    }
}

impl fmt::Debug for SigningOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningOptions")
            .field("sdk_config", &self.sdk_config.is_some())
            .field("region", &self.region)
            .field("credentials_provider", &self.credentials.is_some())
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The signing credentials of one token, resolved, and the clock reading it is signed at.
pub(crate) struct Prepared {
    /// The resolved AWS credentials (their secret key is redacted by their `Debug`; never
    /// printed here anyway).
    pub(crate) credentials: Credentials,
    /// The config the SDK's generator reads the time and the region from.
    pub(crate) sdk_config: SdkConfig,
    now: SystemTime,
    expires_at: SystemTime,
}

impl Signing {
    /// Resolves the signing credentials and reads the clock; `what` names the token in errors.
    pub(crate) async fn prepare(&self, what: &str) -> Result<Prepared, SourceError> {
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            SourceError::unavailable(format!(
                "{what}: the AWS credentials to sign it with could not be resolved"
            ))
            .with_source(e)
        })?;
        let now = self.time_source.now();
        let expires_at = token_end(now, self.expires_in, credentials.expiry());
        if expires_at <= now {
            return Err(SourceError::unavailable(format!(
                "{what}: the AWS credentials to sign it with have expired (at {})",
                unix_secs(credentials.expiry().unwrap_or(now))
            )));
        }
        let sdk_config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(self.region.clone())
            .time_source(self.time_source.clone())
            .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
            .build();
        Ok(Prepared {
            credentials,
            sdk_config,
            now,
            expires_at,
        })
    }
}

impl Prepared {
    /// The minted credential of `username` with `token`, issued now, expiring at the token's
    /// end or the signing credentials' expiry, whichever is first. It requires TLS: every
    /// adapter refuses to build a pool that could send it in the clear.
    pub(crate) fn credential(&self, username: &str, token: String) -> Credential {
        Credential::minted(username, token)
            .with_tls_required()
            .with_issued_at(self.now)
            .with_expires_at(self.expires_at)
    }
}

/// A required, non-empty builder string.
pub(crate) fn required(
    value: &Option<String>,
    option: &str,
    meaning: &str,
) -> Result<String, BuildError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        Some(_) => Err(BuildError::new(format!(
            "the {option} ({meaning}) is empty"
        ))),
        None => Err(BuildError::new(format!(
            "no {option}: call `{option}(..)` with {meaning}"
        ))),
    }
}

/// The SDK's generator failed: the error says why, never a token (there is none yet).
pub(crate) fn sign_failed(what: &str, err: Box<dyn StdError + Send + Sync>) -> SourceError {
    SourceError::unavailable(format!("{what}: the token could not be signed"))
        .with_source(Context(err.to_string()))
}

/// A token signed at `now` (whole seconds: SigV4's `X-Amz-Date`) for `expires_in`, no later than
/// the signing credentials' `expiry`.
pub(crate) fn token_end(
    now: SystemTime,
    expires_in: Duration,
    expiry: Option<SystemTime>,
) -> SystemTime {
    let signed_at = UNIX_EPOCH + Duration::from_secs(unix_secs(now));
    let end = signed_at + expires_in;
    match expiry {
        Some(expiry) if expiry < end => expiry,
        _ => end,
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An error's text, as a source of a [`SourceError`].
#[derive(Debug)]
struct Context(String);

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Context {}

impl fmt::Debug for Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signing")
            .field("region", &self.region.as_ref())
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_smithy_async::time::StaticTimeSource;

    /// 2024-08-26T22:00:00Z, the instant of the SDK's own signing test.
    pub(crate) fn fixed_now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_724_709_600)
    }

    pub(crate) const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// An `SdkConfig` with a fixed clock, a region and static credentials (expiring at
    /// `expiry`, if given).
    pub(crate) fn fixed_config(expiry: Option<SystemTime>) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .time_source(StaticTimeSource::new(fixed_now()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                SECRET_KEY,
                expiry.map(|_| "session-token".to_owned()),
                expiry,
                "test",
            )))
            .build()
    }

    #[test]
    fn a_token_ends_at_its_lifetime_or_the_credentials_expiry() {
        let now = fixed_now() + Duration::from_millis(700);
        let life = Duration::from_secs(900);
        assert_eq!(token_end(now, life, None), fixed_now() + life);
        let soon = fixed_now() + Duration::from_secs(120);
        assert_eq!(token_end(now, life, Some(soon)), soon);
        let later = fixed_now() + Duration::from_secs(3600);
        assert_eq!(token_end(now, life, Some(later)), fixed_now() + life);
    }

    #[test]
    fn options_need_a_region_credentials_and_a_lifetime_in_range() {
        let max = DEFAULT_TOKEN_LIFETIME;
        let err = SigningOptions::default().resolve("T", max).unwrap_err();
        assert!(err.to_string().contains("no region"), "{err}");
        let options = SigningOptions {
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let err = options.resolve("T", max).unwrap_err();
        assert!(err.to_string().contains("no AWS credentials"), "{err}");
        let options = SigningOptions {
            sdk_config: Some(fixed_config(None)),
            expires_in: Some(Duration::from_secs(901)),
            ..Default::default()
        };
        let err = options.resolve("T", max).unwrap_err();
        assert!(err.to_string().contains("longer than the 900s"), "{err}");
        let options = SigningOptions {
            sdk_config: Some(fixed_config(None)),
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let signing = options.resolve("T", max).unwrap();
        assert_eq!(signing.region.as_ref(), "eu-west-1");
        assert_eq!(signing.expires_in, max);
        assert_eq!(signing.time_source.now(), fixed_now());
    }
}
