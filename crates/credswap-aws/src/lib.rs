//! AWS Secrets Manager as a credswap credential source.
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
//!   version id carries `AWSCURRENT` (`VersionIdsToStages`); when it is the version read before,
//!   the cached credential is returned and no `GetSecretValue` is made ([`Stats`] counts both).
//!   `GetSecretValue` always names the stage (`VersionStage = "AWSCURRENT"`).
//! - **The version staged `AWSPENDING`** on
//!   [`fetch_pending`](credswap_core::CredentialSource::fetch_pending), while a rotation is under
//!   way (a version staged `AWSPENDING` but not `AWSCURRENT`); else `None`.
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
//! # Features
//!
//! This crate has no Cargo features.

#![forbid(unsafe_code)]

mod builder;
mod error;
mod rotation;
mod secret;
mod source;

pub use builder::SecretsManagerSourceBuilder;
pub use credswap_core::database_secret::{DatabaseSecret, POSTGRES_ENGINES, SecretDetails};
pub use credswap_core::source::BuildError;
pub use source::{AWSCURRENT, AWSPENDING, SecretsManagerSource, Stats};

/// Re-exported so users name the SDK types this crate takes (`Client`, `Config`).
pub use aws_sdk_secretsmanager;
