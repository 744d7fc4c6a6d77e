//! Progress display, the final table and the JSON file.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use credswap_core::contract::AdapterStats;
use credswap_testkit::scenario::{Progress, ScenarioConfig, ScenarioReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{ScenarioName, SourceName};
use crate::drill::Run;

/// Live progress of one run: an indicatif spinner on a terminal, plain lines otherwise.
pub struct ProgressDisplay {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
    label: String,
}

impl ProgressDisplay {
    pub fn start(
        label: String,
        duration: Duration,
        progress: Arc<Progress>,
        generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Self::start_with(label, duration, progress, generation, None)
    }

    /// Like `start`, and a line per rotation under the progress (generation, connections
    /// drained, connects, failed requests since the previous rotation) from the adapter's
    /// counters, where it has them.
    pub fn start_with(
        label: String,
        duration: Duration,
        progress: Arc<Progress>,
        generation: Arc<dyn Fn() -> u64 + Send + Sync>,
        stats: Option<Arc<dyn Fn() -> AdapterStats + Send + Sync>>,
    ) -> Self {
        let started = tokio::time::Instant::now();
        let line = {
            let generation = Arc::clone(&generation);
            move |progress: &Progress| {
                format!(
                    "{:>5.1}s/{}s  requests {:>8}  failed {:>5}  rotations {:>3}  generation {:>3}",
                    started.elapsed().as_secs_f64(),
                    duration.as_secs(),
                    progress.ok(),
                    progress.failed(),
                    progress.rotations(),
                    generation(),
                )
            }
        };
        let mut rotations = RotationLines::new(label.clone(), generation, stats);
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<28} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.clone());
            let ticking = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    if let Some(text) = rotations.poll(&progress) {
                        ticking.println(text);
                    }
                    ticking.set_message(line(&progress));
                    ticking.tick();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Self {
                task,
                bar: Some(bar),
                label,
            }
        } else {
            eprintln!("{label}: running for {}s", duration.as_secs());
            let prefix = label.clone();
            let task = tokio::spawn(async move {
                let mut next = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(text) = rotations.poll(&progress) {
                        eprintln!("{text}");
                    }
                    if tokio::time::Instant::now() >= next {
                        next += Duration::from_secs(5);
                        eprintln!("{prefix}: {}", line(&progress));
                    }
                }
            });
            Self {
                task,
                bar: None,
                label,
            }
        }
    }

    pub fn finish(self, report: Option<&ScenarioReport>) {
        self.task.abort();
        let summary = report.map_or_else(
            || "failed to run".to_owned(),
            |r| {
                format!(
                    "{} ok, {} failed, {} rotations",
                    r.requests_ok, r.requests_failed, r.rotations
                )
            },
        );
        match self.bar {
            Some(bar) => bar.finish_with_message(summary),
            None => eprintln!("{}: done: {summary}", self.label),
        }
    }
}

/// One line per rotation: what happened since the previous one.
struct RotationLines {
    label: String,
    generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    stats: Option<Arc<dyn Fn() -> AdapterStats + Send + Sync>>,
    seen: u64,
    /// stale closed, opened, failed requests at the previous line.
    last: (u64, u64, u64),
}

impl RotationLines {
    fn new(
        label: String,
        generation: Arc<dyn Fn() -> u64 + Send + Sync>,
        stats: Option<Arc<dyn Fn() -> AdapterStats + Send + Sync>>,
    ) -> Self {
        let last = stats.as_ref().map_or((0, 0, 0), |s| {
            let s = s();
            (s.stale_closed, s.opened, 0)
        });
        Self {
            label,
            generation,
            stats,
            seen: 0,
            last,
        }
    }

    /// The line for the rotations done since the last call, if any.
    fn poll(&mut self, progress: &Progress) -> Option<String> {
        let done = progress.rotations();
        if done == self.seen {
            return None;
        }
        self.seen = done;
        let failed = progress.failed();
        let (drained, connects) = match &self.stats {
            Some(stats) => {
                let s = stats();
                let counts = (
                    s.stale_closed.saturating_sub(self.last.0),
                    s.opened.saturating_sub(self.last.1),
                );
                self.last.0 = s.stale_closed;
                self.last.1 = s.opened;
                (Some(counts.0), Some(counts.1))
            }
            None => (None, None),
        };
        let since = failed.saturating_sub(self.last.2);
        self.last.2 = failed;
        let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        Some(format!(
            "  {}: rotation {done}: generation {}, drained {}, connects {}, failed {since}",
            self.label,
            (self.generation)(),
            count(drained),
            count(connects),
        ))
    }
}

/// The final table. `pause`: the single-user pause before finishSecret (`--source aws`);
/// `source_note`: what the source is, when the store rotates by itself (`--source vault-*`);
/// `scenario`: what the store's rotations did.
pub fn table(
    runs: &[Run],
    config: &ScenarioConfig,
    pause: Option<Duration>,
    source_note: Option<&str>,
    scenario: ScenarioName,
) -> String {
    let vault = runs.iter().any(|r| r.revoked_sessions.is_some());
    let minted = runs.iter().any(|r| r.sessions_closed_by_refresh.is_some());
    let bare = runs.iter().any(|r| r.adapter.is_bare());
    let source = match runs.first().map(|r| r.source) {
        _ if source_note.is_some() => format!("; {}", source_note.unwrap_or_default()),
        Some(SourceName::Aws) => {
            let mut text =
                "; source: AWS Secrets Manager (moto), rotated by credswap-rotate".to_owned();
            if scenario != ScenarioName::Normal {
                // The scenario line below says what the rotations did.
            } else if let Some(pause) = pause {
                text.push_str(&format!(
                    " (single user pauses {} before finishSecret)",
                    humantime::format_duration(pause)
                ));
            }
            text
        }
        _ => "; source: in-memory store".to_owned(),
    };
    let rotation = if vault {
        "rotation by Vault".to_owned()
    } else if let (true, Some(every)) = (minted, config.rotate_every) {
        format!("a new token every {}", humantime::format_duration(every))
    } else {
        config.rotate_every.map_or_else(
            || "rotation off".to_owned(),
            |d| format!("rotation every {}", humantime::format_duration(d)),
        )
    };
    let mut out = format!(
        "{} workers, pool max_size {}, {}s per run, {rotation}{source}\n",
        config.concurrency,
        config.pool_max_size,
        config.duration.as_secs_f64(),
    );
    match scenario {
        ScenarioName::Normal => {}
        ScenarioName::StuckPending => out.push_str(
            "scenario stuck-pending: the first rotation stops after createSecret; AWSPENDING \
             (a password the database never gets) stays to the end; judged against the static \
             peer: failed requests and refused logins\n",
        ),
        ScenarioName::Revert => out.push_str(&format!(
            "scenario revert: each rotation runs createSecret and setSecret, waits {}, then the \
             database gets AWSCURRENT's password back and AWSPENDING is removed; the role's \
             sessions are terminated every 2 s; judged against the static peer: failed requests \
             and refused logins\n",
            humantime::format_duration(pause.unwrap_or_default())
        )),
    }
    if let Some(every) = config.rotate_every.filter(|_| !vault && !minted) {
        // A rotation that takes longer than the interval delays the next one.
        let mut slow: Vec<String> = Vec::new();
        for r in runs {
            let mean = r.report.mean_rotation_interval_ms;
            if mean > every.as_secs_f64() * 1000.0 * 1.05 {
                slow.push(format!(
                    "{}/{} {:.2}s",
                    r.adapter.as_str(),
                    r.strategy(),
                    mean / 1000.0
                ));
            }
        }
        if !slow.is_empty() {
            out.push_str(&format!(
                "effective rotation interval longer than scheduled (a rotation took longer than \
                 the interval; the next starts when it ends): {}\n",
                slow.join(", ")
            ));
        }
    }
    out.push('\n');
    let mut header = vec![
        "adapter",
        "strategy",
        "rotations",
        "ok",
        "failed",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99 rot ms",
        "peak be",
        "stale",
        "max drain ms",
        "pending",
        "refused",
        "store calls",
    ];
    if vault {
        header.push("revoked");
    }
    if minted {
        header.push("closed by token");
        header.push("expired");
    }
    if bare {
        header.push("vs bare");
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let p = &r.report;
            let mut row = vec![
                r.adapter.as_str().to_owned(),
                r.strategy(),
                p.rotations.to_string(),
                p.requests_ok.to_string(),
                p.requests_failed.to_string(),
                format!("{:.0}", p.throughput_rps),
                format!("{:.2}", p.p50_ms),
                format!("{:.2}", p.p99_ms),
                r.p99_ms_rotating()
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}")),
                p.peak_backends.to_string(),
                r.stale_after_drain()
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.max_drain_ms()
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}")),
                r.pending_connects
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.server_refused_logins
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                r.store_calls
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ];
            if vault {
                row.push(
                    r.revoked_sessions
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                );
            }
            if minted {
                row.push(
                    r.sessions_closed_by_refresh
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                );
                row.push(
                    r.expired_logins
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                );
            }
            if bare {
                row.push(
                    throughput_ratio_to_bare(r, runs)
                        .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}")),
                );
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt_row = |cells: Vec<&str>| -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 2 {
                line.push_str(&format!("{:<w$}  ", cell, w = widths[i]));
            } else {
                line.push_str(&format!("{:>w$}  ", cell, w = widths[i]));
            }
        }
        line.trim_end().to_owned() + "\n"
    };
    out.push_str(&fmt_row(header.clone()));
    out.push_str(&fmt_row(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in &rows {
        out.push_str(&fmt_row(row.iter().map(String::as_str).collect()));
    }
    for r in runs.iter().filter(|r| !r.report.first_errors.is_empty()) {
        out.push_str(&format!(
            "\n{} / {} errors: {}",
            r.adapter.as_str(),
            r.strategy(),
            r.report.first_errors.join(" | ")
        ));
    }
    if runs.iter().any(|r| !r.report.first_errors.is_empty()) {
        out.push('\n');
    }
    let notes: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.rotation_note
                .as_ref()
                .map(|note| format!("{} / {}: {note}", r.adapter.as_str(), r.strategy()))
        })
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
    }
    if bare {
        out.push_str(&bare_note(runs));
    }
    out.push_str(
        "\nrefused: logins of the run's roles the server (and PgBouncer) refused, from their logs \
         ('-' for a server the drill did not start), the rotator's own included; store calls: \
         calls to the store (credswap: its provider's current and pending fetches; static: 1, \
         the read at start-up)\n",
    );
    out
}

/// `vs bare`: this credswap run's throughput over that of its `bare-*` peer (the plain pool of
/// the same kind) under the same strategy and source, when that peer ran: the peer's run next
/// to this one in the drill's order (the same round of `--rounds`).
pub fn throughput_ratio_to_bare(run: &Run, runs: &[Run]) -> Option<f64> {
    let peer = run.adapter.bare_peer()?;
    let at = runs.iter().position(|r| std::ptr::eq(r, run))?;
    let bare = runs
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.adapter == peer && p.source == run.source && p.strategy() == run.strategy()
        })
        .min_by_key(|(i, _)| i.abs_diff(at))
        .map(|(_, p)| p)?;
    (bare.report.throughput_rps > 0.0)
        .then(|| run.report.throughput_rps / bare.report.throughput_rps)
}

/// Each credswap adapter against its bare peer over all their runs: the ratio of the mean
/// throughputs, over the strategies both ran and every round (the drill runs each pair side by
/// side, A B then B A, and with `--rounds` every other round backwards, so drift over the
/// drill weighs on both alike), with the spread of the per-pair ratios.
fn bare_note(runs: &[Run]) -> String {
    let mut lines = Vec::new();
    let mut seen = Vec::new();
    for r in runs {
        let Some(peer) = r.adapter.bare_peer() else {
            continue;
        };
        if seen.contains(&r.adapter) {
            continue;
        }
        seen.push(r.adapter);
        let both = |a: &Run, b: &Run| a.source == b.source && a.strategy() == b.strategy();
        let own: Vec<&Run> = runs
            .iter()
            .filter(|a| {
                a.adapter == r.adapter && runs.iter().any(|b| b.adapter == peer && both(a, b))
            })
            .collect();
        let plain: Vec<f64> = runs
            .iter()
            .filter(|b| b.adapter == peer && own.iter().any(|a| both(a, b)))
            .map(|b| b.report.throughput_rps)
            .collect();
        let ratios: Vec<f64> = own
            .iter()
            .filter_map(|a| throughput_ratio_to_bare(a, runs))
            .collect();
        let own: Vec<f64> = own.iter().map(|a| a.report.throughput_rps).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        if own.is_empty() || plain.is_empty() || mean(&plain) <= 0.0 {
            continue;
        }
        let spread = match (
            ratios.iter().copied().reduce(f64::min),
            ratios.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) if ratios.len() > 1 => format!("; pairs {lo:.3} to {hi:.3}"),
            _ => String::new(),
        };
        lines.push(format!(
            "  {} {:.3} ({:.0} / {:.0} req/s, {} run{} each{spread})",
            r.adapter.as_str(),
            mean(&own) / mean(&plain),
            mean(&own),
            mean(&plain),
            own.len(),
            if own.len() == 1 { "" } else { "s" },
        ));
    }
    let mut out = String::from(
        "\nvs bare: the run's throughput over its bare peer's (the plain pool of the same kind, \
         size, timeouts and request, with the first password), same strategy; each pair runs \
         side by side, A B under the first strategy, B A under the second (with --rounds, every \
         other round backwards). Over all runs, the ratio of the mean throughputs (credswap's own cost; the target is at least 0.97, not \
         judged):\n",
    );
    if lines.is_empty() {
        out.push_str("  (no credswap adapter ran beside its bare peer)\n");
    }
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `--source minted`: what the two runs are and how they are judged (what the gate did per
/// run is in the runs' notes above).
pub fn minted_note(skipped_peers: &[&str]) -> String {
    let mut out = String::from("\n");
    out.push_str(
        "rotations: the tokens minted while the workers ran. minted: the tokens as minted credentials (a new token keeps the generation; judged: no \
         failed request, no session closed for a token, no login with an expired token). \
         per-token: the same gate's tokens as plain passwords, as a library without minted \
         credentials sees them (every token a new generation: the pool drains and reopens every \
         session per token); reported for comparison, not judged. closed by token: sessions of \
         the role seen (sampled every 50 ms) that ended while the workers ran; expired: logins \
         the server refused with a token past its margin\n",
    );
    if !skipped_peers.is_empty() {
        out.push_str(&format!(
            "not run with --source minted: {} (the per-token runs are the comparison)\n",
            skipped_peers.join(", ")
        ));
    }
    out
}

#[derive(Serialize)]
struct JsonFile<'a> {
    postgres: &'static str,
    runs: Vec<JsonRun<'a>>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    adapter: &'a str,
    strategy: String,
    source: &'static str,
    duration_s: f64,
    concurrency: usize,
    pool_max_size: usize,
    rotations: u64,
    requests_ok: u64,
    requests_failed: u64,
    throughput_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// `null` when Vault rotated: the engine did not see the rotations' instants.
    p99_ms_rotating: Option<f64>,
    peak_backends: usize,
    /// `null` for `--scenario stuck-pending|revert`: the password ends where it began.
    stale_after_drain: Option<usize>,
    /// `null` for `--scenario stuck-pending|revert`.
    max_drain_ms: Option<f64>,
    mean_rotation_interval_ms: f64,
    pending_connects: Option<u64>,
    /// `normal`, `stuck-pending` or `revert`.
    scenario: &'static str,
    /// Logins of the run's roles refused at the server (and the pooler), from their logs;
    /// `null` for an external server.
    server_refused_logins: Option<usize>,
    /// Calls to the store the pool made.
    store_calls: Option<u64>,
    /// `--source vault-*`: sessions seen open after Vault dropped their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_user_sessions: Option<usize>,
    /// `--source minted`: tokens the gate minted while the workers ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_refreshes: Option<u64>,
    /// `--source minted`: sessions of the role that ended while the workers ran (closed for a
    /// new token: nothing else churns the pool there).
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions_closed_by_refresh: Option<usize>,
    /// `--source minted`: logins refused at the server with an expired token (absent with an
    /// external server, whose log is not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_logins: Option<usize>,
    /// A credswap run whose `bare-*` peer ran: its throughput over the peer's (same strategy).
    #[serde(skip_serializing_if = "Option::is_none")]
    throughput_ratio_to_bare: Option<f64>,
}

/// The JSON file other tools read: `{"postgres": "embedded"|"external", "runs": [...]}`.
pub fn json(runs: &[Run], embedded: bool) -> String {
    let file = JsonFile {
        postgres: if embedded { "embedded" } else { "external" },
        runs: runs
            .iter()
            .map(|r| {
                let p = &r.report;
                JsonRun {
                    adapter: r.adapter.as_str(),
                    strategy: r.strategy(),
                    source: r.source.as_str(),
                    duration_s: p.duration_s,
                    concurrency: p.concurrency,
                    pool_max_size: p.pool_max_size,
                    rotations: p.rotations,
                    requests_ok: p.requests_ok,
                    requests_failed: p.requests_failed,
                    throughput_rps: round2(p.throughput_rps),
                    p50_ms: round2(p.p50_ms),
                    p99_ms: round2(p.p99_ms),
                    p99_ms_rotating: r.p99_ms_rotating().map(round2),
                    peak_backends: p.peak_backends,
                    stale_after_drain: r.stale_after_drain(),
                    max_drain_ms: r.max_drain_ms().map(round2),
                    mean_rotation_interval_ms: round2(p.mean_rotation_interval_ms),
                    pending_connects: r.pending_connects,
                    scenario: r.scenario.as_str(),
                    server_refused_logins: r.server_refused_logins,
                    store_calls: r.store_calls,
                    revoked_user_sessions: r.revoked_sessions,
                    token_refreshes: r.token_refreshes,
                    sessions_closed_by_refresh: r.sessions_closed_by_refresh,
                    expired_logins: r.expired_logins,
                    throughput_ratio_to_bare: throughput_ratio_to_bare(r, runs)
                        .map(|x| (x * 1000.0).round() / 1000.0),
                }
            })
            .collect(),
    };
    serde_json::to_string_pretty(&file).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
