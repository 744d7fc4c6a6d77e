//! The handle returned beside the pool: the contract's [`Rotation`], the same for every
//! adapter, and its [`AdapterStats`].

pub use credswap_core::contract::{AdapterStats, Rotation};
