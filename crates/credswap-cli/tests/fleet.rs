//! `credswap drill --fleet` end to end, against an embedded PostgreSQL (in-memory store).

use std::process::Command;

#[test]
fn a_small_fleet_writes_the_fleet_fields() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("fleet.json");
    let plot_path = dir.path().join("fleet.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args([
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
            "--json",
        ])
        .arg(&json_path)
        .arg("--plot")
        .arg(&plot_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("fleet of 5 instances"), "{stdout}");
    assert!(stdout.contains("conv p99 ms"), "{stdout}");
    assert!(stdout.contains("targets (issue 21)"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["postgres"], "embedded");
    let runs = json["runs"].as_array().unwrap();
    // Both strategies, one adapter.
    assert_eq!(runs.len(), 2, "{json:#}");
    for run in runs {
        for key in [
            "instances",
            "refresh_interval_ms",
            "requests_failed",
            "stale_after_drain",
            "convergence_p50_ms",
            "convergence_p99_ms",
            "convergence_max_ms",
            "store_calls",
            "store_calls_throttled",
            "steady_store_calls_per_instance_per_refresh",
            "store_calls_per_instance_per_rotation",
            "peak_logins_per_s",
            "refused_logins",
        ] {
            assert!(run.get(key).is_some(), "{key} missing from {run:#}");
        }
        assert_eq!(run["instances"], 5, "{run:#}");
        assert_eq!(run["requests_failed"], 0, "{run:#}");
        assert_eq!(run["stale_after_drain"], 0, "{run:#}");
        assert_eq!(run["adapter"], "deadpool");
        assert_eq!(run["source"], "memory");
        assert_eq!(run["fleet"], true);
        // A third of the rotation interval.
        assert_eq!(run["refresh_interval_ms"], 333, "{run:#}");
        assert!(run["rotations"].as_u64().unwrap() >= 2, "{run:#}");
        assert!(run["requests_ok"].as_u64().unwrap() > 0, "{run:#}");
        // Every instance followed the rotations: a convergence was measured.
        assert!(run["convergence_p99_ms"].is_number(), "{run:#}");
        assert!(run["store_calls"].as_u64().unwrap() > 0, "{run:#}");
        assert_eq!(run["store_calls_throttled"], 0, "{run:#}");
        // The embedded server's log is readable.
        assert!(run["peak_logins_per_s"].is_number(), "{run:#}");
        assert!(run["refused_logins"].is_number(), "{run:#}");
        assert_eq!(
            run["per_rotation"].as_array().unwrap().len() as u64,
            run["rotations"].as_u64().unwrap(),
            "{run:#}"
        );
    }
    let svg = std::fs::read_to_string(&plot_path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("store calls/s"),
        "{svg}"
    );
}

#[test]
fn fleet_options_without_a_fleet_are_usage_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args(["drill", "--store-throttle", "0.5"])
        .output()
        .expect("run credswap");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--fleet"), "{stderr}");
}
