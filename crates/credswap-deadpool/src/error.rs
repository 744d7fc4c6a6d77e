//! The error vocabulary: the contract's [`AdapterError`](credswap_core::contract::AdapterError),
//! the same for every adapter, and what a driver error means.
//!
//! `Pool::get` keeps deadpool's own `PoolError<tokio_postgres::Error>`: a connect that failed
//! for good is its `Backend` variant, the driver's last error (ask it with [`is_auth_failure`]).

pub use credswap_core::contract::AdapterError as Error;

/// Whether a driver error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry).
pub fn is_auth_failure(error: &tokio_postgres::Error) -> bool {
    credswap_tokio_postgres::is_auth_failure(error)
}
