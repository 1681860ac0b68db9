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

/// Up to `limit` events whose subject is one of `subjects`, with
/// `seq > after`, in `seq` order (one index range per subject).
pub fn events_of(
    conn: &mut DbConn,
    subjects: &[String],
    after: i64,
    limit: i64,
) -> DbResult<Vec<EventRow>> {
    Ok(audit_events::table
        .filter(audit_events::subject.eq_any(subjects))
        .filter(audit_events::seq.gt(after))
        .order(audit_events::seq.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)?)
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
