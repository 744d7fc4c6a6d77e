//! `credswap check` end to end: the built binary reading a real file, moto and OpenBao, and
//! connecting to a real PostgreSQL. Each reason has its own exit status; no output holds the
//! password.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use credswap_aws::aws_sdk_secretsmanager::Client;
use credswap_testkit::{TestBao, TestMoto, TestPostgres, random_password, unique_name};
use serde_json::{Value, json};

/// Runs `credswap check ARGS --json` with `envs`; returns the exit status and the JSON report.
fn check(args: &[&str], envs: &[(&str, &str)], secrets: &[&str]) -> (i32, Value, Output) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credswap"));
    command.arg("check").args(args).arg("--json");
    for var in [
        "PGUSER",
        "PGPASSWORD",
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "BAO_ADDR",
        "BAO_TOKEN",
    ] {
        command.env_remove(var);
    }
    command.envs(envs.iter().copied());
    let output = command.output().expect("run credswap check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for secret in secrets {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "credswap check printed a password: {}",
            stdout.replace(secret, "<the password>")
        );
    }
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\nstderr: {stderr}"));
    let code = output.status.code().expect("an exit status");
    assert_eq!(
        report["exit_code"].as_i64(),
        Some(i64::from(code)),
        "{report}"
    );
    (code, report, output)
}

fn url(pg: &TestPostgres) -> String {
    format!("postgres://{}:{}/{}", pg.host(), pg.port(), pg.database())
}

fn write_volume(dir: &Path, user: &str, password: &str) {
    std::fs::write(dir.join("username"), user).unwrap();
    std::fs::write(dir.join("password"), password).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_env_sources_each_reason_has_its_exit_status() {
    let pg = TestPostgres::start().await.expect("PostgreSQL starts");
    let role = unique_name("check");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_volume(dir.path(), &role, &password);
    let path = dir.path().to_str().unwrap();
    let db = url(&pg);
    let secrets = [password.as_str()];

    // Fresh and accepted.
    let (code, report, _) = check(
        &[
            "--source",
            "file",
            "--path",
            path,
            "--connect",
            "--database-url",
            &db,
        ],
        &[],
        &secrets,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["username"], role.as_str());
    assert_eq!(report["connected"], true);

    // The database refuses it: 4.
    let wrong = format!("wrong-{}", random_password());
    write_volume(dir.path(), &role, &wrong);
    let (code, report, _) = check(
        &[
            "--source",
            "file",
            "--path",
            path,
            "--connect",
            "--database-url",
            &db,
        ],
        &[],
        &[&password, &wrong],
    );
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["status"], "refused");
    assert!(
        report["reason"].as_str().unwrap().contains("28P01"),
        "{report}"
    );

    // Nothing listens there: 7.
    write_volume(dir.path(), &role, &password);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = format!("postgres://127.0.0.1:{closed}/postgres");
    let (code, report, _) = check(
        &[
            "--source",
            "file",
            "--path",
            path,
            "--connect",
            "--database-url",
            &nowhere,
        ],
        &[],
        &secrets,
    );
    assert_eq!(code, 7, "{report}");
    assert_eq!(report["status"], "unreachable");

    // Older than the rotation interval: 6 (the file's modification time is its issue time).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, report, _) = check(
        &["--source", "file", "--path", path, "--max-age", "1s"],
        &[],
        &secrets,
    );
    assert_eq!(code, 6, "{report}");
    assert_eq!(report["status"], "overdue");

    // A half-written secret (no password file) or a missing path: 3.
    std::fs::remove_file(dir.path().join("password")).unwrap();
    let (code, report, _) = check(&["--source", "file", "--path", path], &[], &secrets);
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["status"], "fetch-failed");
    let missing = dir.path().join("not-there");
    let (code, _, _) = check(
        &["--source", "file", "--path", missing.to_str().unwrap()],
        &[],
        &secrets,
    );
    assert_eq!(code, 3);

    // The environment: accepted; a missing variable is named.
    let (code, report, _) = check(
        &["--source", "env", "--connect", "--database-url", &db],
        &[("PGUSER", &role), ("PGPASSWORD", &password)],
        &secrets,
    );
    assert_eq!(code, 0, "{report}");
    let (code, report, _) = check(&["--source", "env"], &[("PGUSER", &role)], &secrets);
    assert_eq!(code, 3, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("PGPASSWORD"),
        "{report}"
    );

    // A bad argument is clap's 2; the text mode prints one line.
    let out = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args(["check", "--source", "file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    write_volume(dir.path(), &role, &password);
    let out = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args(["check", "--source", "file", "--path", path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("ok: user "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_source_on_moto() {
    let (pg, moto) = tokio::join!(TestPostgres::start(), TestMoto::start());
    let (pg, moto) = (pg.expect("PostgreSQL starts"), moto.expect("moto starts"));
    let config = moto.sdk_config().await;
    let client = Client::new(&config);
    let role = unique_name("check");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    let name = format!("check/{role}");
    client
        .create_secret()
        .name(&name)
        .secret_string(
            json!({
                "engine": "postgres", "host": pg.host(), "port": pg.port(),
                "dbname": pg.database(), "username": role, "password": password,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("CreateSecret");
    let endpoint = moto.endpoint_url();
    let envs = [
        ("AWS_REGION", moto.region()),
        ("AWS_ACCESS_KEY_ID", moto.access_key_id()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret_access_key()),
    ];
    let secrets = [password.as_str()];

    // The secret names its own host: --connect needs no URL.
    let (code, report, _) = check(
        &[
            "--source",
            "aws",
            "--secret-id",
            &name,
            "--endpoint-url",
            &endpoint,
            "--connect",
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["connected"], true);
    assert!(report["version"].is_string(), "{report}");

    let (code, report, _) = check(
        &[
            "--source",
            "aws",
            "--secret-id",
            "no/such/secret",
            "--endpoint-url",
            &endpoint,
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 3, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("no/such/secret"),
        "{report}"
    );

    // The store is down: 3 as well, within the timeout.
    let mut moto = moto;
    moto.stop();
    let (code, report, _) = check(
        &[
            "--source",
            "aws",
            "--secret-id",
            &name,
            "--endpoint-url",
            &endpoint,
            "--timeout",
            "5s",
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 3, "{report}");
}

/// A rotation that died part way leaves AWSPENDING: young, the check says "rotating" and
/// exits 0; older than --stuck-after, "rotation stuck since ..." and exit 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_a_stuck_rotation_has_its_exit_status() {
    let moto = TestMoto::start().await.expect("moto starts");
    let config = moto.sdk_config().await;
    let client = Client::new(&config);
    let role = unique_name("check");
    let password = random_password();
    let name = format!("check/{role}");
    let value = |password: &str| {
        json!({
            "engine": "postgres", "host": "127.0.0.1", "port": 5432,
            "dbname": "app", "username": role, "password": password,
        })
        .to_string()
    };
    client
        .create_secret()
        .name(&name)
        .secret_string(value(&password))
        .send()
        .await
        .expect("CreateSecret");
    let endpoint = moto.endpoint_url();
    let envs = [
        ("AWS_REGION", moto.region()),
        ("AWS_ACCESS_KEY_ID", moto.access_key_id()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret_access_key()),
    ];
    let aws = [
        "--source",
        "aws",
        "--secret-id",
        &name,
        "--endpoint-url",
        &endpoint,
    ];

    // No pending version: ok, no rotation.
    let (code, report, _) = check(&aws, &envs, &[&password]);
    assert_eq!(code, 0, "{report}");
    assert!(report["rotation"].is_null(), "{report}");

    // A pending version (a rotation function's createSecret), just created: rotating, ok.
    let token = "12345678-aaaa-4bbb-8ccc-0123456789ab";
    let pending_password = random_password();
    client
        .put_secret_value()
        .secret_id(&name)
        .client_request_token(token)
        .secret_string(value(&pending_password))
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("PutSecretValue");
    let secrets = [password.as_str(), pending_password.as_str()];
    let (code, report, _) = check(&aws, &envs, &secrets);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["rotation"], "rotating", "{report}");
    assert_eq!(report["pending_version"], token, "{report}");
    assert!(report["pending_age_s"].as_f64().unwrap() < 60.0, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("rotating"),
        "{report}"
    );

    // Older than --stuck-after (moto's CreatedDate has whole seconds): stuck, 9.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stuck_args = [&aws[..], &["--stuck-after", "1s"]].concat();
    let (code, report, _) = check(&stuck_args, &envs, &secrets);
    assert_eq!(code, 9, "{report}");
    assert_eq!(report["status"], "stuck");
    assert_eq!(report["rotation"], "stuck");
    assert_eq!(report["pending_version"], token, "{report}");
    assert!(report["pending_age_s"].as_f64().unwrap() >= 1.0, "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.starts_with("rotation stuck since "), "{report}");
    assert!(reason.contains(token), "{report}");
    // The default limit (10 minutes) is not reached yet.
    let (code, report, _) = check(&aws, &envs, &secrets);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["rotation"], "rotating", "{report}");

    // The one-line output says it too.
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .arg("check")
        .args(&stuck_args)
        .envs(envs.iter().copied())
        .output()
        .expect("run credswap check");
    let line = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(9), "{line}");
    assert!(line.starts_with("FAIL: rotation stuck since "), "{line}");
    assert!(
        !line.contains(&pending_password) && !line.contains(&password),
        "{line}"
    );

    // The rotation finishes (AWSCURRENT moves, AWSPENDING is removed): ok again.
    let current = client
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .expect("DescribeSecret")
        .version_ids_to_stages
        .unwrap_or_default()
        .into_iter()
        .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
        .expect("a current version")
        .0;
    client
        .update_secret_version_stage()
        .secret_id(&name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(token)
        .remove_from_version_id(current)
        .send()
        .await
        .expect("UpdateSecretVersionStage");
    client
        .update_secret_version_stage()
        .secret_id(&name)
        .version_stage("AWSPENDING")
        .remove_from_version_id(token)
        .send()
        .await
        .expect("UpdateSecretVersionStage");
    let (code, report, _) = check(&stuck_args, &envs, &secrets);
    assert_eq!(code, 0, "{report}");
    assert!(report["rotation"].is_null(), "{report}");
    assert_eq!(report["version"], token, "{report}");
}

/// `--connect` over TLS: verify-full with the cluster's CA file connects; plaintext on a
/// cluster whose pg_hba.conf turns it away is a rejection (4) naming pg_hba.conf; verify-full
/// without a CA file is a configuration error (8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_over_tls_with_sslmode_and_ca_file() {
    let pg = TestPostgres::start_tls().await.expect("a TLS cluster");
    let tls = pg.tls().expect("TLS").clone();
    let role = unique_name("check");
    let password = random_password();
    pg.create_login_role(&role, &password).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_volume(dir.path(), &role, &password);
    let path = dir.path().to_str().unwrap();
    let db = format!(
        "postgres://{}:{}/{}",
        tls.server_name(),
        pg.port(),
        pg.database()
    );
    let ca_file = tls.ca_cert_path().to_str().unwrap();
    let secrets = [password.as_str()];
    let connect = [
        "--source",
        "file",
        "--path",
        path,
        "--connect",
        "--database-url",
        &db,
    ];

    let (code, report, _) = check(
        &[
            &connect[..],
            &["--sslmode", "verify-full", "--ca-file", ca_file],
        ]
        .concat(),
        &[],
        &secrets,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["connected"], true);

    let (code, report, _) = check(
        &[&connect[..], &["--sslmode", "disable"]].concat(),
        &[],
        &secrets,
    );
    assert_eq!(code, 4, "{report}");
    assert_eq!(report["status"], "refused");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("pg_hba.conf") && reason.contains("--sslmode"),
        "{report}"
    );

    let (code, report, _) = check(
        &[&connect[..], &["--sslmode", "verify-full"]].concat(),
        &[],
        &secrets,
    );
    assert_eq!(code, 8, "{report}");

    // A CA file of another CA: the handshake fails, the database cannot be reached (7).
    let other = credswap_testkit::tls::TestCa::generate("not the server's CA").unwrap();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other.cert_pem()).unwrap();
    let (code, report, _) = check(
        &[
            &connect[..],
            &[
                "--sslmode",
                "verify-full",
                "--ca-file",
                other_file.to_str().unwrap(),
            ],
        ]
        .concat(),
        &[],
        &secrets,
    );
    assert_eq!(code, 7, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("UnknownIssuer"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sources_on_openbao() {
    let (pg, bao) = tokio::join!(TestPostgres::start(), TestBao::start());
    let (pg, mut bao) = (pg.expect("PostgreSQL starts"), bao.expect("OpenBao starts"));
    bao.enable_database(&pg).await.expect("database engine");
    bao.create_dynamic_role("app", Duration::from_secs(30), Duration::from_secs(60))
        .await
        .expect("dynamic role");
    let role = unique_name("static");
    pg.create_login_role(&role, &random_password())
        .await
        .unwrap();
    bao.create_static_role("static-app", &role, Duration::from_secs(3600))
        .await
        .expect("static role");
    let kv_password = random_password();
    bao.request(
        "POST",
        "secret/data/app/db",
        Some(&json!({"data": {"username": role, "password": kv_password}})),
    )
    .await
    .expect("KV write");
    let address = bao.address();
    let envs = [
        ("VAULT_ADDR", address.as_str()),
        ("VAULT_TOKEN", bao.root_token()),
    ];
    let db = url(&pg);
    let secrets = [kv_password.as_str()];

    // A static role: the password Vault set, accepted by the database.
    let (code, report, _) = check(
        &[
            "--source",
            "vault-static",
            "--role",
            "static-app",
            "--connect",
            "--database-url",
            &db,
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["username"], role.as_str());
    assert!(
        report["next_rotation_in_s"].as_f64().unwrap() > 3000.0,
        "{report}"
    );

    // A dynamic role whose lease ends within the margin: 5. Within a shorter margin: 0.
    let (code, report, _) = check(
        &[
            "--source",
            "vault-dynamic",
            "--role",
            "app",
            "--expiry-margin",
            "5m",
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 5, "{report}");
    assert_eq!(report["status"], "expiring");
    let (code, report, _) = check(
        &[
            "--source",
            "vault-dynamic",
            "--role",
            "app",
            "--expiry-margin",
            "5s",
            "--connect",
            "--database-url",
            &db,
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 0, "{report}");

    // KV v2: the stored password is not the static role's any more: refused, 4.
    let (code, report, _) = check(
        &[
            "--source",
            "vault-kv",
            "--path",
            "app/db",
            "--connect",
            "--database-url",
            &db,
        ],
        &envs,
        &secrets,
    );
    assert_eq!(code, 4, "{report}");
    // A path that is not there, and a sealed Vault: 3.
    let (code, report, _) = check(
        &["--source", "vault-kv", "--path", "app/missing"],
        &envs,
        &secrets,
    );
    assert_eq!(code, 3, "{report}");
    // No address configured: a configuration problem, 8.
    let (code, report, _) = check(&["--source", "vault-kv", "--path", "app/db"], &[], &secrets);
    assert_eq!(code, 8, "{report}");
    bao.seal().await.expect("seal");
    let (code, report, _) = check(
        &["--source", "vault-static", "--role", "static-app"],
        &envs,
        &secrets,
    );
    assert_eq!(code, 3, "{report}");
    bao.stop();
}

/// `credswap check --source rds-iam|dsql` with static fake AWS credentials: no AWS, no
/// database. The token is minted locally; the output names the user and the expiry, never the
/// token (no `X-Amz-Signature`) or the secret key.
#[test]
fn minted_sources_report_the_user_and_expiry_never_the_token() {
    const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let help = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args(["check", "--help"])
        .output()
        .expect("run credswap check --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("rds-iam") && help.contains("dsql"), "{help}");

    let envs = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_CONFIG_FILE", "/nonexistent/credswap/config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/credswap/credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let hidden = [SECRET_KEY, "X-Amz-Signature", "X-Amz-Credential"];
    let rds = [
        "--source",
        "rds-iam",
        "--host",
        "orders.cluster-abc.eu-west-1.rds.amazonaws.com",
        "--user",
        "iam_app",
    ];
    let (code, report, _) = check(&rds, &envs, &hidden);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["source"], "rds-iam");
    assert_eq!(report["username"], "iam_app");
    let left = report["expires_in_s"].as_f64().expect("an expiry");
    assert!((880.0..=900.0).contains(&left), "{report}");

    // The plain line says the same.
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .arg("check")
        .args(rds)
        .envs(envs)
        .output()
        .expect("run credswap check");
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{line}");
    assert!(
        line.starts_with("ok: user iam_app (minted token)") && line.contains("expires in 14m"),
        "{line}"
    );
    assert!(!line.contains("X-Amz-Signature") && !line.contains(SECRET_KEY));

    let (code, report, _) = check(
        &[
            "--source",
            "dsql",
            "--host",
            "abc.dsql.eu-west-1.on.aws",
            "--admin",
        ],
        &envs,
        &hidden,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (&report["source"], &report["username"]),
        (&json!("dsql"), &json!("admin"))
    );

    // IAM logins need TLS: --connect without it is a configuration error, before any connect.
    let mut plain = rds.to_vec();
    plain.extend(["--connect", "--sslmode", "prefer"]);
    let (code, report, _) = check(&plain, &envs, &hidden);
    assert_eq!(code, 8, "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("IAM authentication requires TLS") && reason.contains("sslmode=require"),
        "{reason}"
    );

    // A missing --host is clap's error (2); dsql without --admin or --user is a bad
    // configuration (8).
    let output = Command::new(env!("CARGO_BIN_EXE_credswap"))
        .args(["check", "--source", "rds-iam", "--user", "u"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let (code, report, _) = check(
        &["--source", "dsql", "--host", "abc.dsql.eu-west-1.on.aws"],
        &envs,
        &hidden,
    );
    assert_eq!(code, 8, "{report}");
}
