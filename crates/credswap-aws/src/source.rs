//! [`SecretsManagerSource`]: reads `AWSCURRENT` (and `AWSPENDING`) of one secret, asking
//! `DescribeSecret` first so an unchanged secret costs no `GetSecretValue`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use credswap_core::{Credential, CredentialSource, SourceError};

use crate::builder::SecretsManagerSourceBuilder;
use crate::error::{self, NOT_FOUND};
use crate::rotation;
use crate::secret;
use credswap_core::database_secret::{DatabaseSecret, SecretDetails};

/// The staging label of the version in use.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of the version a rotation is moving to.
pub const AWSPENDING: &str = "AWSPENDING";

/// How many calls a [`SecretsManagerSource`] has made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `DescribeSecret` calls (one per fetch, but for the retry of a failed read), also the
    /// failed ones.
    pub describe_calls: u64,
    /// `GetSecretValue` calls, also the failed ones.
    pub get_calls: u64,
    /// Fetches answered from the cache: `AWSCURRENT` (or, for a pending fetch, `AWSPENDING`)
    /// was still the version fetched before.
    pub cache_hits: u64,
}

/// How long the `DescribeSecret` answer of a [`fetch`](CredentialSource::fetch) that saw a
/// version staged `AWSPENDING` also answers the
/// [`fetch_pending`](CredentialSource::fetch_pending) that follows it. While the store rotates,
/// the provider asks for the pending credential right after each refresh's fetch; one answer
/// serves both, once. An answer that saw no pending version is never reused: a refused login
/// asks for the pending credential because the store may have staged one since.
const DESCRIBE_REUSE: Duration = Duration::from_secs(1);

/// How long the `DescribeSecret` answer of a fetch whose `GetSecretValue` failed serves the
/// fetches that try again: they read `AWSCURRENT` straight away, one call instead of two. A
/// fleet learns of a rotation through two calls each; against a throttling store either may
/// fail, and the retries that need only the second fail half as often. The value comes from
/// `GetSecretValue` itself, so it is the current one even if the version moved again; only
/// the schedule and the `AWSPENDING` view are this old, and a pending fetch's own
/// `DescribeSecret` (newer) ends the reuse.
const UNREAD_REUSE: Duration = Duration::from_secs(10);

/// A [`CredentialSource`] reading one AWS Secrets Manager secret.
///
/// Each fetch calls `DescribeSecret` and reads which version carries `AWSCURRENT`; only when
/// that is not a version read before (as `AWSCURRENT`, or as `AWSPENDING` while the rotation
/// ran: a version's value never changes) does it call `GetSecretValue` (with
/// `VersionStage = "AWSCURRENT"`). A pending fetch right after a fetch uses that fetch's
/// `DescribeSecret` answer, so a refresh mid-rotation costs one `DescribeSecret`, not two; and
/// a fetch after one whose `GetSecretValue` failed reads `AWSCURRENT` straight away (for 10 s
/// after that `DescribeSecret`), so its retries against a throttling store make one call each.
/// The credential carries the version id, the version's creation date, and the secret's
/// rotation schedule (`RotationRules`, `NextRotationDate`).
///
/// [`fetch_pending`](CredentialSource::fetch_pending) returns the `AWSPENDING` version while a
/// rotation is under way. See the [crate docs](crate) for the secret formats and how failures
/// are classified.
///
/// `Debug` prints the secret id, the cached version id and the [`Stats`], never a password.
pub struct SecretsManagerSource {
    client: Client,
    secret_id: String,
    username: Option<String>,
    cache: Mutex<Option<Cached>>,
    /// The last `AWSPENDING` version read (a rotation reads it after every refresh).
    pending_cache: Mutex<Option<Cached>>,
    /// Whether the last `DescribeSecret` showed a version staged `AWSPENDING` only.
    rotating: AtomicBool,
    /// The last fetch's `DescribeSecret` answer, for the pending fetch that follows it (taken
    /// once, within [`DESCRIBE_REUSE`], when it saw a pending version).
    last_describe: Mutex<Option<(Instant, DescribeSecretOutput)>>,
    /// The `DescribeSecret` answer of a fetch whose `GetSecretValue` failed, and when it came:
    /// the version it shows current is still to be read (within [`UNREAD_REUSE`], and until
    /// a pending fetch asks `DescribeSecret` itself).
    unread: Mutex<Option<(Instant, DescribeSecretOutput)>>,
    describe_calls: AtomicU64,
    get_calls: AtomicU64,
    cache_hits: AtomicU64,
}

/// The last `AWSCURRENT` version read, without the rotation schedule (that comes fresh from
/// every `DescribeSecret`).
struct Cached {
    version_id: Option<String>,
    secret: DatabaseSecret,
}

impl SecretsManagerSource {
    /// A builder for the secret `secret_id` (its name or ARN).
    pub fn builder(secret_id: impl Into<String>) -> SecretsManagerSourceBuilder {
        SecretsManagerSourceBuilder::new(secret_id.into())
    }

    pub(crate) fn new(client: Client, secret_id: String, username: Option<String>) -> Self {
        Self {
            client,
            secret_id,
            username,
            cache: Mutex::new(None),
            pending_cache: Mutex::new(None),
            rotating: AtomicBool::new(false),
            last_describe: Mutex::new(None),
            unread: Mutex::new(None),
            describe_calls: AtomicU64::new(0),
            get_calls: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// The secret's name or ARN, as given.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The client the source calls.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many calls the source has made.
    pub fn stats(&self) -> Stats {
        Stats {
            describe_calls: self.describe_calls.load(Ordering::Relaxed),
            get_calls: self.get_calls.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// The non-secret fields (host, port, dbname, ...) of the last `AWSCURRENT` version read,
    /// `None` before the first successful fetch.
    pub fn details(&self) -> Option<SecretDetails> {
        self.cache().as_ref().map(|c| c.secret.details().clone())
    }

    /// Reads `AWSCURRENT` like [`fetch`](CredentialSource::fetch), with the secret's
    /// [`SecretDetails`]: build the connect options from it.
    pub async fn fetch_secret(&self) -> Result<DatabaseSecret, SourceError> {
        let unread = lock(&self.unread)
            .take()
            .filter(|(at, _)| at.elapsed() < UNREAD_REUSE);
        let reused = unread.is_some();
        let (described_at, describe) = match unread {
            Some(unread) => unread,
            None => {
                let describe = self.describe().await?;
                (Instant::now(), describe)
            }
        };
        self.rotating.store(
            version_with(&describe, AWSPENDING, Some(AWSCURRENT)).is_some(),
            Ordering::Relaxed,
        );
        let current = version_with(&describe, AWSCURRENT, None);
        let cached = self.cache().as_ref().and_then(|c| {
            (current.is_some() && c.version_id.as_deref() == current).then(|| c.secret.clone())
        });
        // The rotation finished: the version now current is the pending one read before.
        let cached = cached.or_else(|| {
            let pending = lock(&self.pending_cache);
            let promoted = pending
                .as_ref()
                .filter(|c| current.is_some() && c.version_id.as_deref() == current)?;
            *self.cache() = Some(Cached {
                version_id: promoted.version_id.clone(),
                secret: promoted.secret.clone(),
            });
            Some(promoted.secret.clone())
        });
        let secret = match cached {
            Some(secret) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(secret_id = %self.secret_id, version_id = ?current, "AWSCURRENT unchanged; cached credential");
                secret
            }
            None => {
                let output = match self.get(AWSCURRENT, None).await {
                    Ok(output) => output,
                    Err(e) => {
                        *lock(&self.unread) = Some((described_at, describe));
                        return Err(e.into());
                    }
                };
                let version_id = output.version_id().map(str::to_owned);
                let secret = self.parse(&output)?;
                tracing::debug!(secret_id = %self.secret_id, version_id = ?version_id, "read AWSCURRENT");
                *self.cache() = Some(Cached {
                    version_id,
                    secret: secret.clone(),
                });
                secret
            }
        };
        let secret = with_schedule(secret, &describe);
        // For the pending fetch that follows: a fresh answer counts from now (its read may have
        // taken a while), a reused one from when it came.
        let stamp = if reused { described_at } else { Instant::now() };
        *lock(&self.last_describe) = Some((stamp, describe));
        Ok(secret)
    }

    /// Reads the `AWSPENDING` version like [`fetch_pending`](CredentialSource::fetch_pending),
    /// with its [`SecretDetails`].
    pub async fn fetch_pending_secret(&self) -> Result<Option<DatabaseSecret>, SourceError> {
        let fresh = lock(&self.last_describe)
            .take()
            .filter(|(at, describe)| {
                at.elapsed() < DESCRIBE_REUSE
                    && version_with(describe, AWSPENDING, Some(AWSCURRENT)).is_some()
            })
            .map(|(_, describe)| describe);
        let describe = match fresh {
            Some(describe) => describe,
            None => {
                let describe = self.describe().await?;
                // Newer than the answer a failed read left: the next fetch asks again.
                lock(&self.unread).take();
                describe
            }
        };
        let Some(pending) = version_with(&describe, AWSPENDING, Some(AWSCURRENT)) else {
            self.rotating.store(false, Ordering::Relaxed);
            return Ok(None);
        };
        self.rotating.store(true, Ordering::Relaxed);
        let pending = pending.to_owned();
        let cached = lock(&self.pending_cache)
            .as_ref()
            .and_then(|c| (c.version_id.as_deref() == Some(&pending)).then(|| c.secret.clone()));
        if let Some(secret) = cached {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(with_schedule(secret, &describe)));
        }
        let output = match self.get(AWSPENDING, Some(&pending)).await {
            Ok(output) => output,
            // The rotation finished (or was abandoned) between the two calls.
            Err(Missing) => return Ok(None),
            Err(Failed(e)) => return Err(e),
        };
        let secret = self.parse(&output)?;
        tracing::debug!(secret_id = %self.secret_id, version_id = %pending, "read AWSPENDING");
        *lock(&self.pending_cache) = Some(Cached {
            version_id: Some(pending),
            secret: secret.clone(),
        });
        Ok(Some(with_schedule(secret, &describe)))
    }

    fn cache(&self) -> MutexGuard<'_, Option<Cached>> {
        lock(&self.cache)
    }

    async fn describe(&self) -> Result<DescribeSecretOutput, SourceError> {
        self.describe_calls.fetch_add(1, Ordering::Relaxed);
        self.client
            .describe_secret()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| error::classify("DescribeSecret", &self.secret_id, &e))
    }

    async fn get(
        &self,
        stage: &str,
        version_id: Option<&str>,
    ) -> Result<GetSecretValueOutput, GetFailure> {
        self.get_calls.fetch_add(1, Ordering::Relaxed);
        self.client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| {
                if version_id.is_some() && error::has_code(&e, NOT_FOUND) {
                    Missing
                } else {
                    Failed(error::classify(
                        &format!("GetSecretValue ({stage})"),
                        &self.secret_id,
                        &e,
                    ))
                }
            })
    }

    fn parse(&self, output: &GetSecretValueOutput) -> Result<DatabaseSecret, SourceError> {
        let text = match (output.secret_string(), output.secret_binary()) {
            (Some(text), _) => text,
            (None, Some(_)) => {
                return Err(SourceError::malformed(format!(
                    "secret \"{}\" holds SecretBinary, not SecretString: store the credential \
                     as a JSON SecretString",
                    self.secret_id
                )));
            }
            (None, None) => {
                return Err(SourceError::malformed(format!(
                    "secret \"{}\" version {} has no value (neither SecretString nor \
                     SecretBinary)",
                    self.secret_id,
                    output.version_id().unwrap_or("(unknown)")
                )));
            }
        };
        let secret = secret::parse(text, self.username.as_deref()).map_err(|e| {
            SourceError::malformed(format!(
                "secret \"{}\" version {}: {}",
                self.secret_id,
                output.version_id().unwrap_or("(unknown)"),
                e.message()
            ))
        })?;
        Ok(secret.map_credential(|mut credential| {
            if let Some(version_id) = output.version_id() {
                credential = credential.with_version(version_id);
            }
            if let Some(created) = output
                .created_date()
                .and_then(|d| SystemTime::try_from(*d).ok())
            {
                credential = credential.with_issued_at(created);
            }
            credential
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding the lock leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A failed `GetSecretValue` of a version asked for by id.
enum GetFailure {
    /// `ResourceNotFoundException`: that version no longer has the stage.
    Missing,
    Failed(SourceError),
}
use GetFailure::{Failed, Missing};

impl From<GetFailure> for SourceError {
    fn from(f: GetFailure) -> Self {
        match f {
            Missing => SourceError::other("the secret version was not found"),
            Failed(e) => e,
        }
    }
}

/// The version id carrying `stage` (and not `unless`), per `VersionIdsToStages`.
fn version_with<'a>(
    describe: &'a DescribeSecretOutput,
    stage: &str,
    unless: Option<&str>,
) -> Option<&'a str> {
    describe
        .version_ids_to_stages()?
        .iter()
        .find(|(_, stages)| {
            stages.iter().any(|s| s == stage)
                && !unless.is_some_and(|u| stages.iter().any(|s| s == u))
        })
        .map(|(id, _)| id.as_str())
}

/// Adds the secret's rotation schedule to the credential.
fn with_schedule(secret: DatabaseSecret, describe: &DescribeSecretOutput) -> DatabaseSecret {
    secret.map_credential(|mut credential| {
        if let Some(interval) = rotation::rotation_interval(describe) {
            credential = credential.with_rotation_interval(interval);
        }
        if let Some(at) = rotation::next_rotation_at(describe) {
            credential = credential.with_next_rotation_at(at);
        }
        credential
    })
}

#[async_trait]
impl CredentialSource for SecretsManagerSource {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        Ok(self.fetch_secret().await?.into_parts().0)
    }

    async fn fetch_pending(&self) -> Result<Option<Credential>, SourceError> {
        Ok(self.fetch_pending_secret().await?.map(|s| s.into_parts().0))
    }

    fn rotation_pending(&self) -> bool {
        self.rotating.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for SecretsManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.cache().as_ref().and_then(|c| c.version_id.clone());
        f.debug_struct("SecretsManagerSource")
            .field("secret_id", &self.secret_id)
            .field("username", &self.username)
            .field("cached_version_id", &version)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_pick_versions() {
        let describe = DescribeSecretOutput::builder()
            .version_ids_to_stages("v1", vec!["AWSPREVIOUS".to_owned()])
            .version_ids_to_stages("v2", vec![AWSCURRENT.to_owned()])
            .version_ids_to_stages("v3", vec![AWSPENDING.to_owned()])
            .build();
        assert_eq!(version_with(&describe, AWSCURRENT, None), Some("v2"));
        assert_eq!(
            version_with(&describe, AWSPENDING, Some(AWSCURRENT)),
            Some("v3")
        );
        let finished = DescribeSecretOutput::builder()
            .version_ids_to_stages("v3", vec![AWSCURRENT.to_owned(), AWSPENDING.to_owned()])
            .build();
        assert_eq!(version_with(&finished, AWSPENDING, Some(AWSCURRENT)), None);
        assert_eq!(
            version_with(&DescribeSecretOutput::builder().build(), AWSCURRENT, None),
            None
        );
    }
}
