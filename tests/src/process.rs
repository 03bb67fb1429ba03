//! `cyclops-forwarder` as a real process, for tests that kill it (`kill -9`
//! cannot be done to a task inside the test's own process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cyclops_common::config::Config;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The `cyclops-forwarder` binary that `cargo test --workspace` built beside
/// this test binary.
fn forwarder_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/e2e-… → target/<profile>/cyclops-forwarder
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("cyclops-forwarder"))
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    anyhow::ensure!(bin.exists(), "{} is missing: build it with `cargo build --bins`", bin.display());
    Ok(bin)
}

/// A forwarder process; SIGKILLed on drop.
#[derive(Debug)]
pub struct ForwarderProcess {
    pub addr: SocketAddr,
    child: Child,
    _conf: tempfile::NamedTempFile,
}

impl ForwarderProcess {
    /// Starts a forwarder with `config` and waits until it serves its status endpoints.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let mut conf = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(&mut conf, toml::to_string(config)?.as_bytes())?;
        let mut child = Command::new(forwarder_binary()?)
            .arg("--conf")
            .arg(conf.path())
            .arg("-v")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let announced = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.split("status endpoints on http://").nth(1) {
                    return Ok::<_, anyhow::Error>(addr.trim().parse::<SocketAddr>()?);
                }
            }
            anyhow::bail!("the forwarder exited before it started")
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), announced).await??;
        // Keep draining its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { addr, child, _conf: conf })
    }

    /// SIGKILL: no drain, no final commit.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}
