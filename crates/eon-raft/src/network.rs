//! Raft messages between processes: the `Raft` gRPC service.
//!
//! openraft hands each group a *network factory*, asks it for a client per
//! peer, and sends three kinds of messages through it: AppendEntries (which
//! doubles as the heartbeat), Vote, and InstallSnapshot (a snapshot in
//! chunks). Here each becomes one `Raft.Deliver` call carrying the group and
//! the message, postcard-encoded; the receiving process's [`Service`] looks
//! the group up and hands the message to its replica. All groups of a
//! process share one HTTP/2 connection per peer address.
//!
//! Failures map onto openraft's retry logic: a peer that cannot be reached
//! (or does not answer within the request's deadline, as a frozen process
//! does not) is `Unreachable`, and openraft backs off before trying again;
//! a group the peer does not host is a `NetworkError`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use eon_proto::v1 as pb;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::quiet::{Beat, Peers};
use crate::{GroupId, NodeId, Raft, Starter, TypeConfig};

/// Messages may carry many entries or a snapshot chunk (1 MiB).
const MAX_MESSAGE: usize = 256 << 20;

/// Connections to peers, shared by every group of the process.
#[derive(Clone)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
    /// Where each node is now, when the application knows better than the
    /// address in the group's membership (a data engine listens on a new
    /// port after each restart). Looked up at every message.
    addresses: Arc<RwLock<HashMap<NodeId, String>>>,
}

impl Network {
    pub fn new(authorization: Option<&str>) -> crate::Result<Network> {
        let authorization = match authorization {
            Some(a) => Some(a.parse().map_err(|_| {
                crate::Error::Raft("the authorization header is not printable ASCII".into())
            })?),
            None => None,
        };
        Ok(Network {
            channels: Default::default(),
            authorization,
            addresses: Default::default(),
        })
    }

    /// Reach `node` at `addr` (`http://host:port`) from now on.
    pub fn set_address(&self, node: NodeId, addr: String) {
        let mut addresses = self.addresses.write().unwrap();
        if addresses.get(&node) != Some(&addr) {
            addresses.insert(node, addr);
        }
    }

    /// Where to reach `node`: the address set for it, else the one its
    /// group's membership gives.
    fn address(&self, node: NodeId, member_addr: &str) -> String {
        self.addresses
            .read()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_else(|| member_addr.to_string())
    }

    /// Send `beat` to each peer (id → the address its groups' membership
    /// gives), each in the background, giving up after `timeout`.
    pub(crate) fn beat(&self, peers: HashMap<NodeId, String>, beat: &Beat, timeout: Duration) {
        let Ok(body) = postcard::to_stdvec(beat) else {
            return;
        };
        for (id, member_addr) in peers {
            let Ok(channel) = self.channel(&self.address(id, &member_addr)) else {
                continue;
            };
            let message = self.message(0, pb::RaftMessageKind::Beat, body.clone(), timeout);
            tokio::spawn(async move {
                let mut client = pb::raft_client::RaftClient::new(channel);
                let _ = tokio::time::timeout(timeout, client.deliver(message)).await;
            });
        }
    }

    /// One message for `group` with the cluster's authorization, to be
    /// answered within `timeout`.
    fn message(
        &self,
        group: GroupId,
        kind: pb::RaftMessageKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> tonic::Request<pb::RaftMessage> {
        let mut message = tonic::Request::new(pb::RaftMessage {
            group,
            kind: kind as i32,
            body: body.into(),
        });
        message.set_timeout(timeout);
        if let Some(a) = &self.authorization {
            message.metadata_mut().insert("authorization", a.clone());
        }
        message
    }

    pub fn for_group(&self, group: GroupId) -> GroupNetwork {
        GroupNetwork {
            group,
            network: self.clone(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(addr.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The network factory openraft gets for one group.
pub struct GroupNetwork {
    group: GroupId,
    network: Network,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            group: self.group,
            target,
            member_addr: node.addr.clone(),
            network: self.network.clone(),
        }
    }
}

/// One group's client to one peer.
pub struct Peer {
    group: GroupId,
    target: NodeId,
    /// The address the group's membership gives (used unless the network
    /// knows a newer one).
    member_addr: String,
    network: Network,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: pb::RaftMessageKind,
        request: &Req,
        option: RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self.network.address(self.target, &self.member_addr);
        let channel = self
            .network
            .channel(&addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Failure(e.to_string()))))?;
        let body =
            postcard::to_stdvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = self
            .network
            .message(self.group, kind, body, option.hard_ttl());
        let mut client = pb::raft_client::RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let answer = match client.deliver(message).await {
            Ok(a) => a.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(RPCError::Network(NetworkError::new(&status)));
            }
            Err(status) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&answer.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(pb::RaftMessageKind::AppendEntries, &rpc, option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(pb::RaftMessageKind::InstallSnapshot, &rpc, option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(pb::RaftMessageKind::Vote, &rpc, option).await
    }
}

/// The receiving end: delivers peers' messages to this process's groups.
pub struct Service {
    groups: Arc<RwLock<HashMap<GroupId, Raft>>>,
    starter: Arc<OnceLock<Starter>>,
    peers: Arc<Peers>,
    /// Groups' messages delivered (beats not counted).
    delivered: Arc<AtomicU64>,
}

impl Service {
    pub(crate) fn new(
        groups: Arc<RwLock<HashMap<GroupId, Raft>>>,
        starter: Arc<OnceLock<Starter>>,
        peers: Arc<Peers>,
        delivered: Arc<AtomicU64>,
    ) -> Service {
        Service {
            groups,
            starter,
            peers,
            delivered,
        }
    }

    fn group(&self, group: GroupId) -> Option<Raft> {
        self.groups.read().unwrap().get(&group).cloned()
    }

    pub fn into_server(self) -> pb::raft_server::RaftServer<Service> {
        pb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, tonic::Status> {
    postcard::from_bytes(body)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(answer: &T) -> Result<tonic::Response<pb::RaftAnswer>, tonic::Status> {
    let body = postcard::to_stdvec(answer).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(pb::RaftAnswer { body: body.into() }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for Service {
    async fn deliver(
        &self,
        request: tonic::Request<pb::RaftMessage>,
    ) -> Result<tonic::Response<pb::RaftAnswer>, tonic::Status> {
        let message = request.into_inner();
        if message.kind == pb::RaftMessageKind::Beat as i32 {
            self.peers.heard(decode(&message.body)?);
            return Ok(tonic::Response::new(pb::RaftAnswer::default()));
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let mut raft = self.group(message.group);
        if raft.is_none()
            && let Some(start) = self.starter.get()
            && start(message.group).await
        {
            raft = self.group(message.group);
        }
        let raft = raft.ok_or_else(|| {
            tonic::Status::not_found(format!("raft group {} is not here", message.group))
        })?;
        match pb::RaftMessageKind::try_from(message.kind) {
            Ok(pb::RaftMessageKind::AppendEntries) => {
                encode(&raft.append_entries(decode(&message.body)?).await)
            }
            Ok(pb::RaftMessageKind::Vote) => encode(&raft.vote(decode(&message.body)?).await),
            Ok(pb::RaftMessageKind::InstallSnapshot) => {
                encode(&raft.install_snapshot(decode(&message.body)?).await)
            }
            Ok(pb::RaftMessageKind::Beat) | Err(_) => Err(tonic::Status::invalid_argument(
                format!("unknown raft message kind {}", message.kind),
            )),
        }
    }
}
