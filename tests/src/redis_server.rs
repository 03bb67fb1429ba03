//! A Redis server of a test's own, for tests that stop Redis mid-run (the
//! stack's shared Redis must stay up for the others).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::wait_for;

/// A `redis-server` child process on a free loopback port; killed on drop.
#[derive(Debug)]
pub struct OwnRedis {
    pub url: String,
    child: Child,
}

impl OwnRedis {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("redis://127.0.0.1:{port}/0");
        let client = redis::Client::open(url.as_str())?;
        wait_for(Duration::from_secs(10), "own redis to answer PING", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await?;
        Ok(Self { url, child })
    }

    /// Kills the server and waits until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
