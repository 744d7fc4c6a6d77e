use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use credswap_core::{Generation, Snapshot};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::Error;
use crate::state::{State, lock};

/// A pooled tokio-postgres connection that knows which credential it authenticated with.
///
/// Derefs to [`tokio_postgres::Client`], so code written against `bb8-postgres` keeps calling
/// `conn.query(..)`, `conn.transaction()`, `conn.prepare(..)` unchanged; a function that takes a
/// `&Client` accepts `&conn` by deref coercion, and [`client`](Self::client) names it
/// explicitly (for example for `tokio_postgres::GenericClient`, which only `Client` implements).
pub struct RotatingConnection {
    client: Client,
    pub(crate) tag: Arc<Tag>,
}

impl RotatingConnection {
    pub(crate) fn new(client: Client, tag: Arc<Tag>) -> Self {
        Self { client, tag }
    }

    /// The generation of the credential this connection authenticated with.
    pub fn generation(&self) -> Generation {
        self.tag.generation
    }

    /// When the connect that opened this connection began.
    pub fn opened_at(&self) -> Instant {
        self.tag.opened_at
    }

    /// The tokio-postgres client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The tokio-postgres client, mutably (for `transaction()`).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Keeps this connection open across generation changes until it is dropped or returned to
    /// a pool; returns `false` if it was already closed.
    ///
    /// Only for a connection from `Pool::dedicated_connection` (say, a `LISTEN` session or a
    /// long migration): bb8 opens it through the same `connect` as a pooled connection that
    /// waits in the idle queue, so by default it is closed as soon as the credential rotates,
    /// like an idle one. A connection checked out with `Pool::get` needs no call: it is busy
    /// until returned.
    pub fn keep_open_on_rotation(&self) -> bool {
        let mut phase = lock(&self.tag.phase);
        if *phase == Phase::Retired {
            return false;
        }
        *phase = Phase::Busy;
        !self.client.is_closed()
    }

    pub(crate) fn client_is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Deref for RotatingConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for RotatingConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl fmt::Debug for RotatingConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingConnection")
            .field("generation", &self.tag.generation)
            .field("opened_at", &self.tag.opened_at)
            .field("phase", &*lock(&self.tag.phase))
            .field("closed", &self.client.is_closed())
            .finish()
    }
}

/// Where a connection is, as far as the manager can tell from bb8's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In the pool's idle queue: new from `connect`, or returned and accepted by `has_broken`.
    Idle,
    /// Checked out: `is_valid` accepted it (or `keep_open_on_rotation`).
    Busy,
    /// Closed, or condemned, because its credential is stale. Final.
    Retired,
}

/// What a connection and its task share: the generation it authenticated with, and its phase.
///
/// Every decision to retire a connection (the task's, `is_valid`'s, `has_broken`'s) and every
/// phase change is made under the one `phase` lock, so a connection is never closed by its task
/// while a checkout holds it, and a connection returned while the generation changes is either
/// refused by `has_broken` or closed by its task (see `driver`).
pub(crate) struct Tag {
    pub(crate) generation: Generation,
    pub(crate) opened_at: Instant,
    phase: Mutex<Phase>,
}

impl Tag {
    pub(crate) fn new(generation: Generation, opened_at: Instant) -> Self {
        Self {
            generation,
            opened_at,
            phase: Mutex::new(Phase::Idle),
        }
    }

    /// Whether a connection with this tag must be closed rather than handed out or kept idle:
    /// it authenticated with an older generation, or its credential's lease is ending
    /// (`expires_at - expiry_margin` has passed and it was opened before that point; one opened
    /// later, because the store has no replacement yet, is kept rather than reopened per request).
    pub(crate) fn is_stale(&self, current: &Snapshot) -> bool {
        if self.generation != current.generation() {
            return true;
        }
        current
            .retire_at()
            .is_some_and(|at| Instant::now() >= at && self.opened_at < at)
    }

    /// `is_valid`: accepts the connection as checked out, or refuses it as stale.
    pub(crate) fn check_out(&self, current: &Snapshot, state: &State) -> Result<(), Error> {
        let mut phase = lock(&self.phase);
        if *phase == Phase::Retired {
            return Err(Error::stale(self.generation, current.generation()));
        }
        if self.is_stale(current) {
            *phase = Phase::Retired;
            state.stale_closed.fetch_add(1, Ordering::Relaxed);
            return Err(Error::stale(self.generation, current.generation()));
        }
        *phase = Phase::Busy;
        Ok(())
    }

    /// `has_broken`: whether a returned connection must be closed (closed, or stale); else it
    /// goes back to the idle queue.
    pub(crate) fn check_in(&self, client_closed: bool, current: &Snapshot, state: &State) -> bool {
        let mut phase = lock(&self.phase);
        match *phase {
            Phase::Retired => return true,
            Phase::Idle => state.note_unvalidated_return(),
            Phase::Busy => {}
        }
        if self.is_stale(current) {
            *phase = Phase::Retired;
            state.stale_closed.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if client_closed {
            *phase = Phase::Retired;
            return true;
        }
        *phase = Phase::Idle;
        false
    }

    /// The connection's own task: retires the connection if it is idle and stale. Only once
    /// checkouts are known to be validated; see `driver`.
    pub(crate) fn retire_if_idle(&self, current: &Snapshot, state: &State) -> bool {
        let mut phase = lock(&self.phase);
        if *phase != Phase::Idle || !state.checkouts_validated() || !self.is_stale(current) {
            return false;
        }
        *phase = Phase::Retired;
        state.stale_closed.fetch_add(1, Ordering::Relaxed);
        state.stale_closed_idle.fetch_add(1, Ordering::Relaxed);
        true
    }
}
