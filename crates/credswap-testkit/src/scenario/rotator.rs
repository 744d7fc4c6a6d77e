//! The rotator: rotates the credential on schedule with real SQL, as a store's rotation job does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use credswap_core::Credential;
use tokio::time::Instant;

use super::{Progress, RotationMark, RotationSetup, ScenarioConfig, Strategy};
use crate::{Error, random_password};

/// Rotates on schedule until `deadline`; returns how many rotations it made.
pub(super) async fn rotate(
    admin: tokio_postgres::Config,
    setup: RotationSetup,
    config: ScenarioConfig,
    deadline: Instant,
    marks: Arc<std::sync::Mutex<Vec<RotationMark>>>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<u64, Error> {
    let Some(every) = config.rotate_every else {
        return Ok(0);
    };
    let (client, connection) = admin
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::query("the rotator could not connect as admin", e))?;
    tokio::spawn(connection);
    let overlap = config.overlap.unwrap_or(every / 2);
    let mut active = 0usize;
    let mut rotations = 0u64;
    let mut next = Instant::now() + every;
    while next < deadline && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += every;
        let password = random_password();
        match setup.strategy {
            Strategy::AlternatingUsers => {
                let incoming = 1 - active;
                let (new_role, old_role) =
                    (setup.roles[incoming].clone(), setup.roles[active].clone());
                // Provision before revoke: the inactive role gets its new password first.
                set_password(&client, &new_role, &password).await?;
                let at = SystemTime::now();
                mark(&marks, at);
                setup.store.set(Credential::new(new_role, password));
                active = incoming;
                // After the overlap the retired role's secret is revoked. Done here, in order,
                // so a late revocation can never clobber the next rotation's new password.
                tokio::time::sleep(overlap).await;
                set_password(&client, &old_role, &random_password()).await?;
            }
            Strategy::SingleUser => {
                let role = setup.roles[0].clone();
                let at = SystemTime::now();
                mark(&marks, at);
                // The database first; the store learns of it a moment later.
                set_password(&client, &role, &password).await?;
                tokio::time::sleep(config.store_lag).await;
                setup.store.set(Credential::new(role, password));
            }
        }
        rotations += 1;
        progress.rotations.fetch_add(1, Ordering::Relaxed);
    }
    Ok(rotations)
}

fn mark(marks: &std::sync::Mutex<Vec<RotationMark>>, at: SystemTime) {
    marks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(RotationMark {
            at,
            at_instant: Instant::now(),
            drained_at: None,
            stale_at_grace: None,
        });
}

async fn set_password(
    client: &tokio_postgres::Client,
    role: &str,
    password: &str,
) -> Result<(), Error> {
    crate::roles::alter_password(client, role, password).await
}
