//! Test helpers for eon: [`TestCluster`] runs a real local cluster — the
//! `eon up` process and its meta, data engine and query engine processes —
//! in a temporary directory, on free ports of 127.0.0.1.
//!
//! It waits for readiness with a timeout, kills every process when dropped,
//! and when a test panics prints the command line, the log paths and the
//! tail of every log, so a failure in CI explains itself.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eon_proto::v1 as pb;

/// How long a cluster may take to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `eon` binary under test: `EON_BIN`, or next to the test executable.
pub fn eon_bin() -> PathBuf {
    if let Ok(p) = std::env::var("EON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    dir.join("eon")
}

/// A port nobody listens on right now (and not handed out before by this
/// process: a cluster needs distinct ones).
pub fn free_port() -> u16 {
    eon_common::node::free_port().expect("a free port")
}

#[derive(Debug, Clone)]
pub struct Builder {
    data_engines: u32,
    query_engines: u32,
    shards: u32,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    max_query_engines: Option<u32>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            data_engines: 3,
            query_engines: 1,
            shards: 8,
            dir: None,
            env: vec![],
            args: vec![],
            max_query_engines: None,
        }
    }
}

impl Builder {
    pub fn data_engines(mut self, n: u32) -> Self {
        self.data_engines = n;
        self
    }
    pub fn query_engines(mut self, n: u32) -> Self {
        self.query_engines = n;
        self
    }
    /// Let the balancer run up to `n` query engines (by default a test
    /// cluster keeps the number it started with).
    pub fn max_query_engines(mut self, n: u32) -> Self {
        self.max_query_engines = Some(n);
        self
    }
    pub fn shards(mut self, n: u32) -> Self {
        self.shards = n;
        self
    }
    /// Use this data directory (to restart a cluster on the same data).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// More flags for `eon up` (`--recipe FILE`, …).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Start `eon up` and wait until it is ready.
    pub fn start(self) -> anyhow::Result<TestCluster> {
        let (tmp, dir) = match &self.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("eon-test-").tempdir()?;
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        let pg_port = free_port();
        let http_port = free_port();
        let ingress_port = free_port();
        let mut cmd = Command::new(eon_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--data-engines", &self.data_engines.to_string()])
            .args(["--query-engines", &self.query_engines.to_string()])
            .args([
                "--max-query-engines",
                &self
                    .max_query_engines
                    .unwrap_or(self.query_engines)
                    .to_string(),
            ])
            .args([
                "--pg-port",
                &pg_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .args(["--ingress-port", &ingress_port.to_string()])
            .args(["--shards", &self.shards.to_string()])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let command = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {command}"))?;
        // Wait for the "eon is up" line; keep stderr for the failure report.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut cluster = TestCluster {
            tmp,
            dir,
            pg_port,
            http_port,
            ingress_port,
            child: Some(child),
            command,
            builder: self,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("eon is up") => break,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let err = cluster.stderr_of_exited();
                    cluster.report();
                    bail!("eon up exited before it was ready: {err}");
                }
            }
            if Instant::now() > deadline {
                cluster.report();
                bail!("cluster not ready within {READY_TIMEOUT:?}");
            }
        }
        Ok(cluster)
    }
}

pub struct TestCluster {
    tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub http_port: u16,
    pub ingress_port: u16,
    child: Option<Child>,
    command: String,
    builder: Builder,
}

impl TestCluster {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A cluster with the default shape (3 data engines, 1 query engine).
    pub fn start() -> anyhow::Result<TestCluster> {
        Builder::default().start()
    }

    /// The admin's password (`eon up` keeps it in the data dir).
    pub fn admin_password(&self) -> String {
        eon_common::scram::read_password(&self.dir.join("admin-password")).unwrap_or_default()
    }

    /// The admin's PostgreSQL URL.
    pub fn pg_url(&self) -> String {
        self.pg_url_as(eon_common::ADMIN_ROLE, &self.admin_password())
    }

    pub fn pg_url_as(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/eon?sslmode=disable",
            self.pg_port
        )
    }

    /// The REST base URL with the admin's credentials (clients such as
    /// reqwest, requests and curl send them as HTTP basic authentication).
    pub fn http_url(&self) -> String {
        format!(
            "http://{}:{}@127.0.0.1:{}",
            eon_common::ADMIN_ROLE,
            self.admin_password(),
            self.http_port
        )
    }

    /// A raw connection to the PostgreSQL port, logged in as the admin
    /// (startup and SCRAM-SHA-256 done, up to AuthenticationOk): for tests
    /// that read the protocol's messages themselves.
    pub async fn pg_raw(&self) -> anyhow::Result<tokio::net::TcpStream> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
        use postgres_protocol::message::frontend;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.pg_port)).await?;
        // One authentication message: its code and the rest of its body.
        async fn auth(s: &mut tokio::net::TcpStream) -> anyhow::Result<(i32, Vec<u8>)> {
            let tag = s.read_u8().await?;
            let len = s.read_u32().await? as usize - 4;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await?;
            if tag != b'R' {
                bail!(
                    "expected an authentication request, got {:?}: {}",
                    tag as char,
                    String::from_utf8_lossy(&body)
                );
            }
            Ok((
                i32::from_be_bytes(body[..4].try_into()?),
                body[4..].to_vec(),
            ))
        }
        let mut buf = bytes::BytesMut::new();
        frontend::startup_message(
            [("user", eon_common::ADMIN_ROLE), ("database", "eon")],
            &mut buf,
        )?;
        s.write_all(&buf).await?;
        let (code, _) = auth(&mut s).await?;
        if code != 10 {
            bail!("expected SASL authentication, got code {code}");
        }
        let mut scram = ScramSha256::new(
            self.admin_password().as_bytes(),
            ChannelBinding::unrequested(),
        );
        buf.clear();
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf)?;
        s.write_all(&buf).await?;
        let (_, server_first) = auth(&mut s).await?;
        scram.update(&server_first)?;
        buf.clear();
        frontend::sasl_response(scram.message(), &mut buf)?;
        s.write_all(&buf).await?;
        let (_, server_final) = auth(&mut s).await?;
        scram.finish(&server_final)?;
        Ok(s)
    }

    /// A new PostgreSQL client connection.
    pub async fn pg(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.pg_url(), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect to {}", self.pg_url()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The addresses in `cluster.json`.
    pub fn cluster_file(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            self.dir.join("cluster.json"),
        )?)?)
    }

    pub fn meta_addr(&self) -> anyhow::Result<String> {
        Ok(self.cluster_file()?["meta"]
            .as_str()
            .context("meta address")?
            .to_string())
    }

    pub fn agent_addr(&self) -> anyhow::Result<String> {
        Ok(self.cluster_file()?["agent"]
            .as_str()
            .context("agent address")?
            .to_string())
    }

    /// The cluster's secret (`eon up` keeps it in the data dir): what its
    /// components show each other on every gRPC call.
    pub fn secret(&self) -> String {
        eon_common::node::read_cluster_secret(&self.dir).unwrap_or_default()
    }

    /// A gRPC channel to one of the cluster's components, with its secret.
    pub fn channel(&self, addr: &str) -> anyhow::Result<eon_common::node::Channel> {
        Ok(eon_common::node::channel_with(addr, Some(&self.secret()))?)
    }

    /// A client of the cluster's meta.
    pub fn meta(&self) -> anyhow::Result<pb::meta_client::MetaClient<eon_common::node::Channel>> {
        Ok(pb::meta_client::MetaClient::new(
            self.channel(&self.meta_addr()?)?,
        ))
    }

    /// A client of the cluster's agent.
    pub fn agent(
        &self,
    ) -> anyhow::Result<pb::agent_client::AgentClient<eon_common::node::Channel>> {
        Ok(pb::agent_client::AgentClient::new(
            self.channel(&self.agent_addr()?)?,
        ))
    }

    /// Every instance the agent supervises.

    pub async fn instances(&self) -> anyhow::Result<Vec<pb::Instance>> {
        let mut agent = self.agent()?;
        Ok(agent
            .list(pb::ListInstancesRequest {})
            .await?
            .into_inner()
            .instances)
    }

    /// The pid of a running instance by name ("data-engine-2").
    pub async fn pid_of(&self, name: &str) -> anyhow::Result<u32> {
        let i = self
            .instances()
            .await?
            .into_iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no instance {name}"))?;
        anyhow::ensure!(i.pid > 0, "{name} is not running ({})", i.state);
        Ok(i.pid)
    }

    /// kill -9 an instance and wait until the supervisor has it running
    /// again (with a new pid).
    pub async fn kill_and_wait_restart(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(name).await?;
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(i) = self.instances().await {
                if let Some(i) = i.iter().find(|i| i.name == name) {
                    if i.state == "running" && i.pid != pid && i.pid > 0 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("{name} was not restarted within 30 s");
            }
        }
    }

    /// Data engine gRPC addresses by id, from meta.
    pub async fn data_engines(&self) -> anyhow::Result<Vec<(u64, String)>> {
        let mut meta = self.meta()?;
        let nodes = meta
            .list_nodes(pb::ListNodesRequest {})
            .await?
            .into_inner()
            .nodes;
        Ok(nodes
            .into_iter()
            .filter(|n| n.kind == pb::NodeKind::DataEngine as i32 && n.up)
            .map(|n| (n.id, n.grpc_address))
            .collect())
    }

    /// The pid of the `eon up` process.
    pub fn up_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the cluster gracefully (SIGTERM to `eon up`) and wait; returns
    /// its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("eon up did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop and start again on the same data directory and ports' worth of
    /// configuration (new ports).
    pub fn restart(mut self) -> anyhow::Result<TestCluster> {
        self.stop()?;
        let builder = self.builder.clone().dir(&self.dir);
        let tmp = self.tmp.take();
        let mut next = builder.start()?;
        next.tmp = tmp;
        Ok(next)
    }

    fn stderr_of_exited(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
            if let Some(mut e) = c.stderr.take() {
                let _ = e.read_to_string(&mut s);
            }
        }
        s.trim().to_string()
    }

    /// Print the command, the log paths and the end of every log.
    pub fn report(&self) {
        eprintln!("--- eon test cluster: {}", self.command);
        let logs = self.dir.join("logs");
        if let Ok(entries) = std::fs::read_dir(&logs) {
            for e in entries.flatten() {
                let path = e.path();
                eprintln!("--- log {}", path.display());
                if let Ok(text) = std::fs::read_to_string(&path) {
                    let lines: Vec<&str> = text.lines().collect();
                    for l in &lines[lines.len().saturating_sub(15)..] {
                        eprintln!("    {l}");
                    }
                }
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
            // A failed test's cluster is kept for a look at its logs.
            if let Some(tmp) = self.tmp.take() {
                eprintln!("  the cluster's data dir is kept: {}", tmp.keep().display());
            }
        }
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
