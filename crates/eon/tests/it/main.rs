//! eon's integration tests: real `eon` processes (started by
//! `eon_testkit::TestCluster`) on real sockets, driven by real clients.
//! One test binary, one module per area.

mod bank;
mod clients;
mod cluster;
mod conformance;
mod ddl;
mod durability;
mod frontends;
mod history;
mod pg;
mod psql;
mod pushdown;
mod rest;
mod slt;
mod txn;
