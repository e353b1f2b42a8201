//! How client subcommands (`eon status`, `eon recipe …`) find a running
//! cluster: from the `cluster.json` that `eon up` writes into its data
//! directory, or by asking its REST port (`GET /v1/cluster`), or from
//! addresses given outright; and how the PostgreSQL-wire client commands
//! (`eon bench`, `eon load`, `eon bench-load`) connect.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use eon_agent::ClusterFile;
use eon_proto::v1::agent_client::AgentClient;

#[derive(Args, Debug, Clone)]
pub struct Find {
    /// The data directory of the cluster (`eon up --data-dir`).
    #[arg(long, default_value = "./eon-data")]
    pub data_dir: PathBuf,
    /// Find the cluster by its REST port on this machine instead (as the
    /// admin: the password from EON_PASSWORD or the data dir).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// The agent's gRPC address (default: found as above).
    #[arg(long)]
    pub agent: Option<String>,
    /// Meta's gRPC address (default: found as above).
    #[arg(long)]
    pub meta: Option<String>,
}

impl Find {
    /// The cluster's addresses, with any given outright taking precedence.
    pub async fn cluster(&self) -> anyhow::Result<ClusterFile> {
        let found = match self.http_port {
            Some(port) => {
                let url = format!("http://127.0.0.1:{port}/v1/cluster");
                // The cluster's paths are a superuser's: the admin's
                // password from EON_PASSWORD or the data dir.
                let password = std::env::var("EON_PASSWORD")
                    .ok()
                    .or_else(|| eon_agent::admin_password_if_kept(&self.data_dir));
                let resp = reqwest::Client::new()
                    .get(&url)
                    .basic_auth(eon_agent::ADMIN_ROLE, password)
                    .send()
                    .await
                    .with_context(|| format!("no eon cluster answers at {url}"))?;
                if !resp.status().is_success() {
                    bail!(
                        "{url} answered {} (is this eon's REST port?)",
                        resp.status()
                    );
                }
                Some(
                    resp.json::<ClusterFile>()
                        .await
                        .with_context(|| format!("{url} did not describe a cluster"))?,
                )
            }
            None => eon_agent::read_cluster_file(&self.data_dir),
        };
        match (found, &self.agent, &self.meta) {
            (Some(mut f), agent, meta) => {
                if let Some(a) = agent {
                    f.agent = a.clone();
                }
                if let Some(m) = meta {
                    f.meta = m.clone();
                }
                Ok(f)
            }
            (None, agent, Some(meta)) => Ok(ClusterFile {
                pid: 0,
                agent: agent.clone().unwrap_or_default(),
                meta: meta.clone(),
                pg: String::new(),
                http: String::new(),
                ingress: String::new(),
                ca_cert: None,
            }),
            (None, _, None) => bail!(
                "no eon cluster is running on {} (no cluster.json; is `eon up` running? or pass --http-port)",
                self.data_dir.display()
            ),
        }
    }

    pub async fn agent(&self) -> anyhow::Result<AgentClient<eon_common::node::Channel>> {
        let c = self.cluster().await?;
        if c.agent.is_empty() {
            bail!("the cluster's agent address is unknown (pass --agent)");
        }
        Ok(AgentClient::new(self.channel(&c.agent)?))
    }

    /// The cluster's secret: EON_CLUSTER_SECRET, or the data dir's
    /// `cluster-secret` (readable by the cluster's owner only — who alone
    /// may run client commands against its components).
    pub fn secret(&self) -> Option<String> {
        eon_common::node::cluster_secret()
            .map(str::to_string)
            .or_else(|| eon_common::node::read_cluster_secret(&self.data_dir).ok())
    }

    /// A gRPC channel to one of the cluster's components, with its secret.
    pub fn channel(&self, addr: &str) -> anyhow::Result<eon_common::node::Channel> {
        Ok(eon_common::node::channel_with(
            addr,
            self.secret().as_deref(),
        )?)
    }
}

/// The connection string given, or `eon up`'s defaults: 127.0.0.1:5433 as
/// the admin, whose password is in ./eon-data/admin-password.
pub fn pg_url_or_default(url: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = url {
        return Ok(url.to_string());
    }
    admin_pg_url(
        std::path::Path::new("./eon-data"),
        &"127.0.0.1:5433".parse()?,
        " (or give --url)",
    )
}

/// A connection string for the admin of the cluster whose data directory is
/// `data_dir` (where its password is), at `addr`; `hint` ends the message
/// when the password cannot be read.
pub fn admin_pg_url(
    data_dir: &std::path::Path,
    addr: &std::net::SocketAddr,
    hint: &str,
) -> anyhow::Result<String> {
    let file = data_dir.join(eon_agent::ADMIN_PASSWORD_FILE);
    let password = eon_common::scram::read_password(&file)
        .with_context(|| format!("cannot read {}{hint}", file.display()))?;
    Ok(eon_agent::pg_url(
        addr,
        eon_agent::ADMIN_ROLE,
        &password,
        &eon_agent::Link::Plain,
    ))
}

/// A PostgreSQL-wire connection, its driver running on a task of its own.
pub async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
