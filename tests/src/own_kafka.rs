//! A Kafka broker of a test's own (single-node KRaft, from the jars the stack
//! fetched), for tests that stop Kafka mid-run: the stack's broker must stay
//! up for the others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::process::{Child, Command};

use crate::wait_for;

/// A running broker; killed (SIGKILL) on drop, its data in a temp dir.
#[derive(Debug)]
pub struct OwnKafka {
    pub brokers: String,
    child: Child,
    libs: PathBuf,
    props: PathBuf,
    _dir: tempfile::TempDir,
}

/// The Kafka jars `stack/stack.sh` fetched.
fn kafka_libs() -> anyhow::Result<PathBuf> {
    let stack = std::env::var("CYCLOPS_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    let kafka = stack.join("kafka");
    std::fs::read_dir(&kafka)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join(".complete").exists())
        .ok_or_else(|| anyhow::anyhow!("no Kafka jars under {}: run `make stack-up`", kafka.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A KRaft cluster id: base64url of a random UUID. One that starts with `-`
/// would be read as a flag by `kafka-storage format` (1 draw in 64), so such
/// draws are skipped, as Kafka's own `Uuid.randomUuid` does.
fn cluster_id() -> String {
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn spawn_broker(libs: &Path, props: &Path) -> anyhow::Result<Child> {
    Ok(java(libs)
        .arg("kafka.Kafka")
        .arg(props)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

fn java(libs: &Path) -> Command {
    let mut command = Command::new("java");
    command.arg("-Xms128m").arg("-Xmx384m").arg("-cp").arg(format!("{}/*", libs.display()));
    command
}

impl OwnKafka {
    pub async fn start() -> anyhow::Result<Self> {
        let libs = kafka_libs()?;
        let dir = tempfile::tempdir()?;
        let (port, controller) = (free_port()?, free_port()?);
        let props = dir.path().join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\nauto.create.topics.enable=false\noffsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=1\ntransaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
                dir.path().join("data").display()
            ),
        )?;
        let cluster_id = cluster_id();
        let format = java(&libs)
            .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
            .arg(&props)
            .output()
            .await?;
        anyhow::ensure!(format.status.success(), "format failed: {}", String::from_utf8_lossy(&format.stderr));
        let child = spawn_broker(&libs, &props)?;
        let brokers = format!("127.0.0.1:{port}");
        let mut kafka = Self { brokers, child, libs, props, _dir: dir };
        kafka.wait_until_it_answers().await?;
        Ok(kafka)
    }

    /// Starts the broker again on the same data and ports (after [`Self::kill`]).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn_broker(&self.libs, &self.props)?;
        self.wait_until_it_answers().await
    }

    /// SIGSTOP: a hung broker (its sockets stay open, nothing answers).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> anyhow::Result<()> {
        let pid = self.child.id().ok_or_else(|| anyhow::anyhow!("the broker is not running"))?;
        let status = std::process::Command::new("kill").arg(which).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {which} {pid} failed");
        Ok(())
    }

    async fn wait_until_it_answers(&mut self) -> anyhow::Result<()> {
        let brokers = self.brokers.clone();
        let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        let probe = std::sync::Arc::new(probe);
        wait_for(Duration::from_secs(60), "own kafka to answer a metadata request", || {
            let probe = probe.clone();
            async move {
                tokio::task::spawn_blocking(move || probe.fetch_metadata(None, Duration::from_secs(1)).ok().map(|_| ()))
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await?;
        Ok(())
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl OwnKafka {
    /// A broker just started is slow at first (its JIT, its first topic):
    /// one topic created and one record acknowledged, so that a short
    /// produce timeout is only ever spent on a dead or hung broker.
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let topic = NewTopic::new("warm-up", 1, TopicReplication::Fixed(1));
        for created in admin.create_topics(&[topic], &AdminOptions::new()).await? {
            if let Err((_, code)) = created
                && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
            {
                anyhow::bail!("warm-up topic: {code}");
            }
        }
        let producer: rdkafka::producer::FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let record = rdkafka::producer::FutureRecord::to("warm-up").key("k").payload("warm");
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        Ok(())
    }
}
