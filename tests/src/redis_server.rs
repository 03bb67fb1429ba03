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
    client: redis::Client,
}

/// PEM files of a TLS Redis: its certificate and key, and the CA clients trust.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl OwnRedis {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None, None).await
    }

    /// A server that requires `password` (`requirepass`) and, with `tls`,
    /// speaks only TLS with that certificate: its `url` is then `rediss://`.
    pub async fn start_with(password: Option<&str>, tls: Option<&RedisTls>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        match tls {
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .args(["--tls-cert-file", &tls.cert, "--tls-key-file", &tls.key, "--tls-ca-cert-file", &tls.ca]),
            None => command.args(["--port", &port.to_string()]),
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let url = format!("{scheme}://{auth}127.0.0.1:{port}/0");
        let client = match tls {
            Some(tls) => redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(&tls.ca)?) },
            )?,
            None => redis::Client::open(url.as_str())?,
        };
        wait_for(Duration::from_secs(10), "own redis to answer PING", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            }
        })
        .await?;
        Ok(Self { url, child, client })
    }

    /// A client of this server (with its password and TLS).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// Kills the server and waits until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
