//! [`Rotation`]: the handle every adapter returns beside its pool.

use std::fmt;
use std::sync::Arc;

use super::stats::{AdapterStats, Counters};
use crate::RotatingCredentials;

/// The handle an adapter returns beside its pool: the provider the pool follows and the
/// adapter's counters. The same type for every adapter.
///
/// Cheap to clone. Dropping it changes nothing: the pool keeps following the credential.
#[derive(Clone)]
pub struct Rotation {
    credentials: RotatingCredentials,
    counters: Arc<Counters>,
}

impl Rotation {
    /// A handle for a new adapter over `credentials`, with zeroed counters.
    pub fn new(credentials: RotatingCredentials) -> Self {
        Self {
            credentials,
            counters: Arc::default(),
        }
    }

    /// The adapter's counters.
    pub fn stats(&self) -> AdapterStats {
        self.counters.snapshot(self.credentials.generation())
    }

    /// The provider the pool follows.
    pub fn credentials(&self) -> &RotatingCredentials {
        &self.credentials
    }

    /// The counters themselves, for the adapter's own code.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("credentials", &self.credentials)
            .field("stats", &self.stats())
            .finish()
    }
}
