//! The drain schedule: when an adapter's watcher looks for stale connections again.
//!
//! After a generation change, idle stale connections are closed at once; busy ones are closed
//! when returned. Where the pool tells the adapter about returns (a hook), that is exact. Where
//! it does not, the watcher sweeps every [`SWEEP`] while stale connections remain. Otherwise it
//! wakes at least every [`IDLE`] (to notice a closed pool and a lease renewal, which moves the
//! retirement point without a change notification), and exactly at a lease's retirement point.

use std::time::Duration;

use tokio::time::Instant;

use crate::Snapshot;

/// While stale connections remain, sweep this often, so each closes soon after its return.
pub const SWEEP: Duration = Duration::from_millis(25);

/// Otherwise wake at least this often.
pub const IDLE: Duration = Duration::from_secs(1);

/// While the store is rotating (the provider holds a pending credential), a watcher that wakes
/// only on changes wakes this often too, to give a due pending trial its canary (see
/// [`proof`](super::proof)).
pub const PENDING_POLL: Duration = Duration::from_millis(250);

/// How long a watcher waits before its next sweep: [`SWEEP`] while `stale_left`, otherwise
/// until `current`'s retirement point if that comes within [`IDLE`], otherwise [`IDLE`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use credswap_core::contract::drain;
/// use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
///
/// let credentials =
///     RotatingCredentials::new(MemorySource::new(Credential::new("app", "pw")), Policy::default())
///         .await?;
/// let current = credentials.current();
/// assert_eq!(drain::next_sweep(&current, true), drain::SWEEP);
/// assert_eq!(drain::next_sweep(&current, false), drain::IDLE);
/// # Ok(()) }
/// ```
pub fn next_sweep(current: &Snapshot, stale_left: bool) -> Duration {
    if stale_left {
        return SWEEP;
    }
    current
        .retire_at()
        .map(|at| at.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
        .map_or(IDLE, |left| left.min(IDLE))
}
