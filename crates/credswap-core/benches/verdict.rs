//! The drain's verdict at every checkout and return (`Adapter::should_close`): a current
//! connection with no rotation under way (the steady state), and the same while the store is
//! rotating (a pending credential the canaries try now and then). Both side by side with
//! `current()` alone, the floor.
//!
//! Run: `cargo bench -p credswap-core --bench verdict`

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::hint::black_box;

use credswap_core::contract::{Adapter, ConnectionTag, Feedback};
use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let store = MemorySource::new(Credential::new("app", "password"));
    let creds = rt.block_on(async {
        RotatingCredentials::builder(store.clone())
            .policy(Policy::default())
            .background_refresh(false)
            .build()
            .await
            .expect("provider")
    });
    let rotation = Adapter::new(creds.clone());
    let tag = ConnectionTag::new(&creds.current());
    Feedback::new(&creds).report_accepted(creds.generation());

    let mut group = c.benchmark_group("verdict");
    group.bench_function("current() alone", |b| b.iter(|| black_box(creds.current())));
    group.bench_function("should_close, steady", |b| {
        b.iter(|| black_box(rotation.should_close(&tag, &creds.load(), false)))
    });
    // A rotation under way: the pending credential exists; almost every verdict finds no trial
    // due (the schedule's clock is checked), one in a while takes one.
    store.set_pending(Some(Credential::new("app", "next")));
    rt.block_on(creds.refresh()).expect("refresh");
    assert!(Feedback::new(&creds).pending().is_some());
    let _ = rotation.should_close(&tag, &creds.load(), false);
    group.bench_function("should_close, store rotating", |b| {
        b.iter(|| black_box(rotation.should_close(&tag, &creds.load(), false)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
