//! The core of credswap: a rotation-aware database credential provider.
//!
//! Applications keep database passwords in a secret store that rotates them. This crate holds
//! the current credential behind an [`arc_swap::ArcSwap`] so that a connection pool can read it
//! at every connect without a lock, refreshes it on a schedule and on demand, and tells pools
//! when it changed so they can drain connections opened with the old one. It knows no pool and
//! no driver; the adapters (`credswap-deadpool`, `credswap-bb8`, `credswap-sqlx`) do.
//!
//! Data flows one way: [`CredentialSource`] → [`RotatingCredentials`] → adapter → pool.
//!
//! # The invariant
//!
//! 1. **Provision before revoke**: the store makes the new credential usable before it revokes
//!    the old one (or, with zero overlap, adapters retry once after an auth failure).
//! 2. **The cache refreshes faster than the overlap window closes**: [`Policy`] refuses
//!    `refresh_interval >= overlap_window`.
//! 3. **Pools follow the credential**: [`RotatingCredentials::subscribe`] announces each new
//!    [`Generation`]; adapters close connections of older generations.
//! 4. **Secrets never print**: passwords are [`secrecy::SecretString`], and every type holding
//!    one has a redacting `Debug`.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
//! use secrecy::ExposeSecret;
//!
//! let store = MemorySource::new(Credential::new("app_a", "first"));
//! let policy = Policy::builder()
//!     .refresh_interval(Duration::from_secs(60))
//!     .overlap_window(Duration::from_secs(3600))
//!     .build()?;
//! let credentials = RotatingCredentials::new(store.clone(), policy).await?;
//!
//! let mut changes = credentials.subscribe();
//! store.set(Credential::new("app_b", "second"));
//! credentials.refresh().await?;
//! changes.changed().await?;
//! assert_eq!(changes.borrow().get(), 2);
//!
//! let current = credentials.current();
//! assert_eq!(current.credential().username(), "app_b");
//! assert_eq!(current.credential().password().expose_secret(), "second");
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `metrics` | no | [`metrics::Reporter`]: the provider's and the pools' state through the [`metrics`](https://docs.rs/metrics) facade, with the table of names |
//! | `json` | no | [`database_secret::parse_json`]: the RDS/Aurora secret JSON that AWS's rotation templates write and the file, environment and AWS sources read |
//!
//! The pool adapters live in their own crates, re-exported by the `credswap` facade behind the
//! features `deadpool`, `bb8` and `sqlx`.

#![forbid(unsafe_code)]

pub mod contract;
pub mod credential;
pub mod database_secret;
pub mod error;
pub mod health;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod policy;
pub mod provider;
pub mod snapshot;
pub mod source;
pub mod validate;

pub use credential::{Credential, Generation};
pub use error::{BoxError, Error, SourceError};
pub use health::Health;
pub use policy::{Policy, PolicyBuilder, PolicyError};
pub use provider::{RotatingCredentials, RotatingCredentialsBuilder, Stats};
pub use snapshot::{CurrentGuard, Snapshot};
pub use source::{CredentialSource, MemorySource, StaticSource};
pub use validate::Validate;

/// Re-exported so users name the same `SecretString` the provider holds.
pub use secrecy;
