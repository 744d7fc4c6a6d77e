//! `pool.get()` + `SELECT 1` + return: credswap's pool against a plain deadpool-postgres pool,
//! same server, same role, same pool size, measured in one run.
//!
//! Run: `cargo bench -p credswap-deadpool --bench get_select`

#![allow(missing_docs)] // criterion_group! defines an undocumented function

use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use criterion::{Criterion, criterion_group, criterion_main};
use deadpool_postgres::{Manager, Pool, PoolConfig, Runtime};
use tokio_postgres::NoTls;

async fn get_select(pool: &Pool) {
    let client = pool.get().await.expect("get");
    client.simple_query("SELECT 1").await.expect("select");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (pg, plain, rotating) = rt.block_on(async {
        let pg = TestPostgres::from_env()
            .await
            .expect("PostgreSQL for the benchmark");
        let role = unique_name("bench");
        let password = random_password();
        pg.create_login_role(&role, &password).await.expect("role");

        let plain = Pool::builder(Manager::new(pg.config_for(&role, &password), NoTls))
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .build()
            .expect("plain pool");
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new(role, password)),
            Policy::default(),
        )
        .await
        .expect("provider");
        let (rotating, _) = credswap_deadpool::create_pool_from_pg_config(
            pg.base_config(),
            PoolConfig::new(4),
            NoTls,
            credentials,
        )
        .expect("rotating pool");
        // Warm both pools.
        for _ in 0..4 {
            get_select(&plain).await;
            get_select(&rotating).await;
        }
        (pg, plain, rotating)
    });

    let mut group = c.benchmark_group("get + SELECT 1 + return");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("deadpool-postgres (plain)", |b| {
        b.to_async(&rt).iter(|| get_select(&plain))
    });
    group.bench_function("credswap-deadpool", |b| {
        b.to_async(&rt).iter(|| get_select(&rotating))
    });
    group.finish();

    // The machine is noisy (2 cores, other work): the two functions above run one after the
    // other, so drift between them skews their ratio. This one interleaves them operation by
    // operation and reports the ratio itself as a time: 1.000 µs means credswap ÷ plain = 1.000.
    let mut group = c.benchmark_group("interleaved ratio");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("credswap-deadpool / deadpool-postgres (1 µs = 1.0)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (plain, rotating) = (plain.clone(), rotating.clone());
            async move {
                let (mut plain_total, mut rotating_total) = (Duration::ZERO, Duration::ZERO);
                for i in 0..iters {
                    // Alternate which goes first, so neither always follows the other.
                    for first in [i % 2 == 0, i % 2 != 0] {
                        let started = std::time::Instant::now();
                        get_select(if first { &plain } else { &rotating }).await;
                        let took = started.elapsed();
                        if first {
                            plain_total += took;
                        } else {
                            rotating_total += took;
                        }
                    }
                }
                let ratio =
                    rotating_total.as_secs_f64() / plain_total.as_secs_f64().max(f64::MIN_POSITIVE);
                Duration::from_secs_f64(ratio * 1e-6 * iters as f64)
            }
        })
    });
    group.finish();
    drop((plain, rotating));
    drop(pg);
}

criterion_group!(benches, bench);
criterion_main!(benches);
