//! Prove before drain: old connections are retired only once the new login has been accepted.
//!
//! A new generation is *proven* when the database accepts it: a connection opened with it, or
//! the validator passed. Until then the connections of the last proven login keep serving (a
//! mistyped secret must not take a working pool down), and the drain lets one of them go now
//! and then, a *canary*, to make room for a connection that proves or refutes the new login:
//! at once after the change, a quick retry 250 ms later, then after 1 s, 2 s, 4 s, ... up to
//! [`CANARY_MAX`].
//! After an idle canary the adapter opens one connection with the new login through its
//! *probe*, outside the pool, within the pool's session budget (see [`budget`](super::budget)),
//! and closes it again.
//!
//! Once the database has refused the new login, a canary is spent only from a full pool. A pool
//! below its size (one whose canary was refused and not replaced, or one that never filled) is
//! probed in its free place instead, on the same schedule, and keeps every working connection:
//! when the database refuses the new login and the last proven one too (a single-user rotation
//! that went on while the store could not be read), nothing could replace a canary, and a
//! canary after each refusal would empty a pool that a plain pool's sessions would have kept
//! serving.
//!
//! While the store is rotating and has a pending credential
//! ([`CredentialSource::rotation_pending`](crate::CredentialSource::rotation_pending)), the
//! current login is proven and works, but the database may already have the pending one (a
//! single-user rotation between its setSecret and finishSecret). Canaries then try the pending
//! login instead, a *pending trial*: at once, then after 250 ms, 500 ms, 1 s, 2 s, 4 s, every
//! [`PENDING_TRIAL_MAX`] after that, for the policy's `pending_trial_window` (30 s by default)
//! after the store created the pending version. An idle canary is followed by a probe that
//! logs in with the current login first and with the pending one only when the database
//! refuses the current one; a busy one by the pool's own connect with the current login,
//! which tries the pending login when refused. So a trial before setSecret costs a successful
//! login, not a refused one, and after setSecret the one refusal a plain pool's next connect
//! would meet. Once the database accepts the pending login, the provider publishes it and the
//! old sessions drain, before the store finishes. A pending version older than the window is a stuck rotation: each trial
//! would be one more login the database refuses (what security tooling alerts on, across a
//! fleet a steady storm), so it is no longer tried until the store changes it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::classify::Failure;
use crate::{Generation, Snapshot};

/// The first canary comes at once, and a second this soon after it, in case the first missed:
/// the drill's single-user runs showed, about once in ten, every old session held past a
/// one-second drain until the second canary (the cause is not pinned down).
pub const CANARY_QUICK_RETRY: Duration = Duration::from_millis(250);

/// After the quick retry, canaries come this far apart, doubling up to [`CANARY_MAX`]: a login
/// the database keeps refusing (a mistyped secret) costs one working connection per interval,
/// so the schedule backs off fast.
pub const CANARY_FIRST_INTERVAL: Duration = Duration::from_secs(1);

/// The longest time between two canaries while the new login stays unproven.
pub const CANARY_MAX: Duration = Duration::from_secs(30);

/// The first pending trial comes at once; then they come this far apart, doubling.
pub const PENDING_TRIAL_FIRST_INTERVAL: Duration = Duration::from_millis(250);

/// The longest time between two pending trials. Doubling from 250 ms, a default trial window
/// of 30 s holds eight trials; the refused-login path bridges a setSecret that comes later.
pub const PENDING_TRIAL_MAX: Duration = Duration::from_secs(8);

/// What a probe returns: `Ok(())` when the database accepted the login.
pub(crate) type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// Opens one connection with the snapshot's login and closes it.
pub(crate) type Probe = Arc<dyn Fn(Arc<Snapshot>) -> ProbeFuture + Send + Sync>;

/// The proof state of one adapter: its canary schedule and its probe.
#[derive(Default)]
pub(crate) struct Proof {
    canary: Mutex<Canary>,
    probe: OnceLock<Probe>,
    probing: AtomicBool,
}

#[derive(Default)]
struct Canary {
    generation: Option<Generation>,
    /// Whether the schedule is a pending trial's: a pending login that becomes the current one
    /// (the store finished) keeps its generation, and starts the unproven login's schedule.
    pending: bool,
    next_at: Option<Instant>,
    interval: Duration,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("probe", &self.probe.get().is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proof {
    pub(crate) fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// Whether a canary is due now for `login` (and takes it): the current login while it is
    /// unproven, or the store's pending one (`pending`), each on its own schedule.
    pub(crate) fn take_canary(&self, login: &Snapshot, pending: bool, now: Instant) -> bool {
        // The gap after the first, the gap after the second (then doubling), the cap.
        let (first, second, max) = if pending {
            (
                PENDING_TRIAL_FIRST_INTERVAL,
                PENDING_TRIAL_FIRST_INTERVAL * 2,
                PENDING_TRIAL_MAX,
            )
        } else {
            (CANARY_QUICK_RETRY, CANARY_FIRST_INTERVAL, CANARY_MAX)
        };
        let mut canary = lock(&self.canary);
        if canary.generation != Some(login.generation()) || canary.pending != pending {
            canary.generation = Some(login.generation());
            canary.pending = pending;
            canary.next_at = None;
            canary.interval = first;
        }
        if canary.next_at.is_some_and(|at| now < at) {
            return false;
        }
        canary.next_at = Some(now + canary.interval);
        canary.interval = if canary.interval == first {
            second
        } else {
            canary.interval * 2
        }
        .min(max);
        true
    }

    pub(crate) fn probe(&self) -> Option<Probe> {
        self.probe.get().cloned()
    }

    pub(crate) fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn done_probing(&self) {
        self.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credential, MemorySource, Policy, RotatingCredentials};

    /// The instants (ms after the first call, polled every 10 ms for 8 s) at which a canary is
    /// taken for one login.
    fn schedule(proof: &Proof, login: &Snapshot, pending: bool) -> Vec<u128> {
        let start = Instant::now();
        (0..800)
            .map(|i| start + Duration::from_millis(i * 10))
            .filter(|&now| proof.take_canary(login, pending, now))
            .map(|now| (now - start).as_millis())
            .collect()
    }

    #[tokio::test]
    async fn canaries_retry_quickly_once_then_back_off() {
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new("app", "pw")),
            Policy::default(),
        )
        .await
        .unwrap();
        let login = credentials.current();
        assert_eq!(
            schedule(&Proof::default(), &login, false),
            [0, 250, 1250, 3250, 7250]
        );
        assert_eq!(
            schedule(&Proof::default(), &login, true),
            [0, 250, 750, 1750, 3750, 7750]
        );
        // A pending login the store then makes current keeps its generation: its unproven
        // schedule starts afresh, not where the trials left off.
        let proof = Proof::default();
        let start = Instant::now();
        assert!(proof.take_canary(&login, true, start));
        assert!(!proof.take_canary(&login, true, start + Duration::from_millis(100)));
        assert!(proof.take_canary(&login, false, start + Duration::from_millis(100)));
    }
}
