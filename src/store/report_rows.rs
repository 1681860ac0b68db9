//! The reads of the auditor's report (`crate::audit::report`): keyset pages
//! over subscribers, parties, certificates and signed requests, and the
//! events of a set of subjects, so that a report of any size is read a
//! bounded batch at a time. Only storage; what is shown is decided there.

use diesel::prelude::*;

use super::audit_rows::EventRow;
use super::certs::CertRow;
use super::parties::PartyRow;
use super::schema::{audit_events, certificates, parties, requests, subscribers};
use super::subscribers::SubscriberRow;
use super::{DbConn, DbResult};
use crate::states::RequestStatus;

/// Up to `limit` subscribers in id order after `after`.
pub fn subscribers_after(
    conn: &mut DbConn,
    after: &str,
    limit: i64,
) -> DbResult<Vec<SubscriberRow>> {
    Ok(subscribers::table
        .filter(subscribers::id.gt(after))
        .order(subscribers::id.asc())
        .limit(limit)
        .select(SubscriberRow::as_select())
        .load(conn)?)
}

/// Up to `limit` parties in id order after `after`.
pub fn parties_after(conn: &mut DbConn, after: &str, limit: i64) -> DbResult<Vec<PartyRow>> {
    Ok(parties::table
        .filter(parties::party_id.gt(after))
        .order(parties::party_id.asc())
        .limit(limit)
        .select(PartyRow::as_select())
        .load(conn)?)
}

/// Up to `limit` certificates in serial order after `after` that belong to
/// neither a subscriber nor a party: the CAs', the server's and the mTLS
/// clients' own.
pub fn service_certs_after(conn: &mut DbConn, after: &str, limit: i64) -> DbResult<Vec<CertRow>> {
    Ok(certificates::table
        .filter(certificates::serial.gt(after))
        .filter(
            certificates::owner.is_null().or(certificates::owner
                .not_like("subscriber:%")
                .and(certificates::owner.not_like("party:%"))),
        )
        .order(certificates::serial.asc())
        .limit(limit)
        .select(CertRow::as_select())
        .load(conn)?)
}

/// The query of [`events_of`] (a macro, so the plan test can show it to
/// SQLite's planner).
macro_rules! events_of_query {
    ($subjects:expr, $after:expr, $limit:expr) => {
        audit_events::table
            .filter(audit_events::subject.eq_any($subjects))
            .filter(audit_events::seq.gt($after))
            .order(audit_events::seq.asc())
            .limit($limit)
            .select(EventRow::as_select())
    };
}

/// Up to `limit` events whose subject is one of `subjects`, with
/// `seq > after`, in `seq` order: ranges of the `subject` index, never a
/// walk of the log.
pub fn events_of(
    conn: &mut DbConn,
    subjects: &[String],
    after: i64,
    limit: i64,
) -> DbResult<Vec<EventRow>> {
    Ok(events_of_query!(subjects, after, limit).load(conn)?)
}

/// The columns of a signed request that the report shows (never the iMS,
/// the nonce or the verification code).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = requests)]
pub struct SignedRow {
    pub id: String,
    pub fsp_party: String,
    pub merchant_party: String,
    pub tier: String,
    pub currency: String,
    pub amount_minor: i64,
    #[diesel(deserialize_as = String)]
    pub status: RequestStatus,
    pub signed_at: Option<i64>,
}

/// Up to `limit` requests of `subscriber_id` that were signed, in order of
/// their signing time then id, after the request `after` (its signing time
/// and id).
pub fn signed_after(
    conn: &mut DbConn,
    subscriber_id: &str,
    after: Option<(i64, &str)>,
    limit: i64,
) -> DbResult<Vec<SignedRow>> {
    let mut q = requests::table
        .filter(requests::subscriber_id.eq(subscriber_id))
        .filter(requests::signed_at.is_not_null())
        .order((requests::signed_at.asc(), requests::id.asc()))
        .limit(limit)
        .select(SignedRow::as_select())
        .into_boxed();
    if let Some((at, id)) = after {
        q = q.filter(
            requests::signed_at.gt(at).or(requests::signed_at
                .eq(at)
                .and(requests::id.gt(id.to_string()))),
        );
    }
    Ok(q.load(conn)?)
}

/// Row counts for the report's summary: subscribers, certificates,
/// parties, signed requests.
pub fn counts(conn: &mut DbConn) -> DbResult<[i64; 4]> {
    Ok([
        subscribers::table.count().get_result(conn)?,
        certificates::table.count().get_result(conn)?,
        parties::table.count().get_result(conn)?,
        requests::table
            .filter(requests::signed_at.is_not_null())
            .count()
            .get_result(conn)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::{CertStatus, SubscriberState};
    use crate::store::plan::{explain, sqlite_store};
    use crate::store::requests::RequestRow;
    use crate::store::{audit_rows, certs, subscribers};

    fn subscriber(id: &str) -> SubscriberRow {
        SubscriberRow {
            id: id.into(),
            msisdn: format!("+49151{id}"),
            pseudonym: id.into(),
            display_name: id.into(),
            kyc_ref: "K".into(),
            state: SubscriberState::Active,
            activation_hash: None,
            activation_expires_at: None,
            attempts: 0,
            pin_salt: None,
            pin_verifier: None,
            device_spki: None,
            key_id: None,
            cert_serial: None,
            created_at: 0,
            updated_at: 0,
            alias: None,
        }
    }

    fn cert(serial: &str, owner: Option<&str>) -> CertRow {
        CertRow {
            serial: serial.into(),
            issuer: "issuing".into(),
            purpose: "p".into(),
            owner: owner.map(str::to_string),
            key_id: None,
            pem: String::new(),
            fingerprint: format!("fp-{serial}"),
            not_before: 0,
            not_after: 1,
            status: CertStatus::Active,
            revocation_reason: None,
            revoked_at: None,
            superseded_by: None,
            created_at: 0,
        }
    }

    fn request(id: &str, subscriber: &str, signed_at: Option<i64>) -> RequestRow {
        RequestRow {
            id: id.into(),
            subscriber_id: subscriber.into(),
            fsp_party: "f@fsp.x".into(),
            merchant_party: "m@merchant.x".into(),
            replay_key: id.into(),
            c_sha256: String::new(),
            dtbs_sha256: String::new(),
            nonce: String::new(),
            verification_code: String::new(),
            tier: "small".into(),
            currency: "EUR".into(),
            amount_minor: 2500,
            limit_day: String::new(),
            ims_xml: String::new(),
            signed_xml: None,
            signature_b64: None,
            status: RequestStatus::Signed,
            error_code: None,
            created_at: 0,
            expires_at: 0,
            updated_at: 0,
            signed_at,
            final_at: None,
            instrument_id: None,
        }
    }

    /// A subscriber's signed requests in order of signing time then id,
    /// page by page, also across requests signed in the same second;
    /// unsigned requests and other subscribers' are left out.
    #[test]
    fn signed_requests_page_through_equal_times() {
        let (_dir, store) = sqlite_store();
        let rows = [
            request("r4", "s1", Some(20)),
            request("r2", "s1", Some(10)),
            request("r3", "s1", Some(10)),
            request("r1", "s1", Some(10)),
            request("r5", "s1", None),
            request("r6", "s2", Some(5)),
        ];
        store
            .write(|c| -> DbResult<()> {
                for r in &rows {
                    diesel::insert_into(requests::table)
                        .values(r.clone())
                        .execute(c)?;
                }
                Ok(())
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut after: Option<(i64, String)> = None;
        loop {
            let page = store
                .read(|c| signed_after(c, "s1", after.as_ref().map(|(t, i)| (*t, i.as_str())), 2))
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.signed_at.unwrap(), last.id.clone()));
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, ["r1", "r2", "r3", "r4"]);
        assert_eq!(store.read(counts).unwrap(), [0, 0, 0, 5]);
    }

    /// Pages of 2 walk every row once, in key order.
    #[test]
    fn keyset_pages_cover_every_row_once() {
        let (_dir, store) = sqlite_store();
        store
            .write(|c| -> DbResult<()> {
                for id in ["s3", "s1", "s5", "s2", "s4"] {
                    subscribers::insert(c, &subscriber(id))?;
                }
                for (serial, owner) in [
                    ("0a", None),
                    ("0b", Some("subscriber:s1")),
                    ("0c", Some("operator")),
                    ("0d", Some("party:m@merchant.x")),
                    ("0e", None),
                ] {
                    certs::insert(c, &cert(serial, owner))?;
                }
                Ok(())
            })
            .unwrap();
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.read(|c| subscribers_after(c, &after, 2)).unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 2);
            after = last.id.clone();
            seen.extend(page.into_iter().map(|s| s.id));
        }
        assert_eq!(seen, ["s1", "s2", "s3", "s4", "s5"]);
        // The service's own certificates: neither a subscriber's nor a party's.
        let first = store.read(|c| service_certs_after(c, "", 2)).unwrap();
        let rest = store.read(|c| service_certs_after(c, "0c", 2)).unwrap();
        let serials: Vec<String> = first.into_iter().chain(rest).map(|c| c.serial).collect();
        assert_eq!(serials, ["0a", "0c", "0e"]);
    }

    /// The events of several subjects, merged in `seq` order, page by page.
    #[test]
    fn events_of_merges_subjects_in_order() {
        let (_dir, store) = sqlite_store();
        store
            .write(|c| -> DbResult<()> {
                for (seq, subject) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "c"), (6, "a")] {
                    audit_rows::insert(
                        c,
                        &EventRow {
                            seq,
                            ts: String::new(),
                            actor: "system".into(),
                            action: "t".into(),
                            subject: Some(subject.into()),
                            details: "{}".into(),
                            prev_hash: String::new(),
                            hash: String::new(),
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let subjects = ["a".to_string(), "c".to_string()];
        let first = store.read(|c| events_of(c, &subjects, 0, 3)).unwrap();
        let rest = store.read(|c| events_of(c, &subjects, 4, 3)).unwrap();
        let seqs: Vec<i64> = first.iter().chain(rest.iter()).map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3, 4, 5, 6]);
    }

    /// A subject's events are read through the `subject` index, whatever
    /// the size of the log.
    #[test]
    fn events_of_reads_the_subject_index() {
        let (_dir, store) = sqlite_store();
        let subjects = vec!["a".to_string(), "b".to_string()];
        let plan = explain(&store, &events_of_query!(&subjects, 0i64, 10i64));
        assert!(
            plan.iter()
                .any(|s| s.starts_with("SEARCH audit_events USING INDEX audit_events_subject")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|s| s.starts_with("SCAN audit_events")),
            "{plan:?}"
        );
    }
}
