//! [`Cluster`]: a query engine's view of the rest of the cluster.
//!
//! It holds the gRPC clients to meta and to every data engine, a cache of
//! the catalog (refreshed whenever a timestamp reply shows a newer catalog
//! version — every statement asks for a timestamp, so DDL done through any
//! query engine is seen by the next statement on every other), and a block of
//! row ids for tables without a primary key, and the planner's estimates
//! of tables' sizes ([`Cluster::table_rows`]: asked of the data engines
//! holding them, kept for [`SIZE_TTL`], forgotten by `ANALYZE`).
//!
//! Timestamps are batched: while one request to meta is in flight, the
//! statements that start wait, and the next request reserves one timestamp
//! for each of them (TiDB's TSO does the same). A statement is only ever
//! served by a request sent after it started, so it still sees everything
//! committed before it began.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use eon_common::node::Channel;
use eon_common::stats::Recorder;
use eon_common::{Error, Result, TableDef, node};
use eon_proto::v1 as pb;
use eon_proto::v1::data_engine_client::DataEngineClient;
use eon_proto::v1::meta_client::MetaClient;

/// How long a table's size estimate is used before the data engines are
/// asked again: a table loaded a moment ago is planned for its new size
/// almost at once, and a busy query engine asks each engine about a table
/// at most this often.
pub const SIZE_TTL: Duration = Duration::from_secs(2);

/// How long planning waits for the data engines' size estimates before
/// going on without them.
const SIZE_WAIT: Duration = Duration::from_millis(300);

/// Largest gRPC message a query engine accepts (scan batches of wide rows).
pub const MAX_MESSAGE: usize = 256 << 20;

#[derive(Default)]
struct CatalogCache {
    version: u64,
    /// Meta's leaders_version when fetched: tables' placements name their
    /// shards' leaders as of then.
    leaders_version: u64,
    by_name: HashMap<(String, String), Arc<TableDef>>,
    sequences: Vec<pb::Sequence>,
    roles: Vec<pb::Role>,
    views: Vec<pb::View>,
    schemas: Vec<pb::Schema>,
    types: Vec<pb::EnumType>,
}

type TsReply = tokio::sync::oneshot::Sender<Result<(u64, (u64, u64))>>;

/// Statements waiting for a timestamp, and whether a request is in flight.
#[derive(Default)]
struct TsQueue {
    waiting: Vec<TsReply>,
    in_flight: bool,
}

pub struct Cluster {
    meta: MetaClient<Channel>,
    ts_queue: Mutex<TsQueue>,
    catalog: RwLock<CatalogCache>,
    engines: RwLock<HashMap<u64, (String, DataEngineClient<Channel>)>>,
    rowids: Mutex<(u64, u64)>,
    /// Size estimates by table id: when asked, and the rows.
    sizes: Mutex<HashMap<u64, (Instant, Option<u64>)>>,
    pub stats: Arc<Recorder>,
    /// Default shard count of new tables.
    pub default_shards: u32,
}

impl Cluster {
    pub fn new(meta_addr: &str, stats: Arc<Recorder>, default_shards: u32) -> Result<Arc<Cluster>> {
        Ok(Arc::new(Cluster {
            meta: node::meta_client(meta_addr)?,
            ts_queue: Mutex::new(TsQueue::default()),
            catalog: RwLock::new(CatalogCache::default()),
            engines: RwLock::new(HashMap::new()),
            rowids: Mutex::new((0, 0)),
            sizes: Mutex::default(),
            stats,
            default_shards,
        }))
    }

    pub fn meta(&self) -> MetaClient<Channel> {
        self.meta.clone()
    }

    /// A fresh timestamp from meta; refreshes the catalog if it changed.
    pub async fn timestamp(self: &Arc<Self>) -> Result<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = self.ts_queue.lock().unwrap();
            q.waiting.push(tx);
            !std::mem::replace(&mut q.in_flight, true)
        };
        if lead {
            // A task of its own: if this statement is cancelled, the others
            // still get their timestamps.
            let cluster = self.clone();
            tokio::spawn(async move { cluster.fetch_timestamps().await });
        }
        let (ts, version) = rx
            .await
            .map_err(|_| Error::internal("timestamp request dropped"))??;
        let stale = {
            let cache = self.catalog.read().unwrap();
            version != (cache.version, cache.leaders_version)
        };
        if stale {
            self.refresh_catalog().await?;
        }
        Ok(ts)
    }

    /// Serve waiting statements until none are left, one meta request per
    /// round.
    async fn fetch_timestamps(&self) {
        loop {
            let batch = {
                let mut q = self.ts_queue.lock().unwrap();
                if q.waiting.is_empty() {
                    q.in_flight = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            let count = batch.len() as u32;
            let r = self
                .meta()
                .get_timestamp(pb::GetTimestampRequest { count })
                .await
                .map_err(meta_err);
            for (i, tx) in batch.into_iter().enumerate() {
                let _ = tx.send(match &r {
                    Ok(resp) => Ok((
                        resp.get_ref().ts + i as u64,
                        (
                            resp.get_ref().catalog_version,
                            resp.get_ref().leaders_version,
                        ),
                    )),
                    Err(e) => Err(e.clone()),
                });
            }
        }
    }

    pub async fn refresh_catalog(&self) -> Result<()> {
        let r = self
            .meta()
            .get_catalog(pb::GetCatalogRequest {})
            .await
            .map_err(meta_err)?
            .into_inner();
        let mut by_name = HashMap::new();
        for t in r.tables {
            let def = TableDef::from_proto(t)?;
            by_name.insert((def.schema.clone(), def.name.clone()), Arc::new(def));
        }
        let mut cache = self.catalog.write().unwrap();
        if r.version >= cache.version {
            *cache = CatalogCache {
                version: r.version,
                leaders_version: r.leaders_version,
                by_name,
                sequences: r.sequences,
                roles: r.roles,
                views: r.views,
                schemas: r.schemas,
                types: r.types,
            };
        }
        Ok(())
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<Arc<TableDef>> {
        self.catalog
            .read()
            .unwrap()
            .by_name
            .get(&(schema.to_string(), name.to_string()))
            .cloned()
    }

    /// View `name` of `schema`, if there is one.
    pub fn view(&self, schema: &str, name: &str) -> Option<pb::View> {
        self.catalog
            .read()
            .unwrap()
            .views
            .iter()
            .find(|v| v.schema == schema && v.name == name)
            .cloned()
    }

    /// Every view.
    pub fn views(&self) -> Vec<pb::View> {
        self.catalog.read().unwrap().views.clone()
    }

    /// Every sequence (as of the cached catalog: its `last_value` is only
    /// what meta had persisted).
    pub fn sequences(&self) -> Vec<pb::Sequence> {
        self.catalog.read().unwrap().sequences.clone()
    }

    /// The first sequence that `matches`.
    pub fn find_sequence(&self, matches: impl Fn(&pb::Sequence) -> bool) -> Option<pb::Sequence> {
        self.catalog
            .read()
            .unwrap()
            .sequences
            .iter()
            .find(|q| matches(q))
            .cloned()
    }

    /// The role called `name` (as of the cached catalog).
    pub fn role(&self, name: &str) -> Option<pb::Role> {
        let cache = self.catalog.read().unwrap();
        cache.roles.iter().find(|r| r.name == name).cloned()
    }

    /// Every role, by id.
    pub fn roles(&self) -> Vec<pb::Role> {
        let mut roles = self.catalog.read().unwrap().roles.clone();
        roles.sort_by_key(|r| r.id);
        roles
    }

    /// The schemas CREATE SCHEMA made and those that hold tables (sessions'
    /// temporary ones), in order.
    pub fn schema_names(&self) -> Vec<String> {
        let cache = self.catalog.read().unwrap();
        let names: std::collections::BTreeSet<&String> = cache
            .by_name
            .keys()
            .map(|(s, _)| s)
            .chain(cache.schemas.iter().map(|s| &s.name))
            .collect();
        names.into_iter().cloned().collect()
    }

    /// The schema CREATE SCHEMA made called `name`.
    pub fn schema(&self, name: &str) -> Option<pb::Schema> {
        let cache = self.catalog.read().unwrap();
        cache.schemas.iter().find(|s| s.name == name).cloned()
    }

    /// Every enum type.
    pub fn enum_types(&self) -> Vec<pb::EnumType> {
        self.catalog.read().unwrap().types.clone()
    }

    /// Enum type `name` of `schema`, if there is one.
    pub fn enum_type(&self, schema: &str, name: &str) -> Option<pb::EnumType> {
        let cache = self.catalog.read().unwrap();
        let found = cache
            .types
            .iter()
            .find(|t| t.schema == schema && t.name == name);
        found.cloned()
    }

    /// Every schema CREATE SCHEMA made.
    pub fn schemas(&self) -> Vec<pb::Schema> {
        self.catalog.read().unwrap().schemas.clone()
    }

    /// Whether a relation can be in schema `name`: `public`, a session's
    /// temporary schema, or one CREATE SCHEMA made.
    pub fn schema_exists(&self, name: &str) -> bool {
        eon_common::schema::is_implied_schema(name) || self.schema(name).is_some()
    }

    /// Names of the tables of a schema, sorted.
    pub fn table_names(&self, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .catalog
            .read()
            .unwrap()
            .by_name
            .keys()
            .filter(|(s, _)| s == schema)
            .map(|(_, n)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// All tables, sorted by schema and name.
    pub fn tables(&self) -> Vec<Arc<TableDef>> {
        let mut t: Vec<_> = self
            .catalog
            .read()
            .unwrap()
            .by_name
            .values()
            .cloned()
            .collect();
        t.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        t
    }

    /// The client of data engine `id`, looking its address up in meta when
    /// unknown.
    pub async fn engine(&self, id: u64) -> Result<DataEngineClient<Channel>> {
        if let Some((_, c)) = self.engines.read().unwrap().get(&id) {
            return Ok(c.clone());
        }
        self.refresh_engines().await?;
        self.engines
            .read()
            .unwrap()
            .get(&id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                Error::unavailable(format!("data engine {id} is not registered with meta"))
            })
    }

    /// Re-read data engine addresses from meta (after a data engine restarted
    /// on a new port, say).
    pub async fn refresh_engines(&self) -> Result<()> {
        let nodes = self
            .meta()
            .list_nodes(pb::ListNodesRequest {})
            .await
            .map_err(meta_err)?
            .into_inner()
            .nodes;
        let mut engines = self.engines.write().unwrap();
        for n in nodes
            .into_iter()
            .filter(|n| n.kind == pb::NodeKind::DataEngine as i32)
        {
            let fresh = match engines.get(&n.id) {
                Some((addr, _)) => *addr != n.grpc_address,
                None => true,
            };
            if fresh {
                let client = DataEngineClient::new(node::channel(&n.grpc_address)?)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                engines.insert(n.id, (n.grpc_address.clone(), client));
            }
        }
        Ok(())
    }

    /// Call `f` with data engine `id`'s client; when the engine is
    /// unreachable, refresh its address and retry for up to `patience` (a
    /// restarted engine comes back on a new port within a second or two).
    /// A request that is not `idempotent` is retried only when it cannot
    /// have reached the engine (the connection was refused).
    pub async fn with_engine<T, F, Fut>(
        &self,
        id: u64,
        patience: Duration,
        idempotent: bool,
        mut f: F,
    ) -> Result<T>
    where
        F: FnMut(DataEngineClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let attempt = match self.engine(id).await {
                Ok(client) => f(client).await.map_err(Error::from_status),
                Err(e) => Err(e),
            };
            match attempt {
                // Out of memory is the request's own doing, not the
                // engine's absence.
                // (An engine that took the request and then went silent —
                // frozen, or cut off — is not tried again: the caller may
                // find the data elsewhere sooner.)
                Err(e)
                    if e.kind == eon_common::ErrorKind::Unavailable
                        && e.code != eon_common::error::sqlstate::OUT_OF_MEMORY
                        && (idempotent || e.message.contains("connect"))
                        && !e.message.contains("http2 error")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = self.refresh_engines().await;
                }
                other => return other,
            }
        }
    }

    /// `DataEngine.RunFragment(req)` on data engine `id`, reached through
    /// [`Cluster::with_engine`] (with its `patience` and `idempotent`):
    /// the fragment's replies, or the error that kept it from starting, as
    /// one stream.
    pub fn run_fragment(
        self: &Arc<Self>,
        id: u64,
        req: pb::FragmentRequest,
        patience: Duration,
        idempotent: bool,
    ) -> futures::stream::BoxStream<'static, Result<pb::FragmentResponse>> {
        use futures::{StreamExt, TryStreamExt};
        let cluster = self.clone();
        futures::stream::once(async move {
            cluster
                .with_engine(id, patience, idempotent, |mut c| {
                    let req = req.clone();
                    async move { c.run_fragment(req).await }
                })
                .await
        })
        .map(|r| match r {
            Ok(replies) => replies.into_inner().map_err(Error::from_status).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    /// About how many rows table `def` holds: the sum of its data engines'
    /// estimates (`DataEngine.TableSizes`), asked at most every
    /// [`SIZE_TTL`]. When an engine does not answer within [`SIZE_WAIT`],
    /// the last estimate; None when there is none, or the table looks empty — an estimate of nothing
    /// would make a table loaded since look small enough to broadcast.
    pub async fn table_rows(&self, def: &TableDef) -> Option<u64> {
        let stale = match self.sizes.lock().unwrap().get(&def.id) {
            Some((at, rows)) if at.elapsed() < SIZE_TTL => return *rows,
            Some((_, rows)) => *rows,
            None => None,
        };
        let mut engines = def.placement.clone();
        engines.sort();
        engines.dedup();
        let asks = engines.into_iter().map(|id| async move {
            let mut client = self.engine(id).await.ok()?;
            let reply = client
                .table_sizes(pb::TableSizesRequest {
                    tables: vec![def.id],
                })
                .await
                .ok()?
                .into_inner();
            Some(reply.tables.iter().map(|t| t.rows).sum::<u64>())
        });
        let rows = match tokio::time::timeout(SIZE_WAIT, futures::future::join_all(asks)).await {
            Ok(counts) => match counts.into_iter().sum::<Option<u64>>() {
                Some(n) => (n > 0).then_some(n),
                // An engine did not answer: the last estimate, if any.
                None => stale,
            },
            Err(_) => stale,
        };
        self.sizes
            .lock()
            .unwrap()
            .insert(def.id, (Instant::now(), rows));
        rows
    }

    /// Forget the size estimates (`ANALYZE`): the next plan asks again.
    pub fn forget_sizes(&self) {
        self.sizes.lock().unwrap().clear();
    }

    /// `n` fresh row ids (from blocks allocated by meta).
    pub async fn rowids(&self, n: u64) -> Result<u64> {
        {
            let mut r = self.rowids.lock().unwrap();
            if r.1 - r.0 >= n {
                let start = r.0;
                r.0 += n;
                return Ok(start);
            }
        }
        let count = n.max(10_000);
        let got = self
            .meta()
            .allocate_ids(pb::AllocateIdsRequest { count })
            .await
            .map_err(meta_err)?
            .into_inner();
        let mut r = self.rowids.lock().unwrap();
        *r = (got.start + n, got.start + got.count);
        Ok(got.start)
    }

    /// A column of `n` fresh row ids, for the hidden key of a table
    /// without a primary key (new rows, and new versions of updated ones).
    pub async fn rowid_column(&self, n: usize) -> Result<datafusion::arrow::array::ArrayRef> {
        let start = self.rowids(n as u64).await? as i64;
        Ok(Arc::new(
            datafusion::arrow::array::Int64Array::from_iter_values(start..start + n as i64),
        ))
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cluster(catalog v{})",
            self.catalog.read().unwrap().version
        )
    }
}

fn meta_err(s: tonic::Status) -> Error {
    let e = Error::from_status(s);
    if e.kind == eon_common::ErrorKind::Unavailable {
        Error::unavailable(format!("meta is unavailable: {}", e.message))
    } else {
        e
    }
}
