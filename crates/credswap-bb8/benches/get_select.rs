//! Checkout + `SELECT 1` + return through a rotating pool against plain `bb8-postgres`, both
//! against one embedded PostgreSQL, same pool size, same role, in one run.
//!
//! Both managers ping at checkout (`simple_query("")`), so each iteration is two round trips;
//! the rotating manager adds a generation check at checkout and return and a watch in each
//! connection's task. Criterion's two measurements run one after the other, so drift on a busy
//! machine lands on one of them: the `interleaved ratio` benchmark and the paired run after it
//! alternate the pools operation by operation, and their ratio (of the means: what throughput
//! sees) is the number to compare.
//!
//! Run: `cargo bench -p credswap-bb8 --bench get_select`

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::{Duration, Instant};

use bb8_postgres::PostgresConnectionManager;
use credswap_bb8::Builder;
use credswap_core::{Credential, MemorySource, RotatingCredentials};
use credswap_testkit::harness::manual_policy;
use credswap_testkit::{TestPostgres, random_password, unique_name};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const POOL_SIZE: u32 = 4;

struct Pools {
    plain: bb8::Pool<PostgresConnectionManager<NoTls>>,
    rotating: credswap_bb8::Pool<NoTls>,
    _pg: TestPostgres,
}

fn setup(rt: &Runtime) -> Pools {
    rt.block_on(async {
        let pg = TestPostgres::from_env()
            .await
            .expect("a PostgreSQL server (see credswap-testkit)");
        let role = unique_name("bench");
        let password = random_password();
        pg.create_login_role(&role, &password).await.expect("role");

        let plain = bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .build(PostgresConnectionManager::new(
                pg.config_for(&role, &password),
                NoTls,
            ))
            .await
            .expect("plain pool");

        let store = MemorySource::new(Credential::new(role, password));
        let credentials = RotatingCredentials::new(store, manual_policy())
            .await
            .expect("provider");
        let (rotating, _rotation) = Builder::new(pg.base_config(), NoTls, credentials)
            .max_size(POOL_SIZE)
            .build()
            .await
            .expect("rotating pool");

        // Open the connections before measuring.
        for _ in 0..2 {
            plain_once(&plain).await;
            rotating_once(&rotating).await;
        }
        Pools {
            plain,
            rotating,
            _pg: pg,
        }
    })
}

async fn plain_once(pool: &bb8::Pool<PostgresConnectionManager<NoTls>>) {
    let conn = pool.get().await.expect("checkout");
    black_box(conn.simple_query("SELECT 1").await.expect("query"));
}

async fn rotating_once(pool: &credswap_bb8::Pool<NoTls>) {
    let conn = pool.get().await.expect("checkout");
    black_box(conn.simple_query("SELECT 1").await.expect("query"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pools = setup(&rt);

    let mut group = c.benchmark_group("get + SELECT 1 + return");
    group.bench_function("bb8-postgres", |b| {
        b.to_async(&rt).iter(|| plain_once(&pools.plain))
    });
    group.bench_function("credswap-bb8", |b| {
        b.to_async(&rt).iter(|| rotating_once(&pools.rotating))
    });
    group.finish();

    // The machine is noisy (2 cores, other work), and a checkout's time is heavy-tailed (median
    // about half the mean here): the two functions above run one after the other, so drift
    // between them skews their ratio. This one interleaves the pools operation by operation and
    // reports the ratio of their total times as a time: 1.000 µs means credswap ÷ plain = 1.000.
    let mut group = c.benchmark_group("interleaved ratio");
    group.bench_function("credswap-bb8 / bb8-postgres (1 µs = 1.0)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pools = &pools;
            async move {
                let (mut plain, mut rotating) = (Duration::ZERO, Duration::ZERO);
                for i in 0..iters {
                    // Alternate which goes first, so neither always follows the other.
                    for first in [i % 2 == 0, i % 2 != 0] {
                        let started = Instant::now();
                        if first {
                            plain_once(&pools.plain).await;
                            plain += started.elapsed();
                        } else {
                            rotating_once(&pools.rotating).await;
                            rotating += started.elapsed();
                        }
                    }
                }
                let ratio = rotating.as_secs_f64() / plain.as_secs_f64().max(f64::MIN_POSITIVE);
                Duration::from_secs_f64(ratio * 1e-6 * iters as f64)
            }
        })
    });
    group.finish();

    // Paired, operation by operation (the earlier A/B timed batches of 1000 of one pool, then
    // of the other: with noise in bursts of a batch's length, the two medians of batch means
    // came from different moments and their ratio swung from 0.44 to 0.94 between runs).
    const ROUNDS: u32 = 20_000;
    let (mut plain, mut rotating) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..ROUNDS {
            for first in [i % 2 == 0, i % 2 != 0] {
                let started = Instant::now();
                if first {
                    plain_once(&pools.plain).await;
                    plain.push(started.elapsed());
                } else {
                    rotating_once(&pools.rotating).await;
                    rotating.push(started.elapsed());
                }
            }
        }
    });
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (plain_mean, rotating_mean) = (mean(&plain), mean(&rotating));
    let (plain, rotating) = (median(plain), median(rotating));
    println!(
        "paired ({ROUNDS} rounds, alternating per operation, pool size {POOL_SIZE}): mean \
         bb8-postgres {plain_mean:?}, credswap-bb8 {rotating_mean:?}, ratio {:.3}; median \
         bb8-postgres {plain:?}, credswap-bb8 {rotating:?}, ratio {:.3}",
        rotating_mean.as_secs_f64() / plain_mean.as_secs_f64(),
        rotating.as_secs_f64() / plain.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
