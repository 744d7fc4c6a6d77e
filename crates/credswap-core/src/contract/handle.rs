//! [`Rotation`]: the handle every adapter returns beside its pool.

use std::fmt;

use super::adapter::Adapter;
use super::stats::AdapterStats;
use crate::RotatingCredentials;

/// The handle an adapter returns beside its pool: the provider the pool follows and the
/// adapter's counters. The same type for every adapter; what the adapter itself needs is in
/// [`Adapter`].
///
/// Cheap to clone. Dropping it changes nothing: the pool keeps following the credential.
#[derive(Clone)]
pub struct Rotation {
    adapter: Adapter,
}

impl Rotation {
    pub(crate) fn new(adapter: Adapter) -> Self {
        Self { adapter }
    }

    pub(crate) fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// The adapter's counters: connections by generation, stale ones closed, refused and
    /// retried logins (see [`AdapterStats`]).
    pub fn stats(&self) -> AdapterStats {
        self.adapter.stats()
    }

    /// The provider the pool follows: its current credential, health and counters.
    pub fn credentials(&self) -> &RotatingCredentials {
        self.adapter.credentials()
    }
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("credentials", self.credentials())
            .field("stats", &self.stats())
            .finish()
    }
}
