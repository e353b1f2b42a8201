//! Conformance suites for eon's component interfaces.
//!
//! Every component of eon is replaceable by another implementation that
//! speaks the same gRPC service. These suites say what "speaks the same
//! service" means: each drives a running implementation through its
//! interface only and checks the contract written in `proto/eon/v1/*.proto`.
//! eon's own processes run them in its test suite; another implementation
//! runs them with `eon conformance <interface> --addr host:port`.
//!
//! | suite          | needs                                  | checks |
//! |----------------|----------------------------------------|--------|
//! | [`meta`]       | a meta (a scratch one: it registers a node) | membership, timestamps, ids, DDL |
//! | [`data_engine`]| a data engine                          | writes, 2PC, scans, pushdown, conflicts |
//! | [`query_engine`]| a query engine with a cluster behind it | SQL in, Arrow out, SQLSTATEs |
//! | [`agent`]      | an agent (`eon up`)                    | list, start, stop, stats |

mod agent;
mod data_engine;
mod meta;
mod query_engine;

pub use agent::agent;
pub use data_engine::data_engine;
pub use meta::meta;
pub use query_engine::query_engine;

/// The checks a suite ran.
#[derive(Default, Debug)]
pub struct Report {
    pub suite: String,
    pub passed: Vec<&'static str>,
}

impl Report {
    fn new(suite: &str) -> Report {
        Report {
            suite: suite.into(),
            passed: vec![],
        }
    }
    fn pass(&mut self, check: &'static str) {
        self.passed.push(check);
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} conformance: {} checks passed",
            self.suite,
            self.passed.len()
        )?;
        for p in &self.passed {
            writeln!(f, "  ok  {p}")?;
        }
        Ok(())
    }
}

/// Run the suite for `interface` against `addr`, presenting the cluster's
/// `secret` (see `eon_common::node`).
pub async fn run(
    interface: &str,
    addr: &str,
    meta_addr: Option<&str>,
    secret: Option<&str>,
) -> anyhow::Result<Report> {
    match interface {
        "meta" => meta(addr, secret).await,
        "data-engine" => data_engine(addr, secret).await,
        "query-engine" => query_engine(addr, secret).await,
        "agent" => agent(addr, secret).await,
        other => {
            let _ = meta_addr;
            anyhow::bail!(
                "unknown interface {other:?}: use meta, data-engine, query-engine or agent"
            )
        }
    }
}

/// The SQLSTATE carried by an error status.
pub fn sqlstate(s: &tonic::Status) -> String {
    eon_common::Error::from_status(s.clone()).code
}
