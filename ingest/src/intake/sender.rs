//! Who sends: the credentials are found once and the project resolved once
//! ([`crate::keys`]).
//!
//! Credentials come from the headers or the query, before any body byte is
//! read ([`identify`]); only an envelope may carry them inside instead, in
//! its header's `dsn`, found by decoding its first line and no more
//! ([`from_envelope_header`]). Either way the DSN is parsed once.

use cyclops_common::ids::ProjectId;

use super::auth::{self, Dsn, SentryAuth};
use super::decode::{self, Encoding};
use super::{Head, Kind, StoreError, envelope};
use crate::keys::KeyStore;

/// Longest envelope header line read to find a `dsn` (Relay's own limit on
/// an envelope header is far below this).
const ENVELOPE_HEADER_MAX_BYTES: usize = 64 << 10;

/// An authenticated sender and the project it sends to.
#[derive(Debug)]
pub struct Sender {
    pub auth: SentryAuth,
    pub project: ProjectId,
    source: Source,
}

/// Where a sender's credentials were found.
#[derive(Debug)]
enum Source {
    /// The headers or the query.
    Request,
    /// The envelope header's `dsn`, which named this project id (if any).
    EnvelopeDsn { named: Option<u64> },
}

/// What the request head says of its sender.
#[derive(Debug)]
pub enum Identified {
    Known(Sender),
    /// No credentials outside the body: the envelope header must name them.
    InEnvelope {
        path_project: Option<ProjectId>,
    },
}

/// Finds and resolves the credentials of `head`, or says they are in the
/// envelope; strangers are refused here, before their body is read.
pub fn identify(keys: &KeyStore, kind: Kind, head: &Head) -> Result<Identified, StoreError> {
    let path_project = match &head.project {
        Some(segment) => Some(ProjectId::parse_canonical(segment).ok_or(StoreError::BadProject)?),
        None => None,
    };
    match auth::from_request(&head.headers, head.query())? {
        Some(auth) => {
            let project = resolve(keys, &auth, path_project)?;
            Ok(Identified::Known(Sender { auth, project, source: Source::Request }))
        }
        None if kind == Kind::Envelope => Ok(Identified::InEnvelope { path_project }),
        None => Err(StoreError::MissingAuth),
    }
}

/// The sender an envelope's header line names. A body that names none is a
/// stranger's: 401, whatever else is wrong with it.
pub fn from_envelope_header(
    keys: &KeyStore,
    encoding: Encoding,
    body: &[u8],
    path_project: Option<ProjectId>,
) -> Result<Sender, StoreError> {
    let line = decode::first_line(encoding, body, ENVELOPE_HEADER_MAX_BYTES);
    let dsn = line.ok().and_then(|l| envelope::header_dsn(&l)).ok_or(StoreError::MissingAuth)?;
    let dsn = Dsn::parse(&dsn).ok_or(StoreError::BadEnvelopeAuth)?;
    let named = dsn.project;
    let auth = dsn.auth()?;
    let project = resolve(keys, &auth, path_project)?;
    Ok(Sender { auth, project, source: Source::EnvelopeDsn { named } })
}

fn resolve(keys: &KeyStore, auth: &SentryAuth, path_project: Option<ProjectId>) -> Result<ProjectId, StoreError> {
    keys.resolve(&auth.public_key, auth.secret_key.as_deref(), path_project).map_err(StoreError::Rejected)
}

impl Sender {
    /// Refuses an envelope whose header `dsn` names another key or another
    /// project than its sender, as Relay does (an invalid envelope), rather
    /// than storing it for Sentry to refuse later. Checked once the payload
    /// is understood, so that a payload's own fault is what is answered.
    pub fn check_envelope_dsn(&self, dsn: Option<&str>) -> Result<(), StoreError> {
        let named = match self.source {
            // The sender was read from this very `dsn`, parsed once.
            Source::EnvelopeDsn { named } => named,
            Source::Request => {
                let Some(dsn) = dsn.and_then(Dsn::parse) else { return Ok(()) };
                if !dsn.public_key.is_empty() && dsn.public_key != self.auth.public_key {
                    return Err(StoreError::InvalidEnvelope("header mismatch: public key".into()));
                }
                dsn.project
            }
        };
        if named.is_some_and(|named| named != self.project.get()) {
            return Err(StoreError::InvalidEnvelope("header mismatch: project id".into()));
        }
        Ok(())
    }
}
