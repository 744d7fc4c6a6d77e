//! How often to refresh, how long rotations overlap, and how to behave when the store fails.

use std::fmt;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The timing rules of a [`RotatingCredentials`](crate::RotatingCredentials).
///
/// Built with [`Policy::builder`], which enforces the project's second invariant: **the cache
/// refreshes faster than the overlap window closes**. After a rotation the old credential keeps
/// working only for `overlap_window`; a cache that refreshes every `refresh_interval` may hand
/// out the old credential for up to that long, so `refresh_interval` must be shorter, or new
/// connections would be opened with a revoked password. The builder refuses the combination
/// instead of leaving it to documentation.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `refresh_interval` | 5 min | cache TTL: the refresher fetches this often, counted from the start of its last fetch or the end of another caller's refresh (jitter only shortens it; a fetch that took over half of it is followed by at least half of it; a lease's renewal point or the store's announced rotation can bring the fetch earlier) |
/// | `overlap_window` | none | how long the store keeps the previous credential valid after a rotation |
/// | `rotation_interval` | 30 days | the store's rotation schedule; an older credential raises a health warning |
/// | `expiry_margin` | 1 min | refresh, and retire connections, this long before a credential's `expires_at` |
/// | `jitter` | 0.1 | each refresh delay is shortened by a random fraction in `[0, jitter)`; the first, and the first after a fetch the whole fleet made together (the store's announced rotation, the end of an outage), comes at a random point of the interval, so that a fleet spreads its store calls (0: a fixed schedule) |
/// | `backoff_initial`, `backoff_max` | 1 s, 1 min | retry delays after a failed refresh: doubling, capped (and never longer than `refresh_interval`) |
/// | `fetch_timeout` | 30 s | a fetch that takes longer fails (an unreachable store must not hang the refresher) |
/// | `validation_timeout` | 10 s | a validator that takes longer rejects the credential (a stalled database must not hold the refresh) |
/// | `connect_deadline` | 30 s | how long an adapter's connect keeps retrying refused logins and transient errors, where the pool has no timeout of its own |
/// | `auth_refresh_interval` | 200 ms | at most one store fetch per this interval is caused by authentication failures (the gap doubles while one burst of refusals goes on, up to 1 s, and a store answering `unavailable` gets a jittered backoff) |
/// | `pending_trial_window` | 30 s | how long the pools try a store's pending credential on their own; an older pending version is a stuck rotation, left alone and reported by `health()` |
///
/// With no overlap declared (single-user rotation, where `ALTER ROLE ... PASSWORD` kills the old
/// password at once) adapters rely on the auth-failure path: a connect refused with SQLSTATE
/// `28P01` reports it, the provider refreshes (shared, and at most once per
/// `auth_refresh_interval`), and the connect waits for a credential that works, up to
/// `connect_deadline` or the pool's own timeout.
///
/// ```
/// use std::time::Duration;
/// use credswap_core::Policy;
///
/// let policy = Policy::builder()
///     .refresh_interval(Duration::from_secs(60))
///     .overlap_window(Duration::from_secs(300))
///     .build()?;
/// assert_eq!(policy.refresh_interval(), Duration::from_secs(60));
///
/// let err = Policy::builder()
///     .refresh_interval(Duration::from_secs(600))
///     .overlap_window(Duration::from_secs(300))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.setting(), "refresh_interval");
/// # Ok::<(), credswap_core::PolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    refresh_interval: Duration,
    overlap_window: Option<Duration>,
    rotation_interval: Duration,
    expiry_margin: Duration,
    jitter: f64,
    backoff_initial: Duration,
    backoff_max: Duration,
    fetch_timeout: Duration,
    validation_timeout: Duration,
    connect_deadline: Duration,
    auth_refresh_interval: Duration,
    pending_trial_window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            refresh_interval: 5 * MINUTE,
            overlap_window: None,
            rotation_interval: 30 * DAY,
            expiry_margin: MINUTE,
            jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: MINUTE,
            fetch_timeout: Duration::from_secs(30),
            validation_timeout: Duration::from_secs(10),
            connect_deadline: Duration::from_secs(30),
            auth_refresh_interval: Duration::from_millis(200),
            pending_trial_window: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// A builder starting from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
        }
    }

    /// The cache TTL.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// How long the previous credential stays valid after a rotation, if declared.
    pub fn overlap_window(&self) -> Option<Duration> {
        self.overlap_window
    }

    /// The store's rotation schedule, for the age alert.
    pub fn rotation_interval(&self) -> Duration {
        self.rotation_interval
    }

    /// How long before `expires_at` a credential is refreshed and its connections retired.
    pub fn expiry_margin(&self) -> Duration {
        self.expiry_margin
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The first retry delay after a failed refresh.
    pub fn backoff_initial(&self) -> Duration {
        self.backoff_initial
    }

    /// The longest retry delay after failed refreshes.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }

    /// How long one fetch may take.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// How long validate-before-swap may take before it counts as a rejection.
    pub fn validation_timeout(&self) -> Duration {
        self.validation_timeout
    }

    /// How long an adapter's connect keeps retrying refused logins and transient errors
    /// (connection refused, `57P03`, `53300`) where the pool has no timeout of its own.
    pub fn connect_deadline(&self) -> Duration {
        self.connect_deadline
    }

    /// The shortest time between two store fetches caused by authentication failures.
    pub fn auth_refresh_interval(&self) -> Duration {
        self.auth_refresh_interval
    }

    /// How long the pools try a store's pending credential on their own (pending trials) before
    /// taking it for a stuck rotation.
    pub fn pending_trial_window(&self) -> Duration {
        self.pending_trial_window
    }

    /// The delay before retry number `failures` (1 for the first retry): doubling from
    /// `backoff_initial`, capped at `backoff_max`, before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max)
    }
}

/// Builds a [`Policy`]; [`build`](Self::build) checks every rule.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// Sets the cache TTL. Must be shorter than the overlap window, if one is declared.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.policy.refresh_interval = interval;
        self
    }

    /// Declares how long the store keeps the previous credential valid after rotating
    /// (AWS alternating users: until the next rotation; Vault: the old lease's remaining TTL).
    pub fn overlap_window(mut self, window: Duration) -> Self {
        self.policy.overlap_window = Some(window);
        self
    }

    /// Sets the store's rotation schedule, for the age alert.
    pub fn rotation_interval(mut self, interval: Duration) -> Self {
        self.policy.rotation_interval = interval;
        self
    }

    /// Sets how long before `expires_at` to refresh and retire connections.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.policy.expiry_margin = margin;
        self
    }

    /// Sets the jitter fraction, in `[0, 0.5]`: each refresh comes up to this fraction of the
    /// interval early. Above zero, the first refresh after the provider is built (and the first
    /// after a fetch the whole fleet made together: the store's announced rotation, the end of
    /// an outage) comes at a random point of the interval, which puts each provider of a fleet
    /// on a phase of its own; zero gives a fixed schedule (every `refresh_interval`, from the
    /// first fetch).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Sets the retry delays after failed refreshes: start at `initial`, double, cap at `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.policy.backoff_initial = initial;
        self.policy.backoff_max = max;
        self
    }

    /// Sets how long one fetch may take.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.policy.fetch_timeout = timeout;
        self
    }

    /// Sets how long validate-before-swap may take; a validator still running then rejects the
    /// credential, so a database that accepts and then stalls cannot hold the provider.
    pub fn validation_timeout(mut self, timeout: Duration) -> Self {
        self.policy.validation_timeout = timeout;
        self
    }

    /// Sets how long an adapter's connect keeps retrying refused logins and transient errors,
    /// where the pool has no timeout of its own (deadpool without `timeouts.create`).
    pub fn connect_deadline(mut self, deadline: Duration) -> Self {
        self.policy.connect_deadline = deadline;
        self
    }

    /// Sets the shortest time between two store fetches caused by authentication failures, so
    /// a burst of refused connects cannot hammer the store.
    pub fn auth_refresh_interval(mut self, interval: Duration) -> Self {
        self.policy.auth_refresh_interval = interval;
        self
    }

    /// Sets how long the pools try a store's pending credential on their own (pending trials,
    /// at once and then doubling from 250 ms). A rotation whose pending version is older than
    /// this is taken for stuck (it died after createSecret, or its setSecret failed): its
    /// login is no longer tried, so a fleet does not keep sending the database a login it
    /// refuses, and [`health`](crate::RotatingCredentials::health) reports it
    /// ([`Health::is_rotation_stuck`](crate::Health::is_rotation_stuck)). A refused login with
    /// the current credential still tries the pending one.
    pub fn pending_trial_window(mut self, window: Duration) -> Self {
        self.policy.pending_trial_window = window;
        self
    }

    /// Checks the rules and returns the policy, or the first rule broken.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let p = self.policy;
        nonzero_at_most("refresh_interval", p.refresh_interval, DAY)?;
        nonzero_at_most("rotation_interval", p.rotation_interval, 3650 * DAY)?;
        nonzero_at_most("fetch_timeout", p.fetch_timeout, HOUR)?;
        nonzero_at_most("backoff_initial", p.backoff_initial, DAY)?;
        nonzero_at_most("backoff_max", p.backoff_max, DAY)?;
        nonzero_at_most("validation_timeout", p.validation_timeout, HOUR)?;
        nonzero_at_most("connect_deadline", p.connect_deadline, HOUR)?;
        nonzero_at_most("auth_refresh_interval", p.auth_refresh_interval, MINUTE)?;
        nonzero_at_most("pending_trial_window", p.pending_trial_window, DAY)?;
        if p.expiry_margin > DAY {
            return Err(PolicyError::new(
                "expiry_margin",
                format!(
                    "expiry_margin of {} is longer than a day; no lease needs that much warning",
                    fmt_duration(p.expiry_margin)
                ),
            ));
        }
        if p.backoff_max < p.backoff_initial {
            return Err(PolicyError::new(
                "backoff_max",
                format!(
                    "backoff_max ({}) is shorter than backoff_initial ({}); the cap must be at least the first delay",
                    fmt_duration(p.backoff_max),
                    fmt_duration(p.backoff_initial)
                ),
            ));
        }
        if !(0.0..=0.5).contains(&p.jitter) {
            return Err(PolicyError::new(
                "jitter",
                format!("jitter must be a fraction in [0, 0.5], got {}", p.jitter),
            ));
        }
        if let Some(overlap) = p.overlap_window {
            if overlap.is_zero() {
                return Err(PolicyError::new(
                    "overlap_window",
                    "an overlap_window of zero means there is no overlap: leave it unset, and adapters \
                     recover through the auth-failure retry"
                        .to_owned(),
                ));
            }
            if p.refresh_interval >= overlap {
                return Err(PolicyError::new(
                    "refresh_interval",
                    format!(
                        "refresh_interval ({}) must be shorter than overlap_window ({}): the old credential \
                         stops working {} after a rotation, but the cache could keep handing it out for {}; \
                         lower refresh_interval below {} or lengthen the overlap",
                        fmt_duration(p.refresh_interval),
                        fmt_duration(overlap),
                        fmt_duration(overlap),
                        fmt_duration(p.refresh_interval),
                        fmt_duration(overlap),
                    ),
                ));
            }
        }
        Ok(p)
    }
}

fn nonzero_at_most(
    setting: &'static str,
    value: Duration,
    max: Duration,
) -> Result<(), PolicyError> {
    if value.is_zero() {
        return Err(PolicyError::new(
            setting,
            format!("{setting} must be greater than zero"),
        ));
    }
    if value > max {
        return Err(PolicyError::new(
            setting,
            format!(
                "{setting} of {} is longer than the limit of {}; is the unit right?",
                fmt_duration(value),
                fmt_duration(max)
            ),
        ));
    }
    Ok(())
}

/// A [`Policy`] rule was broken. The message says which setting and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    setting: &'static str,
    message: String,
}

impl PolicyError {
    pub(crate) fn new(setting: &'static str, message: String) -> Self {
        Self { setting, message }
    }

    /// The name of the setting to change (`"refresh_interval"`, `"jitter"`, ...).
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid credential policy: {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Formats a duration for people: `250ms`, `5m`, `1h30m`, `30d`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}ns", d.as_nanos());
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (hours, rem) = (rem / 3600, rem % 3600);
    let (mins, s) = (rem / 60, rem % 60);
    let mut out = String::new();
    for (value, unit) in [(days, "d"), (hours, "h"), (mins, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    let sub_ms = d.subsec_millis();
    if secs < 60 && sub_ms > 0 {
        out = format!("{}.{:03}s", secs, sub_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_valid() {
        let p = Policy::builder().build().unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.refresh_interval(), 5 * MINUTE);
        assert_eq!(p.overlap_window(), None);
        assert_eq!(p.rotation_interval(), 30 * DAY);
    }

    #[test]
    fn refresh_must_be_shorter_than_overlap() {
        for refresh in [secs(300), secs(301)] {
            let err = Policy::builder()
                .refresh_interval(refresh)
                .overlap_window(secs(300))
                .build()
                .unwrap_err();
            assert_eq!(err.setting(), "refresh_interval");
            let msg = err.to_string();
            assert!(
                msg.contains("must be shorter than overlap_window (5m)"),
                "{msg}"
            );
            assert!(msg.contains("lower refresh_interval below 5m"), "{msg}");
        }
        assert!(
            Policy::builder()
                .refresh_interval(secs(299))
                .overlap_window(secs(300))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn zero_durations_are_rejected() {
        let cases: [(PolicyBuilder, &str); 5] = [
            (
                Policy::builder().refresh_interval(Duration::ZERO),
                "refresh_interval",
            ),
            (
                Policy::builder().rotation_interval(Duration::ZERO),
                "rotation_interval",
            ),
            (
                Policy::builder().fetch_timeout(Duration::ZERO),
                "fetch_timeout",
            ),
            (
                Policy::builder().backoff(Duration::ZERO, secs(1)),
                "backoff_initial",
            ),
            (
                Policy::builder().overlap_window(Duration::ZERO),
                "overlap_window",
            ),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.setting(), setting, "{err}");
        }
    }

    #[test]
    fn absurd_durations_are_rejected() {
        let err = Policy::builder()
            .refresh_interval(secs(2 * 86_400))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "refresh_interval");
        assert!(err.to_string().contains("is the unit right?"), "{err}");
        let err = Policy::builder()
            .rotation_interval(secs(11 * 365 * 86_400))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "rotation_interval");
        let err = Policy::builder()
            .expiry_margin(secs(2 * 86_400))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "expiry_margin");
        let err = Policy::builder()
            .fetch_timeout(secs(2 * 3600))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "fetch_timeout");
    }

    #[test]
    fn jitter_outside_range_is_rejected() {
        for j in [-0.1, 0.51, f64::NAN, f64::INFINITY] {
            let err = Policy::builder().jitter(j).build().unwrap_err();
            assert_eq!(err.setting(), "jitter");
        }
        for j in [0.0, 0.25, 0.5] {
            assert!(Policy::builder().jitter(j).build().is_ok());
        }
    }

    #[test]
    fn backoff_cap_below_initial_is_rejected() {
        let err = Policy::builder()
            .backoff(secs(10), secs(5))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "backoff_max");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = Policy::builder()
            .backoff(secs(1), secs(10))
            .build()
            .unwrap();
        let seq: Vec<_> = (1..=6).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 10, 10]);
        assert_eq!(p.backoff(u32::MAX), secs(10));
    }

    #[test]
    fn durations_print_for_people() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(secs(300)), "5m");
        assert_eq!(fmt_duration(secs(5400)), "1h30m");
        assert_eq!(fmt_duration(30 * DAY), "30d");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.500s");
    }
}
