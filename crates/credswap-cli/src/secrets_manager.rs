//! `credswap drill --source aws`: the applications read AWS Secrets Manager (a local moto)
//! through `credswap_aws::SecretsManagerSource`, and `credswap_rotate::Rotator` rotates the
//! secret with the four-step protocol, plugged into the scenario engine as its [`Rotate`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use credswap_aws::SecretsManagerSource;
use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_core::{BoxError, Credential};
use credswap_rotate::{Master, Rotator, SessionPolicy};
use credswap_testkit::scenario::{Rotate, RotationMarks, ScenarioConfig, Strategy};
use credswap_testkit::{TestMoto, TestPostgres, random_password, unique_name};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::adapters::App;
use crate::aws;
use crate::cli::ScenarioName;

/// Alternating users: how long setSecret waits for sessions still logged in as the inactive
/// user (clients that have not followed the previous rotation) before the rotation fails.
const SESSIONS_WAIT: Duration = Duration::from_secs(5);

/// The `application_name` of credswap-rotate's database sessions.
const ROTATOR_APPLICATION_NAME: &str = "credswap-rotate";

/// `--scenario revert`: how often setSecret is tried when its session is terminated under it
/// (the role's sessions are terminated every 2 s, the rotator's included).
const SET_SECRET_ATTEMPTS: u32 = 5;

/// A moto server and a client for it, for every run of one drill.
pub struct World {
    moto: TestMoto,
    config: SdkConfig,
    pause: Duration,
}

impl World {
    /// Starts moto; `pause` is the single-user pause before finishSecret.
    pub async fn start(pause: Duration) -> Result<World, credswap_testkit::Error> {
        let moto = TestMoto::start().await?;
        let config = moto.sdk_config().await;
        Ok(World {
            moto,
            config,
            pause,
        })
    }

    pub fn endpoint_url(&self) -> String {
        self.moto.endpoint_url()
    }

    pub fn pause(&self) -> Duration {
        self.pause
    }

    fn client(&self) -> Client {
        Client::new(&self.config)
    }

    /// The SDK config of moto (endpoint, region, dummy credentials): a fleet builds a client of
    /// its own per instance from it.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// A fault proxy in front of moto (`--store-throttle`, `--store-latency`).
    pub async fn fault_proxy(
        &self,
    ) -> Result<credswap_testkit::FaultProxy, credswap_testkit::Error> {
        self.moto.faulty().await
    }

    /// The role (single user: a fresh login role; alternating users: a fresh login role whose
    /// `_clone` the first rotation creates) and its secret for one run; the application's source
    /// and the rotator over them.
    ///
    /// `scenario` says what each rotation does; `pg` is kept by the rotator for `revert` (the
    /// database gets the AWSCURRENT password back); `config` gives `stuck-pending` the run's
    /// schedule (its one rotation holds the rotator until the run ends).
    pub async fn prepare(
        &self,
        pg: &Arc<TestPostgres>,
        strategy: Strategy,
        scenario: ScenarioName,
        config: &ScenarioConfig,
    ) -> Result<(App, SecretsManagerRotator), BoxError> {
        let role = unique_name(match strategy {
            Strategy::AlternatingUsers => "alt",
            Strategy::SingleUser => "single",
        });
        let password = random_password();
        pg.create_login_role(&role, &password).await?;
        let password = SecretString::from(password);
        let name = format!("credswap-drill/{role}");
        let client = self.client();
        aws::create_secret(&client, &name, aws::rds_secret_json(pg, &role, &password)).await?;

        let source = SecretsManagerSource::builder(&name)
            .client(client.clone())
            .build()?;
        let app = App {
            source: Arc::new(source),
            initial: Credential::new(role.clone(), password.clone()),
        };
        let (rotate_strategy, roles, pause) = match strategy {
            Strategy::SingleUser => (
                credswap_rotate::Strategy::SingleUser,
                vec![role],
                self.pause,
            ),
            Strategy::AlternatingUsers => {
                let admin = pg.admin_config();
                let username = admin
                    .get_user()
                    .ok_or("the PostgreSQL admin login has no user name")?
                    .to_owned();
                let password = admin
                    .get_password()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .ok_or("the PostgreSQL admin login has no password (needed as the master)")?;
                let clone = credswap_rotate::alternate_username(&role)?;
                (
                    credswap_rotate::Strategy::AlternatingUsers(Master::Login {
                        username,
                        password: SecretString::from(password),
                    }),
                    vec![role, clone],
                    Duration::ZERO,
                )
            }
        };
        let rotator = Rotator::new(client, name.clone(), rotate_strategy)
            .session_policy(SessionPolicy::Wait(SESSIONS_WAIT))
            .pause_before_finish(pause);
        Ok((
            app,
            SecretsManagerRotator {
                rotator,
                secret_id: name.clone(),
                strategy,
                roles,
                log: Arc::default(),
                scenario: match scenario {
                    ScenarioName::Normal => Scenario::Normal,
                    ScenarioName::StuckPending => Scenario::StuckPending {
                        every: config.rotate_every.unwrap_or(Duration::from_secs(1)),
                        duration: config.duration,
                        staged: false,
                    },
                    ScenarioName::Revert => Scenario::Revert {
                        pg: Arc::clone(pg),
                        client: self.client(),
                        secret_id: name.clone(),
                        current_password: password,
                        pause,
                    },
                },
            },
        ))
    }
}

/// What the rotations of one run did, for the drill's notes.
#[derive(Debug, Default, Clone)]
pub struct RotationLog {
    pub rotations: u64,
    pub created_role: Option<String>,
    /// Rotations whose setSecret found sessions still logged in as the inactive user.
    pub rotations_with_sessions: u64,
    /// The most such sessions one setSecret found.
    pub max_sessions: usize,
    /// The longest setSecret waited for them.
    pub max_waited: Duration,
    /// The slowest whole rotation (pause included).
    pub max_rotation: Duration,
    /// `--scenario stuck-pending`: the version createSecret staged as AWSPENDING, and when
    /// (since the rotator's first call).
    pub stuck_version: Option<String>,
    /// `--scenario revert`: rotations reverted after setSecret.
    pub reverted: u64,
    /// `--scenario revert`: setSecret attempts repeated because the session terminations
    /// ended the rotator's own session.
    pub set_secret_retries: u64,
}

impl RotationLog {
    /// One line for the drill's output.
    pub fn describe(&self) -> String {
        if let Some(version) = &self.stuck_version {
            return format!(
                "createSecret staged version {version} as AWSPENDING at the first rotation; the \
                 rotation went no further (the database never got that password, AWSPENDING \
                 stayed to the end)"
            );
        }
        if self.reverted > 0 {
            let mut text = format!(
                "{} rotations reverted after setSecret by hand (AWSCURRENT's password back in the \
                 database, AWSPENDING removed), the slowest {} ms",
                self.reverted,
                self.max_rotation.as_millis()
            );
            if self.set_secret_retries > 0 {
                text.push_str(&format!(
                    "; setSecret repeated {} time(s) after a termination ended its session",
                    self.set_secret_retries
                ));
            }
            return text;
        }
        let mut text = format!(
            "{} rotations by credswap-rotate, the slowest {} ms",
            self.rotations,
            self.max_rotation.as_millis()
        );
        if let Some(role) = &self.created_role {
            text.push_str(&format!("; created {role}"));
        }
        if self.rotations_with_sessions > 0 {
            text.push_str(&format!(
                "; {} setSecret(s) found sessions of the inactive user (at most {}, waited up to {} ms)",
                self.rotations_with_sessions,
                self.max_sessions,
                self.max_waited.as_millis()
            ));
        }
        text
    }
}

/// [`Rotate`] over `credswap_rotate::Rotator::rotate`: each rotation is marked at finishSecret
/// (when AWSCURRENT changes), with the sessions opened before it began as the old ones.
pub struct SecretsManagerRotator {
    rotator: Rotator,
    /// The secret's name.
    secret_id: String,
    strategy: Strategy,
    roles: Vec<String>,
    log: Arc<Mutex<RotationLog>>,
    scenario: Scenario,
}

/// What a rotation does (`--scenario`).
enum Scenario {
    /// The four steps.
    Normal,
    /// createSecret at the first rotation, then nothing: the call holds until the run's end,
    /// so the engine starts no other.
    StuckPending {
        every: Duration,
        duration: Duration,
        staged: bool,
    },
    /// createSecret, setSecret, the pause, then the operator's rollback.
    Revert {
        pg: Arc<TestPostgres>,
        client: Client,
        secret_id: String,
        /// AWSCURRENT's password (it never changes: no rotation finishes).
        current_password: SecretString,
        pause: Duration,
    },
}

impl SecretsManagerRotator {
    /// What the rotations did, readable after the run.
    pub fn log(&self) -> Arc<Mutex<RotationLog>> {
        Arc::clone(&self.log)
    }

    /// The name of the secret it rotates.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }
}

#[async_trait]
impl Rotate for SecretsManagerRotator {
    fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn roles(&self) -> Vec<String> {
        self.roles.clone()
    }

    /// The rotator logs in as the application's roles (setSecret as the current user, testSecret
    /// as the pending one): those sessions are not the pool's.
    fn own_application_name(&self) -> Option<String> {
        Some(ROTATOR_APPLICATION_NAME.to_owned())
    }

    async fn rotate(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        match &mut self.scenario {
            Scenario::Normal => self.rotate_normal(marks).await,
            Scenario::StuckPending {
                every,
                duration,
                staged,
            } => {
                // The database's password never changes: no session is old (the mark's
                // "opened before" is the epoch), so there is no drain to judge.
                marks.mark_since(SystemTime::UNIX_EPOCH);
                if *staged {
                    return Ok(());
                }
                *staged = true;
                let first_call = Instant::now();
                let token = credswap_rotate::new_token();
                self.rotator.create_secret(&token).await?;
                {
                    let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                    log.rotations += 1;
                    log.stuck_version = Some(token);
                }
                // The engine calls the first rotation `every` after its start and ends the run
                // `duration` after it: hold until then, so that it calls no other.
                tokio::time::sleep_until(first_call + duration.saturating_sub(*every)).await;
                Ok(())
            }
            Scenario::Revert {
                pg,
                client,
                secret_id,
                current_password,
                pause,
            } => {
                marks.mark_since(SystemTime::UNIX_EPOCH);
                let began = Instant::now();
                let token = credswap_rotate::new_token();
                self.rotator.create_secret(&token).await?;
                let mut attempt = 1;
                loop {
                    match self.rotator.set_secret(&token).await {
                        Ok(_) => break,
                        Err(e) if attempt < SET_SECRET_ATTEMPTS && e.is_database() => {
                            attempt += 1;
                            self.log
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .set_secret_retries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                tokio::time::sleep(*pause).await;
                // The operator's rollback: the database first, then the store.
                let role = self.roles.first().ok_or("the run has no role")?;
                pg.set_password(role, current_password.expose_secret())
                    .await?;
                client
                    .update_secret_version_stage()
                    .secret_id(secret_id.as_str())
                    .version_stage("AWSPENDING")
                    .remove_from_version_id(&token)
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "UpdateSecretVersionStage (removing AWSPENDING) failed: {}",
                            credswap_aws::aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                        )
                    })?;
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                log.rotations += 1;
                log.reverted += 1;
                log.max_rotation = log.max_rotation.max(began.elapsed());
                Ok(())
            }
        }
    }
}

impl SecretsManagerRotator {
    /// `--scenario normal`: `Rotator::rotate`, the four steps.
    async fn rotate_normal(&mut self, marks: &RotationMarks) -> Result<(), BoxError> {
        let began = tokio::time::Instant::now();
        let old_sessions_before = std::time::SystemTime::now();
        let report = self.rotator.rotate().await?;
        // The sessions of the old credential are those opened before the rotation began (a
        // session opened in a single-user rotation's setSecret..finishSecret window used the
        // pending credential: the `pending` column); the rotation ends at finishSecret, when the
        // store says the new credential, and the old sessions must be gone within the drain
        // grace from then. Through the window they keep serving (PostgreSQL keeps a session
        // whose password changed).
        marks.mark_since(old_sessions_before);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.rotations += 1;
        log.max_rotation = log.max_rotation.max(began.elapsed());
        if report.created_role {
            log.created_role = Some(report.username.clone());
        }
        if let Some(found) = report.sessions.as_ref().filter(|s| s.found > 0) {
            log.rotations_with_sessions += 1;
            log.max_sessions = log.max_sessions.max(found.found);
            log.max_waited = log.max_waited.max(found.waited);
        }
        Ok(())
    }
}
