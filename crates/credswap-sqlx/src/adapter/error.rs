//! The error vocabulary: the contract's [`AdapterError`](credswap_core::contract::AdapterError),
//! the same for every adapter, and what a sqlx error means.
//!
//! Building a pool returns [`Error`]. Checkouts keep sqlx's own `sqlx::Error`: ask it with
//! [`is_auth_failure`].

use credswap_core::contract::Failure;

use super::sqlx;

pub use credswap_core::contract::AdapterError as Error;

/// Whether a sqlx error is an authentication failure: SQLSTATE `28P01` (wrong password) or
/// `28000` (invalid authorization, e.g. a role that cannot log in or no `pg_hba` entry), or a
/// pooler's refused login (PgBouncer's `08P01` "SASL authentication failed").
pub fn is_auth_failure(error: &sqlx::Error) -> bool {
    classify(error) == Failure::Auth
}

/// The class of a connect error, by its SQLSTATE (and message) or the I/O error underneath.
pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    let database = error.as_database_error();
    Failure::classify_message(
        code(error).as_deref(),
        database.map(|e| e.message()),
        Failure::io_kind(error),
    )
}

/// The SQLSTATE of a server error.
pub(crate) fn code(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}
