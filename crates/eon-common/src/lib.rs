//! The vocabulary every eon component shares.
//!
//! - [`types`]: the SQL types eon stores and how each maps to Arrow.
//! - [`schema`]: table definitions ([`schema::TableDef`]) built from the
//!   catalog messages meta hands out.
//! - [`value`]: stored values and the conversions between rows and Arrow
//!   record batches.
//! - [`key`]: order-preserving primary key encoding and the hash that places a
//!   key in a shard — the one function query and data engines must agree on.
//! - [`ipc`]: Arrow IPC framing, the only way row data crosses a process
//!   boundary in eon.
//! - [`error`]: errors named by what the caller does next, each with a
//!   PostgreSQL SQLSTATE, and their mapping to and from gRPC status.
//! - [`stats`]: the one statistics shape every component reports.
//! - [`recipe`]: the TOML recipe that says how to run a user's front end.
//! - [`scram`]: SCRAM-SHA-256 verifiers and exchanges (passwords).
//! - [`tls`]: the cluster's certificates and rustls configuration of the
//!   front doors.

/// The superuser `eon up` makes at the first start (its password is in the
/// data dir's `admin-password`).
pub const ADMIN_ROLE: &str = "eon";

pub mod error;
pub mod hosts;
pub mod ipc;
pub mod key;
pub mod node;
pub mod recipe;
pub mod schema;
pub mod scram;
pub mod stats;
pub mod tls;
pub mod types;
pub mod value;

pub use error::{Error, ErrorKind, Result};
pub use schema::TableDef;
pub use types::SqlType;
pub use value::Value;

/// Milliseconds since the Unix epoch, for uptimes and heartbeats.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch; the timestamp oracle starts from it.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
