//! The FSP's own report of what its bank did (mode `fsp`), and the
//! operator's view of the outbox and retry (CONTRACT §11).

use serde::{Deserialize, Serialize};

use super::outbox::{end_request, DeliveryView};
use super::Mode;
use crate::app::Services;
use crate::audit::{self, Actor, AuditEvent, NewEvent};
use crate::error::{reject, DomainResult, Problem};
use crate::signing::subject;
use crate::signing::views::{fsp_view, FspView};
use crate::states::{DeliveryStatus, RequestStatus};
use crate::store::{deliveries, requests};

/// `POST /v1/fsp/requests/{id}/outcome`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeReport {
    pub status: RequestStatus,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The longest reason kept (ISO 20022 reason codes are 4 letters; an FSP's
/// own text is allowed up to this).
const MAX_REASON: usize = 140;

fn checked_reason(r: Option<&str>) -> DomainResult<Option<String>> {
    match r {
        None => Ok(None),
        Some(r) if !r.is_empty() && r.len() <= MAX_REASON && r.chars().all(|c| !c.is_control()) => {
            Ok(Some(r.to_string()))
        }
        Some(_) => Err(reject(
            Problem::RequestInvalid,
            format!("reason: 1-{MAX_REASON} characters without control characters"),
        )),
    }
}

/// The FSP that submitted reports `settled` or `rolled_back` for a
/// `relayed` request. The same outcome again answers the request unchanged;
/// another, or any report in mode `fsp+bank`, is `request.conflict`.
pub fn report(
    svc: &Services,
    fsp_party: &str,
    actor: &Actor,
    id: &str,
    body: OutcomeReport,
) -> DomainResult<FspView> {
    let status = body.status;
    if !matches!(status, RequestStatus::Settled | RequestStatus::RolledBack) {
        return Err(reject(
            Problem::RequestInvalid,
            "status: \"settled\" or \"rolled_back\"",
        ));
    }
    let reason = match status {
        RequestStatus::RolledBack => {
            Some(checked_reason(body.reason.as_deref())?.unwrap_or_else(|| "unspecified".into()))
        }
        _ => {
            checked_reason(body.reason.as_deref())?;
            None
        }
    };
    let row = svc
        .store
        .read(|c| requests::get(c, id))?
        .filter(|r| r.fsp_party == fsp_party)
        .ok_or_else(|| reject(Problem::RequestNotFound, "no such request for this FSP"))?;
    if svc.relay.settings.mode == Mode::FspBank {
        return Err(reject(
            Problem::RequestConflict,
            "relay.mode is fsp+bank: the bank's answer decides the outcome",
        ));
    }
    let now = svc.clock.now();
    let made = svc.store.write(|c| -> DomainResult<bool> {
        let Some(cur) = requests::get(c, id)? else {
            return Ok(false);
        };
        if cur.status != RequestStatus::Relayed {
            return Ok(false);
        }
        let event = match status {
            RequestStatus::RolledBack => AuditEvent::RequestRolledBack {
                by: "fsp",
                reason: reason.clone().unwrap_or_default(),
            },
            _ => AuditEvent::RequestSettled {
                by: "fsp",
                bank_status: None,
            },
        };
        end_request(
            c,
            &svc.relay,
            actor,
            id,
            status,
            reason.as_deref(),
            event,
            now,
        )
    })?;
    if made {
        svc.relay.wake();
        return fsp_view(svc, fsp_party, id);
    }
    let view = fsp_view(svc, fsp_party, id)?;
    if view.status == status {
        // The same outcome again: unchanged.
        return Ok(view);
    }
    Err(reject(
        Problem::RequestConflict,
        match row.status {
            RequestStatus::Relayed => format!("the request is already {}", view.status),
            _ => format!(
                "the request is {}; an outcome is taken only while it is relayed",
                view.status
            ),
        },
    ))
}

/// `GET /v1/admin/relay`.
#[derive(Debug, Serialize)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

/// The newest `limit` deliveries, of one public status (`pending` includes
/// those in flight) or all.
pub fn list(
    svc: &Services,
    status: Option<DeliveryStatus>,
    limit: i64,
) -> DomainResult<DeliveryList> {
    let statuses: &[DeliveryStatus] = match status {
        None => &[],
        Some(DeliveryStatus::Pending | DeliveryStatus::Delivering) => {
            &[DeliveryStatus::Pending, DeliveryStatus::Delivering]
        }
        Some(DeliveryStatus::Delivered) => &[DeliveryStatus::Delivered],
        Some(DeliveryStatus::Failed) => &[DeliveryStatus::Failed],
    };
    let rows = svc.store.read(|c| deliveries::list(c, statuses, limit))?;
    Ok(DeliveryList {
        deliveries: rows.iter().map(DeliveryView::of).collect(),
    })
}

/// `POST /v1/admin/relay/{delivery_id}/retry`: a failed delivery back in
/// the queue, due now, with its attempts counted afresh.
pub fn retry(svc: &Services, actor: &Actor, delivery_id: &str) -> DomainResult<DeliveryView> {
    let now = svc.clock.now();
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let view = svc.store.write(|c| -> DomainResult<DeliveryView> {
        let d = deliveries::get(c, delivery_id)?
            .ok_or_else(|| reject(Problem::DeliveryNotFound, "no such delivery"))?;
        if !deliveries::requeue_failed(c, delivery_id, now_ms)? {
            return Err(reject(
                Problem::DeliveryNotFailed,
                format!("the delivery is {}", d.status.public()),
            ));
        }
        audit::append(
            c,
            now,
            NewEvent::of(
                actor,
                subject(&d.request_id),
                AuditEvent::RelayRequeued {
                    delivery: d.id.clone(),
                    event: d.event,
                    target: d.target.clone(),
                    requeued_by: "operator",
                },
            ),
        )?;
        let d = deliveries::get(c, delivery_id)?
            .ok_or_else(|| reject(Problem::DeliveryNotFound, "no such delivery"))?;
        Ok(DeliveryView::of(&d))
    })?;
    svc.relay.wake();
    Ok(view)
}
