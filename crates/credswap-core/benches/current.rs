//! `current()` against the obvious alternatives, on one thread and with a second thread
//! reading the same value at the same time (the pool's hot path under load).
//!
//! Run: `cargo bench -p credswap-core --bench current`

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use criterion::{Criterion, criterion_group, criterion_main};

struct Value {
    _credential: Credential,
    _generation: u64,
}

fn value() -> Arc<Value> {
    Arc::new(Value {
        _credential: Credential::new("app", "password"),
        _generation: 1,
    })
}

/// Runs `read` on a second thread until the guard drops.
struct Contender {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Contender {
    fn start(read: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                read();
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn provider() -> (tokio::runtime::Runtime, RotatingCredentials) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let creds = rt.block_on(async {
        RotatingCredentials::builder(MemorySource::new(Credential::new("app", "password")))
            .policy(Policy::default())
            .background_refresh(false)
            .build()
            .await
            .expect("provider")
    });
    (rt, creds)
}

fn bench(c: &mut Criterion) {
    let (_rt, creds) = provider();
    let arc = value();
    let rwlock = Arc::new(RwLock::new(value()));
    let mutex = Arc::new(Mutex::new(value()));

    for contended in [false, true] {
        let mut group = c.benchmark_group(if contended {
            "read/2-threads"
        } else {
            "read/1-thread"
        });

        let _c = contended.then(|| {
            let creds = creds.clone();
            Contender::start(move || drop(black_box(creds.current())))
        });
        group.bench_function("credswap current()", |b| {
            b.iter(|| black_box(creds.current()))
        });
        drop(_c);

        let _c = contended.then(|| {
            let creds = creds.clone();
            Contender::start(move || drop(black_box(creds.load())))
        });
        group.bench_function("credswap load()", |b| b.iter(|| black_box(creds.load())));
        drop(_c);

        let _c = contended.then(|| {
            let creds = creds.clone();
            Contender::start(move || {
                black_box(creds.generation());
            })
        });
        group.bench_function("credswap generation()", |b| {
            b.iter(|| black_box(creds.generation()))
        });
        drop(_c);

        let _c = contended.then(|| {
            let arc = Arc::clone(&arc);
            Contender::start(move || drop(black_box(Arc::clone(&arc))))
        });
        group.bench_function("Arc::clone", |b| b.iter(|| black_box(Arc::clone(&arc))));
        drop(_c);

        let _c = contended.then(|| {
            let lock = Arc::clone(&rwlock);
            Contender::start(move || drop(black_box(Arc::clone(&lock.read().unwrap()))))
        });
        group.bench_function("RwLock<Arc<_>> read + clone", |b| {
            b.iter(|| black_box(Arc::clone(&rwlock.read().unwrap())))
        });
        drop(_c);

        let _c = contended.then(|| {
            let lock = Arc::clone(&mutex);
            Contender::start(move || drop(black_box(Arc::clone(&lock.lock().unwrap()))))
        });
        group.bench_function("Mutex<Arc<_>> lock + clone", |b| {
            b.iter(|| black_box(Arc::clone(&mutex.lock().unwrap())))
        });
        drop(_c);

        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
