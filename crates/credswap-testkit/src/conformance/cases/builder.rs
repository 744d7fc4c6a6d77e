//! Building: outside a Tokio runtime the builder says so (no panic), and what the application
//! holds prints no secret. Neither needs a server.

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};

use super::super::Adapter;
use super::helpers::assert_no_secret;
use crate::harness::error_chain;

/// A provider over a fixed login with `password`; it connects nowhere.
async fn fixed_provider(password: &str) -> RotatingCredentials {
    RotatingCredentials::new(
        MemorySource::new(Credential::new("app", password)),
        Policy::default(),
    )
    .await
    .expect("provider")
}

/// Built on a thread where no Tokio runtime runs, the pool is an error that says it must be
/// built inside one, not a panic.
pub async fn building_outside_a_runtime_is_a_clear_error<A: Adapter>() {
    let credentials = fixed_provider("pw").await;
    let built = std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        A::build_outside_runtime(credentials).map_err(|e| error_chain(&*e))
    })
    .join();
    let Ok(built) = built else {
        panic!("{}: building outside a runtime panicked", A::NAME);
    };
    let Err(text) = built else {
        panic!("{}: a pool was built outside a runtime", A::NAME);
    };
    assert!(
        text.contains("inside a Tokio runtime"),
        "{}: {text}",
        A::NAME
    );
}

/// The builder, the pool and the handle print no password: neither the credential's nor one
/// in the adapter's own config.
pub async fn the_builder_and_the_pool_print_no_secret<A: Adapter>() {
    let secret = "Pa55-in-debug-would-be-a-bug";
    let credentials = fixed_provider(secret).await;
    let printed = match A::printed(credentials.clone(), secret).await {
        Ok(printed) => printed,
        Err(e) => panic!(
            "{}: building the pool failed: {}",
            A::NAME,
            error_chain(&*e)
        ),
    };
    assert!(!printed.is_empty(), "{}: nothing printed", A::NAME);
    let mut texts: Vec<(&str, String)> = printed;
    texts.push(("the provider", format!("{credentials:?}")));
    assert_no_secret(&[secret], &texts);
}
