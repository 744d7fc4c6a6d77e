//! `credswap drill`: every adapter under every strategy, side by side, in one run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use credswap_core::Policy;
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::{
    self, Progress, RotationSetup, ScenarioConfig, ScenarioReport, Strategy,
};

use crate::adapters::{self, App};
use crate::cli::{AdapterName, DrillArgs, PoolerName, ScenarioName, SourceName};
use crate::minted;
use crate::output::{self, ProgressDisplay};
use crate::plot;
use crate::secrets_manager;
use crate::vault;

/// The application's cache TTL in the drill: short, as the drill rotates every second.
const APP_REFRESH: Duration = Duration::from_millis(250);

/// `--scenario revert`: how often the role's sessions are terminated.
const TERMINATE_EVERY: Duration = Duration::from_secs(2);

/// One adapter × strategy run.
pub struct Run {
    pub adapter: AdapterName,
    pub source: SourceName,
    pub report: ScenarioReport,
    /// The adapter's `pending_connects` after the run; `None` for the peers.
    pub pending_connects: Option<u64>,
    /// What the store's rotations did (`--source aws`, `--source vault-*`).
    pub rotation_note: Option<String>,
    /// The strategy column when it is not the scenario's (`dynamic`/`static` for Vault).
    pub strategy_label: Option<&'static str>,
    /// `--source vault-*`: sessions seen open after Vault dropped their role (a revoked lease's
    /// user); `None` for other sources.
    pub revoked_sessions: Option<usize>,
    /// What the store's rotation did (`--scenario`).
    pub scenario: ScenarioName,
    /// Logins of the run's roles the server (and the pooler in front) refused during the run,
    /// from their logs; `None` with `--database-url` (the log is not readable here).
    pub server_refused_logins: Option<usize>,
    /// Calls the pool made to the store (see `adapters::PoolUnderTest::store_calls`).
    pub store_calls: Option<u64>,
    /// `--source minted`: tokens the gate minted while the workers ran; `None` for other
    /// sources.
    pub token_refreshes: Option<u64>,
    /// `--source minted`: sessions of the role that ended while the workers ran (each closed
    /// because of a token: nothing else churns the pool in the run); `None` for other sources.
    pub sessions_closed_by_refresh: Option<usize>,
    /// `--source minted`: logins the server refused because the token's password had expired
    /// (a login with a token inside its margin); `None` for other sources and with
    /// `--database-url` (the log is not readable here).
    pub expired_logins: Option<usize>,
}

impl Run {
    /// The strategy column.
    pub fn strategy(&self) -> String {
        self.strategy_label
            .map_or_else(|| self.report.strategy.to_string(), str::to_owned)
    }

    /// The p99 of requests that overlapped a rotation's drain; `None` when Vault rotated, as
    /// the scenario engine did not see those rotations' instants (its own rotator was off), and
    /// for `--scenario stuck-pending|revert` (no credential is retired: there is no drain).
    pub fn p99_ms_rotating(&self) -> Option<f64> {
        if self.scenario != ScenarioName::Normal {
            return None;
        }
        match self.source {
            // Minted: the tokens came from the provider's renewals, not the engine's rotator.
            SourceName::VaultDynamic | SourceName::VaultStatic | SourceName::Minted => None,
            SourceName::Memory | SourceName::Aws => Some(self.report.p99_ms_rotating),
        }
    }

    /// Sessions of a retired credential still open after the drain grace; `None` for
    /// `--scenario stuck-pending|revert`, where the database's password ends where it began,
    /// and for `--source minted`, where the sessions closed for a token are counted instead.
    pub fn stale_after_drain(&self) -> Option<usize> {
        (self.scenario == ScenarioName::Normal && self.source != SourceName::Minted)
            .then_some(self.report.stale_after_drain)
    }

    /// The longest drain, ms; `None` where [`stale_after_drain`](Self::stale_after_drain) is.
    pub fn max_drain_ms(&self) -> Option<f64> {
        self.stale_after_drain().map(|_| self.report.max_drain_ms)
    }

    /// Whether this is a `--source minted` run of the tokens as minted credentials (judged),
    /// not the per-token comparison (reported only).
    pub fn is_minted_judged(&self) -> bool {
        self.source == SourceName::Minted
            && self.strategy_label == Some(minted::Mode::Minted.label())
    }
}

/// Refused logins of `roles` so far (`None` when the server's log is not readable here).
fn refused_logins<S: AsRef<str>>(pg: &TestPostgres, roles: &[S]) -> Option<usize> {
    roles
        .iter()
        .map(|role| pg.refused_logins(role.as_ref()))
        .sum()
}

pub async fn main(args: DrillArgs) -> ExitCode {
    if let Some(instances) = args.fleet.fleet {
        return crate::fleet::main(args, usize::from(instances)).await;
    }
    let pg = match &args.database_url {
        Some(url) => match TestPostgres::from_admin_url(url).await {
            Ok(pg) => pg,
            Err(e) => {
                eprintln!("error: cannot use --database-url: {e}");
                return ExitCode::from(if e.is_invalid_url() { 2 } else { 1 });
            }
        },
        None => {
            eprintln!("starting an embedded PostgreSQL (scram-sha-256)...");
            match TestPostgres::start().await {
                Ok(pg) => pg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let pg = match args.pooler {
        None => pg,
        Some(PoolerName::Pgbouncer) => {
            eprintln!("starting PgBouncer in front of it (session mode)...");
            match pg.through_pgbouncer().await {
                Ok(pg) => pg,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    // The revert scenario's rotator and session terminator keep the server past a borrow.
    let pg = Arc::new(pg);
    let vault_world = match vault::Kind::from_source(args.source) {
        None => None,
        Some(kind) => {
            if args.lease_max_ttl < args.lease_ttl {
                eprintln!("error: --lease-max-ttl must be at least --lease-ttl");
                return ExitCode::from(2);
            }
            match vault::World::start_for(&pg, kind, &args).await {
                Some(world) => Some(world),
                None => return ExitCode::FAILURE,
            }
        }
    };
    let world = match args.source {
        SourceName::Memory
        | SourceName::VaultDynamic
        | SourceName::VaultStatic
        | SourceName::Minted => None,
        SourceName::Aws => {
            eprintln!("starting moto (AWS Secrets Manager)...");
            match secrets_manager::World::start(args.pause_before_finish).await {
                Ok(world) => {
                    eprintln!("moto at {}", world.endpoint_url());
                    Some(world)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut adapters = args.adapter.clone();
    dedup(&mut adapters);
    if args.scenario != ScenarioName::Normal && !adapters.contains(&AdapterName::Static) {
        eprintln!(
            "adding the static peer: --scenario {} judges credswap against a plain pool",
            args.scenario.as_str()
        );
        adapters.push(AdapterName::Static);
    }
    let minted_timings = match (args.source, args.rotate_every.interval()) {
        (SourceName::Minted, Some(every)) => Some(minted::Timings { every }),
        _ => None,
    };
    let mut skipped_peers = Vec::new();
    if minted_timings.is_some() {
        // A plain pool of the first token (static) or one rebuilt on each poll of a store that
        // mints on every read (naive-rebuild) says nothing here: the per-token run is the
        // comparison.
        adapters.retain(|a| {
            if a.is_credswap() {
                true
            } else {
                skipped_peers.push(a.as_str());
                false
            }
        });
        if !skipped_peers.is_empty() {
            eprintln!(
                "skipping {} with --source minted: the per-token run of each adapter is the \
                 comparison",
                skipped_peers.join(", ")
            );
        }
    }
    let mut strategies: Vec<Strategy> = args.strategy.iter().map(|s| (*s).into()).collect();
    dedup(&mut strategies);

    let config = ScenarioConfig {
        duration: args.duration,
        rotate_every: args.rotate_every.interval(),
        concurrency: usize::from(args.concurrency),
        pool_max_size: usize::from(args.pool_size),
        // Behind a pooler, server sessions outlive the client's connections by up to the
        // pooler's idle timeout (PgBouncer here: 1 s); the drain is judged on the server.
        drain_grace: if args.pooler.is_some() {
            Duration::from_millis(2500)
        } else {
            ScenarioConfig::default().drain_grace
        },
        ..ScenarioConfig::default()
    };
    let query = adapters::Query::new(args.query_ms);
    let mut runs = Vec::new();
    let mut not_run = Vec::new();
    // Minted tokens and Vault: one pass per adapter (the strategy does not apply); otherwise
    // each adapter under each strategy, a credswap adapter beside its bare peer.
    let order: Vec<(AdapterName, Option<Strategy>)> =
        if minted_timings.is_some() || vault_world.is_some() {
            adapters.iter().map(|a| (*a, None)).collect()
        } else {
            rounds(run_order(&adapters, &strategies), args.rounds)
                .into_iter()
                .map(|(a, s)| (a, Some(s)))
                .collect()
        };
    for (adapter, strategy) in order {
        if let Some(timings) = minted_timings {
            // Tokens: two runs per adapter, whatever --strategy says.
            for mode in minted::Mode::BOTH {
                match minted::run_one(&pg, adapter, mode, timings, &config, &query).await {
                    Ok(run) => runs.push(run),
                    Err(e) => {
                        let what = format!("{}/{}", adapter.as_str(), mode.label());
                        eprintln!("error: {what}: {e}");
                        not_run.push(what);
                    }
                }
            }
            continue;
        }
        if let Some(vault_world) = &vault_world {
            // Vault rotates: one run per adapter, whatever --strategy says.
            match vault::run_one(&pg, vault_world, adapter, &config, &query).await {
                Ok(run) => runs.push(run),
                Err(e) => {
                    let what = format!("{}/vault-{}", adapter.as_str(), vault_world.kind().label());
                    eprintln!("error: {what}: {e}");
                    not_run.push(what);
                }
            }
            continue;
        }
        let Some(strategy) = strategy else {
            continue;
        };
        let run = run_one(
            &pg,
            world.as_ref(),
            adapter,
            strategy,
            args.scenario,
            &config,
            &query,
        )
        .await;
        match run {
            Ok(run) => runs.push(run),
            Err(e) => {
                // The other runs go on; the exit status says this one did not finish.
                eprintln!("error: {} / {strategy}: {e}", adapter.as_str());
                not_run.push(format!("{}/{strategy}", adapter.as_str()));
            }
        }
    }

    println!();
    let pause = world
        .as_ref()
        .map(|w| w.pause())
        .filter(|_| strategies.contains(&Strategy::SingleUser));
    let source_note = vault_world
        .as_ref()
        .map(vault::World::describe)
        .or_else(|| minted_timings.map(minted::Timings::describe));
    print!(
        "{}",
        output::table(&runs, &config, pause, source_note.as_deref(), args.scenario)
    );
    if let Some(path) = &args.json {
        let json = output::json(&runs, pg.is_embedded());
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, plot::svg(&runs)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("plot written to {}", path.display());
    }
    if minted_timings.is_some() {
        print!("{}", output::minted_note(&skipped_peers));
    }
    // Behind a pooler, `peak be` and `stale` count the pooler's server sessions, which outlive
    // the pool's connections (and are handed between clients of one role): reported, not judged.
    let judge_sessions = args.pooler.is_none();
    if !judge_sessions {
        println!(
            "\nbehind the pooler, `peak be` and `stale` count its server sessions: it keeps them \
             up to its server_idle_timeout/server_lifetime and hands an idle one of a role to any \
             client of that role; only failed requests are judged"
        );
    }
    let failed: Vec<String> = if args.scenario == ScenarioName::Normal {
        runs.iter()
            .filter(|r| {
                if r.source == SourceName::Minted {
                    // The per-token runs show what a library without minted credentials costs:
                    // reported, not judged.
                    return r.is_minted_judged()
                        && (r.report.requests_failed > 0
                            || (judge_sessions
                                && r.sessions_closed_by_refresh.is_some_and(|n| n > 0))
                            || r.expired_logins.is_some_and(|n| n > 0));
                }
                r.adapter.is_credswap()
                    && (r.report.requests_failed > 0
                        || (judge_sessions && r.report.stale_after_drain > 0)
                        || (judge_sessions && r.revoked_sessions.is_some_and(|n| n > 0)))
            })
            .map(|r| format!("{}/{}", r.adapter.as_str(), r.strategy()))
            .collect()
    } else {
        worse_than_static(&runs)
    };
    if !not_run.is_empty() {
        eprintln!("FAILED: {} did not finish (see above)", not_run.join(", "));
    }
    if !failed.is_empty() {
        if minted_timings.is_some() {
            eprintln!(
                "FAILED: {} had failed requests, sessions closed for a new token, or logins \
                 with an expired token",
                failed.join(", ")
            );
        } else if args.scenario == ScenarioName::Normal {
            eprintln!(
                "FAILED: {} had failed requests, stale sessions after the drain, or sessions of revoked users",
                failed.join(", ")
            );
        } else {
            eprintln!(
                "FAILED: worse than the static peer (a plain pool built from AWSCURRENT): {}",
                failed.join("; ")
            );
        }
    }
    if failed.is_empty() && not_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--scenario stuck-pending|revert`: the credswap runs that failed more requests, or had more
/// logins refused at the server, than the static peer of their strategy (the plain pool's rule),
/// each with the numbers. A run without a static peer to compare with (it did not finish) is
/// not judged here: the unfinished run fails the drill already.
fn worse_than_static(runs: &[Run]) -> Vec<String> {
    let mut worse = Vec::new();
    for r in runs.iter().filter(|r| r.adapter.is_credswap()) {
        let Some(peer) = runs
            .iter()
            .find(|p| p.adapter == AdapterName::Static && p.report.strategy == r.report.strategy)
        else {
            continue;
        };
        let mut why = Vec::new();
        if r.report.requests_failed > peer.report.requests_failed {
            why.push(format!(
                "{} failed requests (static {})",
                r.report.requests_failed, peer.report.requests_failed
            ));
        }
        if let (Some(own), Some(plain)) = (r.server_refused_logins, peer.server_refused_logins)
            && own > plain
        {
            why.push(format!("{own} refused logins (static {plain})"));
        }
        if !why.is_empty() {
            worse.push(format!(
                "{}/{}: {}",
                r.adapter.as_str(),
                r.strategy(),
                why.join(", ")
            ));
        }
    }
    worse
}

/// `order` `n` times, every other time backwards: a pair that ran A B ends the next round
/// B A, so that over two rounds each side ran first and last as often.
fn rounds<T: Copy>(order: Vec<T>, n: u32) -> Vec<T> {
    (0..n)
        .flat_map(|round| {
            let mut this = order.clone();
            if round % 2 == 1 {
                this.reverse();
            }
            this
        })
        .collect()
}

/// The order of the runs (memory and AWS sources): adapter by adapter, each under every
/// strategy, except that a credswap adapter whose `bare-*` peer is drilled too runs beside it,
/// strategy by strategy, alternating which goes first: A B under the first strategy, B A under
/// the second, and so on. With the two default strategies that is A B B A, so that a machine
/// getting slower or faster over the drill weighs on both alike (A B A B would favour B under a
/// steady drift), and the pair's `vs bare` compares runs taken next to each other.
fn run_order(adapters: &[AdapterName], strategies: &[Strategy]) -> Vec<(AdapterName, Strategy)> {
    let mut order = Vec::new();
    let mut placed: Vec<AdapterName> = Vec::new();
    for &adapter in adapters {
        if placed.contains(&adapter) {
            continue;
        }
        let pair = match adapter.bare_peer() {
            Some(bare) if adapters.contains(&bare) => Some((adapter, bare)),
            _ => adapters
                .iter()
                .find(|a| a.bare_peer() == Some(adapter))
                .map(|credswap| (*credswap, adapter)),
        };
        match pair {
            Some((credswap, bare)) => {
                placed.extend([credswap, bare]);
                for (i, &strategy) in strategies.iter().enumerate() {
                    let (first, second) = if i % 2 == 0 {
                        (credswap, bare)
                    } else {
                        (bare, credswap)
                    };
                    order.extend([(first, strategy), (second, strategy)]);
                }
            }
            None => {
                placed.push(adapter);
                order.extend(strategies.iter().map(|&s| (adapter, s)));
            }
        }
    }
    order
}

/// Drops repeated items, keeping the first of each in order.
pub(crate) fn dedup<T: PartialEq + Copy>(items: &mut Vec<T>) {
    let mut seen = Vec::new();
    items.retain(|i| {
        if seen.contains(i) {
            false
        } else {
            seen.push(*i);
            true
        }
    });
}

/// The application's provider policy: a 250 ms cache, and for alternating users the overlap
/// the rotator leaves (half the rotation interval), which the cache must refresh within.
fn app_policy(
    strategy: Strategy,
    config: &ScenarioConfig,
) -> Result<Policy, credswap_core::PolicyError> {
    let mut builder = Policy::builder()
        .backoff(Duration::from_millis(100), Duration::from_secs(2))
        .refresh_interval(APP_REFRESH);
    if let (Strategy::AlternatingUsers, Some(every)) = (strategy, config.rotate_every) {
        let overlap = config.overlap.unwrap_or(every / 2);
        builder = builder
            .overlap_window(overlap)
            .refresh_interval(APP_REFRESH.min(overlap / 2));
    }
    builder.build()
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    pg: &Arc<TestPostgres>,
    world: Option<&secrets_manager::World>,
    adapter: AdapterName,
    strategy: Strategy,
    scenario_name: ScenarioName,
    config: &ScenarioConfig,
    query: &adapters::Query,
) -> Result<Run, Box<dyn std::error::Error + Send + Sync>> {
    /// The store and its rotator.
    enum Rotation {
        Memory(RotationSetup),
        SecretsManager(secrets_manager::SecretsManagerRotator),
    }
    let (app, rotation, roles) = match world {
        None => {
            let setup = RotationSetup::create(pg, strategy).await?;
            let app = App {
                source: Arc::new(setup.store().clone()),
                initial: setup.initial_credential().clone(),
            };
            let roles = setup.roles().to_vec();
            (app, Rotation::Memory(setup), roles)
        }
        Some(world) => {
            let (app, rotator) = world.prepare(pg, strategy, scenario_name, config).await?;
            use credswap_testkit::scenario::Rotate;
            let roles = rotator.roles();
            (app, Rotation::SecretsManager(rotator), roles)
        }
    };
    let refused_before = refused_logins(pg, &roles);
    let policy = app_policy(strategy, config)?;
    let pool = adapters::build(
        adapter,
        pg,
        &app,
        policy,
        config.pool_max_size,
        query.clone(),
    )
    .await?;
    drop(app);
    let progress = Arc::new(Progress::default());
    let label = format!("{} / {strategy}", adapter.as_str());
    let display = ProgressDisplay::start_with(
        label,
        config.duration,
        Arc::clone(&progress),
        Arc::clone(&pool.generation),
        pool.stats.clone(),
    );
    let terminator = (scenario_name == ScenarioName::Revert)
        .then(|| Terminator::start(Arc::clone(pg), roles.clone()));
    let workload = Arc::clone(&pool.workload);
    let (result, log) = match rotation {
        Rotation::Memory(setup) => (
            scenario::run(pg, setup, workload, config, progress).await,
            None,
        ),
        Rotation::SecretsManager(rotator) => {
            let log = rotator.log();
            (
                scenario::run_with(pg, rotator, workload, config, progress).await,
                Some(log),
            )
        }
    };
    let terminated = match terminator {
        Some(t) => Some(t.stop().await),
        None => None,
    };
    display.finish(result.as_ref().ok());
    let pending_connects = pool.stats.as_ref().map(|stats| stats().pending_connects);
    let store_calls = (pool.store_calls)();
    (pool.close)();
    drop(pool.workload);
    // Let the closed pool's sessions end before the next run samples pg_stat_activity (and
    // the logs have the run's last refusals).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_refused_logins = match (refused_before, refused_logins(pg, &roles)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let mut rotation_note = log.map(|log| log.lock().unwrap_or_else(|p| p.into_inner()).describe());
    if let (Some(note), Some((rounds, sessions))) = (rotation_note.as_mut(), terminated) {
        note.push_str(&format!(
            "; the role's sessions terminated every {} s: {sessions} sessions in {rounds} rounds",
            TERMINATE_EVERY.as_secs()
        ));
    }
    Ok(Run {
        adapter,
        source: if world.is_some() {
            SourceName::Aws
        } else {
            SourceName::Memory
        },
        report: result?,
        pending_connects,
        rotation_note,
        strategy_label: None,
        revoked_sessions: None,
        scenario: scenario_name,
        server_refused_logins,
        store_calls,
        token_refreshes: None,
        sessions_closed_by_refresh: None,
        expired_logins: None,
    })
}

/// `--scenario revert`: terminates every session of the run's roles every
/// [`TERMINATE_EVERY`] (the pool's, and the rotator's when one is open), so that every pool
/// must log in again through the rotation and its revert.
struct Terminator {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<(u64, usize)>,
}

impl Terminator {
    fn start(pg: Arc<TestPostgres>, roles: Vec<String>) -> Terminator {
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut rounds, mut sessions) = (0u64, 0usize);
                loop {
                    tokio::select! {
                        () = stop.notified() => break,
                        () = tokio::time::sleep(TERMINATE_EVERY) => {}
                    }
                    rounds += 1;
                    for role in &roles {
                        match pg.terminate_sessions(role).await {
                            Ok(n) => sessions += n,
                            Err(e) => eprintln!("warning: terminating {role}'s sessions: {e}"),
                        }
                    }
                }
                (rounds, sessions)
            })
        };
        Terminator { stop, task }
    }

    /// Stops it; how many rounds it ran and how many sessions it terminated.
    async fn stop(self) -> (u64, usize) {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_run_side_by_side_a_b_b_a() {
        use AdapterName::*;
        let (au, su) = (Strategy::AlternatingUsers, Strategy::SingleUser);
        assert_eq!(
            run_order(&[Deadpool, BareDeadpool, Bb8, Static], &[au, su]),
            [
                (Deadpool, au),
                (BareDeadpool, au),
                (BareDeadpool, su),
                (Deadpool, su),
                (Bb8, au),
                (Bb8, su),
                (Static, au),
                (Static, su),
            ]
        );
        // The pair goes where its first member is listed, the credswap adapter first.
        assert_eq!(
            run_order(&[BareSqlx, Deadpool, Sqlx], &[su]),
            [(Sqlx, su), (BareSqlx, su), (Deadpool, su)]
        );
        // Rounds: the second backwards, so each side of a pair runs first as often.
        assert_eq!(
            rounds(run_order(&[Deadpool, BareDeadpool], &[au, su]), 2),
            [
                (Deadpool, au),
                (BareDeadpool, au),
                (BareDeadpool, su),
                (Deadpool, su),
                (Deadpool, su),
                (BareDeadpool, su),
                (BareDeadpool, au),
                (Deadpool, au),
            ]
        );
        assert_eq!(rounds(vec![1, 2], 1), [1, 2]);
        // A bare peer alone runs alone.
        assert_eq!(
            run_order(&[BareBb8, Deadpool], &[su, au, su]),
            [
                (BareBb8, su),
                (BareBb8, au),
                (BareBb8, su),
                (Deadpool, su),
                (Deadpool, au),
                (Deadpool, su),
            ]
        );
    }
}
