//! The *bare produce* server: what any HTTP-to-Kafka service on this
//! machine pays before it does anything of its own — axum, and ingest's own
//! producer with its settings (`acks=all`, idempotence, the same linger and
//! timeouts), each body produced as it came and answered once Kafka
//! acknowledged it. No auth, no parsing, no flood filter, no headers.
//!
//! The accept path is read against it: absolute rates differ threefold
//! between machines of one kind, the ratio to this server much less.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use cyclops_common::config::{Overrides, Service};
use cyclops_common::ids::ProjectId;
use cyclops_common::record::topic_name;
use cyclops_ingest::producer::EventProducer;
use hyper::body::Bytes;
use rdkafka::message::OwnedHeaders;
use tokio::net::TcpListener;

struct Bare {
    producer: EventProducer,
    topic: String,
    sent: AtomicU64,
}

/// Serves on `ingest.port` of the configuration at `conf`, producing to
/// `project`'s topic, until killed.
pub async fn serve(conf: &std::path::Path, project: u64) {
    let config = cyclops_common::config::load(Some(conf), Vec::new(), Service::Ingest, &Overrides::default())
        .expect("the benchmark's configuration loads");
    let bare = Arc::new(Bare {
        producer: EventProducer::new(&config).expect("producer"),
        topic: topic_name(&config.kafka.topic_prefix, ProjectId::new(project)),
        sent: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/ready", axum::routing::get(|| async { "ok" }))
        .fallback(move |body: Bytes| produce(bare.clone(), body));
    let listener = TcpListener::bind((config.ingest.bind, config.ingest.port)).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

async fn produce(bare: Arc<Bare>, body: Bytes) -> (StatusCode, &'static str) {
    let key = bare.sent.fetch_add(1, Ordering::Relaxed).to_string();
    match bare.producer.send_acknowledged(&bare.topic, key.as_bytes(), &body, OwnedHeaders::new).await {
        Ok(()) => (StatusCode::OK, "{}"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "{}"),
    }
}
