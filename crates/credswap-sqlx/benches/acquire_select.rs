//! acquire + `SELECT 1` + release: a plain `PgPool` against the rotating one, in one run,
//! against one embedded PostgreSQL (or `CREDSWAP_TEST_ADMIN_URL`).
//!
//! ```text
//! cargo bench -p credswap-sqlx --bench acquire_select
//! ```
//!
//! Both pools have the same options (sqlx's defaults: `test_before_acquire` pings on every
//! checkout, and every release pings) and the same login; only the adapter's hooks differ.
//!
//! Criterion measures the two one after the other, so load that changes over the run (other
//! processes on the machine) lands on one of them only: on a shared 2-core machine, whichever
//! runs second was measured 30-50 % slower, either way round. So the bench also prints a paired
//! measurement: cycles alternate between the two pools (which goes first alternates too), and
//! the ratio of the medians is the number to compare with the 1.03 target.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::time::Duration;

use credswap_core::{Credential, MemorySource, Policy, RotatingCredentials};
use credswap_testkit::{TestPostgres, random_password, unique_name};
use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const POOL_SIZE: u32 = 4;

async fn cycle(pool: &PgPool) {
    let mut conn = pool.acquire().await.expect("acquire");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .expect("SELECT 1");
    black_box(one);
    drop(conn);
}

fn acquire_select(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (pg, plain, rotating, rotation) = rt.block_on(async {
        let pg = TestPostgres::from_env().await.expect("PostgreSQL");
        let role = unique_name("bench");
        let password = random_password();
        pg.create_login_role(&role, &password).await.expect("role");
        let base = PgConnectOptions::new_without_pgpass()
            .host(pg.host())
            .port(pg.port())
            .database(pg.database());
        let plain = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(base.clone().username(&role).password(&password))
            .await
            .expect("plain pool");
        let credentials = RotatingCredentials::new(
            MemorySource::new(Credential::new(role, password)),
            Policy::builder()
                .refresh_interval(Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        .await
        .expect("provider");
        let (rotating, rotation) = credswap_sqlx::connect_with(
            PgPoolOptions::new().max_connections(POOL_SIZE),
            base,
            credentials,
        )
        .await
        .expect("rotating pool");
        (pg, plain, rotating, rotation)
    });

    let mut group = c.benchmark_group("acquire_select");
    group.bench_function("plain_pg_pool", |b| b.to_async(&rt).iter(|| cycle(&plain)));
    group.bench_function("credswap_pg_pool", |b| {
        b.to_async(&rt).iter(|| cycle(&rotating))
    });
    group.finish();

    paired(&rt, &plain, &rotating);
    eprintln!("rotating pool: {:?}", rotation.stats());
    rt.block_on(async {
        plain.close().await;
        rotating.close().await;
    });
    drop(pg);
    print_ratio();
}

/// Alternates single cycles between the pools and prints medians, means and their ratios.
fn paired(rt: &tokio::runtime::Runtime, plain: &PgPool, rotating: &PgPool) {
    const ROUNDS: usize = 20_000;
    let (mut p, mut r) = rt.block_on(async {
        for _ in 0..1000 {
            cycle(plain).await;
            cycle(rotating).await;
        }
        let (mut p, mut r) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for is_rotating in order {
                let pool = if is_rotating { rotating } else { plain };
                let start = std::time::Instant::now();
                cycle(pool).await;
                let took = start.elapsed().as_secs_f64() * 1e6;
                if is_rotating {
                    r.push(took)
                } else {
                    p.push(took)
                }
            }
        }
        (p, r)
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (mp, mr) = (mean(&p), mean(&r));
    let (dp, dr) = (median(&mut p), median(&mut r));
    eprintln!(
        "paired ({ROUNDS} rounds): median plain {dp:.1} µs, credswap {dr:.1} µs, ratio {:.3}; \
         mean plain {mp:.1} µs, credswap {mr:.1} µs, ratio {:.3}",
        dr / dp,
        mr / mp
    );
}

/// Reads criterion's estimates back and prints credswap / plain.
fn print_ratio() {
    let mean = |name: &str| -> Option<f64> {
        let path = format!(
            "{}/criterion/acquire_select/{name}/new/estimates.json",
            target_dir()
        );
        let text = std::fs::read_to_string(path).ok()?;
        let at = text.find("\"mean\"")?;
        let rest = &text[at..];
        let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        let rest = &rest[at..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse().ok()
    };
    if let (Some(plain), Some(rotating)) = (mean("plain_pg_pool"), mean("credswap_pg_pool")) {
        eprintln!(
            "criterion (sequential): plain {:.1} µs, credswap {:.1} µs, ratio {:.3}",
            plain / 1000.0,
            rotating / 1000.0,
            rotating / plain
        );
    }
}

fn target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned())
}

criterion_group!(benches, acquire_select);
criterion_main!(benches);
