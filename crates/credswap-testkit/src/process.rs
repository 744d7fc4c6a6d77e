//! The child processes the test kit starts beside PostgreSQL (PgBouncer, moto).

use std::process::Child;
use std::time::{Duration, Instant};

/// How long a killed process may take to exit before a warning.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Kills `child` unless it has exited already, and reaps it. Never panics; `name` is for the
/// warning when it does not exit.
pub(crate) fn kill_and_reap(mut child: Child, name: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = child.kill();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::warn!(pid = child.id(), "{name} did not exit after SIGKILL");
}
