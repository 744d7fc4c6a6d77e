//! The adapter's error: the same [`Error`] as every credswap adapter.
//!
//! bb8 hands connect errors and checkout refusals to its error sink, not to the caller of
//! `Pool::get`, which gets `RunError::TimedOut` after `connection_timeout` instead; the manager
//! logs every failed connect (see the crate docs). Refusals with [`Error::is_stale`] are
//! routine: they are the pool draining connections of an older credential.

pub use credswap_core::contract::AdapterError as Error;

/// Whether a driver error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry).
pub fn is_auth_failure(error: &tokio_postgres::Error) -> bool {
    credswap_tokio_postgres::is_auth_failure(error)
}
