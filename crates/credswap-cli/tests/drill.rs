//! The `credswap` binary end to end, against an embedded PostgreSQL.

use std::process::Command;

fn credswap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_credswap"))
}

/// Drills are load runs: one at a time (two side by side on a small machine blur what each
/// measures).
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn short_drill_writes_the_documented_json_and_judges_the_peers_apart() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("drill.json");
    let plot_path = dir.path().join("drill.svg");
    let output = credswap()
        .args([
            "drill",
            "--adapter",
            "deadpool,static",
            "--strategy",
            "single-user",
            "--duration",
            "4s",
            "--rotate-every",
            "1s",
            "--concurrency",
            "8",
            "--pool-size",
            "4",
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
    assert!(
        stdout.contains("adapter") && stdout.contains("deadpool") && stdout.contains("static"),
        "{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["postgres"], "embedded");
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let expected_keys = [
        "adapter",
        "strategy",
        "source",
        "duration_s",
        "concurrency",
        "pool_max_size",
        "rotations",
        "requests_ok",
        "requests_failed",
        "throughput_rps",
        "p50_ms",
        "p99_ms",
        "p99_ms_rotating",
        "peak_backends",
        "stale_after_drain",
        "max_drain_ms",
        "mean_rotation_interval_ms",
        "pending_connects",
        "scenario",
        "server_refused_logins",
        "store_calls",
    ];
    for run in runs {
        let keys: Vec<&str> = run
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_expected = expected_keys.to_vec();
        sorted_expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, sorted_expected);
        assert_eq!(run["strategy"], "single-user");
        assert_eq!(run["source"], "memory");
        assert_eq!(run["scenario"], "normal");
        assert!(run["server_refused_logins"].is_u64(), "{run}");
        assert!(run["store_calls"].as_u64().unwrap() >= 1, "{run}");
        assert_eq!(run["pool_max_size"], 4);
        assert!(run["rotations"].as_u64().unwrap() >= 2, "{run}");
    }
    let deadpool = &runs[0];
    assert_eq!(deadpool["adapter"], "deadpool");
    assert_eq!(deadpool["requests_failed"], 0, "{deadpool}");
    assert_eq!(deadpool["stale_after_drain"], 0, "{deadpool}");
    assert!(deadpool["pending_connects"].is_u64(), "{deadpool}");
    assert!(
        deadpool["peak_backends"].as_u64().unwrap() <= 4,
        "{deadpool}"
    );
    // A pool that never learns of rotation keeps its sessions, which PostgreSQL keeps alive.
    let peer = &runs[1];
    assert_eq!(peer["adapter"], "static");
    assert!(
        peer["pending_connects"].is_null(),
        "a peer has no adapter stats: {peer}"
    );
    assert!(
        peer["requests_failed"].as_u64().unwrap() > 0
            || peer["stale_after_drain"].as_u64().unwrap() > 0,
        "the drill must see the static pool's problem: {peer}"
    );
    // A line per rotation under the progress, from the adapter's counters (`-` for the peer).
    assert!(
        stderr.contains("deadpool / single-user: rotation 1: generation")
            && stderr.contains("connects"),
        "{stderr}"
    );
    assert!(
        stderr.contains("static / single-user: rotation 1:"),
        "{stderr}"
    );
    // The plot: three charts per run, each rotation dashed in each of them.
    let svg = std::fs::read_to_string(&plot_path).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("deadpool / single-user") && svg.contains("static / single-user"));
    assert!(svg.matches("<polyline").count() >= 6, "{svg}");
    let rotations: u64 = runs.iter().map(|r| r["rotations"].as_u64().unwrap()).sum();
    assert!(
        svg.matches("stroke-dasharray").count() as u64 >= 3 * rotations,
        "every rotation marked in every chart"
    );
    // No password anywhere in what the drill prints.
    assert!(!stderr.to_lowercase().contains("password="), "{stderr}");
}

#[test]
fn drill_with_secrets_manager_rotates_through_moto() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("drill.json");
    let output = credswap()
        .args([
            "drill",
            "--source",
            "aws",
            "--adapter",
            "deadpool",
            "--strategy",
            "alternating-users",
            "--duration",
            "4s",
            "--concurrency",
            "8",
            "--pool-size",
            "4",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("AWS Secrets Manager"), "{stdout}");
    assert!(
        stdout.contains("_clone"),
        "the first rotation creates the clone: {stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let run = &json["runs"][0];
    assert_eq!(run["source"], "aws", "{run}");
    assert_eq!(run["strategy"], "alternating-users", "{run}");
    assert!(run["rotations"].as_u64().unwrap() >= 2, "{run}");
    assert_eq!(run["requests_failed"], 0, "{run}");
    assert_eq!(run["stale_after_drain"], 0, "{run}");
    assert!(run["peak_backends"].as_u64().unwrap() <= 4, "{run}");
    assert!(run["pending_connects"].is_u64(), "{run}");
    assert_eq!(run["scenario"], "normal", "{run}");
    assert!(run["server_refused_logins"].is_u64(), "{run}");
    // The initial fetch at least, and the reads that saw the rotations.
    assert!(run["store_calls"].as_u64().unwrap() >= 2, "{run}");
}

/// `--source minted`: a token every 500 ms through deadpool, as minted credentials and as plain
/// passwords. The minted run closes no session and fails nothing; the per-token run drains the
/// pool for its tokens.
#[test]
fn drill_minted_tokens_close_no_session_and_per_token_drains() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("drill.json");
    let plot_path = dir.path().join("drill.svg");
    let output = credswap()
        .args([
            "drill",
            "--source",
            "minted",
            // The static peer is skipped with minted tokens, and says so.
            "--adapter",
            "deadpool,static",
            "--duration",
            "4s",
            "--rotate-every",
            "500ms",
            "--concurrency",
            "4",
            "--pool-size",
            "2",
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
    assert!(stdout.contains("token gate"), "{stdout}");
    assert!(stdout.contains("closed by token"), "{stdout}");
    assert!(stdout.contains("not judged"), "{stdout}");
    assert!(
        stdout.contains("not run with --source minted: static"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{json}");
    for run in runs {
        assert_eq!(run["adapter"], "deadpool", "{run}");
        assert_eq!(run["source"], "minted", "{run}");
        assert_eq!(run["pool_max_size"], 2, "{run}");
        assert!(run["requests_ok"].as_u64().unwrap() > 0, "{run}");
        assert_eq!(run["expired_logins"], 0, "{run}");
        assert!(run["stale_after_drain"].is_null(), "{run}");
        // Four seconds of a token every 500 ms.
        assert!(run["token_refreshes"].as_u64().unwrap() >= 5, "{run}");
        assert_eq!(run["rotations"], run["token_refreshes"], "{run}");
    }
    let minted = &runs[0];
    assert_eq!(minted["strategy"], "minted", "{minted}");
    assert_eq!(minted["requests_failed"], 0, "{minted}");
    assert_eq!(minted["sessions_closed_by_refresh"], 0, "{minted}");
    let per_token = &runs[1];
    assert_eq!(per_token["strategy"], "per-token", "{per_token}");
    assert!(
        per_token["sessions_closed_by_refresh"].as_u64().unwrap() > 0,
        "every token is a new generation there: {per_token}"
    );
    let svg = std::fs::read_to_string(&plot_path).expect("the plot is written");
    assert!(svg.contains("deadpool / minted") && svg.contains("deadpool / per-token"));
    // No token anywhere in what the drill prints.
    assert!(!stderr.to_lowercase().contains("password="), "{stderr}");
}

/// `--scenario stuck-pending|revert`: a short drill of deadpool beside the static peer; returns
/// the exit code, stdout, stderr and the two runs (deadpool, static).
fn scenario_drill(
    scenario: &str,
    extra: &[&str],
) -> (
    Option<i32>,
    String,
    String,
    serde_json::Value,
    serde_json::Value,
) {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("drill.json");
    let output = credswap()
        .args([
            "drill",
            "--source",
            "aws",
            "--scenario",
            scenario,
            // The static peer is added by the scenario.
            "--adapter",
            "deadpool",
            "--concurrency",
            "8",
            "--pool-size",
            "4",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json_path)
            .unwrap_or_else(|e| panic!("no JSON ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")),
    )
    .unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{json}");
    for run in runs {
        assert_eq!(run["scenario"], scenario, "{run}");
        assert_eq!(run["source"], "aws", "{run}");
        assert_eq!(run["strategy"], "single-user", "{run}");
        assert!(run["server_refused_logins"].is_u64(), "{run}");
        assert!(run["store_calls"].is_u64(), "{run}");
        // The password ends where it began: no drain to judge.
        assert!(run["stale_after_drain"].is_null(), "{run}");
    }
    let (credswap, peer) = (runs[0].clone(), runs[1].clone());
    assert_eq!(credswap["adapter"], "deadpool", "{json}");
    assert_eq!(peer["adapter"], "static", "{json}");
    assert_eq!(peer["store_calls"], 1, "{peer}");
    assert!(credswap["store_calls"].as_u64().unwrap() >= 1, "{credswap}");
    assert!(stdout.contains(&format!("scenario {scenario}")), "{stdout}");
    (output.status.code(), stdout, stderr, credswap, peer)
}

/// The rule: never more failed requests, nor more refused logins at the server, than a
/// plain pool built from AWSCURRENT; and the exit status says so.
fn assert_not_worse_than_static(
    code: Option<i32>,
    stdout: &str,
    stderr: &str,
    credswap: &serde_json::Value,
    peer: &serde_json::Value,
) {
    let n = |run: &serde_json::Value, key: &str| run[key].as_u64().unwrap();
    assert!(
        n(credswap, "requests_failed") <= n(peer, "requests_failed")
            && n(credswap, "server_refused_logins") <= n(peer, "server_refused_logins"),
        "credswap did worse than the static peer:\n{credswap}\n{peer}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
}

#[test]
fn drill_stuck_pending_beside_the_static_peer() {
    let (code, stdout, stderr, credswap, peer) =
        scenario_drill("stuck-pending", &["--duration", "8s"]);
    // One rotation, which stopped after createSecret.
    assert_eq!(credswap["rotations"], 1, "{credswap}");
    assert!(stdout.contains("AWSPENDING stayed to the end"), "{stdout}");
    // Nothing changed in the database: a plain pool fails nothing and is refused nothing.
    assert_eq!(peer["requests_failed"], 0, "{peer}");
    assert_eq!(peer["server_refused_logins"], 0, "{peer}");
    assert_eq!(credswap["requests_failed"], 0, "{credswap}");
    // The rule: not worse than the plain pool. A pending trial logs in with the current login
    // first, so the pending version the database never got costs no refused login.
    assert_not_worse_than_static(code, &stdout, &stderr, &credswap, &peer);
    assert_eq!(credswap["server_refused_logins"], 0, "{credswap}");
}

#[test]
fn drill_revert_beside_the_static_peer() {
    let (code, stdout, stderr, credswap, peer) =
        scenario_drill("revert", &["--duration", "10s", "--rotate-every", "3s"]);
    assert!(credswap["rotations"].as_u64().unwrap() >= 2, "{credswap}");
    assert!(stdout.contains("reverted after setSecret"), "{stdout}");
    assert!(stdout.contains("terminated every 2 s"), "{stdout}");
    // The plain pool logs in with AWSCURRENT while the database has the pending password.
    assert!(
        peer["server_refused_logins"].as_u64().unwrap() > 0,
        "the drill must see the plain pool refused: {peer}"
    );
    assert_not_worse_than_static(code, &stdout, &stderr, &credswap, &peer);
}

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    for (args, says) in [
        (vec!["drill", "--adapter", "hikari"], "hikari"),
        (vec!["drill", "--duration", "soon"], "write it like 15s"),
        (vec!["drill", "--rotate-every", "5ms"], "at least 200ms"),
        (vec!["drill", "--database-url", "not a url"], "database-url"),
        (vec!["drill", "--source", "vault"], "vault"),
        (
            vec!["drill", "--scenario", "stuck-pending"],
            "needs --source aws",
        ),
        (
            vec![
                "drill",
                "--source",
                "aws",
                "--scenario",
                "revert",
                "--strategy",
                "alternating-users",
            ],
            "single-user strategy only",
        ),
        (
            vec!["drill", "--source", "minted", "--rotate-every", "off"],
            "--source minted needs --rotate-every",
        ),
        (
            vec!["drill", "--adapter", "bb8,bare-bb8"],
            "a baseline for --rotate-every off",
        ),
        (
            vec!["rotate", "--secret-id", "s", "--sessions", "kill"],
            "wait=30s",
        ),
        (
            vec!["rotate", "--secret-id", "s", "--step", "createSecret"],
            "--token",
        ),
    ] {
        let output = credswap().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn drill_beside_the_bare_peer_reports_the_ratio() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("bare.json");
    let output = credswap()
        .args([
            "drill",
            "--rotate-every",
            "off",
            "--adapter",
            "deadpool,bare-deadpool",
            "--duration",
            "2s",
            "--concurrency",
            "4",
            "--pool-size",
            "2",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .expect("run credswap");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    assert!(stdout.contains("vs bare"), "{stdout}");
    assert!(stdout.contains("bare-deadpool"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    // Both strategies (the default), the pair side by side: A B, then B A.
    let order: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["adapter"].as_str().unwrap(),
                r["strategy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("deadpool", "alternating-users"),
            ("bare-deadpool", "alternating-users"),
            ("bare-deadpool", "single-user"),
            ("deadpool", "single-user"),
        ]
    );
    for run in runs {
        assert_eq!(run["rotations"], 0, "{run}");
        assert_eq!(run["requests_failed"], 0, "{run}");
        assert!(run["throughput_rps"].as_f64().unwrap() > 0.0, "{run}");
        if run["adapter"] == "deadpool" {
            let ratio = run["throughput_ratio_to_bare"].as_f64().expect("a ratio");
            let bare = runs
                .iter()
                .find(|b| b["adapter"] == "bare-deadpool" && b["strategy"] == run["strategy"])
                .unwrap();
            let expected =
                run["throughput_rps"].as_f64().unwrap() / bare["throughput_rps"].as_f64().unwrap();
            assert!((ratio - expected).abs() < 0.01, "{ratio} vs {expected}");
        } else {
            assert!(run.get("throughput_ratio_to_bare").is_none(), "{run}");
            assert_eq!(run["store_calls"], 1, "{run}");
            assert!(run["pending_connects"].is_null(), "{run}");
        }
    }
}

#[test]
fn drill_help_mentions_minted_tokens() {
    let output = credswap().args(["drill", "--help"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("minted"), "{stdout}");
    assert!(stdout.contains("RDS IAM / Aurora DSQL"), "{stdout}");
}

#[test]
fn unreachable_database_url_is_a_clear_error_without_the_password() {
    let output = credswap()
        .args([
            "drill",
            "--database-url",
            "postgres://admin:Hunter2-secret@127.0.0.1:1/postgres",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot use --database-url"), "{stderr}");
    assert!(!stderr.contains("Hunter2-secret"), "{stderr}");
}

/// The embedded clusters' directories (`/tmp/credswap-pg-*`) that exist now.
#[cfg(unix)]
fn embedded_clusters() -> std::collections::BTreeSet<std::path::PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("credswap-pg-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process runs with `dir` on its command line (a server started in it).
#[cfg(unix)]
fn a_process_runs_in(dir: &std::path::Path) -> bool {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&dir))
            })
        })
        .unwrap_or(false)
}

/// A drill ended by a signal (Ctrl-C, or the SIGTERM of `timeout` or a CI runner) stops the
/// embedded PostgreSQL it started and removes its directory, then exits with the shell's status
/// for the signal. Before, the signal ended the process at once and the server kept running.
#[cfg(unix)]
#[test]
fn a_terminated_drill_stops_its_server_and_removes_its_directory() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    let _alone = alone();
    let before = embedded_clusters();
    let mut child = credswap()
        .args([
            "drill",
            "--adapter",
            "deadpool",
            "--strategy",
            "single-user",
            "--duration",
            "60s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let started = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let wait = started.saturating_duration_since(Instant::now());
        match received.recv_timeout(wait) {
            Ok(line) if line.contains("running for") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the drill did not start its load within 60 s: {seen:#?}");
            }
        }
    }
    let ours: Vec<_> = embedded_clusters().difference(&before).cloned().collect();
    assert_eq!(ours.len(), 1, "the drill's cluster directory: {ours:?}");
    assert!(a_process_runs_in(&ours[0]), "its server runs");

    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the drill did not end within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    assert!(
        !ours[0].exists(),
        "the drill's cluster directory {} is left behind",
        ours[0].display()
    );
    assert!(
        !a_process_runs_in(&ours[0]),
        "a server started in {} still runs",
        ours[0].display()
    );
}
