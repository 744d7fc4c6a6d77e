//! `--plot FILE.svg`: each run as three charts over time (throughput, p99 latency, backends),
//! with the rotations marked, so a rotation shows as the non-event it should be.
//!
//! Plain SVG written by hand: three polylines and some text per run need no plotting library.

use std::fmt::Write;

use credswap_testkit::scenario::Timeline;

use crate::drill::Run;

pub(crate) const WIDTH: f64 = 900.0;
pub(crate) const CHART_HEIGHT: f64 = 90.0;
pub(crate) const LEFT: f64 = 70.0;
pub(crate) const RIGHT: f64 = 20.0;
pub(crate) const GAP: f64 = 22.0;
pub(crate) const RUN_HEADER: f64 = 28.0;

/// The SVG document for `runs`.
pub fn svg(runs: &[Run]) -> String {
    let per_run = RUN_HEADER + 3.0 * (CHART_HEIGHT + GAP);
    let height = per_run * runs.len().max(1) as f64 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, run) in runs.iter().enumerate() {
        let top = i as f64 * per_run + 10.0;
        let report = &run.report;
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">{} / {}: {} ok, {} failed, {} rotations (dashed), peak {} backends of max {}</text>"#,
            top + 14.0,
            run.adapter.as_str(),
            escape(&run.strategy()),
            report.requests_ok,
            report.requests_failed,
            report.rotations,
            report.peak_backends,
            report.pool_max_size,
        );
        let t = &report.timeline;
        let bucket_s = Timeline::BUCKET.as_secs_f64();
        let throughput: Vec<f64> = t.ok.iter().map(|n| *n as f64 / bucket_s).collect();
        let failed: Vec<f64> = t.failed.iter().map(|n| *n as f64 / bucket_s).collect();
        let backends: Vec<f64> = t.backends.iter().map(|n| *n as f64).collect();
        let mut y = top + RUN_HEADER;
        chart(
            &mut out,
            y,
            t,
            "requests/s",
            &[(&throughput, "#1f77b4"), (&failed, "#d62728")],
            None,
        );
        y += CHART_HEIGHT + GAP;
        chart(&mut out, y, t, "p99 ms", &[(&t.p99_ms, "#ff7f0e")], None);
        y += CHART_HEIGHT + GAP;
        chart(
            &mut out,
            y,
            t,
            "backends",
            &[(&backends, "#2ca02c")],
            Some(report.pool_max_size as f64),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One chart at `top`: `series` as polylines over the buckets, the rotations as dashed lines,
/// an optional `limit` as a red line.
pub(crate) fn chart(
    out: &mut String,
    top: f64,
    timeline: &Timeline,
    label: &str,
    series: &[(&[f64], &str)],
    limit: Option<f64>,
) {
    let buckets = series.first().map_or(0, |(s, _)| s.len()).max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let max = series
        .iter()
        .flat_map(|(s, _)| s.iter().copied())
        .chain(limit)
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let x = |i: f64| LEFT + plot_width * i / buckets as f64;
    let y = |v: f64| top + CHART_HEIGHT - CHART_HEIGHT * v / max;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{CHART_HEIGHT}" fill="none" stroke="#bbb"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
        LEFT - 6.0,
        top + CHART_HEIGHT / 2.0
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="end" fill="#666">{}</text>"##,
        LEFT - 6.0,
        top + 10.0,
        compact(max / 1.1)
    );
    let seconds = buckets as f64 * Timeline::BUCKET.as_secs_f64();
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="end" fill="#666">{seconds:.0} s</text>"##,
        WIDTH - RIGHT,
        top + CHART_HEIGHT + 12.0
    );
    for at in &timeline.rotations {
        let px = x(at.as_secs_f64() / Timeline::BUCKET.as_secs_f64());
        if px <= WIDTH - RIGHT {
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{}" stroke="#999" stroke-dasharray="3,3"/>"##,
                top + CHART_HEIGHT
            );
        }
    }
    if let Some(limit) = limit {
        let py = y(limit);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#d62728" stroke-width="0.8"/>"##,
            WIDTH - RIGHT
        );
    }
    for (values, color) in series {
        if values.iter().all(|v| *v == 0.0) && series.len() > 1 {
            continue;
        }
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
}

fn compact(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
