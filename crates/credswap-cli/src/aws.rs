//! AWS: the SDK configuration (from the environment, or for a local moto) and the RDS-style
//! secret JSON the drill creates.

use aws_config::{BehaviorVersion, SdkConfig};
use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_testkit::TestPostgres;
use secrecy::{ExposeSecret, SecretString};

/// The usual AWS chain (`aws_config::defaults(BehaviorVersion::latest())`: environment,
/// profiles, SSO, web identity, ECS/EC2 metadata), with `endpoint_url` when given.
pub async fn from_env(endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The JSON AWS's RDS/Aurora rotation templates use, for a login on `pg`'s server (never the
/// pooler: the rotator logs in to the server itself).
pub fn rds_secret_json(pg: &TestPostgres, username: &str, password: &SecretString) -> String {
    serde_json::json!({
        "engine": "postgres",
        "host": pg.server_host(),
        "port": pg.server_port(),
        "dbname": pg.database(),
        "username": username,
        "password": password.expose_secret(),
    })
    .to_string()
}

/// `CreateSecret` with a string value; the error names the secret, never the value.
pub async fn create_secret(
    client: &Client,
    name: &str,
    value: String,
) -> Result<(), credswap_core::BoxError> {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateSecret {name} failed: {}",
                credswap_aws::aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}
