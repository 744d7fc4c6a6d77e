//! # credswap
//!
//! Zero-downtime database credential rotation for Rust connection pools: the secret changes on
//! a schedule and not a single request fails.
//!
//! Applications keep database passwords in a secret store (AWS Secrets Manager, Vault/OpenBao,
//! a mounted file) that rotates them. credswap puts a rotation-aware credential provider,
//! [`RotatingCredentials`], in front of each pool. The provider is read wait-free at every
//! connect (an `arc-swap` load), refreshes on a schedule faster than the store's overlap window
//! closes, waits for a working credential when the database refuses a login, and announces each new credential
//! [`Generation`] so the pool adapter drains connections opened with the old one, inside the
//! same pool and never above its `max_size`.
//!
//! This crate is the facade: it re-exports `credswap-core` and, by feature, each pool adapter.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use credswap::{Credential, MemorySource, Policy, RotatingCredentials};
//!
//! let store = MemorySource::new(Credential::new("app", "first-password"));
//! let policy = Policy::builder()
//!     .refresh_interval(Duration::from_secs(60))
//!     .overlap_window(Duration::from_secs(3600))
//!     .build()?;
//! let credentials = RotatingCredentials::new(store, policy).await?;
//! assert_eq!(credentials.current().credential().username(), "app");
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `deadpool` | no | [`deadpool`]: a drop-in `deadpool_postgres::Pool` that follows the credential |
//! | `bb8` | no | [`bb8`]: a `bb8::ManageConnection` for tokio-postgres that follows the credential |
//! | `sqlx` | no | [`sqlx`]: a plain `sqlx::PgPool` that follows the credential (sqlx 0.8) |
//! | `sqlx-0_9` | no | the sqlx adapter for sqlx 0.9 too, as `credswap::sqlx::v0_9` |
//! | `metrics` | no | `credswap::metrics`: the providers' and pools' state through the `metrics` facade (names, units and labels in one table) |
//! | `aws` | no | [`aws`]: AWS Secrets Manager as a credential source (`SecretsManagerSource`) |
//! | `aws-rds-iam` | no | `aws` and `credswap::aws::RdsIamSource`: RDS and Aurora IAM authentication tokens as minted credentials |
//! | `aws-dsql` | no | `aws` and `credswap::aws::DsqlTokenSource`: Aurora DSQL authentication tokens as minted credentials |
//! | `rotate` | no | [`rotate`]: the Secrets Manager rotation protocol for PostgreSQL (`Rotator`), single user and alternating users |
//! | `vault` | no | [`vault`]: HashiCorp Vault and OpenBao as a credential source (`VaultSource`): KV v2, database dynamic roles (leases), database static roles |
//! | `file` | no | [`file`](mod@file): mounted secret files (Kubernetes secret volumes, Secrets Store CSI, Vault Agent), watched (`FileSource`), and environment variables (`EnvSource`) as credential sources |
//!
//! # Guarantees
//!
//! 1. **Provision before revoke**: new connections use the new credential as soon as the
//!    provider has it; a refused login makes the connect wait for a credential that works.
//! 2. **The cache refreshes faster than the overlap window closes**: [`Policy`] refuses a
//!    `refresh_interval` that is not shorter than the declared `overlap_window`.
//! 3. **Pools follow the credential**: idle connections of an older generation close at once,
//!    busy ones when returned; the pool handle stays valid and never exceeds `max_size`.
//! 4. **Secrets never print**: every type holding a password has a redacting `Debug`.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use credswap_core::*;

/// The deadpool-postgres adapter (`credswap-deadpool`).
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub mod deadpool {
    pub use credswap_deadpool::*;
}

/// The bb8 adapter (`credswap-bb8`).
#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub mod bb8 {
    pub use credswap_bb8::*;
}

/// The sqlx adapter (`credswap-sqlx`).
#[cfg(any(feature = "sqlx", feature = "sqlx-0_9"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlx", feature = "sqlx-0_9"))))]
pub mod sqlx {
    pub use credswap_sqlx::*;
}

/// AWS Secrets Manager as a credential source, and (features `aws-rds-iam`, `aws-dsql`) RDS IAM
/// and Aurora DSQL tokens as minted credentials (`credswap-aws`).
#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws {
    pub use credswap_aws::*;
}

/// The Secrets Manager rotation protocol for PostgreSQL (`credswap-rotate`).
#[cfg(feature = "rotate")]
#[cfg_attr(docsrs, doc(cfg(feature = "rotate")))]
pub mod rotate {
    pub use credswap_rotate::*;
}

/// Mounted secret files and environment variables as credential sources (`credswap-file`).
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod file {
    pub use credswap_file::*;
}

/// HashiCorp Vault and OpenBao as a credential source (`credswap-vault`).
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub mod vault {
    pub use credswap_vault::*;
}

/// The README's code blocks, compiled as doctests so the quick starts cannot rot.
#[cfg(all(
    doctest,
    feature = "deadpool",
    feature = "bb8",
    feature = "sqlx",
    feature = "aws",
    feature = "aws-rds-iam",
    feature = "aws-dsql",
    feature = "vault",
    feature = "rotate",
    feature = "file",
    feature = "metrics"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
