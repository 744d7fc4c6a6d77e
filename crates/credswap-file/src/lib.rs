//! Mounted secret files and environment variables as credswap credential sources.
//!
//! [`FileSource`] reads what Kubernetes secret volumes, the Secrets Store CSI driver and Vault
//! Agent sinks put on disk, and watches it: when the files hold a new credential,
//! [`FileSource::watch`] wakes the [`RotatingCredentials`](credswap_core::RotatingCredentials)
//! at once instead of at its next periodic refresh. [`EnvSource`] reads environment variables,
//! for local development.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use credswap_core::{Policy, RotatingCredentials};
//! use credswap_file::FileSource;
//!
//! // A Kubernetes secret volume with the keys `username` and `password`.
//! let source = FileSource::builder("/var/run/secrets/db").build()?;
//! let policy = Policy::builder()
//!     .refresh_interval(Duration::from_secs(60)) // the fallback: the watcher is faster
//!     .overlap_window(Duration::from_secs(3600))
//!     .build()?;
//! let credentials = RotatingCredentials::new(source.clone(), policy).await?;
//! // Refresh the provider as soon as the files change. Keep the handle as long as the provider.
//! let _watch = source.watch(&credentials)?;
//! # Ok(()) }
//! ```
//!
//! # Layouts
//!
//! | [`Layout`] | the path is | the credential |
//! |---|---|---|
//! | `Directory` | a directory of key files (a Kubernetes secret volume, a CSI mount) | the `password` file (required) and the `username` file (else the configured username); optional `host`, `port`, `dbname` files give the [`SecretDetails`]. The login's file names are configurable ([`username_field`](FileSourceBuilder::username_field), [`password_field`](FileSourceBuilder::password_field)) |
//! | `PasswordFile` | a file holding only the password | the configured [`username`](FileSourceBuilder::username) |
//! | `Json` | a file holding RDS/Aurora-style JSON (what `credswap-aws` reads): `username`, `password`, optional `engine` (PostgreSQL only), `host`, `port`, `dbname` | the JSON's `username` (else the configured one) and `password` |
//! | `Auto` (default) | decided at each read: a directory, a file starting with `{` (JSON), another file (a password) | as above |
//!
//! One trailing newline is dropped from the key files and a password file
//! ([`strip_newline`](FileSourceBuilder::strip_newline)).
//!
//! # Rotation on disk
//!
//! - **Kubernetes' `..data` swap.** The kubelet (and the CSI driver) writes a new version into a
//!   timestamped directory `..2026_11_26_10_00_00.123456789`, then renames a new `..data`
//!   symlink over the old one: one atomic step. The key files are symlinks through `..data`. A
//!   read goes through the directory `..data` points at and checks the link again afterwards,
//!   so it never mixes two versions; the credential's version is that directory's name.
//! - **Atomic renames.** A writer that writes a temporary file and renames it over the secret
//!   (Vault Agent, most tools) is seen whole or not at all.
//! - **Half-written files are never published.** An empty file, JSON that does not parse, a
//!   missing field or key file is [`malformed`](credswap_core::SourceError::is_malformed): the
//!   provider keeps serving the last good credential, and the watcher reports nothing. A plain
//!   password written in place (truncate, then write) cannot be told from a short password once
//!   it is non-empty: write such files with a rename.
//!
//! # Watching
//!
//! The watcher ([`FileSource::changes`], [`FileSource::watch`]) uses `notify` (inotify on
//! Linux, FSEvents on macOS, kqueue on BSD, ReadDirectoryChangesW on Windows) on the directory,
//! not the file: a swap or a rename replaces the file's inode, the directory stays. After an
//! event it waits for the directory to go quiet ([`settle`](FileSourceBuilder::settle), 50 ms),
//! reads, and reports only a complete credential that differs from the last one. Every
//! [`poll_interval`](FileSourceBuilder::poll_interval) (5 s) it reads anyway, for file systems
//! without events (NFS, some FUSE drivers), and sets up a watch that was lost or could not be
//! set up (a directory that does not exist yet) again.
//!
//! `credswap-core`'s provider cannot be woken by its source, so the watcher needs the provider:
//! [`FileSource::watch`] takes it and calls
//! [`refresh`](credswap_core::RotatingCredentials::refresh) on every change (single-flight,
//! like any refresh). The provider's periodic refresh goes on as the fallback.
//!
//! # Failures
//!
//! A path that does not exist (yet) and I/O errors are
//! [`unavailable`](credswap_core::SourceError::is_unavailable), permission errors
//! [`denied`](credswap_core::SourceError::is_denied), content problems malformed. Messages name
//! the file (or the environment variable) and the field, never a value; no password appears in
//! an error, a log line or a `Debug` output.
//!
//! # For a command line
//!
//! The builders take what a command line has: `FileSource::builder(path)` with
//! [`layout`](FileSourceBuilder::layout) (`Layout` parses from `auto`, `dir`, `password`,
//! `json`) and [`username`](FileSourceBuilder::username), then
//! [`fetch_secret`](FileSource::fetch_secret) for the credential and the [`SecretDetails`];
//! `EnvSource::builder()` with [`username_field`](EnvSourceBuilder::username_field),
//! [`password_field`](EnvSourceBuilder::password_field) or
//! [`json_var`](EnvSourceBuilder::json_var). An option that does not apply to what was chosen
//! (a directory's [`password_field`](FileSourceBuilder::password_field) with
//! [`Layout::Json`], a password variable with `json_var`) is a build error, never ignored.
//!
//! The same word names the same idea in every source: `username_field` and `password_field`
//! say where the secret holds the username and the password (a key file of a directory here,
//! an environment variable for [`EnvSource`], a KV field for `credswap-vault`), `username` a
//! fixed username for a secret that has none.
//!
//! # Features
//!
//! This crate has no Cargo features.

#![forbid(unsafe_code)]

mod builder;
mod env;
mod error;
mod secret;
mod source;
mod watch;

pub use builder::{FileSourceBuilder, Layout};
pub use credswap_core::database_secret::{DatabaseSecret, POSTGRES_ENGINES, SecretDetails};
pub use credswap_core::source::BuildError;
pub use env::{EnvSource, EnvSourceBuilder, PGPASSWORD, PGUSER};
pub use error::WatchError;
pub use source::{DATA_LINK, FileSource, Stats};
pub use watch::{Changes, FileWatch, WatchClosed, WatchStats};
