//! `cyclops-ingest` and `cyclops-forwarder` as real processes, for tests
//! that kill them (`kill -9` cannot be done to a task inside the test's own
//! process), send them signals, or watch their exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use cyclops_common::config::Config;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// A binary that `cargo test --workspace` built beside this test binary.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/e2e-… → target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    anyhow::ensure!(bin.exists(), "{} is missing: build it with `cargo build --bins`", bin.display());
    Ok(bin)
}

/// Which service, and the stderr line that gives its address.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Ingest,
    Forwarder,
}

impl Which {
    fn binary(self) -> &'static str {
        match self {
            Self::Ingest => "cyclops-ingest",
            Self::Forwarder => "cyclops-forwarder",
        }
    }

    fn banner(self) -> &'static str {
        match self {
            Self::Ingest => "listening on http://",
            Self::Forwarder => "status endpoints on http://",
        }
    }
}

/// A service process; SIGKILLed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Everything it wrote to stderr so far (at most [`LOG_MAX_BYTES`]).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _conf: tempfile::NamedTempFile,
}

/// Most stderr kept per process.
const LOG_MAX_BYTES: usize = 64 << 20;

/// The forwarder process of the older tests.
pub type ForwarderProcess = ServiceProcess;

impl ServiceProcess {
    /// Starts a forwarder with `config` and waits until it serves its status endpoints.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::spawn(Which::Forwarder, config, &[]).await
    }

    /// Starts `which` with `config` and the extra environment `env`, and
    /// waits until it says where it listens.
    pub async fn spawn(which: Which, config: &Config, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_verbose(which, config, env, "-v").await
    }

    /// [`Self::spawn`] with a verbosity flag of the test's (`-vvv`: debug).
    pub async fn spawn_verbose(
        which: Which,
        config: &Config,
        env: &[(&str, &str)],
        verbosity: &str,
    ) -> anyhow::Result<Self> {
        Self::launch(which, config, env, verbosity, None).await
    }

    /// [`Self::spawn`] with both open-file limits (soft and hard) set to
    /// `open_files` (by util-linux's `prlimit`, which then runs the binary).
    pub async fn spawn_with_open_files(which: Which, config: &Config, open_files: u64) -> anyhow::Result<Self> {
        Self::launch(which, config, &[], "-v", Some(open_files)).await
    }

    async fn launch(
        which: Which,
        config: &Config,
        env: &[(&str, &str)],
        verbosity: &str,
        open_files: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut conf = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(&mut conf, toml::to_string(config)?.as_bytes())?;
        let binary = binary(which.binary())?;
        let mut command = match open_files {
            Some(n) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("--conf")
            .arg(conf.path())
            .arg(verbosity)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let keep = {
            let log = log.clone();
            move |line: &str| {
                if let Ok(mut log) = log.lock()
                    && log.len() < LOG_MAX_BYTES
                {
                    log.push_str(line);
                    log.push('\n');
                }
            }
        };
        let announced = async {
            while let Some(line) = lines.next_line().await? {
                keep(&line);
                if let Some(addr) = line.split(which.banner()).nth(1) {
                    return Ok::<_, anyhow::Error>(addr.trim().parse::<SocketAddr>()?);
                }
            }
            anyhow::bail!("{} exited before it started", which.binary())
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), announced).await??;
        // Keep draining its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&line);
            }
        });
        Ok(Self { addr, child, log, _conf: conf })
    }

    /// SIGKILL: no drain, no final commit.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Waits at most `deadline` for the process to exit on its own.
    pub async fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        Ok(tokio::time::timeout(deadline, self.child.wait()).await??)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Sends `signal` (e.g. `-TERM`) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}
