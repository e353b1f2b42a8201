//! eon's integration tests: real `eon` processes (started by
//! `eon_testkit::TestCluster`) on real sockets, driven by real clients.
//! One test binary, one module per area.

mod slt;
mod cluster;
mod pg;
mod conformance;
mod durability;
mod psql;
mod pushdown;
mod rest;
mod txn;
mod bank;
mod history;
mod frontends;
