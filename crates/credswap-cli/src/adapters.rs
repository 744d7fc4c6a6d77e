//! The pools the drill measures: credswap's adapters and the hand-written peers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use credswap_core::contract::AdapterStats;
use credswap_core::{BoxError, Credential, CredentialSource, Policy, RotatingCredentials, Stats};
use credswap_testkit::TestPostgres;
use credswap_testkit::scenario::Workload;
use deadpool_postgres::{Manager, Pool, PoolConfig, Runtime, Timeouts};
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::cli::AdapterName;

/// How long a request may wait for a connection before it counts as failed.
const WAIT: Duration = Duration::from_secs(5);

/// The request every worker sends: `SELECT current_user`, optionally spending `--query-ms` on
/// the server first.
#[derive(Debug, Clone)]
pub struct Query {
    sql: Arc<str>,
}

impl Query {
    pub fn new(query_ms: u32) -> Self {
        let sql = if query_ms == 0 {
            "SELECT current_user".to_owned()
        } else {
            format!(
                "SELECT current_user FROM pg_sleep({}.{:03})",
                query_ms / 1000,
                query_ms % 1000
            )
        };
        Self { sql: sql.into() }
    }
}

/// Where the application reads its credential (the drill's in-memory store, or Secrets
/// Manager), and the credential the store held when the run began (for the peers that never
/// read it again).
pub struct App {
    pub source: Arc<dyn CredentialSource>,
    pub initial: Credential,
}

/// A pool under drill, ready for the scenario engine.
pub struct PoolUnderTest {
    pub workload: Arc<dyn Workload>,
    /// The generation the pool is on, for progress display.
    pub generation: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The adapter's counters; `None` for the peers, which have none.
    pub stats: Option<Arc<dyn Fn() -> AdapterStats + Send + Sync>>,
    /// Calls the pool made to the store so far: the provider's `Stats::store_calls` (current
    /// and pending fetches) for credswap's adapters; 1 for the static and bare peers (a plain pool reads
    /// AWSCURRENT once, at start-up); the initial read and every poll for naive-rebuild.
    pub store_calls: Arc<dyn Fn() -> Option<u64> + Send + Sync>,
    /// The provider's counters (credswap's adapters); `None` for the peers, which have none.
    pub provider_stats: Option<Arc<dyn Fn() -> Stats + Send + Sync>>,
    /// The newest generation the database accepted (`Snapshot::proven_generation`: a pool's
    /// connection or a probe logged in with it); `None` for the peers.
    pub proven: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Closes the pool (its sessions end), so the next run starts clean.
    pub close: Box<dyn FnOnce() + Send>,
}

/// [`PoolUnderTest::proven`] for a provider.
pub fn proven_generation(credentials: &RotatingCredentials) -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let credentials = credentials.clone();
    Arc::new(move || credentials.current().proven_generation().get())
}

pub async fn build(
    adapter: AdapterName,
    pg: &TestPostgres,
    app: &App,
    policy: Policy,
    pool_size: usize,
    query: Query,
) -> Result<PoolUnderTest, BoxError> {
    match adapter {
        AdapterName::Deadpool => {
            let credentials = RotatingCredentials::new(Arc::clone(&app.source), policy).await?;
            let mut pool_config = PoolConfig::new(pool_size);
            pool_config.timeouts = timeouts();
            let (pool, rotation) = credswap_deadpool::create_pool_from_pg_config(
                pg.base_config(),
                pool_config,
                NoTls,
                credentials,
            )?;
            let close_pool = pool.clone();
            let stats_rotation = rotation.clone();
            let calls_rotation = rotation.clone();
            let provider_rotation = rotation.clone();
            let proven = proven_generation(rotation.credentials());
            Ok(PoolUnderTest {
                workload: Arc::new(DeadpoolSelect(pool, query)),
                generation: Arc::new(move || rotation.credentials().generation().get()),
                stats: Some(Arc::new(move || stats_rotation.stats())),
                store_calls: Arc::new(move || {
                    Some(calls_rotation.credentials().stats().store_calls)
                }),
                provider_stats: Some(Arc::new(move || provider_rotation.credentials().stats())),
                proven: Some(proven),
                close: Box::new(move || close_pool.close()),
            })
        }
        AdapterName::Bb8 => {
            let credentials = RotatingCredentials::new(Arc::clone(&app.source), policy).await?;
            let manager =
                credswap_bb8::RotatingConnectionManager::new(pg.base_config(), NoTls, credentials);
            let rotation = manager.rotation();
            let pool = bb8::Pool::builder()
                .max_size(u32::try_from(pool_size)?)
                .connection_timeout(WAIT)
                .build(manager)
                .await?;
            let stats_rotation = rotation.clone();
            let calls_rotation = rotation.clone();
            let provider_rotation = rotation.clone();
            let proven = proven_generation(rotation.credentials());
            Ok(PoolUnderTest {
                workload: Arc::new(Bb8Select(pool, query)),
                generation: Arc::new(move || rotation.credentials().generation().get()),
                stats: Some(Arc::new(move || stats_rotation.stats())),
                store_calls: Arc::new(move || {
                    Some(calls_rotation.credentials().stats().store_calls)
                }),
                provider_stats: Some(Arc::new(move || provider_rotation.credentials().stats())),
                proven: Some(proven),
                // bb8 has no close: its connections end when the last pool handle drops.
                close: Box::new(|| {}),
            })
        }
        AdapterName::Sqlx => {
            let credentials = RotatingCredentials::new(Arc::clone(&app.source), policy).await?;
            let options = sqlx::postgres::PgConnectOptions::new()
                .host(pg.host())
                .port(pg.port())
                .database(pg.database());
            let pool_options = sqlx::postgres::PgPoolOptions::new()
                .max_connections(u32::try_from(pool_size)?)
                .acquire_timeout(WAIT);
            let (pool, rotation) =
                credswap_sqlx::connect_with(pool_options, options, credentials).await?;
            let close_pool = pool.clone();
            let stats_rotation = rotation.clone();
            let calls_rotation = rotation.clone();
            let provider_rotation = rotation.clone();
            let proven = proven_generation(rotation.credentials());
            Ok(PoolUnderTest {
                workload: Arc::new(SqlxSelect(pool, rotation.clone(), query)),
                generation: Arc::new(move || rotation.credentials().generation().get()),
                stats: Some(Arc::new(move || stats_rotation.stats())),
                store_calls: Arc::new(move || {
                    Some(calls_rotation.credentials().stats().store_calls)
                }),
                provider_stats: Some(Arc::new(move || provider_rotation.credentials().stats())),
                proven: Some(proven),
                close: Box::new(move || {
                    tokio::spawn(async move { close_pool.close().await });
                }),
            })
        }
        AdapterName::Static => {
            let pool = plain_pool(pg, &app.initial, pool_size)?;
            let close_pool = pool.clone();
            Ok(PoolUnderTest {
                workload: Arc::new(DeadpoolSelect(pool, query)),
                generation: Arc::new(|| 1),
                stats: None,
                store_calls: Arc::new(|| Some(1)),
                provider_stats: None,
                proven: None,
                close: Box::new(move || close_pool.close()),
            })
        }
        AdapterName::NaiveRebuild => naive_rebuild(pg, app, policy, pool_size, query).await,
        AdapterName::BareDeadpool | AdapterName::BareBb8 | AdapterName::BareSqlx => {
            bare(adapter, pg, &app.initial, pool_size, query).await
        }
    }
}

/// The `bare-*` peers: the plain pool of each adapter's kind, with the adapter's size, timeouts
/// and request, logged in with the credential the store held at the start and never told of
/// another. With `--rotate-every off` (the only way they run) they are the adapters' exact
/// baselines: what is left between an adapter and its bare peer is credswap's own cost.
async fn bare(
    adapter: AdapterName,
    pg: &TestPostgres,
    initial: &Credential,
    pool_size: usize,
    query: Query,
) -> Result<PoolUnderTest, BoxError> {
    type Close = Box<dyn FnOnce() + Send>;
    let (workload, close): (Arc<dyn Workload>, Close) = match adapter {
        // The static peer's pool: deadpool-postgres with the default (fast) recycling, as the
        // deadpool adapter's.
        AdapterName::BareDeadpool => {
            let pool = plain_pool(pg, initial, pool_size)?;
            let close_pool = pool.clone();
            (
                Arc::new(DeadpoolSelect(pool, query)) as Arc<dyn Workload>,
                Box::new(move || close_pool.close()) as Close,
            )
        }
        AdapterName::BareBb8 => {
            let config = pg.config_for(initial.username(), initial.password().expose_secret());
            let pool = bb8::Pool::builder()
                .max_size(u32::try_from(pool_size)?)
                .connection_timeout(WAIT)
                .build(bb8_postgres::PostgresConnectionManager::new(config, NoTls))
                .await?;
            // bb8 has no close: its connections end when the last pool handle drops.
            (
                Arc::new(BareBb8Select(pool, query)) as Arc<dyn Workload>,
                Box::new(|| {}) as Close,
            )
        }
        AdapterName::BareSqlx => {
            let options = sqlx::postgres::PgConnectOptions::new()
                .host(pg.host())
                .port(pg.port())
                .database(pg.database())
                .username(initial.username())
                .password(initial.password().expose_secret());
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(u32::try_from(pool_size)?)
                .acquire_timeout(WAIT)
                .connect_with(options)
                .await?;
            let close_pool = pool.clone();
            (
                Arc::new(BareSqlxSelect(pool, query)) as Arc<dyn Workload>,
                Box::new(move || {
                    tokio::spawn(async move { close_pool.close().await });
                }) as Close,
            )
        }
        other => return Err(format!("{} is not a bare peer", other.as_str()).into()),
    };
    Ok(PoolUnderTest {
        workload,
        generation: Arc::new(|| 1),
        stats: None,
        // A plain pool reads its login once, at start-up.
        store_calls: Arc::new(|| Some(1)),
        provider_stats: None,
        proven: None,
        close,
    })
}

fn timeouts() -> Timeouts {
    Timeouts {
        wait: Some(WAIT),
        create: Some(WAIT),
        recycle: Some(WAIT),
    }
}

/// A plain deadpool-postgres pool with a fixed login.
fn plain_pool(
    pg: &TestPostgres,
    credential: &Credential,
    pool_size: usize,
) -> Result<Pool, BoxError> {
    let config = pg.config_for(credential.username(), credential.password().expose_secret());
    Ok(Pool::builder(Manager::new(config, NoTls))
        .max_size(pool_size)
        .timeouts(timeouts())
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// The common hand-written approach: poll the store on the same schedule as credswap's
/// provider; on a change build a fresh plain pool with the new password and swap it in through
/// `ArcSwap`. The old pool is dropped when its last connection returns.
async fn naive_rebuild(
    pg: &TestPostgres,
    app: &App,
    policy: Policy,
    pool_size: usize,
    query: Query,
) -> Result<PoolUnderTest, BoxError> {
    let first = app.initial.clone();
    let current = Arc::new(ArcSwap::from_pointee(plain_pool(pg, &first, pool_size)?));
    let generation = Arc::new(AtomicU64::new(1));
    // The initial read, then one per poll.
    let calls = Arc::new(AtomicU64::new(1));
    let store = Arc::clone(&app.source);
    let poller = {
        let (current, generation, calls, pg_config) = (
            Arc::clone(&current),
            Arc::clone(&generation),
            Arc::clone(&calls),
            pg.base_config(),
        );
        let interval = policy.refresh_interval();
        tokio::spawn(async move {
            let mut known = first;
            loop {
                tokio::time::sleep(interval).await;
                calls.fetch_add(1, Ordering::Relaxed);
                let Ok(fetched) = store.fetch().await else {
                    continue;
                };
                if fetched.is_same_login(&known) {
                    continue;
                }
                let mut config = pg_config.clone();
                config
                    .user(fetched.username())
                    .password(fetched.password().expose_secret());
                let Ok(pool) = Pool::builder(Manager::new(config, NoTls))
                    .max_size(pool_size)
                    .timeouts(timeouts())
                    .runtime(Runtime::Tokio1)
                    .build()
                else {
                    continue;
                };
                current.store(Arc::new(pool));
                generation.fetch_add(1, Ordering::Relaxed);
                known = fetched;
            }
        })
    };
    let close_current = Arc::clone(&current);
    Ok(PoolUnderTest {
        workload: Arc::new(NaiveSelect(current, query)),
        generation: Arc::new(move || generation.load(Ordering::Relaxed)),
        stats: None,
        store_calls: Arc::new(move || Some(calls.load(Ordering::Relaxed))),
        provider_stats: None,
        proven: None,
        close: Box::new(move || {
            poller.abort();
            close_current.load().close();
        }),
    })
}

/// `SELECT current_user` through a deadpool pool.
struct DeadpoolSelect(Pool, Query);

#[async_trait::async_trait]
impl Workload for DeadpoolSelect {
    async fn request(&self) -> Result<(), BoxError> {
        select(&self.0, &self.1).await
    }
}

/// `SELECT current_user` through a bb8 pool (tokio-postgres has no statement cache: one simple
/// query, one round trip).
struct Bb8Select(credswap_bb8::Pool<NoTls>, Query);

#[async_trait::async_trait]
impl Workload for Bb8Select {
    async fn request(&self) -> Result<(), BoxError> {
        let conn = self.0.get().await?;
        conn.simple_query(&self.1.sql).await?;
        Ok(())
    }
}

/// The bb8 adapter's request through a plain bb8-postgres pool.
struct BareBb8Select(
    bb8::Pool<bb8_postgres::PostgresConnectionManager<NoTls>>,
    Query,
);

#[async_trait::async_trait]
impl Workload for BareBb8Select {
    async fn request(&self) -> Result<(), BoxError> {
        let conn = self.0.get().await?;
        conn.simple_query(&self.1.sql).await?;
        Ok(())
    }
}

/// The sqlx adapter's request through a plain `PgPool`, checked out with `PgPool::acquire`.
struct BareSqlxSelect(sqlx::PgPool, Query);

#[async_trait::async_trait]
impl Workload for BareSqlxSelect {
    async fn request(&self) -> Result<(), BoxError> {
        let mut conn = self.0.acquire().await?;
        let _user: String = sqlx::query_scalar(&self.1.sql)
            .fetch_one(&mut *conn)
            .await?;
        Ok(())
    }
}

/// `SELECT current_user` through sqlx's checkout that follows refused logins,
/// `acquire_following` (sqlx has no per-connect hook).
struct SqlxSelect(sqlx::PgPool, credswap_sqlx::Rotation, Query);

#[async_trait::async_trait]
impl Workload for SqlxSelect {
    async fn request(&self) -> Result<(), BoxError> {
        use credswap_sqlx::PoolExt;
        let mut conn = self.0.acquire_following(&self.1).await?;
        let _user: String = sqlx::query_scalar(&self.2.sql)
            .fetch_one(&mut *conn)
            .await?;
        Ok(())
    }
}

struct NaiveSelect(Arc<ArcSwap<Pool>>, Query);

#[async_trait::async_trait]
impl Workload for NaiveSelect {
    async fn request(&self) -> Result<(), BoxError> {
        let pool = self.0.load_full();
        select(&pool, &self.1).await
    }
}

async fn select(pool: &Pool, query: &Query) -> Result<(), BoxError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(&query.sql).await?;
    let row = client.query_one(&statement, &[]).await?;
    let _user: String = row.get(0);
    Ok(())
}
