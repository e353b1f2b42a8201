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
pub mod stall;
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

/// A byte size: a number with an optional unit (B, KB/KiB, MB/MiB, GB/GiB;
/// all powers of 1024, as PostgreSQL reads its memory settings).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 512MiB or 2GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_with_units() {
        assert_eq!(super::parse_size("512"), Ok(512));
        assert_eq!(super::parse_size("64kB"), Ok(64 << 10));
        assert_eq!(super::parse_size("12MB"), Ok(12 << 20));
        assert_eq!(super::parse_size(" 2GiB "), Ok(2 << 30));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("3TB").is_err());
        assert!(super::parse_size("99999999999GB").is_err());
    }
}
