//! What the report and `tmcs audit timeline` show, read from the store in
//! bounded batches: the subject asked for, the history of a set of audit
//! subjects, and per subscriber, party or certificate the facts an auditor
//! needs. Nothing here renders; nothing here reads a secret (the views copy
//! only the columns they show: never a PIN verifier, an activation hash, a
//! device key, a nonce or a verification code).

use serde_json::Value;

use super::ReportError;
use crate::audit::{Event, VerifyError, VerifyReport};
use crate::ims::{Currency, Money};
use crate::party;
use crate::states::{CertStatus, PartyKind, RequestStatus, SubscriberState};
use crate::store::audit_rows::{self, EventFilter};
use crate::store::certs::{self, CertRow};
use crate::store::parties::{self, PartyRow};
use crate::store::report_rows::{self, SignedRow};
use crate::store::subscribers::{self, SubscriberRow};
use crate::store::{DbConn, Store, StoreError};
use crate::subscriber;

/// Rows read per query.
pub(crate) const BATCH: i64 = 500;

/// One audited step, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub seq: i64,
    pub ts: String,
    pub action: String,
    pub actor: String,
    pub subject: Option<String>,
    /// The event's details, flattened to `key` → text, in key order.
    pub details: Vec<(String, String)>,
}

impl Step {
    fn from_event(e: Event) -> Step {
        let details = match e.details {
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, value_text(&v)))
                .collect(),
            Value::Null => Vec::new(),
            other => vec![("value".to_string(), value_text(&other))],
        };
        Step {
            seq: e.seq,
            ts: e.ts,
            action: e.action,
            actor: e.actor,
            subject: e.subject,
            details,
        }
    }

    /// The action without its family (`cert.revoked` → `revoked`).
    pub fn step_name(&self) -> &str {
        self.action
            .split_once('.')
            .map_or(self.action.as_str(), |(_, s)| s)
    }

    /// The details as one line: `key: value; key: value`.
    pub fn details_line(&self) -> String {
        self.details
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What `--subject` named.
#[derive(Debug, Clone)]
pub enum Subject {
    Subscriber(SubscriberInfo),
    Certificate(CertRow),
    Party(PartyInfo),
}

impl Subject {
    /// How the report's heading names it.
    pub fn describe(&self) -> String {
        match self {
            Subject::Subscriber(s) => format!("subscriber {} ({})", s.id, s.msisdn_masked),
            Subject::Certificate(c) => format!("certificate {}", c.serial),
            Subject::Party(p) => format!("party {}", p.party_id),
        }
    }

    /// The audit subjects whose events make its history: the subscriber or
    /// party and each of its certificates, or the one certificate.
    pub fn audit_subjects(&self, store: &Store) -> Result<Vec<String>, ReportError> {
        Ok(match self {
            Subject::Subscriber(s) => {
                let owner = subscriber::subject(&s.id);
                let mut v = vec![owner.clone()];
                v.extend(
                    store
                        .read(|c| certs::by_owner(c, &owner))?
                        .into_iter()
                        .map(|c| c.serial),
                );
                v
            }
            Subject::Certificate(c) => vec![c.serial.clone()],
            Subject::Party(p) => {
                let owner = party::subject(&p.party_id);
                let mut v = vec![owner.clone()];
                for c in store.read(|c| certs::by_owner(c, &owner))? {
                    if !v.contains(&c.serial) {
                        v.push(c.serial);
                    }
                }
                if let Some(s) = &p.cert_serial {
                    if !v.contains(s) {
                        v.push(s.clone());
                    }
                }
                v
            }
        })
    }
}

/// Finds what `text` names: a certificate serial (hex, colons allowed), an
/// MSISDN, a subscriber id, a party id, or `subscriber:<id>` /
/// `party:<id>` as the audit log writes them.
pub fn resolve(store: &Store, text: &str) -> Result<Subject, ReportError> {
    let text = text.trim();
    let unknown = || ReportError::UnknownSubject(text.to_string());
    if text.is_empty() {
        return Err(unknown());
    }
    store.read(|c| -> Result<Subject, ReportError> {
        if let Some(id) = text.strip_prefix("subscriber:") {
            return subscribers::by_id(c, id)?
                .map(|s| Subject::Subscriber(SubscriberInfo::from(s)))
                .ok_or_else(unknown);
        }
        if let Some(id) = text.strip_prefix("party:") {
            return parties::get(c, id)?
                .map(|p| Subject::Party(PartyInfo::from(p)))
                .ok_or_else(unknown);
        }
        if let Some(serial) = crate::pki::cert::normalize_serial(text) {
            if let Some(row) = certs::get(c, &serial)? {
                return Ok(Subject::Certificate(row));
            }
        }
        if let Some(s) = subscribers::by_msisdn(c, text)? {
            return Ok(Subject::Subscriber(s.into()));
        }
        if let Some(s) = subscribers::by_id(c, text)? {
            return Ok(Subject::Subscriber(s.into()));
        }
        if let Some(p) = parties::get(c, text)? {
            return Ok(Subject::Party(p.into()));
        }
        Err(unknown())
    })
}

/// Calls `f` with every event about one of `subjects`, in `seq` order,
/// reading in batches.
pub fn for_each_step(
    store: &Store,
    subjects: &[String],
    mut f: impl FnMut(Step) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let mut after = 0;
    loop {
        let rows = store.read(|c| report_rows::events_of(c, subjects, after, BATCH))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.seq;
        for r in rows {
            f(Step::from_event(Event::from_row(r)?))?;
        }
    }
}

/// Every event about one of `subjects`, in order (one subject's history:
/// its size is that of one subscriber's or certificate's life).
pub fn history(store: &Store, subjects: &[String]) -> Result<Vec<Step>, ReportError> {
    let mut out = Vec::new();
    for_each_step(store, subjects, |s| {
        out.push(s);
        Ok(())
    })?;
    Ok(out)
}

/// A subscriber as the report shows it.
#[derive(Debug, Clone)]
pub struct SubscriberInfo {
    pub id: String,
    /// Masked as in the audit log (`+491511****678`).
    pub msisdn_masked: String,
    /// Attacker-controlled text: shown escaped.
    pub display_name: String,
    pub kyc_ref: String,
    pub alias: Option<String>,
    pub state: SubscriberState,
    pub cert_serial: Option<String>,
    pub created_at: i64,
}

impl From<SubscriberRow> for SubscriberInfo {
    fn from(r: SubscriberRow) -> Self {
        SubscriberInfo {
            msisdn_masked: subscriber::mask_msisdn(&r.msisdn),
            id: r.id,
            display_name: r.display_name,
            kyc_ref: r.kyc_ref,
            alias: r.alias,
            state: r.state,
            cert_serial: r.cert_serial,
            created_at: r.created_at,
        }
    }
}

/// A party as the report shows it.
#[derive(Debug, Clone)]
pub struct PartyInfo {
    pub party_id: String,
    pub kind: PartyKind,
    pub status: CertStatus,
    pub fingerprint: String,
    pub cert_serial: Option<String>,
    pub issued_by_us: bool,
    pub created_at: i64,
}

impl From<PartyRow> for PartyInfo {
    fn from(r: PartyRow) -> Self {
        PartyInfo {
            party_id: r.party_id,
            kind: r.kind,
            status: r.status,
            fingerprint: r.fingerprint,
            cert_serial: r.cert_serial,
            issued_by_us: r.issued_by_us != 0,
            created_at: r.created_at,
        }
    }
}

/// One certificate and its life, from key generation to its end state.
#[derive(Debug, Clone)]
pub struct CertView {
    pub row: CertRow,
    pub steps: Vec<Step>,
}

pub fn cert_view(store: &Store, row: CertRow) -> Result<CertView, ReportError> {
    let steps = history(store, std::slice::from_ref(&row.serial))?;
    Ok(CertView { row, steps })
}

/// A subscriber or party, its own events and its certificates with
/// theirs. A subscriber's signatures are read apart
/// ([`for_each_signature`]), as there may be many.
#[derive(Debug, Clone)]
pub struct OwnerView<T> {
    pub info: T,
    pub steps: Vec<Step>,
    pub certs: Vec<CertView>,
}

/// A subscriber, its events (registration, activation, PINs …) and certificates.
pub type SubscriberView = OwnerView<SubscriberInfo>;
/// A party, its events and the certificate tmcs issued it, if any.
pub type PartyView = OwnerView<PartyInfo>;

/// The view of `info`, whose audit subject (and certificates' owner) is `owner`.
fn owner_view<T>(store: &Store, info: T, owner: String) -> Result<OwnerView<T>, ReportError> {
    let steps = history(store, std::slice::from_ref(&owner))?;
    let certs = store
        .read(|c| certs::by_owner(c, &owner))?
        .into_iter()
        .map(|row| cert_view(store, row))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OwnerView { info, steps, certs })
}

pub fn subscriber_view(store: &Store, info: SubscriberInfo) -> Result<SubscriberView, ReportError> {
    let owner = subscriber::subject(&info.id);
    owner_view(store, info, owner)
}

pub fn party_view(store: &Store, info: PartyInfo) -> Result<PartyView, ReportError> {
    let owner = party::subject(&info.party_id);
    owner_view(store, info, owner)
}

/// One signature a subscriber key made.
#[derive(Debug, Clone)]
pub struct Signature {
    pub request_id: String,
    pub signed_at: Option<i64>,
    /// `EUR25.00`, or the stored minor units when the currency is unknown.
    pub amount: String,
    pub payee: String,
    pub fsp: String,
    pub tier: String,
    pub status: RequestStatus,
    /// The certificate whose key signed (from the `request.signed` event).
    pub certificate: Option<String>,
    pub signature_sha256: Option<String>,
}

fn amount_text(currency: &str, minor: i64) -> String {
    Currency::from_code(currency)
        .and_then(|c| Money::new(c, u64::try_from(minor).ok()?).ok())
        .map_or_else(
            || format!("{minor} minor units of {currency}"),
            |m| m.to_string(),
        )
}

fn signature(c: &mut DbConn, r: SignedRow) -> Result<Signature, ReportError> {
    let ev = audit_rows::list(
        c,
        &EventFilter {
            subject: Some(crate::signing::subject(&r.id)),
            action: Some("request.signed".into()),
            after_seq: 0,
            limit: 1,
        },
    )?
    .pop()
    .map(Event::from_row)
    .transpose()?;
    let detail = |k: &str| {
        ev.as_ref()
            .and_then(|e| e.details.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Signature {
        certificate: detail("certificate"),
        signature_sha256: detail("signature_sha256"),
        amount: amount_text(&r.currency, r.amount_minor),
        request_id: r.id,
        signed_at: r.signed_at,
        payee: r.merchant_party,
        fsp: r.fsp_party,
        tier: r.tier,
        status: r.status,
    })
}

/// Calls `f` with batches of the signatures subscriber `id`'s keys made,
/// in order of signing; `only_cert` keeps those of one certificate.
pub fn for_each_signature(
    store: &Store,
    id: &str,
    only_cert: Option<&str>,
    mut f: impl FnMut(Vec<Signature>) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let mut after: Option<(i64, String)> = None;
    loop {
        let batch = store.read(|c| -> Result<Vec<Signature>, ReportError> {
            let rows = report_rows::signed_after(
                c,
                id,
                after.as_ref().map(|(t, i)| (*t, i.as_str())),
                BATCH,
            )?;
            if let Some(last) = rows.last() {
                after = Some((last.signed_at.unwrap_or(0), last.id.clone()));
            }
            rows.into_iter().map(|r| signature(c, r)).collect()
        })?;
        if batch.is_empty() {
            return Ok(());
        }
        let shown: Vec<Signature> = batch
            .into_iter()
            .filter(|s| only_cert.is_none() || s.certificate.as_deref() == only_cert)
            .collect();
        if !shown.is_empty() {
            f(shown)?;
        }
    }
}

/// Calls `f` with every row of a keyset walk: `page(conn, after, BATCH)`
/// reads the rows after key `after` in key order, `key` names a row's key.
fn walk<R, T>(
    store: &Store,
    page: impl Fn(&mut DbConn, &str, i64) -> Result<Vec<R>, StoreError>,
    key: impl Fn(&R) -> String,
    mut f: impl FnMut(T) -> Result<(), ReportError>,
) -> Result<(), ReportError>
where
    T: From<R>,
{
    let mut after = String::new();
    loop {
        let rows = store.read(|c| page(c, &after, BATCH))?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = key(last);
        for r in rows {
            f(r.into())?;
        }
    }
}

/// Calls `f` with every subscriber, in id order, reading in batches.
pub fn for_each_subscriber(
    store: &Store,
    f: impl FnMut(SubscriberInfo) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    walk(store, report_rows::subscribers_after, |r| r.id.clone(), f)
}

/// Calls `f` with every party, in id order, reading in batches.
pub fn for_each_party(
    store: &Store,
    f: impl FnMut(PartyInfo) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    walk(store, report_rows::parties_after, |r| r.party_id.clone(), f)
}

/// Calls `f` with every certificate of the service itself (CAs, server,
/// audit, mTLS clients), in serial order, reading in batches.
pub fn for_each_service_cert(
    store: &Store,
    f: impl FnMut(CertRow) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    walk(
        store,
        report_rows::service_certs_after,
        |r| r.serial.clone(),
        f,
    )
}

/// The report's summary counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub subscribers: i64,
    pub certificates: i64,
    pub parties: i64,
    pub signatures: i64,
}

pub fn counts(store: &Store) -> Result<Counts, StoreError> {
    let [subscribers, certificates, parties, signatures] = store.read(report_rows::counts)?;
    Ok(Counts {
        subscribers,
        certificates,
        parties,
        signatures,
    })
}

/// One sentence of the verification status, and whether it is good news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

/// The verification status in words an auditor can quote: one finding per
/// check (`tmcs audit verify`'s result), the failure first when there is
/// one. A check added to [`VerifyReport`] adds its sentence here.
pub fn findings(result: &Result<VerifyReport, VerifyError>, audit_cert: &str) -> Vec<Finding> {
    let good = |text: String| Finding { ok: true, text };
    let bad = |text: String| Finding { ok: false, text };
    let key = format!(
        "the audit certificate stored by this tmcs (SHA-256 fingerprint {audit_cert}); \
         compare it with the /pki/audit.pem you hold"
    );
    match result {
        Ok(r) => vec![
            good(format!(
                "The audit log is intact: {} events, seq 1 to {}, each linked to the one \
                 before it and matching its own hash.",
                r.events, r.events
            )),
            good(match r.checkpoints {
                0 => "No signed checkpoint is stored yet (`tmcs audit checkpoint` signs one).".into(),
                1 => format!("1 signed checkpoint verifies with {key}, and matches the event it covers."),
                n => format!(
                    "{n} signed checkpoints verify with {key}, and each matches the event it covers."
                ),
            }),
            good(match r.tree_heads {
                0 => "No signed tree head is stored yet (`tmcs audit checkpoint` signs one).".into(),
                1 => "1 signed tree head verifies with the same key, and its Merkle root \
                      matches the tree recomputed from the log."
                    .into(),
                n => format!(
                    "{n} signed tree heads verify with the same key, and each Merkle root \
                     matches the tree recomputed from the log."
                ),
            }),
            good(format!("The head of the log is the hash {}.", r.head_hash)),
        ],
        Err(VerifyError::Broken(f)) => vec![
            bad(format!(
                "The audit log FAILED verification at seq {}: {}.",
                f.seq, f.reason
            )),
            bad(format!(
                "Nothing in the log from seq {} on can be relied on until this is explained \
                 (checkpoints are checked with {key}).",
                f.seq
            )),
        ],
        Err(e) => vec![bad(format!(
            "The audit log could not be verified: {}.",
            crate::cli::error_chain(e)
        ))],
    }
}
