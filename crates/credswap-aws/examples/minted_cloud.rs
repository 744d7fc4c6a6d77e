//! Other clouds through the same door: a minted credential source for Google Cloud SQL IAM
//! database authentication, on `gcp_auth`.
//!
//! Cloud SQL for PostgreSQL logs an IAM principal in with an OAuth2 access token as the
//! password: the database user of a service account is its email without
//! `.gserviceaccount.com` (`orders@my-project.iam`), and the token needs the
//! `sqlservice.login` scope. Like an RDS IAM token, it is a short-lived password for a stable
//! identity, so the source returns [`Credential::minted`] with the token's expiry: a new token
//! for the same user is not a rotation, and the provider asks for the next one ahead of the
//! current one's end. (Azure Entra ID works the same way: an access token for
//! `https://ossrdbms-aad.database.windows.net/.default`, with the Entra principal's name as the
//! user.)
//!
//! Run it on GCP (the metadata server), or with `gcloud auth application-default login` or
//! `GOOGLE_APPLICATION_CREDENTIALS`:
//!
//! ```text
//! CLOUDSQL_IAM_USER=orders@my-project.iam cargo run -p credswap-aws --example minted_cloud
//! ```
//!
//! Cloud SQL requires TLS for IAM logins (the Cloud SQL connectors and Auth Proxy provide it):
//! `credswap_aws::require_tls` checks a connection's `sslmode`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{Credential, CredentialSource, Policy, RotatingCredentials, SourceError};

/// The OAuth2 scope of Cloud SQL IAM database logins.
const SQL_LOGIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.login";

/// `gcp_auth` hands out its cached token until 20 seconds before the token's end; only then
/// does it fetch a new one. That is this source's lead: the policy's `expiry_margin` must not be
/// longer (the provider refuses a longer one).
const GCP_AUTH_LEAD: Duration = Duration::from_secs(20);

/// A [`CredentialSource`] of Cloud SQL IAM logins: `user` with an access token of the
/// application default credentials.
struct CloudSqlIamSource {
    user: String,
    tokens: Arc<dyn gcp_auth::TokenProvider>,
}

#[async_trait]
impl CredentialSource for CloudSqlIamSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let token = self.tokens.token(&[SQL_LOGIN_SCOPE]).await.map_err(|e| {
            // gcp_auth's errors name what failed (metadata server, token endpoint), never a
            // token.
            SourceError::unavailable("cannot get a Google access token for Cloud SQL")
                .with_source(e)
        })?;
        Ok(Credential::minted(&self.user, token.as_str().to_owned())
            .with_issued_at(SystemTime::now())
            .with_expires_at(SystemTime::from(token.expires_at())))
    }

    fn replaces_before_expiry(&self) -> Option<Duration> {
        Some(GCP_AUTH_LEAD)
    }
}

// `gcp_auth::TokenProvider` has no `Debug`: print the user only (never a token).
impl std::fmt::Debug for CloudSqlIamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudSqlIamSource")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    credswap_aws::require_tls("verify-full")?;
    let user = std::env::var("CLOUDSQL_IAM_USER")
        .map_err(|_| "set CLOUDSQL_IAM_USER, e.g. orders@my-project.iam")?;
    let source = CloudSqlIamSource {
        user,
        tokens: gcp_auth::provider().await?,
    };
    println!("{source:?}");

    let policy = Policy::builder()
        .refresh_interval(Duration::from_secs(300))
        .expiry_margin(Duration::from_secs(15))
        .build()?;
    let credentials = RotatingCredentials::new(source, policy).await?;
    let current = credentials.current();
    let credential = current.credential();
    let left = credential
        .expires_at()
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    // Give `credentials` to a pool adapter; here, print the login it would use (not the token).
    println!(
        "user {} with a minted token, good for another {}s",
        credential.username(),
        left.as_secs()
    );
    Ok(())
}
