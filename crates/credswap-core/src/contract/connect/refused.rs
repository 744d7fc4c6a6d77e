//! [`Refused`]: a connect that failed for good.

use std::fmt;
use std::time::Duration;

use crate::Generation;
use crate::contract::classify::Failure;
use crate::contract::error::AdapterError;

/// A connect that failed for good, with the driver's last error and what was tried.
pub struct Refused<E> {
    pub(super) error: E,
    pub(super) code: Option<String>,
    pub(super) failure: Failure,
    pub(super) username: String,
    pub(super) generation: Generation,
    pub(super) attempts: u32,
    pub(super) waited: Duration,
}

impl<E> Refused<E> {
    /// The driver's last error.
    pub fn error(&self) -> &E {
        &self.error
    }

    /// The driver's last error, for a pool whose connect must return the driver's type.
    pub fn into_inner(self) -> E {
        self.error
    }

    /// The SQLSTATE of the last error, when the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The class of the last error.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// The role of the last attempt.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The credential generation of the last attempt.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Connect attempts made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The [`AdapterError`] for this failure.
    pub fn into_error(self) -> AdapterError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        AdapterError::connect(
            &self.username,
            self.generation,
            self.failure,
            self.code.as_deref(),
            self.attempts,
            self.waited,
            self.error,
        )
    }
}

impl<E: fmt::Display> fmt::Debug for Refused<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error.to_string())
            .field("code", &self.code)
            .field("failure", &self.failure)
            .field("username", &self.username)
            .field("generation", &self.generation)
            .field("attempts", &self.attempts)
            .finish()
    }
}
