//! The adapter for sqlx 0.8 (feature `sqlx-0_8`, on by default; re-exported at the crate root).
//!
//! The code is shared with `v0_9` (the two sqlx versions have the same pool API); only the
//! `sqlx` it is compiled against differs.

// The files under adapter/ are compiled once per sqlx version, on purpose.
#![allow(clippy::duplicate_mod)]

use ::sqlx;

#[path = "adapter/builder.rs"]
mod builder;
#[path = "adapter/connect.rs"]
mod connect;
#[path = "adapter/drain.rs"]
mod drain;
#[path = "adapter/error.rs"]
mod error;
#[path = "adapter/handle.rs"]
mod handle;
#[path = "adapter/tag.rs"]
mod tag;

pub use builder::{Builder, connect, connect_lazy_with, connect_with};
pub use connect::{VALIDATION_TIMEOUT, connection_validator};
pub use error::{Error, is_auth_failure};
pub use handle::{AdapterStats, Rotation, RotationExt};
