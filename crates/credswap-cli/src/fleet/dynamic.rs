//! `--fleet` with `--source vault-dynamic`: every instance holds a lease and a database user of
//! its own, and a rotation is each lease coming to its end.
//!
//! The fleet's dynamic role issues users that live `--rotate-every` + the lease margin, at
//! least twice the margin ([`lifetime`]; its `default_ttl` and `max_ttl` alike, so a lease is
//! never renewed past it). Each instance's source issues its next user at its first fetch
//! within the margin of the end ([`lease_margin`]: the drain grace and a refresh interval),
//! and its provider fetches at the end less the grace at the latest (`expiry_margin`): so each
//! instance gets a new user about every `--rotate-every`, at a scheduled refresh of its own
//! phase, and has at least the grace to drain the old one's sessions before Vault revokes it
//! (Vault's default revocation drops the user; sessions still open lose their role, and a
//! request on them fails).
//!
//! The instances' first leases are issued together, [`PREFETCH`] at a time, before the pools are
//! built, as a fleet deployed at once reads its secrets: their ends come together, and so do
//! their replacements. A *wave* is the fleet's replacement of the same lease: each instance's
//! provider generation `g` (its `g`-th user) is wave `g`. There is no single store change
//! for a wave: an instance's own is when its lease entered the margin (from then a fetch
//! issues the next user, as a store's change is there to be read), and its convergence counts
//! from there until its pool's first connect with the new user; `learned` is when its provider
//! had it (its next fetch, and Vault's answer).
//! A wave of which any instance's change came before the load began is not measured (the
//! observer cannot tell when), and said so in the rotations' note.
//!
//! Stale sessions are judged by [`Monitor`]: it reads each instance's lease (which user it is
//! on) and the server's sessions every [`FLEET_SAMPLE_EVERY`](super::FLEET_SAMPLE_EVERY), and a
//! user's sessions still open the drain grace after its instance moved to the next user are
//! stale. Sessions whose role Vault dropped while they were open (`usename` NULL) are counted
//! apart as `revoked`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use credswap_core::{BoxError, Credential, CredentialSource};
use credswap_testkit::TestPostgres;
use credswap_vault::VaultSource;
use tokio::time::Instant;

use super::{CallSample, FLEET_SAMPLE_EVERY, InstanceTrace, RotationTimes, calls_at};

/// How many instances fetch their first lease at once.
const PREFETCH: usize = 16;

/// How long before a lease's end each instance's source issues the next user at a fetch (its
/// `lease_margin`): the drain grace and a refresh interval. The provider's `expiry_margin` is
/// the grace, so its fetch at the lease's end less the grace issues the user at the latest; its
/// scheduled refreshes, each instance on a phase of its own, issue it earlier within the
/// refresh interval before that, as the defaults do (`lease_margin` 90 s, `expiry_margin`
/// 1 min): a fleet whose leases end together does not ask Vault for all its users at once.
pub(super) fn lease_margin(grace: Duration, refresh: Duration) -> Duration {
    grace + refresh
}

/// How long each user lives: `--rotate-every` + the lease margin, and at least twice the
/// margin (the source replaces a lease at most half its duration before its end); a day with
/// rotations off, so that no lease ends within a run.
pub(super) fn lifetime(every: Option<Duration>, margin: Duration) -> Duration {
    every.map_or(Duration::from_secs(24 * 3600), |every| {
        (every + margin).max(margin * 2)
    })
}

/// Each instance's first lease, issued [`PREFETCH`] at a time; the source keeps it, so the
/// provider built over it later starts with it. In the order of `sources`.
pub(super) async fn prefetch(sources: &[Arc<VaultSource>]) -> Result<Vec<Credential>, BoxError> {
    let turns = Arc::new(tokio::sync::Semaphore::new(PREFETCH));
    let mut fetches = tokio::task::JoinSet::new();
    for (i, source) in sources.iter().enumerate() {
        let (source, turns) = (Arc::clone(source), Arc::clone(&turns));
        fetches.spawn(async move {
            let _turn = turns.acquire_owned().await;
            (i, source.fetch().await)
        });
    }
    let mut first: Vec<Option<Credential>> = vec![None; sources.len()];
    while let Some(done) = fetches.join_next().await {
        let (i, fetched) = done.map_err(|e| format!("a first lease's task failed: {e}"))?;
        first[i] = Some(fetched.map_err(|e| format!("instance {i}'s first lease: {e}"))?);
    }
    Ok(first.into_iter().flatten().collect())
}

/// Every call one instance's source made to Vault: reads of `database/creds` (each a new user),
/// lease renewals, lookups and revocations, token logins and renewals. Its provider's fetches
/// between them are served from the source's cache, and are not store calls.
pub(super) fn vault_calls(source: &VaultSource) -> u64 {
    let s = source.stats();
    s.reads
        + s.lease_renewals
        + s.lease_renewal_failures
        + s.lease_lookups
        + s.leases_revoked
        + s.logins
        + s.token_renewals
}

/// Revokes the instances' leases still running, [`PREFETCH`] at a time, as each application
/// does at shutdown (`VaultSource::revoke_leases`): Vault drops their users.
pub(super) async fn revoke(sources: &[Arc<VaultSource>]) {
    let turns = Arc::new(tokio::sync::Semaphore::new(PREFETCH));
    let mut revokes = tokio::task::JoinSet::new();
    for source in sources {
        let (source, turns) = (Arc::clone(source), Arc::clone(&turns));
        revokes.spawn(async move {
            let _turn = turns.acquire_owned().await;
            source.revoke_leases().await
        });
    }
    let mut failed = 0;
    while let Some(done) = revokes.join_next().await {
        if !matches!(done, Ok(Ok(_))) {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!(
            "warning: revoking the leases of {failed} instance(s) failed (they end at their TTL)"
        );
    }
}

/// One wave: each instance's change to the same generation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Wave {
    /// The first instance's change (`started`) and the last one's (`changed`).
    pub times: RotationTimes,
    /// Each instance's change; `None` when it had not changed when the observer stopped.
    pub changed: Vec<Option<Instant>>,
}

/// The waves the observer saw begin between its first poll and `load_end`, and how many began
/// before its first poll (not measured; those after the load are not counted).
pub(super) fn waves(traces: &[InstanceTrace], load_end: Instant) -> (Vec<Wave>, usize) {
    // Per generation, each instance's change to it.
    let mut by_generation: BTreeMap<u64, Vec<Option<Instant>>> = BTreeMap::new();
    let mut before_load: HashSet<u64> = HashSet::new();
    for (i, trace) in traces.iter().enumerate() {
        let Some(&(_, first)) = trace.generations.first() else {
            continue;
        };
        // Generations reached before the first poll: their change was not seen.
        for g in 2..=first {
            before_load.insert(g);
        }
        for &(at, g) in trace.generations.iter().skip(1) {
            by_generation
                .entry(g)
                .or_insert_with(|| vec![None; traces.len()])[i] = Some(at);
        }
    }
    let mut out = Vec::new();
    for (g, changed) in by_generation {
        if before_load.contains(&g) {
            continue;
        }
        let seen: Vec<Instant> = changed.iter().flatten().copied().collect();
        let (Some(&started), Some(&last)) = (seen.iter().min(), seen.iter().max()) else {
            continue;
        };
        if started >= load_end {
            continue;
        }
        out.push(Wave {
            times: RotationTimes {
                started,
                changed: last,
            },
            changed,
        });
    }
    (out, before_load.len())
}

/// The fleet's store calls per instance per second outside the rotations' windows (`busy`,
/// since the start of the load) within the load's `duration`: the calls counted there over the
/// time there. A lease's calls are its issue and its renewal, not a refresh's period, so the
/// gaps between an instance's calls say nothing of a rate. `None` without a second outside.
pub(super) fn steady_rate(
    samples: &[CallSample],
    duration: Duration,
    busy: &[(Duration, Duration)],
    instances: usize,
) -> Option<f64> {
    let mut busy: Vec<(Duration, Duration)> = busy.to_vec();
    busy.sort();
    let (mut calls, mut time) = (0u64, Duration::ZERO);
    let mut from = Duration::ZERO;
    for (start, end) in busy.into_iter().chain([(duration, duration)]) {
        let to = start.min(duration);
        if to > from {
            calls += calls_at(samples, to).saturating_sub(calls_at(samples, from));
            time += to - from;
        }
        from = from.max(end);
        if from >= duration {
            break;
        }
    }
    (time >= Duration::from_secs(1) && instances > 0)
        .then(|| calls as f64 / instances as f64 / time.as_secs_f64())
}

/// What the monitor saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The most sessions of the fleet's users at once.
    pub peak: usize,
    /// Sessions of a user still open the grace after its instance moved to its next user.
    pub stale: usize,
    /// The longest a moved-away-from user kept a session (until the grace, or the end).
    pub max_drain: Duration,
    /// Sessions seen after Vault dropped their role.
    pub revoked: usize,
    /// Users moved away from.
    pub replaced: usize,
    /// Per instance, each lease seen, in order.
    pub leases: Vec<Vec<LeaseSeen>>,
}

/// One lease of an instance as the monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseSeen {
    /// When the monitor first saw it.
    pub seen_at: Instant,
    /// When it was due for replacement: its end less the margin, as the source last knew its end
    /// (a renewal Vault capped tells the lease's real end: Vault counts it from when it issued
    /// the lease, before its answer reached the source).
    pub due: Instant,
}

/// Leases of one instance are at least this far apart (a lease lives at least twice the margin);
/// the monitor and the observer poll on their own schedules, so a new lease may be seen a poll
/// before or after the observer saw the change.
const SEEN_APART: Duration = Duration::from_millis(500);

impl Seen {
    /// When the lease instance `i` replaced at `changed` was due for replacement: that of the
    /// last lease seen before the change (`changed` itself when none was seen).
    pub(super) fn due_before(&self, i: usize, changed: Instant) -> Instant {
        let before = changed.checked_sub(SEEN_APART).unwrap_or(changed);
        self.leases
            .get(i)
            .and_then(|leases| leases.iter().rev().find(|l| l.seen_at <= before))
            .map_or(changed, |l| l.due)
    }
}

/// `at` on the monotonic clock, from the wall clock's `now` and `now_wall`.
fn instant_of(at: SystemTime, now: Instant, now_wall: SystemTime) -> Instant {
    match at.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

/// A user an instance moved away from, until it is judged.
struct Retired {
    user: String,
    at: Instant,
    drained: Option<Instant>,
}

/// Samples the instances' leases and the server's sessions until [`finish`](Self::finish).
pub(super) struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Seen, BoxError>>,
}

impl Monitor {
    /// `grace`: how long a replaced user's sessions may stay; `margin`: how long before its
    /// end a lease is due for replacement (the sources' `lease_margin`); `is_user`: whether a
    /// role name is one of the fleet's users (Vault's names for the run's role).
    pub(super) async fn start(
        pg: &TestPostgres,
        sources: Vec<Arc<VaultSource>>,
        grace: Duration,
        margin: Duration,
        is_user: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Monitor, BoxError> {
        let client = pg.admin().await?;
        let database = pg.database().to_owned();
        let baseline = crate::vault::sessions_without_role(&client).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = Seen {
                    leases: vec![Vec::new(); sources.len()],
                    ..Seen::default()
                };
                let mut current: Vec<Option<String>> = vec![None; sources.len()];
                let mut retired: Vec<Retired> = Vec::new();
                let mut oids: HashMap<i64, String> = HashMap::new();
                let mut revoked: HashSet<i32> = HashSet::new();
                let mut ticker = tokio::time::interval(FLEET_SAMPLE_EVERY);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let (now, now_wall) = (Instant::now(), SystemTime::now());
                    for ((source, user), leases) in
                        sources.iter().zip(&mut current).zip(&mut seen.leases)
                    {
                        let Some(lease) = source.lease() else {
                            continue;
                        };
                        let due = lease
                            .expires_at
                            .checked_sub(margin)
                            .unwrap_or(lease.expires_at);
                        let due = instant_of(due, now, now_wall);
                        if Some(&lease.username) == user.as_ref() {
                            // A renewal may have moved the end the source knows.
                            if let Some(last) = leases.last_mut() {
                                last.due = due;
                            }
                            continue;
                        }
                        // The first poll's leases are the instances' first: nothing retired.
                        if let Some(old) = user.take() {
                            retired.push(Retired {
                                user: old,
                                at: now,
                                drained: None,
                            });
                        }
                        leases.push(LeaseSeen { seen_at: now, due });
                        *user = Some(lease.username);
                    }
                    let rows = client
                        .query(
                            "SELECT pid, usesysid::int8, usename::text \
                             FROM pg_stat_activity WHERE backend_type = 'client backend' \
                             AND datname = $1 AND pid <> pg_backend_pid()",
                            &[&database],
                        )
                        .await?;
                    let mut sessions: HashMap<String, usize> = HashMap::new();
                    for row in &rows {
                        let pid: i32 = row.get(0);
                        let oid: Option<i64> = row.get(1);
                        let name: Option<String> = row.get(2);
                        let user = match name {
                            Some(name) if is_user(&name) => {
                                if let Some(oid) = oid {
                                    oids.insert(oid, name.clone());
                                }
                                name
                            }
                            Some(_) => continue,
                            None if baseline.contains(&pid) => continue,
                            None => {
                                // Vault dropped the role while the session stayed open.
                                revoked.insert(pid);
                                match oid.and_then(|o| oids.get(&o)) {
                                    Some(name) => name.clone(),
                                    None => continue,
                                }
                            }
                        };
                        *sessions.entry(user).or_default() += 1;
                    }
                    seen.peak = seen.peak.max(sessions.values().sum());
                    retired.retain_mut(|r| {
                        let open = sessions.get(&r.user).copied().unwrap_or(0);
                        if open == 0 && r.drained.is_none() {
                            r.drained = Some(now);
                        } else if open > 0 {
                            r.drained = None;
                        }
                        if now.saturating_duration_since(r.at) < grace {
                            return true;
                        }
                        // Judged at the grace: its sessions still open are stale.
                        seen.stale += open;
                        seen.replaced += 1;
                        let drain = r.drained.unwrap_or(now).saturating_duration_since(r.at);
                        seen.max_drain = seen.max_drain.max(drain);
                        false
                    });
                }
                // Users not judged yet (the grace outlasted the load): their drain so far.
                let end = Instant::now();
                for r in retired {
                    let drain = r.drained.unwrap_or(end).saturating_duration_since(r.at);
                    seen.max_drain = seen.max_drain.max(drain.min(grace));
                }
                seen.revoked = revoked.len();
                Ok(seen)
            })
        };
        Ok(Monitor { stop, task })
    }

    pub(super) async fn finish(self) -> Result<Seen, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| format!("the dynamic fleet's monitor task failed: {e}"))?
    }
}

/// The sources' Vault counters, summed over the fleet.
pub(super) fn note(sources: &[Arc<VaultSource>], seen: &Seen, before_load: usize) -> String {
    let (mut issued, mut renewals, mut lookups, mut lost) = (0, 0, 0, 0);
    for source in sources {
        let stats = source.stats();
        issued += stats.leases_issued;
        renewals += stats.lease_renewals;
        lookups += stats.lease_lookups;
        lost += stats.leases_lost;
    }
    let mut out = format!(
        "Vault: {issued} users issued to the fleet (its first ones included), {renewals} lease \
         renewals, {lookups} lease lookups, {lost} leases found lost; {} users retired and \
         judged, {} sessions seen after Vault dropped their user",
        seen.replaced, seen.revoked
    );
    if before_load > 0 {
        out.push_str(&format!(
            "; {before_load} wave(s) began before the load and are not measured"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    fn trace(generations: &[(Instant, u64)]) -> InstanceTrace {
        InstanceTrace {
            generations: generations.to_vec(),
            ..InstanceTrace::default()
        }
    }

    #[test]
    fn a_wave_is_each_instance_s_change_to_the_same_generation() {
        let o = Instant::now();
        let traces = [
            trace(&[(at(o, 0), 1), (at(o, 1000), 2), (at(o, 3000), 3)]),
            trace(&[(at(o, 0), 1), (at(o, 1200), 2)]),
        ];
        let (waves, before) = waves(&traces, at(o, 10_000));
        assert_eq!(before, 0);
        assert_eq!(waves.len(), 2);
        assert_eq!(waves[0].changed, vec![Some(at(o, 1000)), Some(at(o, 1200))]);
        assert_eq!(
            waves[0].times,
            RotationTimes {
                started: at(o, 1000),
                changed: at(o, 1200)
            }
        );
        // The second instance had not changed again when the observer stopped.
        assert_eq!(waves[1].changed, vec![Some(at(o, 3000)), None]);
    }

    #[test]
    fn a_wave_begun_before_the_first_poll_is_not_measured() {
        let o = Instant::now();
        // The second instance was on generation 2 at the first poll: wave 2 began earlier.
        let traces = [
            trace(&[(at(o, 0), 1), (at(o, 500), 2), (at(o, 2500), 3)]),
            trace(&[(at(o, 0), 2), (at(o, 2600), 3)]),
        ];
        let (waves, before) = waves(&traces, at(o, 10_000));
        assert_eq!(before, 1);
        assert_eq!(waves.len(), 1);
        assert_eq!(waves[0].changed, vec![Some(at(o, 2500)), Some(at(o, 2600))]);
    }

    #[test]
    fn a_change_is_due_when_the_lease_it_replaced_was() {
        let o = Instant::now();
        let lease = |seen_ms, due_ms| LeaseSeen {
            seen_at: at(o, seen_ms),
            due: at(o, due_ms),
        };
        let seen = Seen {
            leases: vec![vec![lease(0, 10_000), lease(12_000, 25_000)]],
            ..Seen::default()
        };
        // Late: the change came 2 s after the first lease was due.
        assert_eq!(seen.due_before(0, at(o, 12_000)), at(o, 10_000));
        // The monitor saw the new lease a poll after the observer saw the change.
        assert_eq!(seen.due_before(0, at(o, 11_990)), at(o, 10_000));
        // Early (Vault's end came before the one the source first knew): still that lease.
        let early = Seen {
            leases: vec![vec![lease(0, 10_000), lease(9_000, 22_000)]],
            ..Seen::default()
        };
        assert_eq!(early.due_before(0, at(o, 9_020)), at(o, 10_000));
        // An instance the monitor never saw: the change itself.
        assert_eq!(seen.due_before(1, at(o, 500)), at(o, 500));
    }

    #[test]
    fn a_wave_begun_after_the_load_is_not_counted() {
        let o = Instant::now();
        let traces = [trace(&[(at(o, 0), 1), (at(o, 1000), 2), (at(o, 6000), 3)])];
        let (waves, before) = waves(&traces, at(o, 5000));
        assert_eq!((waves.len(), before), (1, 0));
    }

    #[test]
    fn the_steady_rate_counts_the_calls_outside_the_windows() {
        let s = Duration::from_secs;
        // Two instances: 10 calls in the window [2 s, 4 s], 4 calls at 6 s (outside), none
        // else in the 10 s.
        let samples = [
            sample(0, 0),
            sample(3000, 10),
            sample(6000, 14),
            sample(9000, 14),
        ];
        let rate = steady_rate(&samples, s(10), &[(s(2), s(4))], 2).unwrap();
        // 4 calls in 8 s outside the window, over 2 instances.
        assert!((rate - 0.25).abs() < 1e-9, "{rate}");
        // Windows that cover the whole load leave nothing to measure.
        assert_eq!(steady_rate(&samples, s(10), &[(s(0), s(10))], 2), None);
        // Overlapping windows are one.
        let rate = steady_rate(&samples, s(10), &[(s(2), s(4)), (s(3), s(5))], 2).unwrap();
        assert!((rate - 4.0 / 2.0 / 7.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn a_user_lives_the_interval_and_the_margin() {
        let s = Duration::from_secs;
        let margin = lease_margin(s(7), s(5));
        assert_eq!(margin, s(12));
        assert_eq!(lifetime(Some(s(15)), margin), s(27));
        // A short interval: the source's margin is at most half the lease.
        assert_eq!(lifetime(Some(s(2)), margin), s(24));
        assert!(lifetime(None, margin) >= s(3600));
    }
}
