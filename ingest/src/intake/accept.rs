//! One submission from request to answer, stage by stage:
//!
//! 1. who sends ([`super::sender`]), from the head: strangers are refused
//!    before their body is read;
//! 2. the body, within one deadline and the memory budget ([`super::body`]);
//!    an envelope without credentials outside names its sender in its
//!    header line;
//! 3. what it says ([`super::decode`], [`super::payload`]);
//! 4. what becomes of it: sampled, flood-filtered ([`super::decide`]);
//! 5. stored ([`super::persist`]);
//! 6. answered as Sentry would ([`super::answer`]).
//!
//! Each stage fails with one [`StoreError`], answered and counted once.

use super::decide::{self, Fate};
use super::payload::{self, Kind};
use super::persist::{self, Received};
use super::sender::{self, Identified};
use super::{Intake, StoreError, Submission, answer, body, decode};
use axum::http::header;
use axum::response::Response;

/// Answers one submission; every outcome is counted.
pub async fn handle(intake: &Intake, kind: Kind, submission: Submission) -> Response {
    match accept(intake, kind, submission).await {
        Ok(response) => response,
        Err(error) => answer::refuse(intake, kind, error),
    }
}

async fn accept(intake: &Intake, kind: Kind, Submission { head, body }: Submission) -> Result<Response, StoreError> {
    if kind == Kind::Beacon && head.method != axum::http::Method::GET {
        return Err(StoreError::MethodNotAllowed);
    }
    let identified = sender::identify(&intake.keys, kind, &head)?;

    let encoding = decode::Encoding::from_header(head.header(header::CONTENT_ENCODING))?;
    let limits = intake.config.limits;
    let client = head.client(intake.config.trust_forwarded_for);
    let mut charge = intake.budget.charge(client);
    let timeout_secs = intake.config.body_timeout.as_secs();
    let declared = body::declared_length(&head.headers);
    let body = body::read(body, limits.envelope_bytes, declared, head.body_deadline, timeout_secs, &mut charge).await?;
    if kind != Kind::Beacon && body.is_empty() {
        return Err(StoreError::EmptyBody);
    }
    let sender = match identified {
        Identified::Known(sender) => sender,
        Identified::InEnvelope { path_project } => {
            sender::from_envelope_header(&intake.keys, encoding, &body, path_project)?
        }
    };

    let decoded = decode::decode_charged(encoding, &body, limits.decoded(kind), &mut charge).await?;
    let understood = payload::understand_decoded(kind, &decoded, head.uri.path(), head.query(), limits)?;
    sender.check_envelope_dsn(understood.dsn.as_deref())?;

    let (mut fate, count) = decide::decide(intake, sender.project, &understood, client).await;
    if let Fate::Processed(_) = fate {
        let received = Received { body: &body, encoding };
        fate = Fate::Processed(persist::store(intake, &head, &sender, &understood, received, client).await?);
    }
    Ok(answer::accepted(kind, &understood, fate, count))
}
