//! `credswap drill --source vault-dynamic|vault-static`: the applications read a real OpenBao
//! (`bao server -dev`, started for the drill) through `credswap_vault::VaultSource`, and Vault
//! itself changes the credential: a new database user per lease (dynamic role, revoked by Vault
//! at its `max_ttl`) or a new password every `rotation_period` (static role).
//!
//! Nobody but Vault rotates here, so the scenario engine runs only the workers (no rotator); a
//! monitor of its own samples `pg_stat_activity` and Vault: each new user (dynamic) or Vault
//! rotation (static) is a rotation; sessions of an older credential still open 1 s after it are
//! `stale`; and sessions whose role Vault has dropped (`usename` NULL) are `revoked`: the
//! revocation ended the user while the pool still held a session of it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{BoxError, Credential, CredentialSource, Policy};
use credswap_testkit::scenario::{self, Progress, Rotate, RotationMarks, ScenarioConfig, Strategy};
use credswap_testkit::{FaultProxy, TestBao, TestPostgres, random_password, unique_name};
use credswap_vault::kind::SourceKind;
use credswap_vault::{BuildError, VaultSource, VaultSourceBuilder};

use crate::adapters::{self, App};
use crate::cli::{AdapterName, DrillArgs, ScenarioName, SourceName};
use crate::drill::Run;
use crate::output::ProgressDisplay;

/// How often the monitor samples `pg_stat_activity`.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How often the monitor asks Vault for a static role's last rotation.
const POLL_VAULT_EVERY: Duration = Duration::from_millis(100);
/// The application's cache TTL, as in the other drills.
const APP_REFRESH: Duration = Duration::from_millis(250);
/// `--fleet`: the static role's own `rotation_period`. The fleet drill rotates the role itself
/// (`database/rotate-role`) on `--rotate-every`; Vault's schedule never comes within a run.
const FLEET_ROTATION_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// Which Vault role the drill reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `database/creds/ROLE`: a new user per lease.
    Dynamic,
    /// `database/static-creds/ROLE`: one user, its password rotated by Vault.
    Static,
}

impl Kind {
    pub fn from_source(source: SourceName) -> Option<Kind> {
        match source {
            SourceName::VaultDynamic => Some(Kind::Dynamic),
            SourceName::VaultStatic => Some(Kind::Static),
            _ => None,
        }
    }

    /// The strategy column.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Dynamic => "dynamic",
            Kind::Static => "static",
        }
    }
}

/// The Vault timings of the drill.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease_ttl: Duration,
    pub lease_max_ttl: Duration,
    pub rotation_period: Duration,
}

impl Timings {
    /// Refresh, and retire a lease's connections, this long before it ends; the source issues
    /// the next user then: half the lease, at most 1 s.
    fn margin(&self) -> Duration {
        (self.lease_ttl / 2).min(Duration::from_secs(1))
    }
}

/// An OpenBao dev server with the database engine on the drill's PostgreSQL.
pub struct World {
    /// Shared with a fleet's rotator, which calls `database/rotate-role` from the scenario's task.
    bao: Arc<TestBao>,
    kind: Kind,
    timings: Timings,
}

impl World {
    /// Starts OpenBao for a drill with `args`' lease and rotation timings, saying so on
    /// stderr; `None` once the error is printed.
    pub async fn start_for(pg: &TestPostgres, kind: Kind, args: &DrillArgs) -> Option<World> {
        eprintln!("starting OpenBao (bao server -dev) with the database secrets engine...");
        let timings = Timings {
            lease_ttl: args.lease_ttl,
            lease_max_ttl: args.lease_max_ttl,
            rotation_period: args.rotation_period,
        };
        match World::start(pg, kind, timings).await {
            Ok(world) => {
                eprintln!("OpenBao at {}", world.address());
                Some(world)
            }
            Err(e) => {
                eprintln!("error: {e}");
                None
            }
        }
    }

    pub async fn start(pg: &TestPostgres, kind: Kind, timings: Timings) -> Result<World, BoxError> {
        let bao = TestBao::start().await?;
        bao.enable_database(pg).await?;
        Ok(World {
            bao: Arc::new(bao),
            kind,
            timings,
        })
    }

    /// The server itself, for a fleet's rotator.
    pub fn bao(&self) -> Arc<TestBao> {
        Arc::clone(&self.bao)
    }

    /// `--fleet`: a fault proxy in front of OpenBao, answering in Vault's words (HTTP 429 with
    /// `{"errors":["rate limit quota exceeded"]}` when it throttles).
    pub async fn fault_proxy(&self) -> Result<FaultProxy, credswap_testkit::Error> {
        self.bao.faulty().await
    }

    /// `--fleet`: a fresh login role and a static role over it for one fleet run, with Vault's
    /// own rotation a day away (the drill rotates it); the role's name and its first credential
    /// (read as root).
    pub async fn fleet_static_role(
        &self,
        pg: &TestPostgres,
    ) -> Result<(String, Credential), BoxError> {
        let name = unique_name("fs");
        pg.create_login_role(&name, &random_password()).await?;
        self.bao
            .create_static_role(&name, &name, FLEET_ROTATION_PERIOD)
            .await?;
        let initial = self
            .as_root(VaultSource::static_role("database", &name))?
            .fetch()
            .await?;
        Ok((name, initial))
    }

    /// `--fleet`: a Vault token of one instance's own, as each pod logs in for itself: a child
    /// of the root token (`auth/token/create`, root's policies, a TTL of a day, so nothing
    /// renews it within a run).
    pub async fn instance_token(&self, instance: usize) -> Result<String, BoxError> {
        let answer = self
            .bao
            .request(
                "POST",
                "auth/token/create",
                Some(&serde_json::json!({
                    "display_name": format!("fleet-{instance}"),
                    "ttl": "24h",
                })),
            )
            .await?;
        answer["auth"]["client_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "auth/token/create answered without auth.client_token".into())
    }

    /// `--fleet`: one instance's source over the static role `role`: its own HTTP client (the
    /// builder's default, a client per source) and `token`, at `address` (OpenBao's, or the
    /// fault proxy's).
    pub fn fleet_static_source(
        role: &str,
        address: &str,
        token: String,
    ) -> Result<VaultSource, BuildError> {
        VaultSource::static_role("database", role)
            .address(address)
            .token(token)
            .build()
    }

    /// `--fleet --source vault-dynamic`: a fresh dynamic role whose users live `lifetime` (its
    /// `default_ttl` and `max_ttl` alike: a lease is never renewed past it); its name.
    pub async fn fleet_dynamic_role(&self, lifetime: Duration) -> Result<String, BoxError> {
        // Vault's username template keeps 8 characters of the role name: make them unique.
        let name = unique_name("fd");
        self.bao
            .create_dynamic_role(&name, lifetime, lifetime)
            .await?;
        Ok(name)
    }

    /// `--fleet --source vault-dynamic`: one instance's source over the dynamic role `role`,
    /// replacing its user `margin` before the lease ends; its own HTTP client and `token`, at
    /// `address` (OpenBao's, or the fault proxy's).
    pub fn fleet_dynamic_source(
        role: &str,
        address: &str,
        token: String,
        margin: Duration,
    ) -> Result<VaultSource, BuildError> {
        VaultSource::dynamic_role("database", role)
            .address(address)
            .token(token)
            .lease_margin(margin)
            .build()
    }

    /// `--fleet --source vault-dynamic`: deletes a run's dynamic role (once the instances
    /// revoked their leases: Vault would revoke hundreds in one call slower than its timeout).
    pub async fn drop_dynamic_role(&self, role: &str) {
        let _ = self
            .bao
            .request("DELETE", &format!("database/roles/{role}"), None)
            .await;
    }

    /// `--fleet`: removes a run's static role (its login role stays, unused).
    pub async fn drop_static_role(&self, role: &str) {
        let _ = self
            .bao
            .request("DELETE", &format!("database/static-roles/{role}"), None)
            .await;
    }

    pub fn address(&self) -> String {
        self.bao.address()
    }

    /// The header of the table.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Dynamic => format!(
                "source: OpenBao dynamic role (lease {}, max_ttl {}, a new user {} before it ends)",
                humantime::format_duration(self.timings.lease_ttl),
                humantime::format_duration(self.timings.lease_max_ttl),
                humantime::format_duration(self.timings.margin()),
            ),
            Kind::Static => format!(
                "source: OpenBao static role (Vault rotates the password every {})",
                humantime::format_duration(self.timings.rotation_period)
            ),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The application's provider policy.
    fn policy(&self) -> Result<Policy, credswap_core::PolicyError> {
        let builder = Policy::builder()
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .refresh_interval(APP_REFRESH);
        match self.kind {
            Kind::Dynamic => builder.expiry_margin(self.timings.margin()).build(),
            Kind::Static => builder.build(),
        }
    }

    /// A fresh Vault role for one run and the source over it.
    async fn prepare(&self, pg: &TestPostgres) -> Result<Prepared, BoxError> {
        // Vault's default username template keeps 8 characters of the role name
        // (`v-token-<role:8>-<random>-<time>`): make them unique.
        let name = unique_name("d");
        let source = match self.kind {
            Kind::Dynamic => {
                self.bao
                    .create_dynamic_role(&name, self.timings.lease_ttl, self.timings.lease_max_ttl)
                    .await?;
                self.as_root(
                    VaultSource::dynamic_role("database", &name)
                        .lease_margin(self.timings.margin()),
                )?
            }
            Kind::Static => {
                pg.create_login_role(&name, &random_password()).await?;
                self.bao
                    .create_static_role(&name, &name, self.timings.rotation_period)
                    .await?;
                self.as_root(VaultSource::static_role("database", &name))?
            }
        };
        let source = Arc::new(source);
        let initial = source.fetch().await?;
        Ok(Prepared {
            app: App {
                source: Arc::clone(&source) as Arc<dyn CredentialSource>,
                initial,
            },
            source,
            role: name,
        })
    }

    /// The source of `builder` on the test server, as root.
    fn as_root<K: SourceKind>(
        &self,
        builder: VaultSourceBuilder<K>,
    ) -> Result<VaultSource, BuildError> {
        builder
            .address(self.bao.address())
            .token(self.bao.root_token().to_owned())
            .build()
    }

    /// `last_vault_rotation` of a static role.
    async fn last_rotation(&self, role: &str) -> Option<String> {
        let answer = self
            .bao
            .request("GET", &format!("database/static-creds/{role}"), None)
            .await
            .ok()?;
        answer["data"]["last_vault_rotation"]
            .as_str()
            .map(str::to_owned)
    }

    async fn cleanup(&self, prepared: &Prepared) {
        match self.kind {
            Kind::Dynamic => {
                if let Err(e) = prepared.source.revoke_leases().await {
                    eprintln!("warning: revoking the run's leases failed: {e}");
                }
            }
            Kind::Static => {
                let _ = self
                    .bao
                    .request(
                        "DELETE",
                        &format!("database/static-roles/{}", prepared.role),
                        None,
                    )
                    .await;
            }
        }
    }
}

struct Prepared {
    app: App,
    source: Arc<VaultSource>,
    role: String,
}

/// The scenario's rotator when Vault rotates: it never runs (`rotate_every` is off).
struct VaultRotates(Strategy);

#[async_trait]
impl Rotate for VaultRotates {
    fn strategy(&self) -> Strategy {
        self.0
    }
    fn roles(&self) -> Vec<String> {
        Vec::new()
    }
    async fn rotate(&mut self, _marks: &RotationMarks) -> Result<(), BoxError> {
        Ok(())
    }
}

/// One adapter's run against Vault.
pub async fn run_one(
    pg: &TestPostgres,
    world: &World,
    adapter: AdapterName,
    config: &ScenarioConfig,
    query: &adapters::Query,
) -> Result<Run, BoxError> {
    let prepared = world.prepare(pg).await?;
    let pool = adapters::build(
        adapter,
        pg,
        &prepared.app,
        world.policy()?,
        config.pool_max_size,
        query.clone(),
    )
    .await?;
    let progress = Arc::new(Progress::default());
    let label = format!("{} / vault-{}", adapter.as_str(), world.kind.label());
    let display = ProgressDisplay::start(
        label,
        config.duration,
        Arc::clone(&progress),
        Arc::clone(&pool.generation),
    );
    let monitor = Monitor::start(pg, world, &prepared, config, Arc::clone(&progress)).await?;
    let workload = Arc::clone(&pool.workload);
    // The workers only: Vault rotates, not the scenario.
    let workers_config = ScenarioConfig {
        rotate_every: None,
        ..config.clone()
    };
    // Strategy is only a report field here; the table shows the Vault kind instead.
    let strategy = match world.kind {
        Kind::Dynamic => Strategy::AlternatingUsers,
        Kind::Static => Strategy::SingleUser,
    };
    let result = scenario::run_with(
        pg,
        VaultRotates(strategy),
        workload,
        &workers_config,
        Arc::clone(&progress),
    )
    .await;
    // The sessions' last grace after the workers stop.
    tokio::time::sleep(config.drain_grace + Duration::from_millis(100)).await;
    let seen = monitor.finish().await?;
    display.finish(result.as_ref().ok());
    let pending_connects = pool.stats.as_ref().map(|stats| stats().pending_connects);
    let store_calls = (pool.store_calls)();
    (pool.close)();
    drop(pool.workload);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The run's users are new (a fresh static role; dynamic users Vault made for a fresh role,
    // as seen in pg_stat_activity): every refusal in the logs is this run's.
    let server_refused_logins = match world.kind {
        Kind::Static => pg.refused_logins(&prepared.role),
        Kind::Dynamic => seen.users.iter().map(|user| pg.refused_logins(user)).sum(),
    };
    world.cleanup(&prepared).await;
    let mut report = result?;
    report.rotations = seen.rotations;
    report.peak_backends = seen.peak;
    report.stale_after_drain = seen.stale;
    report.max_drain_ms = seen.max_drain.as_secs_f64() * 1000.0;
    report.mean_rotation_interval_ms = seen.mean_interval_ms();
    let stats = prepared.source.stats();
    let note = match world.kind {
        Kind::Dynamic => format!(
            "{} users issued, {} lease renewals ({} failed); {} sessions of revoked users",
            stats.leases_issued, stats.lease_renewals, stats.lease_renewal_failures, seen.revoked
        ),
        Kind::Static => format!(
            "{} rotations by Vault, {} reads",
            seen.rotations, stats.reads
        ),
    };
    Ok(Run {
        adapter,
        source: match world.kind {
            Kind::Dynamic => SourceName::VaultDynamic,
            Kind::Static => SourceName::VaultStatic,
        },
        strategy_label: Some(world.kind.label()),
        report,
        pending_connects,
        rotation_note: Some(note),
        revoked_sessions: Some(seen.revoked),
        scenario: ScenarioName::Normal,
        server_refused_logins,
        store_calls,
        token_refreshes: None,
        sessions_closed_by_refresh: None,
        expired_logins: None,
    })
}

/// What the monitor saw.
#[derive(Debug, Default)]
struct Seen {
    rotations: u64,
    peak: usize,
    stale: usize,
    max_drain: Duration,
    revoked: usize,
    rotation_times: Vec<SystemTime>,
    /// Dynamic: the users seen logged in (for their refused logins).
    users: Vec<String>,
}

impl Seen {
    fn mean_interval_ms(&self) -> f64 {
        match (self.rotation_times.first(), self.rotation_times.last()) {
            (Some(first), Some(last)) if self.rotation_times.len() >= 2 => {
                last.duration_since(*first)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1000.0
                    / (self.rotation_times.len() - 1) as f64
            }
            _ => 0.0,
        }
    }
}

/// One rotation as the monitor tracks it.
struct Mark {
    /// Sessions opened before it, of an older credential, are the old ones.
    at: SystemTime,
    /// Dynamic: the new user (old sessions are those of other users).
    user: Option<String>,
    drained_at: Option<SystemTime>,
    stale_at_grace: Option<usize>,
}

struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Seen, BoxError>>,
}

impl Monitor {
    async fn start(
        pg: &TestPostgres,
        world: &World,
        prepared: &Prepared,
        config: &ScenarioConfig,
        progress: Arc<Progress>,
    ) -> Result<Monitor, BoxError> {
        let client = pg.admin().await?;
        let database = pg.database().to_owned();
        let baseline = sessions_without_role(&client).await?;
        let kind = world.kind;
        let grace = config.drain_grace;
        let role = prepared.role.clone();
        let first_user = prepared.app.initial.username().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let vault = VaultPoll(match kind {
            Kind::Static => Some(
                VaultSource::static_role("database", &role)
                    .address(world.bao.address())
                    .token(world.bao.root_token().to_owned())
                    .timeout(Duration::from_secs(2))
                    .build()?,
            ),
            Kind::Dynamic => None,
        });
        let mut last_rotation = match kind {
            Kind::Static => world.last_rotation(&role).await,
            Kind::Dynamic => None,
        };
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut marks: Vec<Mark> = Vec::new();
                let mut users: HashSet<String> = HashSet::from([first_user]);
                let mut oids: HashMap<i64, String> = HashMap::new();
                let mut revoked: HashSet<i32> = HashSet::new();
                let mut next_poll = tokio::time::Instant::now();
                let mut ticker = tokio::time::interval(SAMPLE_EVERY);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    if kind == Kind::Static && tokio::time::Instant::now() >= next_poll {
                        next_poll = tokio::time::Instant::now() + POLL_VAULT_EVERY;
                        let now = vault.last_rotation().await;
                        if now.is_some() && now != last_rotation {
                            let at = now
                                .as_deref()
                                .and_then(|t| {
                                    humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok()
                                })
                                .unwrap_or_else(SystemTime::now);
                            last_rotation = now;
                            marks.push(Mark {
                                at,
                                user: None,
                                drained_at: None,
                                stale_at_grace: None,
                            });
                            progress.count_rotation();
                        }
                    }
                    let rows = client
                        .query(
                            "SELECT pid, usesysid::int8, usename::text, backend_start \
                             FROM pg_stat_activity WHERE backend_type = 'client backend' \
                             AND datname = $1 AND pid <> pg_backend_pid() \
                             AND backend_start IS NOT NULL",
                            &[&database],
                        )
                        .await?;
                    let now = SystemTime::now();
                    // (user, started) of the application's sessions; user None: its role is gone.
                    let mut sessions: Vec<(Option<String>, SystemTime)> = Vec::new();
                    for row in &rows {
                        let pid: i32 = row.get(0);
                        let oid: Option<i64> = row.get(1);
                        let name: Option<String> = row.get(2);
                        let started: SystemTime = row.get(3);
                        match name {
                            Some(name) if is_app_user(kind, &role, &name) => {
                                if let Some(oid) = oid {
                                    oids.insert(oid, name.clone());
                                }
                                if kind == Kind::Dynamic && users.insert(name.clone()) {
                                    marks.push(Mark {
                                        at: now,
                                        user: Some(name.clone()),
                                        drained_at: None,
                                        stale_at_grace: None,
                                    });
                                    progress.count_rotation();
                                }
                                sessions.push((Some(name), started));
                            }
                            Some(_) => {}
                            None if baseline.contains(&pid) => {}
                            None => {
                                // The role was dropped (Vault revoked the lease) while the
                                // session stayed open.
                                revoked.insert(pid);
                                let user = oid.and_then(|o| oids.get(&o).cloned());
                                sessions.push((user.or(Some(String::new())), started));
                            }
                        }
                    }
                    seen.peak = seen.peak.max(sessions.len());
                    for mark in &mut marks {
                        let old = sessions
                            .iter()
                            .filter(|(user, started)| match &mark.user {
                                // Dynamic: a session of any other user (or of a dropped role).
                                Some(new) => {
                                    user.as_deref() != Some(new.as_str()) && *started < mark.at
                                }
                                // Static: opened before the rotation, with the old password.
                                None => *started < mark.at,
                            })
                            .count();
                        if mark.drained_at.is_none() && old == 0 {
                            mark.drained_at = Some(now);
                        }
                        if mark.stale_at_grace.is_none()
                            && now.duration_since(mark.at).unwrap_or_default() >= grace
                        {
                            mark.stale_at_grace = Some(old);
                        }
                    }
                }
                let end = SystemTime::now();
                seen.rotations = marks.len() as u64;
                seen.rotation_times = marks.iter().map(|m| m.at).collect();
                seen.stale = marks
                    .iter()
                    .filter_map(|m| m.stale_at_grace)
                    .max()
                    .unwrap_or(0);
                seen.max_drain = marks
                    .iter()
                    .map(|m| {
                        m.drained_at
                            .unwrap_or(end)
                            .duration_since(m.at)
                            .unwrap_or_default()
                    })
                    .max()
                    .unwrap_or_default();
                seen.revoked = revoked.len();
                seen.users = users.into_iter().collect();
                Ok(seen)
            })
        };
        Ok(Monitor { stop, task })
    }

    async fn finish(self) -> Result<Seen, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| format!("the monitor task failed: {e}"))?
    }
}

/// The server's sessions whose role is gone (`usename` NULL) before a run: an earlier run's,
/// not this one's, when the monitor counts sessions that outlived their user.
pub async fn sessions_without_role(
    client: &tokio_postgres::Client,
) -> Result<HashSet<i32>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND usename IS NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Whether `name` is one of the run's application users: the static role's user, or a user
/// Vault created for the dynamic role (`v-<auth:8>-<role:8>-<random>-<time>`).
pub fn is_app_user(kind: Kind, role: &str, name: &str) -> bool {
    match kind {
        Kind::Static => name == role,
        Kind::Dynamic => {
            let short: String = role.chars().take(8).collect();
            name.starts_with("v-") && name.contains(&format!("-{short}-"))
        }
    }
}

/// Reads a static role's last rotation (the credential's version) from the monitor's task.
struct VaultPoll(Option<VaultSource>);

impl VaultPoll {
    async fn last_rotation(&self) -> Option<String> {
        let credential = self.0.as_ref()?.fetch().await.ok()?;
        credential.version().map(str::to_owned)
    }
}
