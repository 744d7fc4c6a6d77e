//! The handle returned beside the pool: the same [`Rotation`] and [`AdapterStats`] as every
//! credswap adapter.
//!
//! For this pool, [`AdapterStats::stale_closed_idle`] counts the connections closed by their
//! own task while idle, and a connection closed that way stays in bb8's own count
//! (`Pool::state`) until the next checkout pops it.

pub use credswap_core::contract::{AdapterStats, Rotation};
