//! Checkout + `SELECT 1` + return through a rotating pool against plain `bb8-postgres`, both
//! against one embedded PostgreSQL, same pool size, same role, in one run.
//!
//! Both managers ping at checkout (`simple_query("")`), so each iteration is two round trips;
//! the rotating manager adds a generation check at checkout and return and a watch in each
//! connection's task. After criterion's two measurements, an interleaved A/B run (alternating
//! batches, so drift on a busy machine hits both alike) prints the ratio of the medians.
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

    // Interleaved A/B: 15 rounds of 1000 iterations each, alternating which goes first.
    const ROUNDS: usize = 15;
    const BATCH: u32 = 1000;
    let (mut plain, mut rotating) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for round in 0..ROUNDS {
            for which in [round % 2, 1 - round % 2] {
                let started = Instant::now();
                for _ in 0..BATCH {
                    if which == 0 {
                        plain_once(&pools.plain).await;
                    } else {
                        rotating_once(&pools.rotating).await;
                    }
                }
                let per_iteration = started.elapsed() / BATCH;
                if which == 0 {
                    plain.push(per_iteration)
                } else {
                    rotating.push(per_iteration)
                }
            }
        }
    });
    let (plain, rotating) = (median(plain), median(rotating));
    println!(
        "interleaved A/B ({ROUNDS} x {BATCH} iterations each, pool size {POOL_SIZE}): bb8-postgres {plain:?}, \
         credswap-bb8 {rotating:?}, ratio {:.3}",
        rotating.as_secs_f64() / plain.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
