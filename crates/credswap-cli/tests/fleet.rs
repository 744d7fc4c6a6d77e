//! `credswap drill --fleet` end to end, against an embedded PostgreSQL (in-memory store, and
//! OpenBao static and dynamic roles: `bao` on PATH or CREDSWAP_BAO).

use std::process::Command;

/// Fleets are load runs: one at a time (two side by side on a small machine blur what each
/// measures).
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fields every fleet run of the JSON file has.
const FLEET_FIELDS: [&str; 13] = [
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
];

#[test]
fn a_small_fleet_writes_the_fleet_fields() {
    let _alone = alone();
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
        for key in FLEET_FIELDS {
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

/// A vault-static fleet run: its stdout, stderr, exit code and JSON run.
fn vault_static_fleet(extra: &[&str]) -> (String, String, Option<i32>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("fleet.json");
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args([
            "drill",
            "--fleet",
            "3",
            "--pool-size",
            "1",
            "--duration",
            "5s",
            "--rotate-every",
            "1500ms",
            "--source",
            "vault-static",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json: serde_json::Value = match std::fs::read_to_string(&json_path) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(e) => panic!(
            "no JSON ({e}): exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status.code()
        ),
    };
    let runs = json["runs"].as_array().unwrap();
    // A static role is one user: the single-user run only, whatever --strategy says.
    assert_eq!(runs.len(), 1, "{json:#}");
    let run = runs[0].clone();
    for key in FLEET_FIELDS {
        assert!(run.get(key).is_some(), "{key} missing from {run:#}");
    }
    assert_eq!(run["source"], "vault-static", "{run:#}");
    assert_eq!(run["strategy"], "single-user", "{run:#}");
    assert_eq!(run["fleet"], true, "{run:#}");
    assert_eq!(run["instances"], 3, "{run:#}");
    assert!(run["rotations"].as_u64().unwrap() >= 2, "{run:#}");
    assert!(run["requests_ok"].as_u64().unwrap() > 0, "{run:#}");
    assert_eq!(
        run["per_rotation"].as_array().unwrap().len() as u64,
        run["rotations"].as_u64().unwrap(),
        "{run:#}"
    );
    (stdout, stderr, output.status.code(), run)
}

/// Three instances on an OpenBao static role, each with its own token and client, reading
/// through the fault proxy (20 ms a call), the drill calling `database/rotate-role` every
/// 1.5 s: every instance follows every rotation, nothing fails, nothing is stale.
#[test]
fn a_small_vault_static_fleet_follows_vaults_rotations() {
    let _alone = alone();
    let (stdout, stderr, code, run) = vault_static_fleet(&["--store-latency", "20ms"]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("fleet of 3 instances"), "{stdout}");
    assert!(stdout.contains("OpenBao static role"), "{stdout}");
    assert!(stdout.contains("database/rotate-role"), "{stdout}");
    assert!(stdout.contains("Vault reads"), "{stdout}");
    assert!(stderr.contains("through a fault proxy"), "{stderr}");
    assert_eq!(run["requests_failed"], 0, "{run:#}");
    assert_eq!(run["stale_after_drain"], 0, "{run:#}");
    assert_eq!(run["not_converged"], 0, "{run:#}");
    assert!(run["convergence_p99_ms"].is_number(), "{run:#}");
    assert_eq!(run["store_latency_ms"], 20, "{run:#}");
    // Every fetch is one Vault read. The counts are read at slightly different instants (the
    // observer's polls, the sources' counters around the load): a refresh per instance apart
    // at most.
    let calls = run["store_calls"].as_u64().unwrap();
    let reads = run["store_api_calls"].as_u64().unwrap();
    assert!(calls > 0, "{run:#}");
    assert!(reads.abs_diff(calls) <= 3, "one read per fetch: {run:#}");
    assert_eq!(run["store_calls_throttled"], 0, "{run:#}");
    assert_eq!(run["store_fetch_failures"], 0, "{run:#}");
    assert!(run["peak_logins_per_s"].is_number(), "{run:#}");
    assert!(run["refused_logins"].is_number(), "{run:#}");
}

/// Every read of the fleet answered 429 (`rate limit quota exceeded`): each is a failed fetch
/// (the source does not retry), the instances keep the credential they have, and their open
/// sessions keep serving (single user: old sessions survive the password change), so no request
/// fails; the fleet never learns of the rotations (reported, and the drill fails on the stale
/// sessions).
#[test]
fn a_vault_static_fleet_throttled_throughout_keeps_serving_and_counts_every_429() {
    let _alone = alone();
    let (stdout, stderr, code, run) = vault_static_fleet(&["--store-throttle", "1"]);
    let all = format!("exit {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(run["requests_failed"], 0, "{all}");
    assert_eq!(run["store_throttle"], 1.0, "{all}");
    let reads = run["store_api_calls"].as_u64().unwrap();
    let throttled = run["store_calls_throttled"].as_u64().unwrap();
    let failed = run["store_fetch_failures"].as_u64().unwrap();
    assert!(throttled > 0, "{all}");
    assert!(
        throttled.abs_diff(reads) <= 3,
        "every read is throttled: {all}"
    );
    assert!(
        failed.abs_diff(throttled) <= 3,
        "each 429 fails its fetch: {all}"
    );
    assert!(run["not_converged"].as_u64().unwrap() > 0, "{all}");
    assert_eq!(code, Some(1), "{all}");
}

/// Three instances on an OpenBao dynamic role, each with its own token, client, lease and
/// user; each source issues its next user within the grace + a refresh (3.3 s) of its lease's
/// end, and a user lives twice that (6.7 s), so the instances replace their users in waves
/// every 3.3-4 s: every instance converges on each of its new users, nothing fails, no session
/// of a replaced user outlives the grace, and every user's logins are in the server's log.
#[test]
fn a_small_vault_dynamic_fleet_replaces_its_users_in_waves() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("fleet.json");
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args([
            "drill",
            "--fleet",
            "3",
            "--pool-size",
            "1",
            "--duration",
            "14s",
            "--rotate-every",
            "2s",
            "--source",
            "vault-dynamic",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let all = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(stdout.contains("OpenBao dynamic role"), "{all}");
    assert!(stdout.contains("users issued to the fleet"), "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    // A new user per lease: one run, whatever --strategy says.
    assert_eq!(runs.len(), 1, "{json:#}");
    let run = &runs[0];
    for key in FLEET_FIELDS {
        assert!(run.get(key).is_some(), "{key} missing from {run:#}");
    }
    assert_eq!(run["source"], "vault-dynamic", "{run:#}");
    assert_eq!(run["strategy"], "dynamic", "{run:#}");
    assert_eq!(run["requests_failed"], 0, "{run:#}");
    assert_eq!(run["stale_after_drain"], 0, "{run:#}");
    assert_eq!(run["not_converged"], 0, "{run:#}");
    // Users every 3.3-4 s from the first ones, issued before the load: at least two waves
    // within the 14-s load.
    let waves = run["rotations"].as_u64().unwrap();
    assert!(waves >= 2, "{run:#}");
    assert_eq!(
        run["per_rotation"].as_array().unwrap().len() as u64,
        waves,
        "{run:#}"
    );
    assert!(run["convergence_p99_ms"].is_number(), "{run:#}");
    // Each new user is issued by a Vault read of database/creds (the last wave may be cut
    // off by the end of the load).
    assert!(
        run["store_api_calls"].as_u64().unwrap() >= 3 * (waves - 1),
        "{run:#}"
    );
    // Its store calls are the sources' calls to Vault (the providers' fetches in between are
    // served from their caches), counted by the observer and around the load: a call or two
    // per instance apart at most.
    let calls = run["store_calls"].as_u64().unwrap();
    let vault_calls = run["store_api_calls"].as_u64().unwrap();
    assert!(calls.abs_diff(vault_calls) <= 6, "{run:#}");
    // The users' logins are found in the server's log: at least one per instance and wave.
    assert!(run["peak_logins_per_s"].as_u64().unwrap() >= 1, "{run:#}");
    assert_eq!(run["refused_logins"], 0, "{run:#}");
    assert!(run["peak_backends"].as_u64().unwrap() <= 3, "{run:#}");
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
