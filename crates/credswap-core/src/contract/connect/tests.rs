//! The connector against a scripted driver, on paused time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use std::future::Future;

use super::*;
use crate::{Credential, MemorySource, Policy, RotatingCredentials};

#[derive(Debug)]
struct DriverError(Failure);

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "driver error: {}", self.0.as_str())
    }
}

impl std::error::Error for DriverError {}

async fn setup(policy: Policy) -> (MemorySource, Adapter) {
    let store = MemorySource::new(Credential::new("app", "old"));
    let credentials = RotatingCredentials::builder(store.clone())
        .policy(policy)
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    (store, Adapter::new(credentials))
}

fn quick() -> Policy {
    Policy::builder()
        .auth_refresh_interval(Duration::from_millis(50))
        .connect_deadline(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A driver answering each open with `F`.
struct Scripted<F>(F);

impl<F> Driver for Scripted<F>
where
    F: Fn(&Credential) -> Result<(), DriverError> + Send + Sync + 'static,
{
    type Connection = ();
    type Error = DriverError;

    fn open(
        &self,
        credential: &Credential,
    ) -> impl Future<Output = Result<(), DriverError>> + Send {
        std::future::ready((self.0)(credential))
    }

    fn classify(&self, error: &DriverError) -> Failure {
        error.0
    }

    fn close(&self, (): ()) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    fn code(&self, error: &DriverError) -> Option<String> {
        (error.0 == Failure::Auth).then(|| "28P01".to_owned())
    }
}

/// A server that accepts only `accepts` as the password.
fn server(
    accepts: &'static Mutex<&'static str>,
    attempts: &'static AtomicU32,
) -> Scripted<impl Fn(&Credential) -> Result<(), DriverError> + Send + Sync + 'static> {
    use secrecy::ExposeSecret;
    Scripted(move |credential: &Credential| {
        attempts.fetch_add(1, Ordering::SeqCst);
        if credential.password().expose_secret() == *accepts.lock().unwrap() {
            Ok(())
        } else {
            Err(DriverError(Failure::Auth))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_waits_for_the_store_then_connects() {
    static ACCEPTS: Mutex<&str> = Mutex::new("new");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), None);
    let lagging_store = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            store.set(Credential::new("app", "new"));
        })
    };
    let started = Instant::now();
    let connected = connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect("connects once the store has the new password");
    lagging_store.await.unwrap();
    assert_eq!(connected.tag.generation(), Generation::new(2));
    assert_eq!(connected.tag.generation(), Generation::new(2));
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(
        started.elapsed() < Duration::from_millis(1700),
        "{:?}",
        started.elapsed()
    );
    let stats = adapter.stats();
    assert!(
        stats.auth_failures >= 1 && stats.auth_retries >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.connect_failures, 0);
    assert_eq!(stats.live_per_generation.get(&Generation::new(2)), Some(&1));
    // The store was asked at most once per auth_refresh_interval, not once per attempt.
    let fetches = store.fetch_count();
    assert!(fetches <= 1 + 700 / 50 + 2, "{fetches} fetches");
    assert!(!adapter.credentials().health().is_refused());
    drop(connected);
    assert_eq!(adapter.stats().live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_fails_at_the_deadline_naming_role_and_generation() {
    static ACCEPTS: Mutex<&str> = Mutex::new("never");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (_store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), Some(Duration::from_secs(2)));
    let started = Instant::now();
    let refused = connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect_err("nothing works");
    let waited = started.elapsed();
    // The pool's 2 s timeout, less the margin (a tenth): the connector gives up at 1.8 s.
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_millis(2900),
        "{waited:?}"
    );
    assert_eq!(refused.failure(), Failure::Auth);
    assert_eq!(refused.username(), "app");
    assert!(
        refused.attempts() > 2 && refused.attempts() < 20,
        "{}",
        refused.attempts()
    );
    let error = refused.into_error();
    assert!(error.is_auth_failure() && error.code() == Some("28P01"));
    assert_eq!(error.generation(), Some(Generation::FIRST));
    let health = adapter.credentials().health();
    assert!(health.is_refused() && !health.is_healthy(), "{health:?}");
    assert_eq!(adapter.stats().connect_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_and_fatal_ones_are_not() {
    let (_store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), None);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let connected = connector
        .connect(&Scripted(move |_: &Credential| {
            if counted.fetch_add(1, Ordering::SeqCst) < 5 {
                Err(DriverError(Failure::Transient))
            } else {
                Ok(())
            }
        }))
        .await;
    assert!(connected.is_ok());
    assert_eq!(adapter.stats().connect_retries, 5);

    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let refused = connector
        .connect(&Scripted(move |_: &Credential| {
            counted.fetch_add(1, Ordering::SeqCst);
            Err(DriverError(Failure::Fatal))
        }))
        .await
        .expect_err("fatal");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(refused.failure(), Failure::Fatal);
}

#[tokio::test(start_paused = true)]
async fn an_old_isolated_refusal_does_not_shorten_a_later_wait() {
    static ACCEPTS: Mutex<&str> = Mutex::new("new");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), None);
    // A refusal an hour ago (a blip), then nothing: not the start of today's burst.
    adapter.feedback().report_refused(Generation::FIRST);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let lagging_store = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            store.set(Credential::new("app", "new"));
        })
    };
    let connected = connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect("waits its whole deadline for the store, as a first refusal does");
    lagging_store.await.unwrap();
    assert_eq!(connected.tag.generation(), Generation::new(2));
}

#[tokio::test(start_paused = true)]
async fn a_connect_queued_behind_a_long_burst_fails_as_fast_as_a_plain_pool() {
    static ACCEPTS: Mutex<&str> = Mutex::new("never");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), Some(Duration::from_secs(2)));
    let started = Instant::now();
    connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect_err("nothing works");
    assert!(started.elapsed() >= Duration::from_millis(1800));
    // Queued behind it: waits at most once for the store's next answer, not a new deadline.
    store.fail_with(crate::SourceError::unavailable("down"));
    let _ = adapter.credentials().refresh().await;
    let queued = Instant::now();
    connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect_err("nothing works");
    assert!(
        queued.elapsed() < Duration::from_millis(500),
        "{:?}",
        queued.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_refused_connects_share_few_fetches() {
    static ACCEPTS: Mutex<&str> = Mutex::new("new");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (store, adapter) = setup(quick()).await;
    let connector = Connector::new(adapter.clone(), None);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move {
                connector
                    .connect(&server(&ACCEPTS, &ATTEMPTS))
                    .await
                    .map(|c| c.tag.generation())
                    .map_err(|r| r.attempts())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.set(Credential::new("app", "new"));
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Generation::new(2));
    }
    // 200 refused connects over ~300 ms: fetches bounded by the rate limit, not by 200.
    let fetches = store.fetch_count();
    assert!(
        fetches <= 1 + 300 / 50 + 3,
        "{fetches} fetches for 200 refused connects"
    );
}

/// A token minter: each fetch returns a new token for `iam_app`, valid for `life`, and the
/// server (`accepts`) takes only the newest, as the test kit's token gate does.
fn minter(
    life: Duration,
    minted: &'static AtomicU32,
    accepts: &'static Mutex<String>,
) -> impl crate::CredentialSource {
    crate::source::from_fn(move || {
        let n = minted.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("token-{n}");
        *accepts.lock().unwrap() = token.clone();
        std::future::ready(Ok(Credential::minted("iam_app", token)
            .with_expires_at(std::time::SystemTime::now() + life)))
    })
}

fn gate(
    accepts: &'static Mutex<String>,
    logins: &'static Mutex<Vec<String>>,
) -> Scripted<impl Fn(&Credential) -> Result<(), DriverError> + Send + Sync + 'static> {
    use secrecy::ExposeSecret;
    Scripted(move |credential: &Credential| {
        let token = credential.password().expose_secret().to_owned();
        logins.lock().unwrap().push(token.clone());
        if token == *accepts.lock().unwrap() {
            Ok(())
        } else {
            Err(DriverError(Failure::Auth))
        }
    })
}

async fn minted_adapter(source: impl crate::CredentialSource, margin: Duration) -> Adapter {
    let credentials = RotatingCredentials::builder(source)
        .policy(
            Policy::builder()
                .expiry_margin(margin)
                .refresh_interval(Duration::from_secs(600))
                .auth_refresh_interval(Duration::from_millis(50))
                .build()
                .unwrap(),
        )
        .background_refresh(false)
        .build()
        .await
        .unwrap();
    Adapter::new(credentials)
}

#[tokio::test(start_paused = true)]
async fn a_new_token_is_not_a_rotation_and_retires_no_session() {
    static MINTED: AtomicU32 = AtomicU32::new(0);
    static ACCEPTS: Mutex<String> = Mutex::new(String::new());
    static LOGINS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let adapter = minted_adapter(
        minter(Duration::from_secs(900), &MINTED, &ACCEPTS),
        Duration::from_secs(60),
    )
    .await;
    let credentials = adapter.credentials().clone();
    let connector = adapter.connector(None);
    let first = connector.connect(&gate(&ACCEPTS, &LOGINS)).await.unwrap();
    let mut changes = credentials.subscribe();
    changes.borrow_and_update();
    for _ in 0..5 {
        credentials.refresh().await.unwrap();
    }
    let current = credentials.current();
    assert_eq!(
        current.generation(),
        Generation::FIRST,
        "same login, same generation"
    );
    assert!(
        changes.has_changed().unwrap(),
        "subscribers hear of the new token"
    );
    assert_eq!(credentials.stats().token_refreshes, 5);
    assert_eq!(credentials.stats().rotations, 0);
    assert_eq!(
        current.retire_at(),
        None,
        "a token's end retires no session"
    );
    assert!(current.renew_at().is_some());
    assert!(
        !first.tag.is_stale(&current),
        "the first token's session stays"
    );
    assert!(!adapter.should_close(&first.tag, &current, true));
    // The next connect logs in with the newest token.
    let second = connector.connect(&gate(&ACCEPTS, &LOGINS)).await.unwrap();
    assert_eq!(LOGINS.lock().unwrap().last().unwrap(), "token-6");
    assert_eq!(adapter.stats().auth_failures, 0);
    drop((first, second));
}

#[tokio::test(start_paused = true)]
async fn a_connect_never_logs_in_with_a_token_within_its_margin() {
    static MINTED: AtomicU32 = AtomicU32::new(0);
    static ACCEPTS: Mutex<String> = Mutex::new(String::new());
    static LOGINS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let adapter = minted_adapter(
        minter(Duration::from_secs(10), &MINTED, &ACCEPTS),
        Duration::from_secs(3),
    )
    .await;
    let connector = adapter.connector(None);
    // Into the first token's margin (7 s of its 10), with no refresher running.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(adapter.credentials().current().is_token_due(Instant::now()));
    connector.connect(&gate(&ACCEPTS, &LOGINS)).await.unwrap();
    assert_eq!(
        *LOGINS.lock().unwrap(),
        ["token-2"],
        "minted before the login"
    );
    assert_eq!(MINTED.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_replaced_during_a_connect_is_retried_with_the_new_one_without_another_mint() {
    static MINTED: AtomicU32 = AtomicU32::new(0);
    static ACCEPTS: Mutex<String> = Mutex::new(String::new());
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let adapter = minted_adapter(
        minter(Duration::from_secs(900), &MINTED, &ACCEPTS),
        Duration::from_secs(60),
    )
    .await;
    let credentials = adapter.credentials().clone();
    // The gate refuses the first attempt because a mint happens while it is under way.
    let driver = Scripted(move |credential: &Credential| {
        use secrecy::ExposeSecret;
        if ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            let credentials = credentials.clone();
            // Mint now (the token in hand is replaced at the server).
            futures_lite_block_on(async move { credentials.refresh().await.unwrap() });
        }
        if credential.password().expose_secret() == *ACCEPTS.lock().unwrap() {
            Ok(())
        } else {
            Err(DriverError(Failure::Auth))
        }
    });
    adapter.connector(None).connect(&driver).await.unwrap();
    assert_eq!(ATTEMPTS.load(Ordering::SeqCst), 2);
    assert_eq!(
        MINTED.load(Ordering::SeqCst),
        2,
        "no extra mint for the refusal"
    );
    assert_eq!(adapter.credentials().stats().refusals, 0);
}

/// Runs a future to completion on the current (paused, single-threaded) runtime from inside a
/// synchronous driver callback.
fn futures_lite_block_on<F: Future + Send + 'static>(future: F) -> F::Output
where
    F::Output: Send + 'static,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}

#[tokio::test(start_paused = true)]
async fn the_refresher_mints_ahead_of_the_margin_never_past_it() {
    static MINTED: AtomicU32 = AtomicU32::new(0);
    static ACCEPTS: Mutex<String> = Mutex::new(String::new());
    let credentials =
        RotatingCredentials::builder(minter(Duration::from_secs(20), &MINTED, &ACCEPTS))
            .policy(
                Policy::builder()
                    .expiry_margin(Duration::from_secs(5))
                    .refresh_interval(Duration::from_secs(600))
                    .build()
                    .unwrap(),
            )
            .build()
            .await
            .unwrap();
    // 20-s tokens, 5-s margin: a mint every 15 s, whatever the 10-minute refresh interval.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let minted = MINTED.load(Ordering::SeqCst);
    assert!((5..=6).contains(&minted), "{minted} tokens in 61 s");
    assert_eq!(credentials.generation(), Generation::FIRST);
    assert!(!credentials.current().is_token_due(Instant::now()));
}

#[tokio::test]
async fn a_token_that_lives_no_longer_than_the_margin_is_a_policy_error() {
    static MINTED: AtomicU32 = AtomicU32::new(0);
    static ACCEPTS: Mutex<String> = Mutex::new(String::new());
    let error = RotatingCredentials::builder(minter(Duration::from_secs(30), &MINTED, &ACCEPTS))
        .policy(
            Policy::builder()
                .expiry_margin(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(error.policy_error().is_some(), "{message}");
    assert!(
        message.contains("expiry_margin") && message.contains("mint"),
        "{message}"
    );
    assert!(!message.contains("token-1"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_known_pending_login_is_tried_at_once_not_after_a_slow_store() {
    static ACCEPTS: Mutex<&str> = Mutex::new("new");
    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    let (store, adapter) = setup(quick()).await;
    // Mid-rotation: the provider has read the store's pending password (a pending trial's
    // refresh), and the database has it already (after setSecret).
    store.set_pending(Some(Credential::new("app", "new")));
    adapter.credentials().refresh().await.unwrap();
    assert!(adapter.feedback().pending().is_some());
    // Then the store slows down (a fleet's refusals at once): each answer takes 10 s.
    store.set_delay(Duration::from_secs(10));
    let connector = Connector::new(adapter.clone(), Some(Duration::from_secs(5)));
    let fetches = store.fetch_count();
    let started = Instant::now();
    let connected = connector
        .connect(&server(&ACCEPTS, &ATTEMPTS))
        .await
        .expect("the pending login works");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "waited {:?} for the store before trying the pending login it had",
        started.elapsed()
    );
    assert!(connected.tag.generation() > Generation::FIRST);
    assert_eq!(
        adapter.credentials().generation(),
        connected.tag.generation()
    );
    assert_eq!(
        store.fetch_count(),
        fetches,
        "the pending login it holds needs no store call"
    );
}
