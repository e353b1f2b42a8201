//! Meta's durable state: the state machine of meta's Raft group (see
//! [`replication`](crate::replication)), and the `meta.pb` file meta kept it
//! in before replication, read once to seed the group.

use std::path::Path;

use eon_common::Error;
use eon_proto::v1 as pb;
use prost::Message;

pub const FILE: &str = "meta.pb";

/// Everything meta must not forget. Encoded with protobuf, like the rest of
/// eon's interfaces, so the file can be read by other tools.
#[derive(Clone, PartialEq, Message)]
pub struct Persisted {
    #[prost(uint64, tag = "1")]
    pub catalog_version: u64,
    #[prost(uint64, tag = "2")]
    pub next_table_id: u64,
    /// No timestamp at or above this was handed out.
    #[prost(uint64, tag = "3")]
    pub ts_limit: u64,
    /// No id at or above this was handed out.
    #[prost(uint64, tag = "4")]
    pub id_limit: u64,
    #[prost(message, repeated, tag = "5")]
    pub tables: Vec<pb::Table>,
    /// Each with `last_value` persisted ahead of what was handed out.
    #[prost(message, repeated, tag = "6")]
    pub sequences: Vec<pb::Sequence>,
    #[prost(message, repeated, tag = "7")]
    pub roles: Vec<pb::Role>,
    /// The superuser made at the first start (`eon up`'s admin): it cannot
    /// be dropped nor stop being a superuser, so the cluster keeps a way in.
    #[prost(uint64, tag = "8")]
    pub bootstrap_role: u64,
    #[prost(message, repeated, tag = "9")]
    pub views: Vec<pb::View>,
    /// Those CREATE SCHEMA made (`public` is implied).
    #[prost(message, repeated, tag = "10")]
    pub schemas: Vec<pb::Schema>,
    /// Enum types (CREATE TYPE … AS ENUM).
    #[prost(message, repeated, tag = "11")]
    pub types: Vec<pb::EnumType>,
    /// Every node that registered (its latest registration): a new meta
    /// leader knows them at once, before their next heartbeat reaches it.
    #[prost(message, repeated, tag = "12")]
    pub nodes: Vec<pb::NodeInfo>,
    /// Data engines being drained: no new copies go to them, and the
    /// balancer moves theirs away.
    #[prost(uint64, repeated, tag = "13")]
    pub draining: Vec<u64>,
}

impl Persisted {
    pub fn load(dir: &Path) -> Result<Persisted, Error> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(Persisted::default());
        }
        let bytes = std::fs::read(&path)?;
        Persisted::decode(bytes.as_slice())
            .map_err(|e| Error::internal(format!("{} is damaged: {e}", path.display())))
    }
}
