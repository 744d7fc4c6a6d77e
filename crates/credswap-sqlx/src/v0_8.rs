//! The adapter for sqlx 0.8 (feature `sqlx-0_8`, on by default; re-exported at the crate root).
//!
//! The code is shared with `v0_9` (the two sqlx versions have the same pool API); only the
//! `sqlx` it is compiled against differs.

// The files under adapter/ are compiled once per sqlx version, on purpose.
#![allow(clippy::duplicate_mod)]

use ::sqlx;

// The adapter's modules, the same for every sqlx version.
include!("adapter/modules.rs");
