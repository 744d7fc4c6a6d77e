//! How a [`SecretsManagerSource`] is built: from a client, an `SdkConfig`, or the environment.

use std::fmt;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::Client;

use crate::source::SecretsManagerSource;
use credswap_core::source::BuildError;

/// Builds a [`SecretsManagerSource`]; see [`SecretsManagerSource::builder`].
///
/// Give it a client ([`client`](Self::client)) or a shared config
/// ([`sdk_config`](Self::sdk_config)), not both, and call [`build`](Self::build), or call
/// [`build_from_env`](Self::build_from_env) to load the usual AWS configuration chain.
#[must_use]
pub struct SecretsManagerSourceBuilder {
    secret_id: String,
    client: Option<Client>,
    sdk_config: Option<SdkConfig>,
    endpoint_url: Option<String>,
    username: Option<String>,
}

impl SecretsManagerSourceBuilder {
    pub(crate) fn new(secret_id: String) -> Self {
        Self {
            secret_id,
            client: None,
            sdk_config: None,
            endpoint_url: None,
            username: None,
        }
    }

    /// Uses this client. Not with [`sdk_config`](Self::sdk_config): the build fails.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the client from this shared configuration (region, credentials, retries,
    /// timeouts). Not with [`client`](Self::client): the build fails.
    pub fn sdk_config(mut self, config: &SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// Sends requests to this endpoint instead of AWS's (moto, LocalStack, a VPC endpoint); it
    /// overrides the endpoint of the client, the config, or the environment.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// The login role for a secret that holds only a password (a plain string), or a JSON
    /// secret without a `username` field. A JSON secret's own `username` wins.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Builds the source from the client or the config given.
    ///
    /// Fails when the secret id is empty, when both [`client`](Self::client) and
    /// [`sdk_config`](Self::sdk_config) were given, or neither (use
    /// [`build_from_env`](Self::build_from_env) then).
    pub fn build(self) -> Result<SecretsManagerSource, BuildError> {
        self.check()?;
        let client = match (&self.client, &self.sdk_config) {
            (Some(_), Some(_)) => {
                return Err(BuildError::new(
                    "both `client(..)` and `sdk_config(..)` were given: the client would ignore \
                     the config; give one",
                ));
            }
            (Some(client), None) => match &self.endpoint_url {
                Some(url) => {
                    Client::from_conf(client.config().to_builder().endpoint_url(url).build())
                }
                None => client.clone(),
            },
            (None, Some(config)) => {
                let mut builder = aws_sdk_secretsmanager::config::Builder::from(config);
                if let Some(url) = &self.endpoint_url {
                    builder = builder.endpoint_url(url);
                }
                Client::from_conf(builder.build())
            }
            (None, None) => {
                return Err(BuildError::new(
                    "no AWS client: call `client(..)` or `sdk_config(..)` before `build()`, \
                     or use `build_from_env().await`",
                ));
            }
        };
        Ok(SecretsManagerSource::new(
            client,
            self.secret_id,
            self.username,
        ))
    }

    /// Builds the source, loading `aws_config::defaults(BehaviorVersion::latest())` when no
    /// client or config was given: region, credentials and endpoint from the environment
    /// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...), the shared
    /// config files, web identity, SSO, ECS and EC2 instance metadata.
    pub async fn build_from_env(mut self) -> Result<SecretsManagerSource, BuildError> {
        self.check()?;
        if self.client.is_none() && self.sdk_config.is_none() {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(url) = &self.endpoint_url {
                loader = loader.endpoint_url(url);
            }
            self.sdk_config = Some(loader.load().await);
        }
        self.build()
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.secret_id.trim().is_empty() {
            return Err(BuildError::new("the secret id is empty"));
        }
        Ok(())
    }
}

impl fmt::Debug for SecretsManagerSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerSourceBuilder")
            .field("secret_id", &self.secret_id)
            .field("client", &self.client.is_some())
            .field("sdk_config", &self.sdk_config.is_some())
            .field("endpoint_url", &self.endpoint_url)
            .field("username", &self.username)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_needs_a_client_and_a_secret_id() {
        let err = SecretsManagerSource::builder("db").build().unwrap_err();
        assert!(err.to_string().contains("build_from_env"), "{err}");
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let err = SecretsManagerSource::builder(" ")
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("secret id"), "{err}");
        let client = Client::new(&config);
        let err = SecretsManagerSource::builder("db")
            .client(client)
            .sdk_config(&config)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("give one"), "{err}");
        let source = SecretsManagerSource::builder("db")
            .sdk_config(&config)
            .endpoint_url("http://127.0.0.1:1")
            .username("app")
            .build()
            .unwrap();
        assert_eq!(source.secret_id(), "db");
    }
}
