//! A cluster of a benchmark's own: `eon up` (this same binary) in a
//! temporary directory on free ports, stopped (SIGTERM) and removed when
//! dropped. `eon bench scale` and `eon bench tpch` measure on one.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::bail;

pub struct OwnCluster {
    child: std::process::Child,
    dir: tempfile::TempDir,
    /// The PostgreSQL-wire address.
    pub pg: std::net::SocketAddr,
    /// The ingress's address.
    pub ingress: std::net::SocketAddr,
}

fn free_port() -> u16 {
    eon_common::node::free_port().unwrap_or(0)
}

impl OwnCluster {
    /// Start `eon up` with `args` added (its data directory and its pg,
    /// http and ingress ports are chosen here) and wait until it says it
    /// is up.
    pub fn start(prefix: &str, args: &[String]) -> anyhow::Result<OwnCluster> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let (pg_port, ingress_port) = (free_port(), free_port());
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--pg-port", &pg_port.to_string()])
            .args(["--http-port", &free_port().to_string()])
            .args(["--ingress-port", &ingress_port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("eon is up") => break,
                Some(_) => {}
                None => bail!("eon up exited before it was ready"),
            }
        }
        // Keep reading, so that the cluster never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(OwnCluster {
            child,
            dir,
            pg: std::net::SocketAddr::from(([127, 0, 0, 1], pg_port)),
            ingress: std::net::SocketAddr::from(([127, 0, 0, 1], ingress_port)),
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A connection string for the admin.
    pub fn pg_url(&self) -> anyhow::Result<String> {
        crate::client::admin_pg_url(&self.data_dir(), &self.pg, "")
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
