//! [`Cluster`]: a query engine's view of the rest of the cluster.
//!
//! It holds the gRPC clients to meta and to every data engine, a cache of
//! the catalog (refreshed whenever a timestamp reply shows a newer catalog
//! version — every statement asks for a timestamp, so DDL done through any
//! query engine is seen by the next statement on every other), and a block of
//! row ids for tables without a primary key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use eon_common::stats::Recorder;
use eon_common::{Error, Result, TableDef, node};
use eon_proto::v1 as pb;
use eon_proto::v1::data_engine_client::DataEngineClient;
use eon_proto::v1::meta_client::MetaClient;
use tonic::transport::Channel;

/// Largest gRPC message a query engine accepts (scan batches of wide rows).
pub const MAX_MESSAGE: usize = 256 << 20;

#[derive(Default)]
struct CatalogCache {
    version: u64,
    by_name: HashMap<(String, String), Arc<TableDef>>,
}

pub struct Cluster {
    meta: MetaClient<Channel>,
    catalog: RwLock<CatalogCache>,
    engines: RwLock<HashMap<u64, (String, DataEngineClient<Channel>)>>,
    rowids: Mutex<(u64, u64)>,
    pub stats: Arc<Recorder>,
    /// Default shard count of new tables.
    pub default_shards: u32,
}

impl Cluster {
    pub fn new(meta_addr: &str, stats: Arc<Recorder>, default_shards: u32) -> Result<Arc<Cluster>> {
        Ok(Arc::new(Cluster {
            meta: node::meta_client(meta_addr)?,
            catalog: RwLock::new(CatalogCache::default()),
            engines: RwLock::new(HashMap::new()),
            rowids: Mutex::new((0, 0)),
            stats,
            default_shards,
        }))
    }

    pub fn meta(&self) -> MetaClient<Channel> {
        self.meta.clone()
    }

    /// A fresh timestamp from meta; refreshes the catalog if it changed.
    pub async fn timestamp(&self) -> Result<u64> {
        let r = self.meta().get_timestamp(pb::GetTimestampRequest {}).await.map_err(meta_err)?.into_inner();
        if r.catalog_version != self.catalog.read().unwrap().version {
            self.refresh_catalog().await?;
        }
        Ok(r.ts)
    }

    pub async fn refresh_catalog(&self) -> Result<()> {
        let r = self.meta().get_catalog(pb::GetCatalogRequest {}).await.map_err(meta_err)?.into_inner();
        let mut by_name = HashMap::new();
        for t in r.tables {
            let def = TableDef::from_proto(t)?;
            by_name.insert((def.schema.clone(), def.name.clone()), Arc::new(def));
        }
        let mut cache = self.catalog.write().unwrap();
        if r.version >= cache.version {
            *cache = CatalogCache { version: r.version, by_name };
        }
        Ok(())
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<Arc<TableDef>> {
        self.catalog.read().unwrap().by_name.get(&(schema.to_string(), name.to_string())).cloned()
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
        let mut t: Vec<_> = self.catalog.read().unwrap().by_name.values().cloned().collect();
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
            .ok_or_else(|| Error::unavailable(format!("data engine {id} is not registered with meta")))
    }

    /// Re-read data engine addresses from meta (after a data engine restarted
    /// on a new port, say).
    pub async fn refresh_engines(&self) -> Result<()> {
        let nodes = self.meta().list_nodes(pb::ListNodesRequest {}).await.map_err(meta_err)?.into_inner().nodes;
        let mut engines = self.engines.write().unwrap();
        for n in nodes.into_iter().filter(|n| n.kind == pb::NodeKind::DataEngine as i32) {
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
    pub async fn with_engine<T, F, Fut>(&self, id: u64, patience: Duration, idempotent: bool, mut f: F) -> Result<T>
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
                Err(e)
                    if e.kind == eon_common::ErrorKind::Unavailable
                        && (idempotent || e.message.contains("connect"))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = self.refresh_engines().await;
                }
                other => return other,
            }
        }
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
        let got = self.meta().allocate_ids(pb::AllocateIdsRequest { count }).await.map_err(meta_err)?.into_inner();
        let mut r = self.rowids.lock().unwrap();
        *r = (got.start + n, got.start + got.count);
        Ok(got.start)
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster(catalog v{})", self.catalog.read().unwrap().version)
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
