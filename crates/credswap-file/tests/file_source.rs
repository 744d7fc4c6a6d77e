//! `FileSource` on real files: the layouts, Kubernetes' `..data` swap, atomic renames,
//! half-written files, the watcher (events and the polling fallback) and a provider over it.

#![cfg(unix)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{K8sVolume, rds_json, write_atomically};
use credswap_core::secrecy::ExposeSecret;
use credswap_core::{CredentialSource, Policy, RotatingCredentials, SourceError};
use credswap_file::{EnvSource, FileSource, Layout};

const PW: &str = "pw-file-7c1d-never-printed";
const PW2: &str = "pw-file-a9e4-never-printed";

/// How long the watcher may take to see a change through file-system events (it needs a few
/// milliseconds; a loaded CI machine gets slack).
const EVENT_BOUND: Duration = Duration::from_secs(3);

fn assert_no_password(printed: &str) {
    for pw in [PW, PW2] {
        assert!(!printed.contains(pw), "a password was printed: {printed}");
    }
}

fn assert_malformed(err: &SourceError, names: &str) {
    assert!(err.is_malformed(), "{err:?}");
    assert!(err.message().contains(names), "{names} not named: {err}");
    assert_no_password(&format!("{err} {err:?} {err:#?}"));
}

/// A source whose watcher sees only file-system events: the poll fallback is an hour away.
fn events_only(path: &Path) -> credswap_file::FileSourceBuilder {
    FileSource::builder(path)
        .poll_interval(Duration::from_secs(3600))
        .settle(Duration::from_millis(20))
}

fn policy() -> Policy {
    // Long periodic refresh: a change must reach the provider through the watcher.
    Policy::builder()
        .refresh_interval(Duration::from_secs(60))
        // Exactly a minute: with jitter the first refresh comes at a random point of it.
        .jitter(0.0)
        .overlap_window(Duration::from_secs(600))
        .build()
        .unwrap()
}

async fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what} not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn directory_of_key_files_with_details_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("username"), "app\n").unwrap();
    fs::write(dir.path().join("password"), format!("{PW}\n")).unwrap();
    fs::write(dir.path().join("host"), "db.internal\n").unwrap();
    fs::write(dir.path().join("port"), "6432\n").unwrap();
    fs::write(dir.path().join("dbname"), "orders").unwrap();
    let source = FileSource::builder(dir.path()).build().unwrap();
    let secret = source.fetch_secret().await.unwrap();
    let c = secret.credential();
    assert_eq!(c.username(), "app");
    assert_eq!(
        c.password().expose_secret(),
        PW,
        "one trailing newline dropped"
    );
    let version = c.version().unwrap();
    assert!(version.starts_with("content-"), "{version}");
    assert!(!version.contains(PW));
    let mtime = fs::metadata(dir.path().join("password"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(c.issued_at(), Some(mtime));
    let d = secret.details();
    assert_eq!(
        (d.host(), d.port(), d.dbname(), d.engine()),
        (Some("db.internal"), Some(6432), Some("orders"), None)
    );
    assert_eq!(source.details().as_ref(), Some(d));

    // Same content, same version; new content, new version.
    assert_eq!(source.fetch().await.unwrap().version(), Some(version));
    fs::write(dir.path().join("password"), PW2).unwrap();
    let again = source.fetch().await.unwrap();
    assert_eq!(again.password().expose_secret(), PW2);
    assert_ne!(again.version(), Some(version));

    // Without stripping, the newline stays.
    fs::write(dir.path().join("password"), format!("{PW}\n")).unwrap();
    let raw = FileSource::builder(dir.path())
        .strip_newline(false)
        .build()
        .unwrap();
    assert_eq!(
        raw.fetch().await.unwrap().password().expose_secret(),
        format!("{PW}\n")
    );
}

#[tokio::test]
async fn directory_key_names_and_the_configured_username() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pass"), PW).unwrap();
    let source = FileSource::builder(dir.path())
        .layout(Layout::Directory)
        .password_field("pass")
        .username_field("user")
        .build()
        .unwrap();
    let err = source.fetch().await.unwrap_err();
    assert_malformed(&err, "no \"user\" file");
    let source = FileSource::builder(dir.path())
        .password_field("pass")
        .username("fallback")
        .build()
        .unwrap();
    assert_eq!(source.fetch().await.unwrap().username(), "fallback");
    fs::write(dir.path().join("username"), "from-file").unwrap();
    assert_eq!(
        source.fetch().await.unwrap().username(),
        "from-file",
        "a username file wins over the configured one"
    );
}

#[tokio::test]
async fn single_files_plain_json_and_auto() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("db-password");
    fs::write(&plain, format!("{PW}\r\n")).unwrap();
    let source = FileSource::builder(&plain)
        .layout(Layout::PasswordFile)
        .username("app")
        .build()
        .unwrap();
    let c = source.fetch().await.unwrap();
    assert_eq!((c.username(), c.password().expose_secret()), ("app", PW));
    assert_eq!(source.watched_dir(), dir.path());

    // Auto: a plain file needs the username.
    let auto = FileSource::builder(&plain).build().unwrap();
    assert_malformed(&auto.fetch().await.unwrap_err(), "plain password");
    assert!(
        auto.fetch()
            .await
            .unwrap_err()
            .message()
            .contains("db-password")
    );

    let json = dir.path().join("db.json");
    fs::write(&json, rds_json("app", PW)).unwrap();
    for layout in [Layout::Json, Layout::Auto] {
        let source = FileSource::builder(&json).layout(layout).build().unwrap();
        let secret = source.fetch_secret().await.unwrap();
        assert_eq!(secret.credential().username(), "app");
        assert_eq!(secret.credential().password().expose_secret(), PW);
        assert_eq!(secret.details().engine(), Some("postgres"));
        assert_eq!(secret.details().port(), Some(5432));
    }

    // A layout that does not match the path.
    let err = FileSource::builder(dir.path())
        .layout(Layout::Json)
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_malformed(&err, "is a directory");
    let err = FileSource::builder(&json)
        .layout(Layout::Directory)
        .build()
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_malformed(&err, "is a file");
}

#[tokio::test]
async fn half_written_files_are_malformed_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("db.json");
    let source = FileSource::builder(&json).build().unwrap();

    fs::write(&json, "").unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "db.json is empty");
    let full = rds_json("app", PW);
    fs::write(&json, &full[..full.len() / 2]).unwrap();
    assert_malformed(
        &source.fetch().await.unwrap_err(),
        "db.json: the secret is not valid JSON",
    );
    fs::write(&json, r#"{"username":"app"}"#).unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "no \"password\" field");
    fs::write(&json, vec![b'{', 0xff, 0xfe]).unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "not valid UTF-8");

    let keys = tempfile::tempdir().unwrap();
    let source = FileSource::builder(keys.path()).build().unwrap();
    fs::write(keys.path().join("username"), "app").unwrap();
    let err = source.fetch().await.unwrap_err();
    assert_malformed(&err, "has a \"username\" file but no \"password\" file");
    assert!(err.message().contains(&keys.path().display().to_string()));
    fs::write(keys.path().join("password"), "").unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "password is empty");
    fs::write(keys.path().join("password"), "\n").unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "password is empty");
    fs::write(keys.path().join("password"), PW).unwrap();
    fs::write(keys.path().join("port"), "543x").unwrap();
    assert_malformed(&source.fetch().await.unwrap_err(), "port is not a TCP port");
    let stats = source.stats();
    assert_eq!(
        (stats.failed_reads, stats.malformed_reads),
        (4, 4),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_missing_path_is_unavailable_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-yet");
    let source = FileSource::builder(&path).username("app").build().unwrap();
    let err = source.fetch().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.message().contains("not-yet"), "{err}");
    fs::write(&path, PW).unwrap();
    assert_eq!(source.fetch().await.unwrap().username(), "app");
}

#[tokio::test]
async fn kubernetes_volume_is_read_through_data_and_versioned_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = K8sVolume::create(dir.path(), &[("username", "app_a"), ("password", PW)]);
    let source = FileSource::builder(dir.path()).build().unwrap();
    let c = source.fetch().await.unwrap();
    assert_eq!((c.username(), c.password().expose_secret()), ("app_a", PW));
    assert_eq!(c.version(), Some("..2026_11_26_10_00_00.000000001"));
    let name = volume.swap(&[("username", "app_b"), ("password", PW2)]);
    let c = source.fetch().await.unwrap();
    assert_eq!((c.username(), c.password().expose_secret()), ("app_b", PW2));
    assert_eq!(c.version(), Some(name.as_str()));

    // A single key file of the volume, as a password file: versioned by `..data` too.
    let single = FileSource::builder(dir.path().join("password"))
        .layout(Layout::PasswordFile)
        .username("app_b")
        .build()
        .unwrap();
    assert_eq!(single.fetch().await.unwrap().version(), Some(name.as_str()));
}

/// Reads race a swapping writer; no read may pair one version's username with another's
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_mix_two_versions_of_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = K8sVolume::create(dir.path(), &[("username", "user0"), ("password", "pass0")]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                volume.swap(&[
                    ("username", &format!("user{n}")),
                    ("password", &format!("pass{n}")),
                ]);
            }
            n
        })
    };
    let source = FileSource::builder(dir.path()).build().unwrap();
    let (mut ok, mut retried_out) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        match source.fetch().await {
            Ok(c) => {
                let n = c.username().strip_prefix("user").unwrap();
                assert_eq!(
                    c.password().expose_secret(),
                    format!("pass{n}"),
                    "mixed versions"
                );
                ok += 1;
            }
            // Swapped during each of three reads: unavailable, never a mixed credential.
            Err(e) if e.is_unavailable() => retried_out += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.join().unwrap();
    assert!(
        ok > 100 && swaps > 100,
        "ok {ok}, unavailable {retried_out}, swaps {swaps}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_a_kubernetes_swap_through_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = K8sVolume::create(dir.path(), &[("username", "app_a"), ("password", PW)]);
    let source = events_only(dir.path()).build().unwrap();
    let mut changes = source.changes().unwrap();
    wait_for("the watch", EVENT_BOUND, || changes.stats().reads >= 1).await;
    assert!(changes.stats().watching, "{:?}", changes.stats());
    assert_eq!(changes.dir(), dir.path());

    for round in 1..=3u64 {
        let start = Instant::now();
        let password = format!("{PW2}-{round}");
        volume.swap(&[("username", "app_b"), ("password", &password)]);
        tokio::time::timeout(EVENT_BOUND, changes.changed())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the swap was not seen through events: {:?}",
                    changes.stats()
                )
            })
            .unwrap();
        let took = start.elapsed();
        assert_eq!(changes.count(), round);
        let c = source.fetch().await.unwrap();
        assert_eq!(c.password().expose_secret(), password);
        eprintln!("round {round}: change seen after {took:?}");
    }
    let stats = changes.stats();
    assert_eq!(
        stats.polls, 0,
        "seen through events, not polling: {stats:?}"
    );
    assert!(stats.events > 0 && stats.changes == 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_an_atomic_rename_and_ignores_half_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("db.json");
    fs::write(&json, rds_json("app", PW)).unwrap();
    let source = events_only(&json).build().unwrap();
    let mut changes = source.changes().unwrap();
    wait_for("the watch", EVENT_BOUND, || changes.stats().reads >= 1).await;

    write_atomically(&json, &rds_json("app", PW2));
    tokio::time::timeout(EVENT_BOUND, changes.changed())
        .await
        .expect("the rename was not seen")
        .unwrap();

    // Written in place, in pieces: truncated, half, then a file without the password.
    let full = rds_json("app", PW);
    fs::write(&json, "").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::write(&json, &full[..full.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs::write(&json, r#"{"username":"app"}"#).unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
    assert!(quiet.is_err(), "a malformed file was reported as a change");
    assert!(changes.stats().rejected >= 1, "{:?}", changes.stats());

    // Touching the file without changing it is no change either.
    fs::write(&json, r#"{"username":"app"}"#).unwrap();
    write_atomically(&json, &full);
    tokio::time::timeout(EVENT_BOUND, changes.changed())
        .await
        .expect("the complete file was not seen")
        .unwrap();
    assert_eq!(changes.count(), 2);
    write_atomically(&json, &full);
    let quiet = tokio::time::timeout(Duration::from_millis(300), changes.changed()).await;
    assert!(quiet.is_err(), "the same content was reported again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_covers_a_directory_that_appears_later() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("secrets");
    let source = FileSource::builder(&dir)
        .layout(Layout::Directory)
        .poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut changes = source.changes().unwrap();
    wait_for("the first read", EVENT_BOUND, || changes.stats().reads >= 1).await;
    assert!(!changes.stats().watching, "nothing to watch yet");

    fs::create_dir(&dir).unwrap();
    K8sVolume::create(&dir, &[("username", "app"), ("password", PW)]);
    tokio::time::timeout(EVENT_BOUND, changes.changed())
        .await
        .expect("the new directory was not found by polling")
        .unwrap();
    assert!(changes.stats().polls >= 1);
    wait_for("the watch set up again", EVENT_BOUND, || {
        changes.stats().watching
    })
    .await;
}

/// End to end: a provider over the source, woken by `FileSource::watch`; a half-written file
/// is never published and the last good credential stays in effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_follows_the_files_and_keeps_the_last_good_credential() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("db.json");
    fs::write(&json, rds_json("app_a", PW)).unwrap();
    let source = events_only(&json).build().unwrap();
    let credentials = RotatingCredentials::new(source.clone(), policy())
        .await
        .unwrap();
    let watch = source.watch(&credentials).unwrap();
    assert_eq!(credentials.generation().get(), 1);
    wait_for("the start refresh", EVENT_BOUND, || {
        watch.stats().refreshes >= 1
    })
    .await;

    // Half-written: the provider's refresh fails as malformed, the old login stays.
    let full = rds_json("app_b", PW2);
    fs::write(&json, &full[..full.len() - 10]).unwrap();
    let err = credentials.refresh().await.unwrap_err();
    assert!(
        err.source_error().is_some_and(SourceError::is_malformed),
        "{err:?}"
    );
    assert_no_password(&format!("{err} {err:?}"));
    let current = credentials.current();
    assert_eq!(current.generation().get(), 1);
    assert_eq!(current.credential().username(), "app_a");
    assert_eq!(current.credential().password().expose_secret(), PW);

    // Complete: the watcher wakes the provider, far before its 60 s refresh.
    let start = Instant::now();
    write_atomically(&json, &full);
    let took = wait_for("the new generation", EVENT_BOUND, || {
        credentials.generation().get() == 2
    })
    .await;
    let current = credentials.current();
    assert_eq!(current.credential().username(), "app_b");
    assert_eq!(current.credential().password().expose_secret(), PW2);
    eprintln!(
        "provider followed the file after {took:?} ({:?})",
        start.elapsed()
    );
    let stats = watch.stats();
    assert!(
        stats.refreshes >= 2 && stats.refresh_failures == 0,
        "{stats:?}"
    );
    assert_eq!(credentials.stats().rotations, 1);
    drop(watch);
}

#[tokio::test]
async fn no_public_type_prints_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("db.json");
    fs::write(&json, rds_json("app", PW)).unwrap();
    let builder = FileSource::builder(&json).username("app");
    let mut printed = format!("{builder:?} {builder:#?}");
    let source = builder.build().unwrap();
    let secret = source.fetch_secret().await.unwrap();
    let credential = source.fetch().await.unwrap();
    let changes = source.changes().unwrap();
    let credentials = RotatingCredentials::new(source.clone(), policy())
        .await
        .unwrap();
    let watch = source.watch(&credentials).unwrap();
    let env = EnvSource::builder().json_var("CREDSWAP_FILE_TEST_UNSET");
    fs::write(&json, format!(r#"{{"username":"app","password":"{PW}""#)).unwrap();
    let malformed = source.fetch().await.unwrap_err();
    printed += &format!(
        "{source:?} {secret:?} {secret:#?} {:?} {credential:?} {changes:?} {watch:?} {:?} {:?} \
         {env:?} {:?} {credentials:?} {malformed} {malformed:?} {:?} {:?}",
        secret.details(),
        source.stats(),
        changes.stats(),
        env.clone().build().unwrap(),
        Layout::Json,
        credswap_file::WatchError::NoRuntime,
    );
    assert_no_password(&printed);
    assert!(printed.contains("db.json"), "{printed}");
}

#[test]
fn watching_needs_a_runtime() {
    let source = FileSource::builder("/nonexistent").build().unwrap();
    let err = source.changes().unwrap_err();
    assert_eq!(err, credswap_file::WatchError::NoRuntime);
}
