//! The auditor's report (CONTRACT §13) and `tmcs audit timeline`.
//!
//! [`write_report`] writes `DIR/index.html`: a static, self-contained page
//! (no script, no external asset) with the verification status of the log
//! at the top in quotable sentences, then each subscriber with its
//! certificates' timelines (table and inline SVG) and the signatures its
//! keys made, the parties, and the service's own certificates. With a
//! subject it shows only that subscriber, certificate or party.
//!
//! [`gather`] reads (in batches, see its functions), [`html`] and [`text`]
//! render. The page is written as it is read: memory holds one subscriber
//! (its events and certificates) or one batch of signatures or parties at a
//! time, never a whole table. The verification before it streams the log
//! as `tmcs audit verify` does.

pub mod gather;
pub mod html;
pub mod text;

use std::io::Write;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Public};
use time::OffsetDateTime;

use crate::audit::{verify_store, AuditError};
use crate::clock::rfc3339_seconds;
use crate::store::{Store, StoreError};
use gather::{Counts, Finding, Step, Subject};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no subscriber, certificate or party is known as {0:?}")]
    UnknownSubject(String),
}

/// The audit certificate the checkpoints are checked with.
pub struct AuditKey {
    pub key: PKey<Public>,
    /// SHA-256 of its DER, lowercase hex.
    pub fingerprint: String,
}

impl AuditKey {
    pub fn from_pem(pem: &[u8]) -> Result<AuditKey, openssl::error::ErrorStack> {
        let x = openssl::x509::X509::from_pem(pem)?;
        Ok(AuditKey {
            key: x.public_key()?,
            fingerprint: hex::encode(openssl::sha::sha256(&x.to_der()?)),
        })
    }
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub index: PathBuf,
    /// The verification status, as the page states it.
    pub findings: Vec<Finding>,
    pub subscribers: usize,
    pub certificates: usize,
    pub parties: usize,
    pub signatures: usize,
}

impl Written {
    /// Every check passed.
    pub fn verified(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

/// Writes `out/index.html` (created whole, then renamed into place): the
/// whole store, or only `subject` (see [`gather::resolve`]). An unknown
/// subject fails before anything is written. A log that fails verification
/// still gets its report, which says so at the top.
pub fn write_report(
    store: &Store,
    audit: &AuditKey,
    out: &Path,
    subject: Option<&str>,
    now: OffsetDateTime,
) -> Result<Written, ReportError> {
    let subject = subject.map(|s| gather::resolve(store, s)).transpose()?;
    let verified = verify_store(store, &audit.key, &[]);
    let findings = gather::findings(&verified, &audit.fingerprint);
    let counts: Counts = gather::counts(store)?;
    std::fs::create_dir_all(out)?;
    let index = out.join("index.html");
    let tmp = out.join("index.html.partial");
    let mut w = Page {
        out: std::io::BufWriter::new(std::fs::File::create(&tmp)?),
        written: Written {
            index: index.clone(),
            findings: findings.clone(),
            subscribers: 0,
            certificates: 0,
            parties: 0,
            signatures: 0,
        },
    };
    let scope = subject
        .as_ref()
        .map_or_else(|| "the whole audit log".to_string(), Subject::describe);
    w.put(&html::head(
        &scope,
        &rfc3339_seconds(now),
        &findings,
        &counts,
    ))?;
    match &subject {
        None => w.everything(store)?,
        Some(s) => w.one(store, s)?,
    }
    w.put(&html::tail(
        "Made by tmcs audit report. Times are UTC. MSISDNs are masked as in the audit log; \
         no PIN, PIN block, activation code or key is ever stored in the log or shown here.",
    ))?;
    let Page { out, written } = w;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &index)?;
    Ok(written)
}

/// The page being written, and what went into it.
struct Page {
    out: std::io::BufWriter<std::fs::File>,
    written: Written,
}

impl Page {
    fn put(&mut self, m: &maud::Markup) -> Result<(), ReportError> {
        self.out.write_all(m.0.as_bytes())?;
        Ok(())
    }

    fn raw(&mut self, s: &str) -> Result<(), ReportError> {
        self.out.write_all(s.as_bytes())?;
        Ok(())
    }

    fn everything(&mut self, store: &Store) -> Result<(), ReportError> {
        self.put(&html::section_open(
            "subscribers",
            "Subscribers, their certificates and signatures",
            "Each subscriber's history, each of its certificates from key generation to its \
             end state, and the signatures its keys made.",
        ))?;
        gather::for_each_subscriber(store, |s| self.subscriber(store, s, None))?;
        if self.written.subscribers == 0 {
            self.put(&html::none("No subscribers."))?;
        }
        self.raw(html::SECTION_CLOSE)?;

        self.put(&html::section_open(
            "parties",
            "Parties",
            "Merchants, FSPs, banks and gateways known by a certificate, then each party's history.",
        ))?;
        let mut opened = false;
        gather::for_each_party(store, |p| {
            if !opened {
                self.put(&html::parties_open())?;
                opened = true;
            }
            self.put(&html::party_row(&p))
        })?;
        if opened {
            self.raw(html::TABLE_CLOSE)?;
            gather::for_each_party(store, |p| self.party(store, p))?;
        } else {
            self.put(&html::none("No parties."))?;
        }
        self.raw(html::SECTION_CLOSE)?;

        self.put(&html::section_open(
            "service",
            "Service certificates",
            "The certificates of tmcs itself: its CAs, servers, audit key and mTLS clients.",
        ))?;
        gather::for_each_service_cert(store, |row| {
            let v = gather::cert_view(store, row)?;
            self.written.certificates += 1;
            self.put(&html::cert(&v, 3))
        })?;
        self.raw(html::SECTION_CLOSE)
    }

    fn one(&mut self, store: &Store, subject: &Subject) -> Result<(), ReportError> {
        match subject {
            Subject::Subscriber(s) => {
                self.put(&html::section_open(
                    "subscribers",
                    "Subscriber",
                    "The subscriber's history, its certificates and the signatures its keys made.",
                ))?;
                self.subscriber(store, s.clone(), None)?;
                self.raw(html::SECTION_CLOSE)
            }
            Subject::Certificate(row) => {
                let v = gather::cert_view(store, row.clone())?;
                self.written.certificates += 1;
                self.put(&html::section_open(
                    "subscribers",
                    "Certificate",
                    "One certificate from key generation to its end state, and the signatures \
                     its key made.",
                ))?;
                self.put(&html::cert(&v, 3))?;
                let owner = row
                    .owner
                    .as_deref()
                    .and_then(|o| o.strip_prefix("subscriber:"));
                if let Some(id) = owner {
                    self.signatures(store, id, Some(&row.serial))?;
                }
                self.raw(html::SECTION_CLOSE)
            }
            Subject::Party(p) => {
                self.put(&html::section_open(
                    "parties",
                    "Party",
                    "One party and its history.",
                ))?;
                self.put(&html::parties_open())?;
                self.put(&html::party_row(p))?;
                self.raw(html::TABLE_CLOSE)?;
                self.party(store, p.clone())?;
                self.raw(html::SECTION_CLOSE)
            }
        }
    }

    fn subscriber(
        &mut self,
        store: &Store,
        s: gather::SubscriberInfo,
        only_cert: Option<&str>,
    ) -> Result<(), ReportError> {
        let id = s.id.clone();
        let v = gather::subscriber_view(store, s)?;
        self.written.subscribers += 1;
        self.written.certificates += v.certs.len();
        self.put(&html::subscriber_open(&v))?;
        self.signatures(store, &id, only_cert)?;
        self.raw(html::ARTICLE_CLOSE)
    }

    fn signatures(
        &mut self,
        store: &Store,
        id: &str,
        only_cert: Option<&str>,
    ) -> Result<(), ReportError> {
        let mut opened = false;
        gather::for_each_signature(store, id, only_cert, |batch| {
            if !opened {
                self.put(&html::signatures_open(id))?;
                opened = true;
            }
            self.written.signatures += batch.len();
            self.put(&html::signature_rows(&batch))
        })?;
        if opened {
            self.raw(html::TABLE_CLOSE)
        } else {
            self.put(&html::none(
                "No signatures were made with this subscriber's keys.",
            ))
        }
    }

    fn party(&mut self, store: &Store, p: gather::PartyInfo) -> Result<(), ReportError> {
        let v = gather::party_view(store, p)?;
        self.written.parties += 1;
        self.written.certificates += v.certs.len();
        self.put(&html::party(&v))
    }
}

/// `tmcs audit timeline`: what `subject` names and its history in order
/// (a subscriber's or party's own events merged with its certificates').
pub fn timeline(store: &Store, subject: &str) -> Result<(Subject, Vec<Step>), ReportError> {
    let s = gather::resolve(store, subject)?;
    let subjects = s.audit_subjects(store)?;
    let steps = gather::history(store, &subjects)?;
    Ok((s, steps))
}
