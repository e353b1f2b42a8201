//! eon's component interfaces, generated from `proto/eon/v1/*.proto`.
//!
//! Every component of eon is a separate process that implements exactly one
//! of these gRPC services and talks to the others only through them:
//!
//! | service       | implemented by                 | proto file              |
//! |---------------|--------------------------------|-------------------------|
//! | `Meta`        | `eon meta` (crate eon-meta)    | `proto/eon/v1/meta.proto`  |
//! | `DataEngine`  | `eon data-engine` (eon-data)   | `proto/eon/v1/data.proto`  |
//! | `QueryEngine` | `eon query-engine` (eon-query) | `proto/eon/v1/query.proto` |
//! | `Agent`       | `eon up` (eon-agent)           | `proto/eon/v1/agent.proto` |
//! | `Raft`        | every replicated component, beside its own service (eon-raft) | `proto/eon/v1/raft.proto` |
//!
//! Any other implementation that speaks the same service can replace eon's;
//! crate `eon-conformance` holds the suite that checks it does.

#![allow(clippy::all)]

/// Version 1 of the interfaces.
pub mod v1 {
    tonic::include_proto!("eon.v1");
}

pub use v1::*;
