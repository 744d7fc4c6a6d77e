use std::sync::Mutex as StdMutex;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::source::from_fn;
use crate::validate::from_fn as validate_fn;
use crate::{BoxError, MemorySource, SourceError};
use std::time::Duration;

const SECRET: &str = "pw-must-never-print-0xC0FFEE";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy(refresh: Duration) -> Policy {
    Policy::builder()
        .refresh_interval(refresh)
        .jitter(0.0)
        .backoff(secs(1), secs(8))
        .build()
        .unwrap()
}

/// A source that records the (Tokio) time of every fetch and can be told to fail.
#[derive(Clone)]
struct Recording {
    times: Arc<StdMutex<Vec<Instant>>>,
    failing: Arc<AtomicBool>,
    store: MemorySource,
}

impl Recording {
    fn new() -> Self {
        Self {
            times: Arc::default(),
            failing: Arc::default(),
            store: MemorySource::new(Credential::new("app", SECRET)),
        }
    }
    fn offsets_from(&self, origin: Instant) -> Vec<Duration> {
        offsets(&self.times, origin)
    }
}

/// The recorded instants, from `origin`.
fn offsets(times: &StdMutex<Vec<Instant>>, origin: Instant) -> Vec<Duration> {
    times.lock().unwrap().iter().map(|t| *t - origin).collect()
}

#[async_trait::async_trait]
impl CredentialSource for Recording {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.times.lock().unwrap().push(Instant::now());
        if self.failing.load(Ordering::SeqCst) {
            return Err(SourceError::unavailable("store is down"));
        }
        self.store.fetch().await
    }
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_the_interval() {
    let source = Recording::new();
    let origin = Instant::now();
    let creds = RotatingCredentials::new(source.clone(), policy(secs(60)))
        .await
        .unwrap();
    tokio::time::sleep(secs(59)).await;
    assert_eq!(
        source.times.lock().unwrap().len(),
        1,
        "only the initial fetch before 60 s"
    );
    tokio::time::sleep(secs(2)).await;
    assert_eq!(source.offsets_from(origin), [secs(0), secs(60)]);
    tokio::time::sleep(secs(60)).await;
    assert_eq!(source.offsets_from(origin), [secs(0), secs(60), secs(120)]);
    assert_eq!(
        creds.generation(),
        Generation::FIRST,
        "same secret: no new generation"
    );
    assert_eq!(creds.stats().rotations, 0);
}

#[tokio::test(start_paused = true)]
async fn jitter_only_shortens_the_interval() {
    let source = Recording::new();
    let origin = Instant::now();
    let p = Policy::builder()
        .refresh_interval(secs(100))
        .jitter(0.5)
        .build()
        .unwrap();
    let _creds = RotatingCredentials::new(source.clone(), p).await.unwrap();
    tokio::time::sleep(secs(2000)).await;
    let times = source.offsets_from(origin);
    assert!(times.len() > 20, "{times:?}");
    assert!(
        times[1] <= secs(100),
        "the first refresh within the interval: {times:?}"
    );
    for gap in times[1..].windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= secs(50) && gap <= secs(100),
            "after the first, every refresh in [interval * (1 - jitter), interval]: {times:?}"
        );
    }
}

/// A fleet of `n` providers over recording sources, all built in the same instant with the
/// default jitter and a 100-s interval.
async fn fleet(n: usize) -> (Vec<Recording>, Vec<RotatingCredentials>) {
    let sources: Vec<Recording> = (0..n).map(|_| Recording::new()).collect();
    let p = Policy::builder()
        .refresh_interval(secs(100))
        .build()
        .unwrap();
    let mut providers = Vec::new();
    for source in &sources {
        providers.push(RotatingCredentials::new(source.clone(), p).await.unwrap());
    }
    (sources, providers)
}

/// The tenths of the interval (of 100 s) the instants fall in, counted.
fn tenths(instants: impl IntoIterator<Item = Duration>) -> [usize; 10] {
    let mut tenths = [0usize; 10];
    for at in instants {
        tenths[((at.as_secs_f64() % 100.0) / 10.0) as usize] += 1;
    }
    tenths
}

#[tokio::test(start_paused = true)]
async fn a_fleet_built_at_once_spreads_its_refreshes_over_the_interval() {
    // 200 providers built in the same instant, with the default jitter (each refresh shortened
    // by up to 10 %): their first refreshes fall all over the interval, not in its last tenth,
    // and their schedules keep the spread.
    let origin = Instant::now();
    let (sources, _providers) = fleet(200).await;
    tokio::time::sleep(secs(1000)).await;
    for (refresh, from) in [(1, secs(0)), (5, secs(300))] {
        let at: Vec<Duration> = sources
            .iter()
            .map(|s| s.offsets_from(origin)[refresh])
            .collect();
        assert!(
            at.iter().all(|t| *t > from && *t <= from + secs(200)),
            "refresh {refresh} at {at:?}"
        );
        let spread = tenths(at);
        assert!(
            spread.iter().all(|&n| (5..=45).contains(&n)),
            "refresh {refresh}: the fleet's phases by tenth of the interval: {spread:?}"
        );
    }
}

/// A store that holds every answer until `until` (a stall) and records when each fetch began.
#[derive(Clone, Default)]
struct Stalling {
    began: Arc<StdMutex<Vec<Instant>>>,
    until: Arc<StdMutex<Option<Instant>>>,
    answer_after: Duration,
}

impl Stalling {
    /// When each fetch began, from `origin`.
    fn offsets_from(&self, origin: Instant) -> Vec<Duration> {
        offsets(&self.began, origin)
    }
}

#[async_trait::async_trait]
impl CredentialSource for Stalling {
    async fn fetch(&self) -> Result<Credential, SourceError> {
        self.began.lock().unwrap().push(Instant::now());
        tokio::time::sleep(self.answer_after).await;
        let until = *self.until.lock().unwrap();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        Ok(Credential::new("app", SECRET))
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_does_not_move_the_schedule() {
    // Every answer takes 2 s: the fetches still begin every 60 s, from the first one's start.
    let source = Stalling {
        answer_after: secs(2),
        ..Stalling::default()
    };
    let origin = Instant::now();
    let _creds = RotatingCredentials::new(source.clone(), policy(secs(60)))
        .await
        .unwrap();
    tokio::time::sleep(secs(200)).await;
    assert_eq!(
        source.offsets_from(origin),
        [secs(0), secs(60), secs(120), secs(180)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_that_stalls_does_not_gather_the_fleet_s_refreshes() {
    // 100 providers on phases of their own; the store holds every answer between 200 s and
    // 225 s until 225 s (within the 30-s fetch timeout). The refreshes it held keep their
    // phases after it: they come back spread over those 25 s, not all in the 10 s (the
    // jitter) after the answers.
    let interval = secs(100);
    let stores: Vec<Stalling> = (0..100).map(|_| Stalling::default()).collect();
    let origin = Instant::now();
    let mut providers = Vec::new();
    for store in &stores {
        let p = Policy::builder()
            .refresh_interval(interval)
            .build()
            .unwrap();
        providers.push(RotatingCredentials::new(store.clone(), p).await.unwrap());
    }
    tokio::time::sleep(secs(200)).await;
    for store in &stores {
        *store.until.lock().unwrap() = Some(origin + secs(225));
    }
    tokio::time::sleep(secs(25)).await;
    for store in &stores {
        *store.until.lock().unwrap() = None;
    }
    tokio::time::sleep(secs(120)).await;
    let next: Vec<f64> = stores
        .iter()
        .filter_map(|store| {
            let began = store.began.lock().unwrap();
            let held = began
                .iter()
                .position(|t| *t - origin >= secs(200) && *t - origin < secs(225))?;
            Some((began[held + 1] - origin).as_secs_f64())
        })
        .collect();
    assert!(
        next.len() > 10,
        "{} of the fleet's calls were held",
        next.len()
    );
    let (first, last) = next
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
    assert!(
        last - first > 15.0,
        "the held calls' next refreshes came between {first:.1} s and {last:.1} s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_took_over_half_the_interval_is_followed_by_half_an_interval() {
    // Every fetch takes 40 s, the interval is 60 s: each begins 60 s after the last one began,
    // but not sooner than 30 s after it ended (the refresher's own notification moves nothing).
    let source = Stalling {
        answer_after: secs(40),
        ..Stalling::default()
    };
    let origin = Instant::now();
    let p = Policy::builder()
        .refresh_interval(secs(60))
        .jitter(0.0)
        .fetch_timeout(secs(50))
        .build()
        .unwrap();
    let _creds = RotatingCredentials::new(source.clone(), p).await.unwrap();
    tokio::time::sleep(secs(250) - (Instant::now() - origin)).await;
    assert_eq!(
        source.offsets_from(origin),
        [secs(0), secs(70), secs(140), secs(210)]
    );
}

#[tokio::test(start_paused = true)]
async fn another_callers_refresh_starts_the_interval_again() {
    let source = Recording::new();
    let origin = Instant::now();
    let creds = RotatingCredentials::new(source.clone(), policy(secs(60)))
        .await
        .unwrap();
    tokio::time::sleep(secs(30)).await;
    creds.refresh().await.unwrap();
    tokio::time::sleep(secs(131)).await;
    assert_eq!(
        source.offsets_from(origin),
        [secs(0), secs(30), secs(90), secs(150)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_interval_stays_spread_after_a_callers_refresh() {
    // Every instance of a fleet refreshes on its own right after it is built (an application
    // that checks its store at start-up): the fleet's refreshes still spread over the interval.
    let origin = Instant::now();
    let (sources, providers) = fleet(200).await;
    for provider in &providers {
        provider.refresh().await.unwrap();
    }
    tokio::time::sleep(secs(150)).await;
    let spread = tenths(sources.iter().map(|s| s.offsets_from(origin)[2]));
    assert!(
        spread.iter().all(|&n| (5..=45).contains(&n)),
        "the fleet's first background refreshes by tenth of the interval: {spread:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_interval_after_an_announced_rotation_is_spread_again() {
    // The store announces a rotation 5 s ahead in its first answer: the fleet fetches within
    // a few seconds after it, all of it, and then spreads its refreshes over the interval
    // again instead of keeping that phase.
    let announced = SystemTime::now() + secs(5);
    let fleet: Vec<(Arc<StdMutex<Vec<Instant>>>, RotatingCredentials)> = {
        let mut fleet = Vec::new();
        for _ in 0..200 {
            let times: Arc<StdMutex<Vec<Instant>>> = Arc::default();
            let log = Arc::clone(&times);
            let source = from_fn(move || {
                let mut times = log.lock().unwrap();
                times.push(Instant::now());
                let first = times.len() == 1;
                async move {
                    let credential = Credential::new("app", SECRET);
                    Ok(if first {
                        credential.with_next_rotation_at(announced)
                    } else {
                        credential
                    })
                }
            });
            let p = Policy::builder()
                .refresh_interval(secs(100))
                .build()
                .unwrap();
            let provider = RotatingCredentials::new(source, p).await.unwrap();
            fleet.push((times, provider));
        }
        fleet
    };
    let origin = Instant::now();
    tokio::time::sleep(secs(300)).await;
    let mut after_rotation = 0;
    let mut gaps = Vec::new();
    for (times, _) in &fleet {
        let times = times.lock().unwrap();
        let woke = times[1] - origin;
        if woke >= secs(5) && woke <= secs(9) {
            after_rotation += 1;
            gaps.push(times[2] - times[1]);
        }
    }
    assert!(
        after_rotation > 150,
        "{after_rotation} fetched after the rotation"
    );
    let short = gaps.iter().filter(|g| **g < secs(50)).count();
    assert!(
        short * 4 > gaps.len(),
        "{short} of {} next refreshes came in the first half of the interval",
        gaps.len()
    );
}

#[tokio::test(start_paused = true)]
async fn refreshes_earlier_when_expiry_comes_first() {
    // Every fetch returns a new lease ending 10 minutes after the fetch.
    let fetches = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&fetches);
    let source = from_fn(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok(Credential::new("app", SECRET).with_expires_at(SystemTime::now() + secs(600))) }
    });
    let p = Policy::builder()
        .refresh_interval(secs(1800))
        .expiry_margin(secs(60))
        .jitter(0.0)
        .build()
        .unwrap();
    let creds = RotatingCredentials::new(source, p).await.unwrap();
    let retire_at = creds.current().retire_at().unwrap();
    let left = retire_at - Instant::now();
    assert!(
        left <= secs(540) && left > secs(539),
        "retire at expires_at - margin: {left:?}"
    );
    tokio::time::sleep(secs(538)).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(secs(3)).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "refreshed 9 min in, not at 30 min"
    );
}

#[tokio::test(start_paused = true)]
async fn backs_off_on_errors_serves_last_good_and_recovers() {
    let source = Recording::new();
    let origin = Instant::now();
    let creds = RotatingCredentials::new(source.clone(), policy(secs(60)))
        .await
        .unwrap();
    source.failing.store(true, Ordering::SeqCst);
    // Fetches at 60 (fails), then +1, +2, +4, +8, +8 (capped).
    tokio::time::sleep(secs(60 + 1 + 2 + 4 + 8 + 8) + Duration::from_millis(500)).await;
    let offsets = source.offsets_from(origin);
    let gaps: Vec<u64> = offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(gaps, [60, 1, 2, 4, 8, 8]);
    let snapshot = creds.current();
    assert_eq!(snapshot.generation(), Generation::FIRST);
    assert_eq!(
        snapshot.credential().username(),
        "app",
        "last good credential still served"
    );
    let health = creds.health();
    assert!(health.is_degraded());
    assert_eq!(health.consecutive_failures(), 6);
    assert!(health.last_error().is_some_and(Error::is_source));

    // Recovery: the next retry (8 s later) succeeds and the normal interval resumes.
    source.failing.store(false, Ordering::SeqCst);
    source
        .store
        .set(Credential::new("app", "rotated-during-outage"));
    tokio::time::sleep(secs(8)).await;
    assert_eq!(creds.generation().get(), 2);
    assert!(creds.health().is_healthy());
    let before = source.times.lock().unwrap().len();
    tokio::time::sleep(secs(59)).await;
    assert_eq!(
        source.times.lock().unwrap().len(),
        before,
        "back to the 60 s interval"
    );
    tokio::time::sleep(secs(2)).await;
    assert_eq!(source.times.lock().unwrap().len(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_stops_the_refresher() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let store = MemorySource::new(Credential::new("app", SECRET));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(1)))
        .await
        .unwrap();
    let clone = creds.clone();
    assert_eq!(metrics.num_alive_tasks(), 1);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(store.fetch_count(), 4);
    drop(creds);
    tokio::time::sleep(secs(2)).await;
    assert_eq!(store.fetch_count(), 6, "a clone keeps it alive");
    drop(clone);
    tokio::task::yield_now().await;
    tokio::time::sleep(secs(10)).await;
    assert_eq!(
        store.fetch_count(),
        6,
        "no fetch after the last handle is gone"
    );
    assert_eq!(metrics.num_alive_tasks(), 0, "the refresher task ended");
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_refreshes_cause_one_fetch() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let creds = RotatingCredentials::builder(store.clone())
        .policy(policy(secs(3600)))
        .build()
        .await
        .unwrap();
    store.set(Credential::new("app", "second"));
    store.set_delay(Duration::from_millis(100));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.refresh().await })
        })
        .collect();
    for task in tasks {
        let snapshot = task.await.unwrap().unwrap();
        assert_eq!(
            snapshot.generation().get(),
            2,
            "every caller gets the shared result"
        );
    }
    assert_eq!(
        store.fetch_count(),
        2,
        "the initial fetch plus exactly one refresh"
    );
    assert_eq!(creds.stats().rotations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_refreshes_on_threads_cause_one_fetch() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let creds = RotatingCredentials::builder(store.clone())
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    store.set_delay(Duration::from_millis(500));
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (creds, barrier) = (creds.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                creds.refresh().await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.fetch_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_auth_failure_report_does_nothing() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(3600)))
        .await
        .unwrap();
    store.set(Credential::new("app", "second"));
    let fresh = creds.report_auth_failure(Generation::FIRST).await.unwrap();
    assert_eq!(
        fresh.generation().get(),
        2,
        "a current-generation report refreshes"
    );
    assert_eq!(store.fetch_count(), 2);

    let again = creds.report_auth_failure(Generation::FIRST).await.unwrap();
    assert_eq!(again.generation().get(), 2);
    assert_eq!(store.fetch_count(), 2, "a stale report fetches nothing");
    let stats = creds.stats();
    assert_eq!(stats.auth_failure_refreshes, 1);
    assert_eq!(stats.auth_failure_reports_deduplicated, 1);
}

#[tokio::test(start_paused = true)]
async fn generation_changes_only_when_the_login_changes() {
    let store = MemorySource::new(Credential::new("app", SECRET).with_version("v1"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(3600)))
        .await
        .unwrap();
    let mut changes = creds.subscribe();
    store.set(Credential::new("app", SECRET).with_version("v2"));
    let snapshot = creds.refresh().await.unwrap();
    assert_eq!(snapshot.generation(), Generation::FIRST);
    assert_eq!(
        snapshot.credential().version(),
        Some("v2"),
        "metadata is refreshed"
    );
    assert!(!changes.has_changed().unwrap());

    store.set(Credential::new("app", "new-password"));
    assert_eq!(creds.refresh().await.unwrap().generation().get(), 2);
    store.set(Credential::new("app_b", "new-password"));
    assert_eq!(creds.refresh().await.unwrap().generation().get(), 3);
    assert!(changes.has_changed().unwrap());
    assert_eq!(changes.borrow_and_update().get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_the_generation_go_backwards() {
    let store = MemorySource::new(Credential::new("user1", "pw1"));
    let creds = RotatingCredentials::builder(store.clone())
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (creds, done) = (creds.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let snapshot = creds.current();
                    let generation = snapshot.generation().get();
                    assert!(generation >= last, "went back from {last} to {generation}");
                    // The snapshot is consistent: its login belongs to its generation.
                    assert_eq!(
                        snapshot.credential().username(),
                        format!("user{generation}")
                    );
                    assert!(creds.generation().get() >= generation);
                    last = generation;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Writers: concurrent refreshers and auth-failure reporters racing the rotation.
    for n in 2..=1500u64 {
        store.set(Credential::new(format!("user{n}"), format!("pw{n}")));
        let (a, b) = (creds.clone(), creds.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.refresh().await }),
            tokio::spawn(async move { b.report_auth_failure(Generation::new(n - 1)).await })
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(creds.generation().get(), 1500);
}

#[tokio::test(start_paused = true)]
async fn rejected_credential_is_not_published_and_is_retried_on_backoff() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let validator = validate_fn(|c: Credential| async move {
        use secrecy::ExposeSecret;
        if c.password().expose_secret().starts_with("wrong") {
            Err::<(), BoxError>(
                format!(
                    "password authentication failed for user \"{}\"",
                    c.username()
                )
                .into(),
            )
        } else {
            Ok(())
        }
    });
    let creds = RotatingCredentials::builder(store.clone())
        .policy(policy(secs(60)))
        .validator(validator)
        .build()
        .await
        .unwrap();
    store.set(Credential::new("app", "wrong-password-xyz"));
    let err = creds.refresh().await.unwrap_err();
    assert!(err.is_validation(), "{err}");
    assert!(!err.to_string().contains("wrong-password-xyz"));
    assert_eq!(creds.generation(), Generation::FIRST, "not published");
    assert_eq!(creds.stats().rejected, 1);

    // Retried at the backoff pace (1 s), still rejected; then the good one arrives.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(creds.stats().rejected, 2);
    store.set(Credential::new("app", "right-password"));
    tokio::time::sleep(secs(2)).await;
    assert_eq!(creds.generation().get(), 2);
}

#[tokio::test]
async fn build_fails_without_a_good_first_credential() {
    let failing = from_fn(|| async {
        Err(SourceError::unavailable(
            "connection refused by 127.0.0.1:1",
        ))
    });
    let err = RotatingCredentials::new(failing, Policy::default())
        .await
        .unwrap_err();
    assert!(err.is_source());
    assert!(
        err.to_string().contains("secret store unavailable"),
        "{err}"
    );

    let malformed = from_fn(|| async { Err(SourceError::malformed("no \"password\" key")) });
    let err = RotatingCredentials::new(malformed, Policy::default())
        .await
        .unwrap_err();
    assert!(err.source_error().is_some_and(SourceError::is_malformed));

    let rejecting = validate_fn(|_| async { Err::<(), BoxError>("nope".into()) });
    let err = RotatingCredentials::builder(static_source())
        .validator(rejecting)
        .build()
        .await
        .unwrap_err();
    assert!(err.is_validation());
}

fn static_source() -> crate::StaticSource {
    crate::StaticSource::new(Credential::new("app", SECRET))
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_times_out() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let p = Policy::builder().fetch_timeout(secs(2)).build().unwrap();
    let creds = RotatingCredentials::new(store.clone(), p).await.unwrap();
    store.set_delay(secs(3600));
    let err = creds.refresh().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("2s"));
    assert_eq!(creds.current().credential().username(), "app");
}

#[tokio::test(start_paused = true)]
async fn health_reports_age_and_expiry() {
    let old = Credential::new("app", SECRET).with_issued_at(SystemTime::now() - secs(31 * 86_400));
    let creds = RotatingCredentials::new(MemorySource::new(old), Policy::default())
        .await
        .unwrap();
    let h = creds.health();
    assert!(h.is_overdue() && !h.is_healthy(), "{h:?}");
    assert!(h.expires_in().is_none());

    let expiring = Credential::new("app", SECRET).with_expires_at(SystemTime::now() + secs(30));
    let creds = RotatingCredentials::new(MemorySource::new(expiring), Policy::default())
        .await
        .unwrap();
    let h = creds.health();
    assert!(h.is_expiring() && !h.is_expired(), "{h:?}");

    let fresh = Credential::new("app", SECRET).with_expires_at(SystemTime::now() + secs(3600));
    let creds = RotatingCredentials::new(MemorySource::new(fresh), Policy::default())
        .await
        .unwrap();
    assert!(creds.health().is_healthy());
    // Without issued_at, age counts from publication, on the Tokio clock.
    tokio::time::sleep(secs(10)).await;
    assert!(creds.health().age() >= secs(10));
}

#[derive(Clone, Default)]
struct Captured(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_warn_once_per_generation_and_never_print_the_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let old =
            Credential::new("app", SECRET).with_issued_at(SystemTime::now() - secs(40 * 86_400));
        let store = MemorySource::new(old);
        let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
            .await
            .unwrap();
        creds.health();
        creds.health();
        store.fail_with(SourceError::unavailable("store is down"));
        let _ = creds.refresh().await;
        store.recover();
        store.set(Credential::new("app2", format!("{SECRET}-2")));
        creds.refresh().await.unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("older than its rotation interval").count(),
        1,
        "{text}"
    );
    assert!(text.contains("serving the last good credential"), "{text}");
    assert!(text.contains("credential rotated"), "{text}");
    assert!(
        !text.contains(SECRET),
        "a log line printed the password:\n{text}"
    );
}

#[tokio::test]
async fn no_debug_output_contains_the_password() {
    let store = MemorySource::new(Credential::new("app", SECRET).with_version("v1"));
    let creds = RotatingCredentials::builder(store.clone())
        .validator(validate_fn(|_| async { Ok(()) }))
        .build()
        .await
        .unwrap();
    let snapshot = creds.current();
    let printed = [
        format!("{creds:?}"),
        format!("{snapshot:#?}"),
        format!("{store:?}"),
        format!("{:?}", creds.health()),
        format!("{:?}", creds.stats()),
        format!("{:?}", snapshot.credential()),
        format!("{:?}", RotatingCredentials::builder(store.clone())),
    ];
    for p in printed {
        assert!(!p.contains(SECRET), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clock_refresher_follows_each_rotation() {
    let store = MemorySource::new(Credential::new("app", "p0"));
    let p = Policy::builder()
        .refresh_interval(Duration::from_millis(250))
        .build()
        .unwrap();
    let creds = RotatingCredentials::new(store.clone(), p).await.unwrap();
    for n in 1..=3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.set(Credential::new("app", format!("p{n}")));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            creds.generation().get(),
            n + 1,
            "fetches: {}",
            store.fetch_count()
        );
    }
}

#[tokio::test]
async fn load_borrows_the_current_snapshot() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let creds = RotatingCredentials::builder(store.clone())
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    let guard = creds.load();
    assert_eq!(guard.generation(), Generation::FIRST);
    store.set(Credential::new("app", "next"));
    creds.refresh().await.unwrap();
    // A borrow taken before the rotation keeps seeing its own snapshot; a new one sees the next.
    assert_eq!(guard.generation(), Generation::FIRST);
    assert_eq!(creds.load().generation().get(), 2);
    assert_eq!(guard.into_arc().credential().username(), "app");
    assert!(!format!("{:?}", creds.load()).contains(SECRET));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_validation_is_bounded_and_blocks_nothing_beyond_it() {
    let store = MemorySource::new(Credential::new("app", SECRET));
    let stall = Arc::new(AtomicBool::new(false));
    let validator = {
        let stall = Arc::clone(&stall);
        validate_fn(move |_| {
            let stall = stall.load(Ordering::SeqCst);
            async move {
                if stall {
                    // A database that accepted the TCP connection and then said nothing.
                    std::future::pending::<()>().await;
                }
                Ok::<(), BoxError>(())
            }
        })
    };
    let creds = RotatingCredentials::builder(store.clone())
        .policy(
            Policy::builder()
                .refresh_interval(secs(60))
                .validation_timeout(secs(2))
                .build()
                .unwrap(),
        )
        .validator(validator)
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    stall.store(true, Ordering::SeqCst);
    store.set(Credential::new("app", "next-password"));
    let started = Instant::now();
    let (refresh, report) = tokio::join!(creds.refresh(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        creds.report_auth_failure(Generation::FIRST).await
    });
    let err = refresh.unwrap_err();
    assert!(
        err.is_validation() && err.to_string().contains("stalled"),
        "{err}"
    );
    assert!(started.elapsed() <= secs(2) + Duration::from_millis(200));
    // The auth-failure report shared the bounded flight instead of hanging on it.
    assert!(report.is_err());
    assert_eq!(creds.generation(), Generation::FIRST);
    assert_eq!(creds.health().consecutive_failures(), 1);
    assert!(!creds.health().is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_fetches_the_pending_credential_and_its_acceptance_publishes_it() {
    let store = MemorySource::new(Credential::new("app", "old"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    assert!(creds.pending().is_none());
    // No rotation under way: a refusal finds no pending credential.
    let _ = creds.report_auth_failure(Generation::FIRST).await;
    assert!(creds.pending().is_none());

    // createSecret + setSecret: the store has a pending credential, the database took it.
    store.set_pending(Some(Credential::new("app", "new")));
    tokio::time::sleep(secs(1)).await; // past the auth refresh rate limit
    let fresh = creds.report_auth_failure(Generation::FIRST).await.unwrap();
    assert_eq!(
        fresh.generation(),
        Generation::FIRST,
        "the store's current is unchanged"
    );
    let pending = creds.pending().expect("the pending credential");
    assert_eq!(pending.generation(), Generation::FIRST.next());
    assert!(
        pending
            .credential()
            .is_same_login(&Credential::new("app", "new"))
    );
    assert_eq!(
        creds.generation(),
        Generation::FIRST,
        "not published before it is accepted"
    );
    assert_eq!(creds.stats().pending_fetched, 1);

    // A connection with it opened: published, proven, no refusal left.
    creds.report_accepted(pending.generation());
    assert_eq!(creds.generation(), pending.generation());
    assert!(creds.current().is_proven());
    assert!(!creds.health().is_refused());
    assert!(creds.pending().is_none());
    assert_eq!(creds.stats().pending_published, 1);

    // Before finishSecret the store still says the old credential: not a change back.
    creds.refresh().await.unwrap();
    assert_eq!(creds.generation(), pending.generation());
    assert!(
        creds
            .current()
            .credential()
            .is_same_login(&Credential::new("app", "new"))
    );

    // finishSecret: the store's current becomes it; the same login is not a new generation.
    store.set(Credential::new("app", "new"));
    store.set_pending(None);
    creds.refresh().await.unwrap();
    assert_eq!(creds.generation(), pending.generation());
    assert_eq!(creds.stats().rotations, 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_credential_is_dropped_when_the_store_publishes_another() {
    let store = MemorySource::new(Credential::new("app", "old"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    store.set_pending(Some(Credential::new("app", "pending")));
    let _ = creds.report_auth_failure(Generation::FIRST).await;
    let pending = creds.pending().expect("the pending credential");
    // The store gave up that rotation and published another login.
    store.set(Credential::new("app", "other"));
    store.set_pending(None);
    let published = creds.refresh().await.unwrap();
    assert_eq!(
        published.generation(),
        pending.generation().next(),
        "another login does not reuse the pending credential's generation"
    );
    assert!(
        creds.pending().is_none(),
        "the pending one is not the next generation any more"
    );
    // A late acceptance of the old pending credential publishes and proves nothing.
    creds.report_accepted(pending.generation());
    assert!(
        creds
            .current()
            .credential()
            .is_same_login(&Credential::new("app", "other"))
    );
    assert!(!creds.current().is_proven());
}

#[tokio::test(start_paused = true)]
async fn a_rotating_store_offers_its_pending_credential_after_each_refresh() {
    let store = MemorySource::new(Credential::new("app", "old"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    let mut changes = creds.subscribe();
    changes.borrow_and_update();

    // createSecret: the store rotates; a plain refresh (no refusal) reads the pending one and
    // wakes the watchers for their pending trials.
    store.set_pending(Some(Credential::new("app", "new")));
    creds.refresh().await.unwrap();
    let pending = creds
        .pending()
        .expect("read on refresh while the store rotates");
    assert_eq!(pending.generation(), Generation::FIRST.next());
    assert!(changes.has_changed().unwrap(), "the watchers are woken");
    assert_eq!(creds.generation(), Generation::FIRST, "not published yet");
    assert_eq!(creds.stats().pending_fetched, 1);

    // A refresh that finds the same pending one keeps it (and counts nothing new).
    creds.refresh().await.unwrap();
    assert_eq!(creds.pending().unwrap().generation(), pending.generation());
    assert_eq!(creds.stats().pending_fetched, 1);

    // A refusal of the pending one (before setSecret) is no refusal of the current one.
    creds.report_refused(pending.generation());
    assert!(!creds.health().is_refused());

    // The store abandons the rotation: the pending credential goes with it.
    store.set_pending(None);
    creds.refresh().await.unwrap();
    assert!(creds.pending().is_none());

    // A new rotation; the database accepts the pending one: published before the store.
    store.set_pending(Some(Credential::new("app", "newer")));
    creds.refresh().await.unwrap();
    let pending = creds
        .pending()
        .expect("the new rotation's pending credential");
    creds.report_accepted(pending.generation());
    assert_eq!(creds.generation(), pending.generation());
    assert!(creds.pending().is_none());
    // The store still rotating (AWSPENDING still staged) offers the current one as pending:
    // not a pending credential any more.
    store.set_pending(Some(Credential::new("app", "newer")));
    creds.refresh().await.unwrap();
    assert!(creds.pending().is_none());
    assert_eq!(creds.stats().pending_published, 1);
}

#[tokio::test(start_paused = true)]
async fn the_refresher_fetches_just_after_the_store_s_announced_rotation() {
    let store = MemorySource::new(
        Credential::new("app", "old").with_next_rotation_at(SystemTime::now() + secs(30)),
    );
    let creds = RotatingCredentials::new(store.clone(), policy(secs(3600)))
        .await
        .unwrap();
    assert_eq!(store.fetch_count(), 1);
    store.set(Credential::new("app", "rotated"));
    tokio::time::sleep(secs(29)).await;
    assert_eq!(
        creds.generation(),
        Generation::FIRST,
        "not before the rotation"
    );
    // 1 s after the announced time, spread over 2 s more per provider.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(
        creds.generation(),
        Generation::FIRST.next(),
        "fetched just after the store's rotation, not an hour later"
    );
}

/// A source that replaces expiring credentials `lead` before their end (a Vault dynamic role).
struct Leased {
    lead: Duration,
    store: MemorySource,
}

#[async_trait::async_trait]
impl CredentialSource for Leased {
    async fn fetch(&self) -> Result<Credential, crate::SourceError> {
        self.store.fetch().await
    }
    fn replaces_before_expiry(&self) -> Option<Duration> {
        Some(self.lead)
    }
}

#[tokio::test]
async fn refuses_an_expiry_margin_longer_than_the_sources_lead() {
    let leased = |lead| Leased {
        lead,
        store: MemorySource::new(Credential::new("app", SECRET)),
    };
    let margin = |m| {
        Policy::builder()
            .expiry_margin(m)
            .build()
            .expect("a valid policy on its own")
    };
    let err = RotatingCredentials::new(leased(secs(90)), margin(secs(120)))
        .await
        .expect_err("a margin longer than the lease's lead");
    assert!(err.is_policy() && !err.is_source(), "{err:?}");
    assert_eq!(err.policy_error().unwrap().setting(), "expiry_margin");
    let text = err.to_string();
    assert!(text.contains("2m") && text.contains("1m30s"), "{text}");
    assert!(!format!("{text} {err:?}").contains(SECRET));
    // Boxed and shared sources say the same.
    let err = RotatingCredentials::builder_from_arc(Arc::new(leased(secs(1))))
        .policy(margin(secs(2)))
        .build()
        .await
        .expect_err("through Arc<dyn CredentialSource>");
    assert!(err.is_policy(), "{err:?}");
    // Equal is fine, and so is any margin for a source without a lead.
    RotatingCredentials::new(leased(secs(90)), margin(secs(90)))
        .await
        .expect("a margin equal to the lead");
    RotatingCredentials::new(
        MemorySource::new(Credential::new("app", SECRET)),
        margin(secs(3600)),
    )
    .await
    .expect("no lead, no limit");
}

// ---------------------------------------------------------------------------------------------
// When a rotation goes wrong
// ---------------------------------------------------------------------------------------------

fn login(password: &str) -> Credential {
    Credential::new("app", password)
}

fn is(snapshot: &Snapshot, password: &str) -> bool {
    snapshot.credential().is_same_login(&login(password))
}

#[tokio::test(start_paused = true)]
async fn a_pending_credential_replaced_mid_probe_is_never_published_unproven() {
    let store = MemorySource::new(login("old"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    store.set_pending(Some(login("first-try")));
    creds.refresh().await.unwrap();
    let probed = creds.pending().expect("the first pending credential");
    // The rotation is retried with a new token while a probe of the first value is in flight:
    // AWSPENDING moves to another login.
    store.set_pending(Some(login("second-try")));
    creds.refresh().await.unwrap();
    let moved = creds.pending().expect("the second pending credential");
    assert!(is(&moved, "second-try"));
    assert_ne!(
        moved.generation(),
        probed.generation(),
        "a new pending login gets a new generation number"
    );
    // The probe of the first value succeeds: it proves that value, not the second one.
    creds.report_accepted(probed.generation());
    assert!(
        is(&creds.current(), "old"),
        "the second pending login was published though the database never accepted it"
    );
    assert_eq!(creds.stats().pending_published, 0);
    // The second one, accepted, is published.
    creds.report_accepted(moved.generation());
    assert!(is(&creds.current(), "second-try"));
    assert!(creds.current().is_proven());
    // Generation numbers only grow, and the store finishing is not a new generation.
    store.set(login("second-try"));
    store.set_pending(None);
    creds.refresh().await.unwrap();
    assert_eq!(creds.generation(), moved.generation());
}

#[tokio::test(start_paused = true)]
async fn a_reverted_rotation_gives_the_store_s_value_back() {
    let store = MemorySource::new(login("A"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    creds.report_accepted(Generation::FIRST);
    // createSecret + setSecret; the pools adopt the pending credential.
    store.set_pending(Some(login("B")));
    creds.refresh().await.unwrap();
    let b = creds.pending().unwrap();
    creds.report_accepted(b.generation());
    assert!(is(&creds.current(), "B"));
    // Mid-rotation the store's lagging current value is not a change back.
    creds.refresh().await.unwrap();
    assert!(is(&creds.current(), "B"));

    // The operator reverts: the database has A again and AWSPENDING is gone.
    store.set_pending(None);
    creds.refresh().await.unwrap();
    let back = creds.current();
    assert!(
        is(&back, "A"),
        "the store's working value must win back once it no longer rotates"
    );
    assert!(back.generation() > b.generation());
    // B's sessions keep serving until A is proven (prove before drain), then go.
    assert!(!back.is_proven());
    creds.report_accepted(back.generation());
    assert!(creds.current().is_proven());
    assert!(!creds.health().is_refused());
}

#[tokio::test(start_paused = true)]
async fn a_reverted_database_with_the_pending_version_left_behind_is_followed_after_a_refusal() {
    let store = MemorySource::new(login("A"));
    let creds = RotatingCredentials::new(store.clone(), policy(secs(60)))
        .await
        .unwrap();
    creds.report_accepted(Generation::FIRST);
    store.set_pending(Some(login("B")));
    creds.refresh().await.unwrap();
    let b = creds.pending().unwrap();
    creds.report_accepted(b.generation());
    // Only the database is reverted; the store still stages B as pending.
    let fresh = creds.report_auth_failure(b.generation()).await.unwrap();
    assert!(is(&fresh, "B"), "nothing is published on a refusal alone");
    let candidate = creds
        .pending()
        .expect("the credential B replaced is offered as the pending one");
    assert!(is(&candidate, "A") && candidate.generation() > b.generation());
    // A refresh before the database has accepted it changes nothing (the store still rotates).
    creds.refresh().await.unwrap();
    assert!(is(&creds.current(), "B"));
    // The database accepts A: published, proven.
    creds.report_accepted(candidate.generation());
    assert!(creds.current().is_proven() && is(&creds.current(), "A"));
    // Several rotations failing in a row: each new pending login gets its own number and is
    // never published without an acceptance.
    let mut last = creds.generation();
    for attempt in 0..3 {
        store.set_pending(Some(login(&format!("retry-{attempt}"))));
        creds.refresh().await.unwrap();
        let pending = creds.pending().expect("pending");
        assert!(pending.generation() > last);
        last = pending.generation();
        assert!(is(&creds.current(), "A"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stuck_pending_version_stops_being_tried_and_health_says_so() {
    let store = MemorySource::new(login("A"));
    let policy = Policy::builder()
        .refresh_interval(secs(10))
        .jitter(0.0)
        .pending_trial_window(secs(30))
        .build()
        .unwrap();
    let creds = RotatingCredentials::new(store.clone(), policy)
        .await
        .unwrap();
    creds.report_accepted(Generation::FIRST);
    store.set_pending(Some(login("never-set")));
    creds.refresh().await.unwrap();
    assert!(creds.pending_on_trial().is_some());
    assert!(!creds.health().is_rotation_stuck());
    assert!(creds.health().rotation_pending_for().is_some());
    tokio::time::sleep(secs(31)).await;
    assert!(creds.pending().is_some(), "still known after refusals");
    assert!(
        creds.pending_on_trial().is_none(),
        "a pending version older than the window is not tried any more"
    );
    let health = creds.health();
    assert!(
        health.is_rotation_stuck() && !health.is_healthy(),
        "{health:?}"
    );
    // The store changes it (a new rotation): tried again.
    store.set_pending(Some(login("next-rotation")));
    creds.refresh().await.unwrap();
    assert!(creds.pending_on_trial().is_some());
    assert!(!creds.health().is_rotation_stuck());
    // The store's own age for a version counts too (Secrets Manager's CreatedDate).
    store.set_pending(Some(
        login("created-long-ago").with_issued_at(SystemTime::now() - secs(3600)),
    ));
    creds.refresh().await.unwrap();
    assert!(creds.pending().is_some() && creds.pending_on_trial().is_none());
}

#[tokio::test(start_paused = true)]
async fn refusal_fetches_back_off_within_a_burst_and_on_an_unavailable_store() {
    let store = MemorySource::new(login("wrong"));
    let creds = driven_by_hand(&store).await;
    // A refused login reported every 20 ms for 20 s (a pool stuck on a mistyped secret).
    let start = store.fetch_count();
    for _ in 0..1000 {
        let _ = creds.report_auth_failure(Generation::FIRST).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetches = store.fetch_count() - start;
    // 200 ms doubling to 1 s: about 21 fetches in 20 s, not 100 (one per 200 ms).
    assert!((15..=25).contains(&fetches), "{fetches} fetches in 20 s");
    let stats = creds.stats();
    assert!(stats.auth_fetches_coalesced > 900, "{stats:?}");
    assert!(stats.store_calls >= fetches, "{stats:?}");

    // The store is fixed: seen within the cap.
    store.set(login("right"));
    let fixed_at = Instant::now();
    loop {
        let fresh = creds.report_auth_failure(Generation::FIRST).await.unwrap();
        if fresh.generation() != Generation::FIRST {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fixed_at.elapsed() <= AUTH_REFRESH_MAX + Duration::from_millis(100));

    // A throttling store: refusal fetches wait a jittered backoff after each failure.
    creds.report_accepted(creds.generation());
    let g = creds.generation();
    store.fail_with(SourceError::unavailable("ThrottlingException"));
    let start = store.fetch_count();
    for _ in 0..500 {
        let _ = creds.report_auth_failure(g).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let throttled = store.fetch_count() - start;
    assert!(
        throttled <= 12,
        "{throttled} fetches in 10 s from a throttling store"
    );
}

#[tokio::test(start_paused = true)]
async fn an_adopted_pending_credential_is_not_read_again_at_every_refresh() {
    let store = MemorySource::new(login("A"));
    let creds = driven_by_hand(&store).await;
    creds.report_accepted(Generation::FIRST);
    // createSecret, and the refresh that sees it: the pending credential is read.
    store.set_pending(Some(login("B")));
    creds.refresh().await.unwrap();
    let pending = creds.pending().expect("read while the store rotates");
    // setSecret; the database accepts it: adopted before the store finishes.
    creds.report_accepted(pending.generation());
    assert_eq!(creds.generation(), pending.generation());
    // Refreshes until finishSecret find the store still rotating: one call each, not two.
    for _ in 0..3 {
        let calls = creds.stats().store_calls;
        creds.refresh().await.unwrap();
        assert_eq!(creds.stats().store_calls, calls + 1, "{:?}", creds.stats());
        assert_eq!(creds.generation(), pending.generation());
    }
    // A refusal of the adopted login still reads the store's pending credential (a rotation
    // retried after the adoption).
    store.set_pending(Some(login("C")));
    let calls = creds.stats().store_calls;
    let _ = creds.report_auth_failure(pending.generation()).await;
    assert_eq!(
        creds.stats().store_calls,
        calls + 2,
        "the current one, then the pending one"
    );
    assert!(creds.pending().is_some_and(|p| is(&p, "C")));
    // finishSecret: not a change.
    store.set(login("B"));
    store.set_pending(None);
    creds.refresh().await.unwrap();
    assert_eq!(creds.generation(), pending.generation());
}

/// A provider on `store` with a 10-minute refresh and no refresher: the test drives every
/// fetch.
async fn driven_by_hand(store: &MemorySource) -> RotatingCredentials {
    RotatingCredentials::builder(store.clone())
        .policy(policy(secs(600)))
        .background_refresh(false)
        .build()
        .await
        .unwrap()
}
