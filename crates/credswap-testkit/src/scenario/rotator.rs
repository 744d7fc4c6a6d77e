//! The rotator: the seam ([`Rotate`], [`RotationMarks`]) and the built-in one, which rotates
//! with real SQL and a [`MemorySource`](credswap_core::MemorySource) as a store's rotation job
//! does.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{BoxError, Credential};
use tokio::time::Instant;

use super::{Progress, RotationMark, RotationSetup, ScenarioConfig, Strategy};
use crate::random_password;

/// Rotates the application's credential, one rotation per call: the database and the store the
/// application reads, never the application's provider. [`run_with`](super::run_with) calls it
/// on the scenario's schedule.
///
/// The built-in one ([`run`](super::run)) changes passwords with `ALTER ROLE` and points a
/// [`MemorySource`](credswap_core::MemorySource) at the new credential; another can drive a real
/// secret store (the CLI plugs AWS Secrets Manager and its rotation protocol in here).
#[async_trait]
pub trait Rotate: Send + 'static {
    /// The strategy, for the report.
    fn strategy(&self) -> Strategy;

    /// The application's login roles: the sampler counts their sessions in
    /// `pg_stat_activity`. Read once, before the first rotation; list roles a rotation will
    /// create too.
    fn roles(&self) -> Vec<String>;

    /// The `application_name` of the sessions the rotator itself opens as the application's
    /// roles (a rotation protocol that logs in as the user to change or test its password), so
    /// the sampler does not count them as the pool's. `None` (the default): it opens none.
    fn own_application_name(&self) -> Option<String> {
        None
    }

    /// One rotation. Call [`RotationMarks::mark`] once, at the instant from which sessions
    /// opened earlier belong to the old credential, and from which their drain is timed (single
    /// user: when the database has the new password, its `ALTER ROLE` returned; alternating
    /// users: when the store points at the other user); when it is not called the
    /// engine marks the rotation's end. An error ends the scenario with that error.
    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError>;
}

/// Where a [`Rotate`] records the instant of each rotation; the sampler measures the drain
/// from it.
#[derive(Clone, Default)]
pub struct RotationMarks {
    inner: Arc<Mutex<Vec<RotationMark>>>,
}

impl RotationMarks {
    /// Records this instant as the current rotation's: sessions of the application's roles
    /// opened before it are old, and stale when still open `drain_grace` later.
    pub fn mark(&self) {
        self.lock().push(RotationMark {
            at: SystemTime::now(),
            at_instant: Instant::now(),
            drained_at: None,
            stale_at_grace: None,
        });
    }

    /// Records a rotation whose old credential's sessions are those opened before
    /// `opened_before`, with the drain measured from now: for a rotation in which the database
    /// changed (at `opened_before`) before the store said so (now), such as Secrets Manager's
    /// single-user setSecret..finishSecret window.
    pub fn mark_since(&self, opened_before: SystemTime) {
        self.lock().push(RotationMark {
            at: opened_before,
            at_instant: Instant::now(),
            drained_at: None,
            stale_at_grace: None,
        });
    }

    /// Rotations marked so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no rotation was marked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RotationMark>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for RotationMarks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationMarks")
            .field("marked", &self.len())
            .finish()
    }
}

/// Calls `rotator` on schedule until `deadline` (a rotation that overruns the interval delays
/// the next one: no catch-up burst); returns how many rotations it made and when each began.
pub(super) async fn drive<R: Rotate>(
    mut rotator: R,
    every: Option<Duration>,
    deadline: Instant,
    marks: RotationMarks,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<(u64, Vec<Instant>), BoxError> {
    let Some(every) = every else {
        return Ok((0, Vec::new()));
    };
    let mut rotations = 0u64;
    let mut starts = Vec::new();
    let mut next = Instant::now() + every;
    while next < deadline && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        let began = Instant::now();
        starts.push(began);
        let before = marks.len();
        rotator.rotate(&marks).await?;
        if marks.len() == before {
            marks.mark();
        }
        rotations += 1;
        progress.count_rotation();
        next = (next + every).max(Instant::now());
    }
    Ok((rotations, starts))
}

/// The built-in rotator: real `ALTER ROLE` on the roles of a [`RotationSetup`], and its
/// `MemorySource` as the store.
pub(super) struct MemoryRotator {
    admin: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
    setup: RotationSetup,
    overlap: Duration,
    store_lag: Duration,
    active: usize,
}

impl MemoryRotator {
    pub(super) fn new(
        admin: tokio_postgres::Config,
        setup: RotationSetup,
        config: &ScenarioConfig,
    ) -> Self {
        let every = config.rotate_every.unwrap_or(Duration::from_secs(1));
        Self {
            admin,
            client: None,
            setup,
            overlap: config.overlap.unwrap_or(every / 2),
            store_lag: config.store_lag,
            active: 0,
        }
    }

    async fn client(&mut self) -> Result<&tokio_postgres::Client, BoxError> {
        if self.client.is_none() {
            let (client, connection) = self
                .admin
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| crate::Error::query("the rotator could not connect as admin", e))?;
            tokio::spawn(connection);
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }
}

#[async_trait]
impl Rotate for MemoryRotator {
    fn strategy(&self) -> Strategy {
        self.setup.strategy
    }

    fn roles(&self) -> Vec<String> {
        self.setup.roles.clone()
    }

    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        let password = random_password();
        match self.setup.strategy {
            Strategy::AlternatingUsers => {
                let incoming = 1 - self.active;
                let (new_role, old_role) = (
                    self.setup.roles[incoming].clone(),
                    self.setup.roles[self.active].clone(),
                );
                // Provision before revoke: the inactive role gets its new password first.
                set_password(self.client().await?, &new_role, &password).await?;
                marks.mark();
                self.setup.store.set(Credential::new(new_role, password));
                self.active = incoming;
                // After the overlap the retired role's secret is revoked. Done here, in order,
                // so a late revocation can never clobber the next rotation's new password.
                tokio::time::sleep(self.overlap).await;
                set_password(self.client().await?, &old_role, &random_password()).await?;
            }
            Strategy::SingleUser => {
                let role = self.setup.roles[0].clone();
                // The database first; the store learns of it a moment later. The rotation's
                // instant is when the `ALTER ROLE` returned: the database has the new password
                // from then on, and every session opened before it is of the old one. Marked
                // before the statement, a server slow to answer it (seen on a busy two-core
                // machine: 1-2.6 s, in runs whose requests had a p99 of a few milliseconds)
                // counted its own time against the pool's drain, before the pool could know
                // anything.
                let sent = Instant::now();
                set_password(self.client().await?, &role, &password).await?;
                marks.mark();
                tracing::debug!(
                    alter_ms = sent.elapsed().as_millis() as u64,
                    "rotation: the database has the new password"
                );
                tokio::time::sleep(self.store_lag).await;
                self.setup.store.set(Credential::new(role, password));
                tracing::debug!("rotation: the store has the new password");
            }
        }
        Ok(())
    }
}

async fn set_password(
    client: &tokio_postgres::Client,
    role: &str,
    password: &str,
) -> Result<(), BoxError> {
    Ok(crate::roles::alter_password(client, role, password).await?)
}
