//! Storing an accepted event: its record (the body as received, or as
//! rewritten to carry an assigned event id, and the headers of the record
//! contract, [`cyclops_common::record`]) goes to its project's topic, or the
//! spool when Kafka cannot take it ([`crate::durable`]).
//!
//! An event that could not be stored gives its flood-filter slot back, so
//! that the SDK's retry is not dropped for it.

use std::net::IpAddr;

use axum::http::header;
use cyclops_common::record::{RecordHeaders, topic_name};

use super::decode::Encoding;
use super::payload::Understood;
use super::sender::Sender;
use super::{Head, Intake, StoreError};
use crate::durable::{Durability, Outgoing};

/// A request's body as read, with its `Content-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub body: &'a [u8],
    pub encoding: Encoding,
}

/// Stores `understood`, sent by `sender` in the request `head`; counts it as
/// processed once stored.
pub async fn store(
    intake: &Intake,
    head: &Head,
    sender: &Sender,
    understood: &Understood,
    received: Received<'_>,
    client: IpAddr,
) -> Result<Durability, StoreError> {
    let (value, query, encoding) = match &understood.rewritten {
        Some(r) => (r.body.as_slice(), r.query.as_deref().or(head.query()), None),
        None => (received.body, head.query(), received.encoding.name()),
    };
    let record = RecordHeaders {
        method: head.method.to_string(),
        path: head.uri.path().to_owned(),
        query: query.map(str::to_owned),
        content_type: head.header(header::CONTENT_TYPE).map(str::to_owned),
        content_encoding: encoding.map(str::to_owned),
        auth: sender.auth.forward_header.clone(),
        event_id: understood.event_id.clone(),
        project_id: sender.project,
        received_at_ms: super::now_ms(),
        client_ip: Some(client.to_string()),
        user_agent: head.header(header::USER_AGENT).map(str::to_owned),
        fingerprint: understood.fingerprint.clone(),
        categories: understood.categories.clone(),
    };
    let topic = topic_name(&intake.config.topic_prefix, sender.project);
    let out = Outgoing { topic: &topic, key: understood.event_id.as_str(), value, headers: &record };
    match intake.store.store(out).await {
        Ok(durability) => {
            intake.stats.processed(sender.project);
            metrics::counter!(crate::metrics::ACCEPTED).increment(1);
            Ok(durability)
        }
        Err(e) => {
            tracing::error!(error = %e, topic, event_id = %understood.event_id, "event not stored");
            if let Some(fingerprint) = &understood.fingerprint {
                intake.flood.refund(sender.project, fingerprint).await;
            }
            Err(StoreError::NotStored(e))
        }
    }
}
