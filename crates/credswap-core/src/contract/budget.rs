//! The session budget: a pool's connections and the adapter's probes share its `max_size`.
//!
//! A probe (see [`proof`](super::proof)) opens one connection outside the pool to prove a
//! login. The canary it follows freed a slot, but the pool may fill that slot again while the
//! probe runs (a checkout arrives, nothing idle is left), and for a moment the database sees
//! `max_size + 1` sessions of the pool: a limit someone sized against `max_connections`, a
//! pooler's `pool_size` or a cloud plan.
//!
//! So an adapter that knows its pool's size gives it ([`Adapter::limit_sessions`]), and every
//! session then holds a [`Slot`] of that budget: each connection the
//! [`Connector`](super::Connector) opens keeps one until it ends (in its
//! [`LiveConnection`](super::LiveConnection)), and each probe holds one while it runs. The pool
//! itself never opens more than `max_size`, so its connects wait only for a probe in flight
//! (one connect, some milliseconds) or for a closed connection whose task is still ending (and
//! the grace after it, below).
//! A slot is given back [`SERVER_EXIT_GRACE`] after the connection's task ends: the server
//! ends the session a moment after the client closed it (its backend has to read the
//! terminate message and exit), and a replacement that logged in within that moment would
//! make `max_size + 1` sessions at the server. The grace is a measured compromise, not a proof:
//! tokio-postgres and sqlx close without waiting for the server's end of the socket (which
//! PostgreSQL closes only when the backend has exited), so nothing tells the client when the
//! server is done. 10 ms kept the stress drill (rotations every 200 ms, 128 workers, pools of
//! 4) within `max_size` where 0 ms passed it in most runs; a longer hold delays every
//! replacement by as much.
//! The budget never fails a connect: after [`SLOT_WAIT_MAX`] it opens without a slot and
//! counts it in `AdapterStats::over_budget`. A probe that finds no slot within
//! [`SLOT_WAIT_MAX`] does not run; the next canary tries again.
//!
//! [`Adapter::limit_sessions`]: super::Adapter::limit_sessions

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a closed session's slot stays taken after its task ended: the client has sent the
/// terminate message and closed the socket, and the server's backend still has to read it and
/// exit (on a busy machine, some milliseconds). Without it the replacement's login could
/// complete first, and a sample of `pg_stat_activity` would see `max_size + 1` sessions of
/// the pool (the stress drill did, in most runs).
pub const SERVER_EXIT_GRACE: Duration = Duration::from_millis(10);

/// The longest a connect or a probe waits for a slot of the budget.
pub const SLOT_WAIT_MAX: Duration = Duration::from_secs(2);

/// One adapter's budget: unlimited until the adapter gives its pool's size.
#[derive(Default)]
pub(crate) struct Budget {
    slots: OnceLock<(usize, Arc<Semaphore>)>,
}

impl Budget {
    /// Limits the sessions to `max_size` (set once; later calls change nothing).
    pub(crate) fn limit(&self, max_size: usize) {
        let _ = self
            .slots
            .set((max_size, Arc::new(Semaphore::new(max_size.max(1)))));
    }

    /// The limit, if the adapter gave one.
    pub(crate) fn max_size(&self) -> Option<usize> {
        self.slots.get().map(|(max, _)| *max)
    }

    /// A slot, waiting up to `wait` for one; `None` when the wait ran out. Without a limit the
    /// slot is free and empty.
    pub(crate) async fn slot(&self, wait: Duration) -> Option<Slot> {
        let Some((_, semaphore)) = self.slots.get() else {
            return Some(Slot(None));
        };
        if let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() {
            return Some(Slot(Some(permit)));
        }
        match tokio::time::timeout(wait, Arc::clone(semaphore).acquire_owned()).await {
            Ok(Ok(permit)) => Some(Slot(Some(permit))),
            // The semaphore is never closed; a timeout is the only way here.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// A slot if one is free now, without waiting; an empty one without a limit.
    pub(crate) fn try_slot(&self) -> Option<Slot> {
        let Some((_, semaphore)) = self.slots.get() else {
            return Some(Slot(None));
        };
        Arc::clone(semaphore)
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot(Some(permit)))
    }

    /// Slots free now (the limit when there is none).
    pub(crate) fn available(&self) -> Option<usize> {
        self.slots.get().map(|(_, s)| s.available_permits())
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("max_size", &self.max_size())
            .field("available", &self.available())
            .finish()
    }
}

/// One session's place in its pool's budget, given back when dropped.
#[derive(Default)]
pub struct Slot(Option<OwnedSemaphorePermit>);

impl Slot {
    /// Whether this slot counts against a budget (false without a limit, or over it).
    pub fn is_counted(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Slot").field(&self.is_counted()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_shared_and_given_back() {
        let budget = Budget::default();
        let unlimited = budget.slot(Duration::ZERO).await.expect("no limit");
        assert!(!unlimited.is_counted());
        budget.limit(2);
        budget.limit(5); // set once
        assert_eq!(budget.max_size(), Some(2));
        let a = budget.slot(Duration::ZERO).await.expect("first");
        let b = budget.slot(Duration::ZERO).await.expect("second");
        assert!(a.is_counted() && b.is_counted());
        assert!(
            budget.slot(SLOT_WAIT_MAX).await.is_none(),
            "full: waits, then gives up"
        );
        // A waiter gets the slot given back.
        let waiter = tokio::spawn(async move {
            let budget = budget;
            let slot = budget.slot(SLOT_WAIT_MAX).await;
            (budget, slot.map(|s| s.is_counted()))
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        let (budget, got) = waiter.await.unwrap();
        assert_eq!(got, Some(true));
        assert_eq!(
            budget.available(),
            Some(1),
            "the waiter's slot was dropped with it"
        );
        drop(b);
        assert_eq!(budget.available(), Some(2));
    }
}
