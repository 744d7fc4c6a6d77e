//! AWS Secrets Manager as a credswap credential source, and (by feature) RDS/Aurora IAM and
//! Aurora DSQL authentication tokens as minted credentials.
//!
//! [`SecretsManagerSource`] implements [`credswap_core::CredentialSource`] on the official AWS
//! SDK (`aws-sdk-secretsmanager`). Give it to
//! [`RotatingCredentials`](credswap_core::RotatingCredentials) and the pools follow every rotation
//! of the secret: the one AWS's RDS/Aurora rotation functions perform, or your own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use credswap_aws::SecretsManagerSource;
//! use credswap_core::{Policy, RotatingCredentials};
//!
//! // Region, credentials and endpoint from the usual AWS chain (env, profile, IMDS, ...).
//! let source = SecretsManagerSource::builder("prod/orders/db").build_from_env().await?;
//!
//! // The secret's host, port and dbname, for the connect options.
//! let secret = source.fetch_secret().await?;
//! let host = secret.details().host().unwrap_or("localhost").to_owned();
//! let port = secret.details().port().unwrap_or(5432);
//!
//! let policy = Policy::builder()
//!     .refresh_interval(Duration::from_secs(60))
//!     .overlap_window(Duration::from_secs(3600))
//!     .build()?;
//! let credentials = RotatingCredentials::new(source, policy).await?;
//! # let _ = (host, port, credentials);
//! # Ok(()) }
//! ```
//!
//! # What it reads
//!
//! - **The version staged `AWSCURRENT`.** Every fetch calls `DescribeSecret` and looks up which
//!   version id carries `AWSCURRENT` (`VersionIdsToStages`); when it is the version read before
//!   (as `AWSCURRENT`, or as `AWSPENDING` while the rotation ran: a version's value never
//!   changes), the cached credential is returned and no `GetSecretValue` is made ([`Stats`]
//!   counts both). `GetSecretValue` always names the stage (`VersionStage = "AWSCURRENT"`).
//! - **The version staged `AWSPENDING`** on
//!   [`fetch_pending`](credswap_core::CredentialSource::fetch_pending), while a rotation is under
//!   way (a version staged `AWSPENDING` but not `AWSCURRENT`); else `None`. A pending fetch
//!   within a second of a fetch that saw that version staged uses the fetch's `DescribeSecret`
//!   answer (once): a provider's refresh mid-rotation costs one `DescribeSecret`, and a rotation
//!   costs each instance at most one `GetSecretValue`.
//! - **Metadata**: `VersionId` becomes the credential's version, the version's `CreatedDate` its
//!   issue time; the secret's rotation rules (`ScheduleExpression` `rate(N days)` /
//!   `rate(N hours)`, else `AutomaticallyAfterDays`; a `cron(...)` schedule gives none) its
//!   rotation interval and `NextRotationDate` its next rotation, unless rotation is disabled.
//!
//! # Secret formats
//!
//! - **JSON**, as AWS's RDS/Aurora rotation templates write it: `username`, `password`, and
//!   optionally `engine`, `host`, `port`, `dbname`, `masterarn` (other fields are ignored).
//!   `engine`, when present, must be `postgres` or `aurora-postgresql`. The non-secret fields are
//!   available as [`SecretDetails`] ([`SecretsManagerSource::fetch_secret`],
//!   [`SecretsManagerSource::details`]). A JSON secret without `username` uses the one set with
//!   [`username`](SecretsManagerSourceBuilder::username).
//! - **A plain string**: the password of the role set with
//!   [`username`](SecretsManagerSourceBuilder::username). A string that starts with `{` is
//!   always read as JSON, so such a password cannot be stored as a plain string.
//!
//! A missing field, a field of the wrong JSON type, invalid JSON, a binary secret
//! (`SecretBinary`), a version without a value or a non-PostgreSQL engine is
//! [`malformed`](credswap_core::SourceError::is_malformed); the message names the field and
//! never a value.
//!
//! # Failures
//!
//! Throttling, HTTP 5xx, timeouts and connection failures are
//! [`unavailable`](credswap_core::SourceError::is_unavailable): the provider keeps serving the
//! last good credential and retries. Access refusals and KMS decryption failures are
//! [`denied`](credswap_core::SourceError::is_denied). A missing secret is neither (an "other"
//! error): it is a configuration mistake, not a permission. The SDK's own retries (three
//! attempts with the standard retry mode) run first; configure them on the `SdkConfig`. No
//! password ever appears in an error, a log line or a `Debug` output.
//!
//! # IAM permissions
//!
//! - `secretsmanager:DescribeSecret` and `secretsmanager:GetSecretValue` on the secret;
//! - `kms:Decrypt` on the key, when the secret is encrypted with a customer-managed KMS key.
//!
//! # Testing against moto
//!
//! [`endpoint_url`](SecretsManagerSourceBuilder::endpoint_url) points the source at moto or
//! LocalStack. `credswap-testkit`'s `TestMoto` runs a real `moto_server`, and its `FaultProxy`
//! injects throttling, 5xx and outages.
//!
//! # Minted credentials: RDS IAM and Aurora DSQL
//!
//! With IAM database authentication there is no password to rotate: the application signs a
//! short-lived token with its AWS credentials and logs in with it. [`RdsIamSource`] (feature
//! `rds-iam`) and [`DsqlTokenSource`] (feature `dsql`) are sources of such tokens, on the SDK's
//! own generators (`aws_sdk_rds::auth_token`, `aws_sdk_dsql::auth_token`). Each fetch signs a
//! new token and returns it as a [minted](credswap_core::Credential::minted) credential: a new
//! token for the same user is the same login, so the pools keep their sessions, and the
//! provider mints the next token ahead of the current one's end (its `expiry_margin`).
//!
#![cfg_attr(
    feature = "rds-iam",
    doc = r##"
```no_run
# async fn demo() -> Result<(), Box<dyn std::error::Error>> {
use std::time::Duration;
use credswap_aws::RdsIamSource;
use credswap_core::{Policy, RotatingCredentials};

// IAM authentication requires TLS: refuse connect options that could go without it.
credswap_aws::require_tls("verify-full")?;

// Region and the credentials that sign from the usual AWS chain (env, profile, IMDS, ...).
let source = RdsIamSource::builder()
    .hostname("orders.cluster-abc123.eu-west-1.rds.amazonaws.com")
    .port(5432)
    .username("iam_app")
    .build_from_env()
    .await?;

let policy = Policy::builder()
    .refresh_interval(Duration::from_secs(300))
    .expiry_margin(Duration::from_secs(120))
    .build()?;
let credentials = RotatingCredentials::new(source, policy).await?;
# let _ = credentials;
# Ok(()) }
```
"##
)]
//!
//! - **A token's end**: `expires_in` after it was signed (15 minutes by default, RDS's
//!   maximum; DSQL allows up to a week), and never past the expiry of the AWS credentials that
//!   signed it: a token signed by a role session that ends in 2 minutes is given 2 minutes, so
//!   the provider mints the next one, with the refreshed credentials, before then. The signing
//!   credentials are resolved from the credentials provider (the `SdkConfig`'s, or
//!   [`credentials_provider`](RdsIamSourceBuilder::credentials_provider)) at every fetch.
//! - **One endpoint per source**: a token is signed for one `hostname:port`. A reader, a
//!   failover target or an RDS Proxy is another source: [`RdsIamSource::for_host`] clones one
//!   for another endpoint, with its own tokens.
//! - **TLS is required**: RDS refuses an IAM login without TLS and DSQL accepts only TLS
//!   connections. The sources' credentials say so
//!   ([`Credential::requires_tls`](credswap_core::Credential::requires_tls)), and every pool
//!   adapter refuses to build a pool whose connect options could log in without TLS (an
//!   `sslmode` below `require`), with an error that names the setting. For connect options
//!   built elsewhere (a URL in a config file), [`require_tls`] checks an `sslmode` string the
//!   same way.
//! - **Aurora DSQL ends sessions after one hour**: set the adapters' maximum session age below
//!   it, e.g. `max_session_age(Duration::from_secs(55 * 60))`, so the pools replace
//!   connections before the server closes them. [`DsqlTokenSourceBuilder::admin`] mints
//!   `DbConnectAdmin` tokens for the `admin` role, [`username`](DsqlTokenSourceBuilder::username)
//!   `DbConnect` tokens for a custom role.
//! - **Secrets never print**: the SDK's `AuthToken` prints itself in `Debug`; the sources drop
//!   it at once, hold the token only inside the credential (redacted), and their `Debug` shows
//!   endpoint, user, region and lifetime, never a token or an AWS key. Failures (credentials
//!   that cannot be resolved or have expired, a signing error) are
//!   [`unavailable`](credswap_core::SourceError::is_unavailable), and their messages never
//!   contain a token.
//! - **IAM permissions**: `rds-db:connect` on
//!   `arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId>/<user>` (the user granted
//!   `rds_iam`); `dsql:DbConnectAdmin` or `dsql:DbConnect` on the cluster.
//!
//! Other clouds mint the same way: `examples/minted_cloud.rs` is a source of Google Cloud SQL
//! IAM logins (an OAuth2 access token as the password), written against the same trait.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `rds-iam` | no | `RdsIamSource`: RDS and Aurora PostgreSQL IAM authentication tokens (`aws-sdk-rds`, no default features) |
//! | `dsql` | no | `DsqlTokenSource`: Aurora DSQL authentication tokens, admin and custom roles (`aws-sdk-dsql`, no default features) |
//!
//! [`SecretsManagerSource`] and [`require_tls`] are always there.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the minted sources, which exist only with their features.
#![cfg_attr(
    not(all(feature = "rds-iam", feature = "dsql")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod builder;
#[cfg(feature = "dsql")]
mod dsql;
mod error;
#[cfg(any(feature = "rds-iam", feature = "dsql"))]
mod minted;
#[cfg(feature = "rds-iam")]
mod rds_iam;
mod rotation;
mod secret;
mod source;
mod tls;

pub use builder::SecretsManagerSourceBuilder;
pub use credswap_core::database_secret::{DatabaseSecret, POSTGRES_ENGINES, SecretDetails};
pub use credswap_core::source::BuildError;
pub use source::{AWSCURRENT, AWSPENDING, SecretsManagerSource, Stats};
pub use tls::{TLS_SSLMODES, require_tls};

#[cfg(feature = "dsql")]
#[cfg_attr(docsrs, doc(cfg(feature = "dsql")))]
pub use dsql::{DSQL_ADMIN, DSQL_MAX_TOKEN_LIFETIME, DsqlTokenSource, DsqlTokenSourceBuilder};
#[cfg(any(feature = "rds-iam", feature = "dsql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "rds-iam", feature = "dsql"))))]
pub use minted::DEFAULT_TOKEN_LIFETIME;
#[cfg(feature = "rds-iam")]
#[cfg_attr(docsrs, doc(cfg(feature = "rds-iam")))]
pub use rds_iam::{RDS_MAX_TOKEN_LIFETIME, RdsIamSource, RdsIamSourceBuilder};

/// Re-exported so users name the SDK types this crate takes (`Client`, `Config`).
pub use aws_sdk_secretsmanager;
