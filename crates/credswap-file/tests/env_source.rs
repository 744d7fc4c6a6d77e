//! `EnvSource` on the real process environment. Setting variables in-process is `unsafe` in
//! edition 2024 (and forbidden here), so the test runs itself again as a child process with
//! the variables set by `Command::env`.

use std::process::Command;

use credswap_core::secrecy::ExposeSecret;
use credswap_core::{CredentialSource, Policy, RotatingCredentials};
use credswap_file::EnvSource;

const PW: &str = "pw-env-51b0-never-printed";
const CHILD: &str = "CREDSWAP_FILE_ENV_TEST_CHILD";

#[test]
fn env_source_reads_the_process_environment() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([
            "--exact",
            "env_source_reads_the_process_environment",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("PGUSER", "app")
        .env("PGPASSWORD", PW)
        .env(
            "CREDSWAP_FILE_TEST_SECRET",
            format!(r#"{{"username":"json_app","password":"{PW}","dbname":"orders"}}"#),
        )
        .env_remove("CREDSWAP_FILE_TEST_UNSET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("child checks passed"), "{stdout}");
    assert!(
        !stdout.contains(PW) && !stderr.contains(PW),
        "a password was printed"
    );
}

fn child() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let source = EnvSource::new();
        let credential = source.fetch().await.unwrap();
        assert_eq!(credential.username(), "app");
        assert_eq!(credential.password().expose_secret(), PW);

        let json = EnvSource::builder()
            .json_var("CREDSWAP_FILE_TEST_SECRET")
            .build()
            .unwrap();
        let secret = json.fetch_secret().await.unwrap();
        assert_eq!(secret.credential().username(), "json_app");
        assert_eq!(secret.details().dbname(), Some("orders"));

        let missing = EnvSource::builder()
            .username("app")
            .password_field("CREDSWAP_FILE_TEST_UNSET")
            .build()
            .unwrap();
        let err = missing.fetch().await.unwrap_err();
        assert!(err.is_malformed(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "malformed secret: environment variable CREDSWAP_FILE_TEST_UNSET is not set"
        );

        // A provider over it, as local development uses it.
        let credentials = RotatingCredentials::new(source.clone(), Policy::default())
            .await
            .unwrap();
        assert_eq!(credentials.current().credential().username(), "app");
        println!("{source:?} {json:?} {secret:?} {credentials:?}");
        println!("child checks passed");
    });
}
