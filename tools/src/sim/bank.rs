//! `tmcs-tools sim bank`: takes `pain.001.001.09` instructions at `POST
//! /instructions`, validates each against the XSD, moves balances in its
//! SQLite file and answers `pain.002.001.10`; holds reservations (CONTRACT
//! §12). See the module above for the endpoints.

use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use tmcs::clock::SharedClock;
use tmcs::ims::{Currency, Money};

use super::bank_store::{BankStore, Counter, Decide, Reservation, Reserved, StoreError};
use super::pain::{self, Report};
use super::{
    control_routes, event_headers, hold, log, media_type_is, not_found, serve, tls, BankArgs,
    Control, Mode, Refusal, SimError, MAX_BODY,
};

pub(crate) struct Bank {
    store: BankStore,
    /// The pain.001 XSD, absolute.
    xsd: PathBuf,
    clock: SharedClock,
}

/// Runs `f` on the store in the blocking pool; a failure is a `500`.
async fn db<T, F>(bank: &web::Data<Bank>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&BankStore) -> Result<T, StoreError> + Send + 'static,
{
    let b = bank.clone();
    let internal = |e: String| {
        log(&format!("sim bank: {e}"));
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
    };
    web::block(move || f(&b.store))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))
}

/// A refused instruction: counted as `invalid`, answered `status`.
async fn invalid(bank: &web::Data<Bank>, status: StatusCode, msg: &str) -> Refusal {
    log(&format!("sim bank: instruction refused ({status}): {msg}"));
    match db(bank, |s| s.bump(Counter::Invalid)).await {
        Ok(()) => Refusal::new(status, msg),
        Err(r) => r,
    }
}

async fn instructions(
    req: HttpRequest,
    body: web::Bytes,
    bank: web::Data<Bank>,
    control: web::Data<Control>,
) -> Result<HttpResponse, Refusal> {
    tls::require_relay(&req)?;
    let mode = control.get();
    match mode {
        Mode::Fail500 | Mode::Timeout => {
            db(&bank, |s| s.bump(Counter::Injected)).await?;
            if mode == Mode::Timeout {
                return Ok(hold().await);
            }
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected by mode 500",
            ));
        }
        Mode::Ok | Mode::Slow(_) | Mode::Reject(_) => {}
    }
    let (key, event) = match event_headers(&req) {
        Ok(v) => v,
        Err(r) => return Err(invalid(&bank, r.status, &r.msg).await),
    };
    if event != "instruction" {
        let msg = format!("TMCS-Event {event:?}: this bank takes instruction");
        return Err(invalid(&bank, StatusCode::BAD_REQUEST, &msg).await);
    }
    if !media_type_is(&req, "application/xml") {
        let msg = "instruction: Content-Type must be application/xml";
        return Err(invalid(&bank, StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).await);
    }
    let k = key.clone();
    let answer = match db(&bank, move |s| s.replay(&k)).await? {
        Some(stored) => stored.pain002,
        None => first_delivery(&bank, &key, &body, &mode).await?,
    };
    if let Mode::Slow(d) = mode {
        actix_web::rt::time::sleep(d).await;
    }
    Ok(HttpResponse::Ok()
        .content_type("application/xml")
        .body(answer))
}

/// A key not seen before: validate, read, decide and store in one transaction.
async fn first_delivery(
    bank: &web::Data<Bank>,
    key: &str,
    body: &[u8],
    mode: &Mode,
) -> Result<String, Refusal> {
    let does_not_validate = |why: String| format!("pain.001 does not validate: {why}");
    if let Err(why) = pain::validate(&bank.xsd, body).await {
        return Err(invalid(bank, StatusCode::BAD_REQUEST, &does_not_validate(why)).await);
    }
    let ins = match pain::read_pain001(body) {
        Ok(ins) => ins,
        Err(why) => {
            let msg = does_not_validate(format!("CONTRACT §11: {why}"));
            return Err(invalid(bank, StatusCode::BAD_REQUEST, &msg).await);
        }
    };
    let want = key.replace('-', "");
    if ins.msg_id != want {
        let msg = does_not_validate(format!(
            "CONTRACT §11: GrpHdr/MsgId {} is not the Idempotency-Key (the request id) without hyphens, {want}",
            ins.msg_id
        ));
        return Err(invalid(bank, StatusCode::BAD_REQUEST, &msg).await);
    }
    let decide = match mode {
        Mode::Reject(reason) => Decide::Reject(reason.clone()),
        Mode::Ok | Mode::Slow(_) | Mode::Fail500 | Mode::Timeout => Decide::Funds,
    };
    let msg_id = uuid::Uuid::new_v4().simple().to_string();
    let created = tmcs::clock::rfc3339_seconds(bank.clock.now());
    let key = key.to_string();
    let (stored, decided) = db(bank, move |s| {
        s.settle(&key, &ins, &decide, |status| {
            pain::pain002(&Report {
                msg_id: &msg_id,
                created: &created,
                ins: &ins,
                status,
            })
        })
    })
    .await?;
    if let Some(pain::Status::Rjct(reason)) = decided {
        log(&format!("sim bank: instruction rejected: {reason}"));
    }
    Ok(stored.pain002)
}

#[derive(Debug, Deserialize)]
struct ReservationBody {
    reservation_id: String,
    account: String,
    /// Like the iMS: `EUR0.37`.
    amount: String,
}

#[derive(Debug, Serialize)]
struct ReservationView {
    reservation_id: String,
    account: String,
    amount: String,
}

/// The longest reservation id or account taken.
const MAX_ID_LEN: usize = 200;

fn bad_request(msg: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, msg)
}

async fn reserve(
    req: HttpRequest,
    body: web::Bytes,
    bank: web::Data<Bank>,
) -> Result<HttpResponse, Refusal> {
    tls::require_relay(&req)?;
    let b: ReservationBody =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("body: {e}")))?;
    let sane = |s: &str| !s.is_empty() && s.len() <= MAX_ID_LEN;
    if !sane(&b.reservation_id) || !sane(&b.account) {
        return Err(bad_request("reservation_id and account: 1-200 characters"));
    }
    let amount = Money::parse(&b.amount).map_err(|e| bad_request(format!("amount: {e}")))?;
    let minor = i64::try_from(amount.minor()).map_err(|_| bad_request("amount: too large"))?;
    let r = Reservation {
        reservation_id: b.reservation_id,
        account: b.account,
        currency: amount.currency().code().to_string(),
        minor_units: minor,
    };
    match db(&bank, move |s| s.reserve(&r)).await? {
        Reserved::Held(r) => Ok(HttpResponse::Created().json(ReservationView {
            reservation_id: r.reservation_id,
            account: r.account,
            amount: amount.to_string(),
        })),
        Reserved::Short => Err(Refusal::new(
            StatusCode::CONFLICT,
            "insufficient funds (AM04): the available balance is short",
        )),
        Reserved::Conflict => Err(Refusal::new(
            StatusCode::CONFLICT,
            "this reservation_id is held with another account or amount",
        )),
    }
}

async fn release(
    req: HttpRequest,
    id: web::Path<String>,
    bank: web::Data<Bank>,
) -> Result<HttpResponse, Refusal> {
    tls::require_relay(&req)?;
    let id = id.into_inner();
    // Deleting twice is fine: the reservation is gone either way.
    db(&bank, move |s| s.release(&id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn balances(bank: web::Data<Bank>) -> Result<HttpResponse, Refusal> {
    Ok(HttpResponse::Ok().json(db(&bank, |s| s.balances()).await?))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBalance {
    account: String,
    currency: String,
    minor_units: i64,
}

async fn set_balance(body: web::Bytes, bank: web::Data<Bank>) -> Result<HttpResponse, Refusal> {
    let b: SetBalance =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("body: {e}")))?;
    if b.account.is_empty() || b.account.len() > MAX_ID_LEN {
        return Err(bad_request("account: 1-200 characters"));
    }
    if Currency::from_code(&b.currency).is_none() {
        return Err(bad_request("currency: not an ISO 4217 code"));
    }
    if b.minor_units < 0 {
        return Err(bad_request("minor_units: not negative"));
    }
    let (account, currency, minor) = (b.account.clone(), b.currency.clone(), b.minor_units);
    db(&bank, move |s| s.set(&account, &currency, minor)).await?;
    Ok(HttpResponse::Ok().json(b))
}

async fn stats(bank: web::Data<Bank>) -> Result<HttpResponse, Refusal> {
    Ok(HttpResponse::Ok().json(db(&bank, |s| s.stats()).await?))
}

pub(crate) async fn run(a: BankArgs) -> Result<(), SimError> {
    pain::xmllint_present().await.map_err(SimError::Setup)?;
    let given = match &a.xsd {
        Some(p) => p.clone(),
        None => {
            // The XSD of CONTRACT §11, as the repository holds it.
            const XSD: &str = include_str!("../../../schemas/pain.001.001.09.xsd");
            let p = a
                .common
                .state
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("pain.001.001.09.xsd");
            std::fs::write(&p, XSD)
                .map_err(|e| SimError::Setup(format!("{}: {e}", p.display())))?;
            p
        }
    };
    if !given.is_file() {
        return Err(SimError::Setup(format!(
            "--xsd {}: no such file",
            given.display()
        )));
    }
    let xsd = std::path::absolute(&given)
        .map_err(|e| SimError::Setup(format!("--xsd {}: {e}", given.display())))?;
    if a.opening_balance < 0 {
        return Err(SimError::Setup("--opening-balance: not negative".into()));
    }
    let store = BankStore::open(&a.common.state, a.opening_balance)
        .map_err(|e| SimError::Setup(format!("state file {}: {e}", a.common.state.display())))?;
    let bank = web::Data::new(Bank {
        store,
        xsd,
        clock: crate::demo::system_clock(),
    });
    let control = web::Data::new(Control::new(true));
    serve(&a.common, move |cfg| {
        cfg.app_data(bank.clone())
            .app_data(control.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/instructions", web::post().to(instructions))
            .route("/reservations", web::post().to(reserve))
            .route("/reservations/{id}", web::delete().to(release))
            // CONTRACT §12 calls `<bank callback_url>/reservations`, and
            // the callback_url is `…/instructions`.
            .route("/instructions/reservations", web::post().to(reserve))
            .route("/instructions/reservations/{id}", web::delete().to(release))
            .route("/balances", web::get().to(balances))
            .route("/balances", web::post().to(set_balance))
            .route("/stats", web::get().to(stats));
        control_routes(cfg);
        cfg.default_service(web::to(not_found));
    })
    .await
}
