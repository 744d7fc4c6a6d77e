//! `credswap drill --source minted`: the applications read short-lived tokens for one stable
//! login, as with RDS IAM or Aurora DSQL, from a local [`TokenGate`]: every fetch mints a new
//! token, installs it as the role's password (only the newest token logs in) and returns it.
//! Each token lives 2 × `--rotate-every` and the provider renews it `--rotate-every` before its
//! end: a new token every `--rotate-every`.
//!
//! Two runs per adapter, on the same kind of gate:
//!
//! - `minted`: the tokens as they are, [minted](Credential::minted) credentials. A new token is
//!   no rotation: the generation stays and no session is closed for it.
//! - `per-token`: the same tokens handed over as plain credentials ([`Credential::new`], same
//!   `expires_at`), which is what a library without minted credentials sees: every token is a
//!   new generation, so the pool drains and reopens every session per token.
//!
//! Nobody rotates but the provider's own renewals, so the scenario engine runs the workers
//! without a rotator (its sampler still counts the role's backends); a monitor of its own
//! samples `(pid, backend_start)` of the role's sessions every 50 ms and counts the sessions
//! that ended while the workers ran. No other cause of churn is configured (no session age,
//! no idle timeout within a run), so each of them was closed because of a token.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credswap_core::{BoxError, Credential, CredentialSource, Policy, SourceError};
use credswap_testkit::scenario::{self, Progress, Rotate, RotationMarks, ScenarioConfig, Strategy};
use credswap_testkit::{TestPostgres, TokenGate, unique_name};
use secrecy::ExposeSecret;
use tokio::time::Instant;

use crate::adapters::{self, App};
use crate::cli::{AdapterName, ScenarioName, SourceName};
use crate::drill::Run;
use crate::output::ProgressDisplay;

/// How often the monitor samples the role's sessions (and the gate's token count).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How the application sees the gate's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As minted credentials: a new token for the same login.
    Minted,
    /// As plain credentials: every token a new password, a new generation.
    PerToken,
}

impl Mode {
    pub const BOTH: [Mode; 2] = [Mode::Minted, Mode::PerToken];

    /// The strategy column.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Minted => "minted",
            Mode::PerToken => "per-token",
        }
    }
}

/// The token timings of a drill: tokens live `2 × every`, renewed `every` before their end.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub every: Duration,
}

impl Timings {
    pub fn life(self) -> Duration {
        self.every * 2
    }

    pub fn margin(self) -> Duration {
        self.every
    }

    /// The header of the table.
    pub fn describe(self) -> String {
        format!(
            "source: a local token gate standing in for RDS IAM / Aurora DSQL (each token lives \
             {} and is renewed {} before its end; only the newest token logs in)",
            humantime::format_duration(self.life()),
            humantime::format_duration(self.margin()),
        )
    }

    /// The application's provider policy: renew `margin` before a token's end; the cache TTL is
    /// long, so that tokens come from the renewals only (every fetch of the gate mints one).
    fn policy(self) -> Result<Policy, credswap_core::PolicyError> {
        Policy::builder()
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .refresh_interval(Duration::from_secs(300))
            .expiry_margin(self.margin())
            .build()
    }
}

/// The gate's tokens as plain credentials: what a library without minted credentials does
/// with a token (a password like any other).
struct PerToken(TokenGate);

#[async_trait]
impl CredentialSource for PerToken {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        let token = self.0.fetch().await?;
        let mut plain = Credential::new(
            token.username().to_owned(),
            token.password().expose_secret().to_owned(),
        );
        if let Some(at) = token.issued_at() {
            plain = plain.with_issued_at(at);
        }
        if let Some(at) = token.expires_at() {
            plain = plain.with_expires_at(at);
        }
        Ok(plain)
    }
}

/// The scenario's rotator here: it never runs (`rotate_every` is off); it names the role for
/// the engine's backend sampler.
struct TokensRotate(String);

#[async_trait]
impl Rotate for TokensRotate {
    fn strategy(&self) -> Strategy {
        Strategy::SingleUser
    }
    fn roles(&self) -> Vec<String> {
        vec![self.0.clone()]
    }
    async fn rotate(&mut self, _marks: &RotationMarks) -> Result<(), BoxError> {
        Ok(())
    }
}

/// One adapter's run in one mode.
pub async fn run_one(
    pg: &TestPostgres,
    adapter: AdapterName,
    mode: Mode,
    timings: Timings,
    config: &ScenarioConfig,
    query: &adapters::Query,
) -> Result<Run, BoxError> {
    let role = unique_name("minted");
    let gate = TokenGate::new(pg, &role, timings.life(), timings.margin()).await?;
    let source: Arc<dyn CredentialSource> = match mode {
        Mode::Minted => Arc::new(gate.clone()),
        Mode::PerToken => Arc::new(PerToken(gate.clone())),
    };
    // The peers are not run with this source; `initial` is for them only. The provider mints
    // its own first token when the pool is built, and only tokens minted while the workers run
    // are counted.
    let initial = source.fetch().await?;
    let app = App { source, initial };
    let pool = adapters::build(
        adapter,
        pg,
        &app,
        timings.policy()?,
        config.pool_max_size,
        query.clone(),
    )
    .await?;
    drop(app);
    let progress = Arc::new(Progress::default());
    let label = format!("{} / {}", adapter.as_str(), mode.label());
    let display = ProgressDisplay::start_with(
        label,
        config.duration,
        Arc::clone(&progress),
        Arc::clone(&pool.generation),
        pool.stats.clone(),
    );
    let provider_before = pool.provider_stats.as_ref().map(|stats| stats());
    let monitor = Monitor::start(pg, &gate, Arc::clone(&progress)).await?;
    let workload = Arc::clone(&pool.workload);
    // The workers only: the provider's renewals bring the tokens, not the scenario.
    let workers_config = ScenarioConfig {
        rotate_every: None,
        ..config.clone()
    };
    let result = scenario::run_with(
        pg,
        TokensRotate(role.clone()),
        workload,
        &workers_config,
        Arc::clone(&progress),
    )
    .await;
    // The workers have stopped: sessions gone from here on are not the run's.
    let seen = monitor.finish().await?;
    let tokens = seen.tokens.len() as u64;
    // The tokens are the run's rotations (for the table and the plot); the engine saw none, and
    // its drain measures do not apply (the closed sessions are counted instead).
    let result = result.map(|mut report| {
        report.rotations = tokens;
        report.timeline.rotations = seen
            .tokens
            .iter()
            .map(|at| at.saturating_duration_since(seen.started))
            .collect();
        report.mean_rotation_interval_ms = mean_interval_ms(&seen.tokens);
        report.stale_after_drain = 0;
        report.max_drain_ms = 0.0;
        report.p99_ms_rotating = 0.0;
        report
    });
    display.finish(result.as_ref().ok());
    let pending_connects = pool.stats.as_ref().map(|stats| stats().pending_connects);
    let store_calls = (pool.store_calls)();
    let provider_after = pool.provider_stats.as_ref().map(|stats| stats());
    (pool.close)();
    drop(pool.workload);
    // Let the closed pool's sessions end before the next run, and the log have the run's last
    // refusals.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The role is the run's own: every refusal in the log is this run's.
    let server_refused_logins = pg.refused_logins(&role);
    let expired_logins = pg.expired_logins(&role);
    let report = result?;
    let closed = seen.closed;
    let mut note = format!(
        "the gate minted {tokens} tokens; {closed} sessions closed ({} per token, pool max_size \
         {})",
        per_token(closed, tokens),
        config.pool_max_size
    );
    if let (Some(before), Some(after)) = (provider_before, provider_after) {
        note.push_str(&format!(
            "; provider: {} token refreshes, {} rotations",
            after.token_refreshes.saturating_sub(before.token_refreshes),
            after.rotations.saturating_sub(before.rotations)
        ));
    }
    Ok(Run {
        adapter,
        source: SourceName::Minted,
        report,
        pending_connects,
        rotation_note: Some(note),
        strategy_label: Some(mode.label()),
        revoked_sessions: None,
        scenario: ScenarioName::Normal,
        server_refused_logins,
        store_calls,
        token_refreshes: Some(tokens),
        sessions_closed_by_refresh: Some(closed),
        expired_logins,
    })
}

/// `closed / tokens` with one decimal, `-` without tokens.
fn per_token(closed: usize, tokens: u64) -> String {
    if tokens == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}", closed as f64 / tokens as f64)
    }
}

fn mean_interval_ms(times: &[Instant]) -> f64 {
    match (times.first(), times.last()) {
        (Some(first), Some(last)) if times.len() >= 2 => {
            (*last - *first).as_secs_f64() * 1000.0 / (times.len() - 1) as f64
        }
        _ => 0.0,
    }
}

/// What the monitor saw while the workers ran.
struct Seen {
    /// When the monitor started (the timeline's zero, within a few milliseconds).
    started: Instant,
    /// When each token minted during the run was seen.
    tokens: Vec<Instant>,
    /// Sessions of the role seen during the run and gone by its end.
    closed: usize,
}

/// Samples the role's sessions and the gate's token count every [`SAMPLE_EVERY`].
struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Seen, BoxError>>,
}

impl Monitor {
    async fn start(
        pg: &TestPostgres,
        gate: &TokenGate,
        progress: Arc<Progress>,
    ) -> Result<Monitor, BoxError> {
        let client = pg.admin().await?;
        let role = gate.role().to_owned();
        let gate = gate.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen: HashSet<(i32, SystemTime)> = HashSet::new();
                let mut minted = gate.minted();
                let mut tokens = Vec::new();
                let mut ticker = tokio::time::interval(SAMPLE_EVERY);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let now = gate.minted();
                    for _ in minted..now {
                        tokens.push(Instant::now());
                        progress.count_rotation();
                    }
                    minted = now;
                    seen.extend(sessions(&client, &role).await?);
                }
                // Tokens minted in the last interval, then the sessions still open at the end.
                for _ in minted..gate.minted() {
                    tokens.push(Instant::now());
                }
                let alive = sessions(&client, &role).await?;
                seen.extend(alive.iter().copied());
                Ok(Seen {
                    started,
                    tokens,
                    closed: seen.difference(&alive).count(),
                })
            })
        };
        Ok(Monitor { stop, task })
    }

    async fn finish(self) -> Result<Seen, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| format!("the session monitor task failed: {e}"))?
    }
}

/// `(pid, backend_start)` of the sessions of `role`.
async fn sessions(
    client: &tokio_postgres::Client,
    role: &str,
) -> Result<HashSet<(i32, SystemTime)>, BoxError> {
    let rows = client
        .query(
            "SELECT pid, backend_start FROM pg_stat_activity \
             WHERE usename = $1 AND backend_start IS NOT NULL",
            &[&role],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, i32>(0), row.get::<_, SystemTime>(1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings() {
        let t = Timings {
            every: Duration::from_millis(500),
        };
        assert_eq!(t.life(), Duration::from_secs(1));
        assert_eq!(t.margin(), Duration::from_millis(500));
        let policy = t.policy().unwrap();
        assert_eq!(policy.expiry_margin(), Duration::from_millis(500));
        assert!(
            t.describe()
                .contains("each token lives 1s and is renewed 500ms before its end")
        );
        assert_eq!(per_token(16, 8), "2.0");
        assert_eq!(per_token(0, 0), "-");
    }
}
