//! `credswap drill --fleet N`'s own options ([`FleetArgs`], flattened into `DrillArgs`) and the
//! checks of their combinations with the rest of the drill's.

use std::time::Duration;

use clap::Args;

use super::StrategyName;
use super::drill_args::{DrillArgs, ScenarioName, SourceName};
use super::parse_duration;

/// The most instances a fleet may have: each is a provider, a pool and its sessions in this
/// process and at the server.
pub const MAX_FLEET: u16 = 2000;

/// The fleet's requests a second in all, by default (see `--think-time`).
const FLEET_REQUESTS_PER_S: f64 = 300.0;

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Drill a fleet: N application instances in this process, each with its own source client,
    /// provider and pool (--pool-size each, default 2), all reading one secret, under load
    /// (--concurrency per instance, default 1; requests are spread over the instances), while
    /// the store rotates every --rotate-every (default 15s) for --duration (default 60s). One
    /// adapter per run (--adapter, default deadpool). With --source memory, aws (moto, rotated
    /// by credswap-rotate), vault-static (an OpenBao static role, one user: the drill calls
    /// database/rotate-role every --rotate-every and Vault changes the password, so the old one
    /// stops working at once) or vault-dynamic (an OpenBao dynamic role: each instance a lease
    /// and a user of its own; its source issues its next user at its first fetch within the
    /// drain grace + a refresh interval of the lease's end, which comes --rotate-every + that
    /// margin after the issue, and Vault drops the old user at the end). With Vault each
    /// instance reads with a token and an HTTP client of its own, and --strategy,
    /// --rotation-period and the lease options do not apply. The embedded PostgreSQL is started
    /// with max_connections sized for N x --pool-size. Reports per rotation how long the fleet took to converge (the store's
    /// change until the last instance's first connect with the new credential), the store
    /// calls (steady state and per rotation), the server's logins (peak per second, refused),
    /// failed requests and stale sessions. Exit status 1 when a request failed or a session was
    /// stale.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_FLEET)))]
    pub fleet: Option<u16>,

    /// With --fleet: each instance's refresh interval (its provider's cache TTL; jitter shortens
    /// each delay by up to 10%). Default: a third of --rotate-every, between 200ms and 5s (5s
    /// with --rotate-every off). Sessions of a rotated-away credential count as stale when still
    /// open this long plus 2 s (3 x this with --store-throttle) after the store's change.
    #[arg(long, value_parser = parse_refresh)]
    pub refresh_interval: Option<Duration>,

    /// With --fleet: how long each worker pauses between its requests (not counted in the
    /// latency). Default: N x --concurrency / 300 seconds, at most 1s, so that the fleet sends
    /// about 300 requests a second in all (a few hundred pools flat out would take every core
    /// of a small machine from the store, the rotator and the server's logins); 0s for flat out.
    #[arg(long, value_parser = parse_think_time)]
    pub think_time: Option<Duration>,

    /// With --fleet: each refresh delay is shortened by a random fraction below this (0 to 0.5;
    /// the provider's default 0.1), so that the instances' refreshes spread out; 0 for a
    /// schedule without jitter (to measure what the jitter does).
    #[arg(long, default_value_t = 0.1, value_parser = parse_jitter)]
    pub refresh_jitter: f64,

    /// With --fleet: cap the fleet's logins at about this many a second, through each pool's
    /// connect pacing (`max_connects_per_second`: this divided by N, rounded up, at least 1 per
    /// pool). With --adapter deadpool. Without it the pools are not paced.
    #[arg(long, value_name = "LOGINS_PER_S", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connect_pace: Option<u32>,

    /// With --fleet: answer this fraction of the fleet's calls to the store (0 to 1, each call
    /// independently) with its throttling error. --source aws: HTTP 400 ThrottlingException from
    /// a fault proxy in front of moto (the SDK retries it, up to 3 attempts; the rotator reaches
    /// moto directly); --source vault-static: HTTP 429 `rate limit quota exceeded` from a fault
    /// proxy in front of OpenBao (the source does not retry: the fetch fails and the provider
    /// backs off; the drill's rotate-role reaches OpenBao directly); --source memory: the
    /// in-memory store's simulated ThrottlingException.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub store_throttle: f64,

    /// With --fleet: every answer of the store to the fleet waits this long (e.g. 50ms);
    /// --source aws and vault-static: through the same fault proxy.
    #[arg(long, value_parser = parse_latency)]
    pub store_latency: Option<Duration>,
}

impl FleetArgs {
    /// The instances' refresh interval: `--refresh-interval`, else a third of the rotation
    /// interval within 200ms..=5s (5s without rotations).
    pub fn refresh(&self, rotate_every: Option<Duration>) -> Duration {
        self.refresh_interval.unwrap_or_else(|| {
            rotate_every.map_or(Duration::from_secs(5), |every| {
                (every / 3).clamp(Duration::from_millis(200), Duration::from_secs(5))
            })
        })
    }

    /// Each pool's connect pace for a fleet of `instances`: `--connect-pace` shared out, rounded
    /// up, at least 1.
    pub fn pace_per_pool(&self, instances: usize) -> Option<u32> {
        let n = u32::try_from(instances.max(1)).unwrap_or(u32::MAX);
        self.connect_pace.map(|total| total.div_ceil(n).max(1))
    }

    /// Each worker's pause between requests: `--think-time`, else `instances x concurrency /
    /// 300` seconds, at most 1 s.
    pub fn think(&self, instances: usize, concurrency: u16) -> Duration {
        self.think_time.unwrap_or_else(|| {
            let workers = instances as f64 * f64::from(concurrency);
            Duration::from_secs_f64((workers / FLEET_REQUESTS_PER_S).min(1.0))
        })
    }

    /// Whether the fleet's calls go through the fault proxy.
    pub fn needs_proxy(&self) -> bool {
        self.store_throttle > 0.0 || self.store_latency.is_some()
    }

    /// The combinations clap cannot check.
    pub fn check(&self, drill: &DrillArgs) -> Result<(), String> {
        let Some(n) = self.fleet else {
            if self.needs_proxy() {
                return Err(
                    "--store-throttle and --store-latency are fleet options: give --fleet N"
                        .to_owned(),
                );
            }
            return Ok(());
        };
        if !matches!(
            drill.source,
            SourceName::Memory
                | SourceName::Aws
                | SourceName::VaultStatic
                | SourceName::VaultDynamic
        ) {
            return Err(format!(
                "--fleet runs with --source memory, aws, vault-static or vault-dynamic, not \
                 --source {} (not yet)",
                drill.source.as_str()
            ));
        }
        if drill.pooler.is_some() {
            return Err("--fleet runs without --pooler".to_owned());
        }
        if drill.scenario != ScenarioName::Normal {
            return Err(format!(
                "--fleet runs the normal scenario only, not --scenario {}",
                drill.scenario.as_str()
            ));
        }
        if let Some(peer) = drill.adapter.iter().find(|a| !a.is_credswap()) {
            return Err(format!(
                "--fleet drills credswap's adapters (deadpool, bb8, sqlx): {} has no provider \
                 whose convergence and store calls could be measured",
                peer.as_str()
            ));
        }
        if self.connect_pace.is_some()
            && let Some(other) = drill.adapter.iter().find(|a| a.as_str() != "deadpool")
        {
            return Err(format!(
                "--connect-pace paces deadpool pools (the fleet builds them with \
                 max_connects_per_second); not {}",
                other.as_str()
            ));
        }
        let refresh = self.refresh(drill.rotate_every.interval());
        if let Some(every) = drill.rotate_every.interval()
            && drill.strategy.contains(&StrategyName::AlternatingUsers)
        {
            // Secrets Manager keeps the previous user until the next rotation changes it.
            if drill.source == SourceName::Aws && every <= refresh {
                return Err(format!(
                    "with --source aws and alternating users the previous user works until the \
                     next rotation (--rotate-every {}), which must be longer than \
                     --refresh-interval ({})",
                    humantime::format_duration(every),
                    humantime::format_duration(refresh)
                ));
            }
            // Memory alternating users: the retired role's password is revoked half an interval
            // after the store points at the other role; the instances must have refreshed.
            if drill.source == SourceName::Memory && every / 2 <= refresh {
                return Err(format!(
                    "with --source memory and alternating users the previous role is revoked \
                     half a --rotate-every after a rotation ({}), which must be longer than \
                     --refresh-interval ({})",
                    humantime::format_duration(every / 2),
                    humantime::format_duration(refresh)
                ));
            }
        }
        let sessions = u32::from(n) * u32::from(drill.pool_size);
        if sessions > 20_000 {
            return Err(format!(
                "--fleet {n} x --pool-size {} is {sessions} sessions; at most 20000",
                drill.pool_size
            ));
        }
        Ok(())
    }
}

fn parse_refresh(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err(format!("`{text}`: a refresh interval of at least 100ms"));
    }
    Ok(d)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let p: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number; write a fraction like 0.5"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("`{text}`: a fraction from 0 to 1"));
    }
    Ok(p)
}

fn parse_jitter(text: &str) -> Result<f64, String> {
    let j = parse_fraction(text)?;
    if j > 0.5 {
        return Err(format!("`{text}`: a jitter from 0 to 0.5"));
    }
    Ok(j)
}

fn parse_think_time(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 500ms or 0s"))?;
    if d > Duration::from_secs(60) {
        return Err(format!("`{text}`: a think time of at most 60s"));
    }
    Ok(d)
}

fn parse_latency(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 50ms"))?;
    if d > Duration::from_secs(30) {
        return Err(format!("`{text}`: a store latency of at most 30s"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Cli, Command};
    use super::*;

    fn checked(args: &[&str]) -> Result<DrillArgs, clap::Error> {
        let cli =
            Cli::try_parse_checked_from(std::iter::once("credswap").chain(args.iter().copied()))?;
        match cli.command {
            Command::Drill(d) => Ok(d),
            other => panic!("not a drill: {other:?}"),
        }
    }

    #[test]
    fn fleet_defaults() {
        let d = checked(&["drill", "--fleet", "20"]).unwrap();
        assert_eq!(d.fleet.fleet, Some(20));
        assert_eq!((d.concurrency, d.pool_size), (1, 2));
        assert_eq!(d.adapter.len(), 1);
        assert_eq!(d.adapter[0].as_str(), "deadpool");
        assert_eq!(d.duration, Duration::from_secs(60));
        assert_eq!(d.rotate_every.interval(), Some(Duration::from_secs(15)));
        assert_eq!(d.fleet.refresh_interval, None);
        assert_eq!(
            d.fleet.refresh(d.rotate_every.interval()),
            Duration::from_secs(5)
        );
        assert_eq!(
            d.fleet.refresh(Some(Duration::from_secs(1))),
            Duration::from_millis(333) + Duration::from_nanos(333_333)
        );
        assert_eq!(d.fleet.refresh(None), Duration::from_secs(5));
        assert_eq!(
            d.fleet.refresh(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
        // The brief's small fleet parses and checks (a third of 1s: 333ms).
        checked(&[
            "drill",
            "--fleet",
            "5",
            "--pool-size",
            "1",
            "--duration",
            "4s",
            "--rotate-every",
            "1s",
            "--adapter",
            "deadpool",
        ])
        .unwrap();
        assert_eq!(d.fleet.store_throttle, 0.0);
        assert_eq!(d.fleet.refresh_jitter, 0.1);
        assert_eq!(d.fleet.pace_per_pool(20), None);
        assert_eq!(d.fleet.think(300, 1), Duration::from_secs(1));
        assert_eq!(d.fleet.think(30, 2), Duration::from_millis(200));
        assert_eq!(d.fleet.think(3000, 1), Duration::from_secs(1));
        let paced = checked(&["drill", "--fleet", "300", "--connect-pace", "100"]).unwrap();
        assert_eq!(paced.fleet.pace_per_pool(300), Some(1));
        assert_eq!(paced.fleet.pace_per_pool(30), Some(4));
        assert!(!d.fleet.needs_proxy());
        // Without --fleet the drill's own defaults stay.
        let d = checked(&["drill"]).unwrap();
        assert_eq!(d.fleet.fleet, None);
        assert_eq!((d.concurrency, d.pool_size), (32, 8));
        assert_eq!(d.adapter.len(), 3);
        // Given values win over the fleet's defaults.
        let d = checked(&[
            "drill",
            "--fleet",
            "5",
            "--concurrency",
            "3",
            "--pool-size",
            "1",
            "--adapter",
            "bb8,sqlx",
            "--rotate-every",
            "off",
            "--source",
            "aws",
            "--store-throttle",
            "0.5",
            "--store-latency",
            "20ms",
        ])
        .unwrap();
        assert_eq!((d.concurrency, d.pool_size, d.adapter.len()), (3, 1, 2));
        assert_eq!(d.rotate_every.interval(), None);
        assert_eq!(d.fleet.store_throttle, 0.5);
        assert_eq!(d.fleet.store_latency, Some(Duration::from_millis(20)));
        assert!(d.fleet.needs_proxy());
    }

    #[test]
    fn fleet_combinations_that_do_not_go() {
        for (args, says) in [
            (
                vec!["drill", "--store-throttle", "0.5", "--source", "aws"],
                "give --fleet N",
            ),
            (
                vec!["drill", "--fleet", "3", "--source", "minted"],
                "--source memory, aws, vault-static or vault-dynamic",
            ),
            (
                vec!["drill", "--fleet", "3", "--adapter", "deadpool,static"],
                "static has no provider",
            ),
            (
                vec![
                    "drill",
                    "--fleet",
                    "3",
                    "--source",
                    "aws",
                    "--rotate-every",
                    "4s",
                    "--refresh-interval",
                    "5s",
                ],
                "works until the next rotation",
            ),
            (
                vec![
                    "drill",
                    "--fleet",
                    "3",
                    "--rotate-every",
                    "8s",
                    "--refresh-interval",
                    "5s",
                    "--strategy",
                    "alternating-users",
                ],
                "half a --rotate-every",
            ),
            (
                vec!["drill", "--fleet", "3", "--pooler", "pgbouncer"],
                "without --pooler",
            ),
            (
                vec![
                    "drill",
                    "--fleet",
                    "3",
                    "--connect-pace",
                    "50",
                    "--adapter",
                    "bb8",
                ],
                "paces deadpool pools",
            ),
        ] {
            let err = checked(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
            assert!(err.to_string().contains(says), "{args:?}: {err}");
        }
        for bad in [
            &["drill", "--fleet", "0"][..],
            &["drill", "--fleet", "3", "--store-throttle", "1.5"],
            &["drill", "--fleet", "3", "--refresh-interval", "10ms"],
            &["drill", "--fleet", "3", "--refresh-jitter", "0.7"],
        ] {
            assert_eq!(checked(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        // Alternating users on the AWS source keep the old user until the next rotation.
        checked(&[
            "drill",
            "--fleet",
            "3",
            "--source",
            "aws",
            "--rotate-every",
            "8s",
            "--refresh-interval",
            "5s",
        ])
        .unwrap();
        // A static role: one user, its old password refused at once; no overlap to keep within,
        // and the proxy's faults apply to it too.
        let d = checked(&[
            "drill",
            "--fleet",
            "3",
            "--source",
            "vault-static",
            "--rotate-every",
            "2s",
            "--store-throttle",
            "0.5",
        ])
        .unwrap();
        assert_eq!(d.source, SourceName::VaultStatic);
        assert!(d.fleet.needs_proxy());
        // Single user only: no overlap to keep within.
        checked(&[
            "drill",
            "--fleet",
            "3",
            "--rotate-every",
            "2s",
            "--refresh-interval",
            "5s",
            "--strategy",
            "single-user",
        ])
        .unwrap();
    }
}
