//! `tmcs-tools sim fsp`: takes tmcs's `signed` and `outcome` events at
//! `POST /events`, verifies the payer's signature over `C`, and counts
//! deliveries per idempotency key (see the module above for the endpoints).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::store::X509Store;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use tmcs::ims::{ImsMessage, Money};

use super::{
    control_routes, error, event_headers, hold, log, media_type_is, not_found, serve, tls,
    write_atomic, Control, FspArgs, Mode, SimError, MAX_BODY, SIGNER_CERTIFICATE,
};

/// The outcome statuses of CONTRACT §11.
const OUTCOMES: [&str; 3] = ["settled", "rolled_back", "failed"];

/// How long changes wait to be written together.
const FLUSH_DELAY: Duration = Duration::from_millis(50);

/// What is kept per idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    /// Deliveries of this key (raw).
    count: u64,
    /// `signed` or `outcome`.
    event: String,
    /// The HTTP status answered (the same every time).
    status: u16,
    accepted: bool,
    /// The body answered (the same every time).
    answer: Value,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FspState {
    version: u32,
    deliveries: u64,
    signed_verified: u64,
    signed_bad: u64,
    outcomes: BTreeMap<String, u64>,
    outcomes_bad: u64,
    malformed: u64,
    injected: u64,
    by_key: BTreeMap<String, KeyEntry>,
    /// Request id → the accepted events, in order of arrival (`signed`, `outcome:<status>`).
    by_request: BTreeMap<String, Vec<String>>,
}

impl Default for FspState {
    fn default() -> Self {
        FspState {
            version: 1,
            deliveries: 0,
            signed_verified: 0,
            signed_bad: 0,
            outcomes: OUTCOMES.iter().map(|s| (s.to_string(), 0)).collect(),
            outcomes_bad: 0,
            malformed: 0,
            injected: 0,
            by_key: BTreeMap::new(),
            by_request: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Serialize)]
struct KeyView<'a> {
    count: u64,
    event: &'a str,
    status: u16,
    accepted: bool,
}

/// `GET /stats`.
#[derive(Debug, Serialize)]
struct Stats<'a> {
    deliveries: u64,
    keys: usize,
    duplicates: u64,
    signed_verified: u64,
    signed_bad: u64,
    outcomes: &'a BTreeMap<String, u64>,
    outcomes_bad: u64,
    malformed: u64,
    injected: u64,
    by_key: BTreeMap<&'a str, KeyView<'a>>,
    by_request: &'a BTreeMap<String, Vec<String>>,
}

/// What a first delivery of a key does to the counts.
#[derive(Debug)]
enum Effect {
    Signed { request_id: String },
    SignedBad,
    Outcome { request_id: String, status: String },
    OutcomeBad,
}

/// An answer, stored per key.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn received() -> Answer {
        Answer {
            status: StatusCode::OK,
            body: serde_json::json!({"received": true}),
        }
    }
    fn refused(status: StatusCode, msg: &str) -> Answer {
        Answer {
            status,
            body: serde_json::json!({ "error": msg }),
        }
    }
    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(&self.body)
    }
}

pub(crate) struct Fsp {
    path: PathBuf,
    state: Mutex<FspState>,
    /// Serialises writes of the state file.
    writing: Mutex<()>,
    dirty: Notify,
    trust: X509Store,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Fsp {
    fn open(path: PathBuf, trust: X509Store) -> Result<Fsp, SimError> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let mut s: FspState = serde_json::from_slice(&bytes)
                    .map_err(|e| SimError::Setup(format!("state file {}: {e}", path.display())))?;
                for o in OUTCOMES {
                    s.outcomes.entry(o.to_string()).or_insert(0);
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FspState::default(),
            Err(e) => {
                return Err(SimError::Setup(format!(
                    "state file {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Fsp {
            path,
            state: Mutex::new(state),
            writing: Mutex::new(()),
            dirty: Notify::new(),
            trust,
        })
    }

    fn state(&self) -> MutexGuard<'_, FspState> {
        relock(&self.state)
    }

    /// Writes the state file now.
    fn flush(&self) -> std::io::Result<()> {
        let _w = relock(&self.writing);
        let bytes = serde_json::to_vec(&*self.state()).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &bytes)
    }

    fn changed(&self) {
        self.dirty.notify_one();
    }

    fn count(&self, f: impl FnOnce(&mut FspState)) {
        f(&mut self.state());
        self.changed();
    }

    /// A key seen before: counted, and its stored answer.
    fn replay(&self, key: &str) -> Option<Answer> {
        let answer = {
            let mut s = self.state();
            let e = s.by_key.get_mut(key)?;
            e.count += 1;
            let a = Answer {
                status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::OK),
                body: e.answer.clone(),
            };
            s.deliveries += 1;
            a
        };
        self.changed();
        Some(answer)
    }

    /// The first delivery of a key (unless a concurrent one got there first).
    fn record(&self, key: String, event: String, answer: Answer, effect: Effect) -> Answer {
        if let Some(a) = self.replay(&key) {
            return a;
        }
        {
            let mut s = self.state();
            s.deliveries += 1;
            match effect {
                Effect::Signed { request_id } => {
                    s.signed_verified += 1;
                    s.by_request
                        .entry(request_id)
                        .or_default()
                        .push("signed".into());
                }
                Effect::SignedBad => s.signed_bad += 1,
                Effect::Outcome { request_id, status } => {
                    *s.outcomes.entry(status.clone()).or_insert(0) += 1;
                    s.by_request
                        .entry(request_id)
                        .or_default()
                        .push(format!("outcome:{status}"));
                }
                Effect::OutcomeBad => s.outcomes_bad += 1,
            }
            s.by_key.insert(
                key,
                KeyEntry {
                    count: 1,
                    event,
                    status: answer.status.as_u16(),
                    accepted: answer.status.is_success(),
                    answer: answer.body.clone(),
                },
            );
        }
        self.changed();
        answer
    }

    /// `signed`: the iMS, the payer's certificate, `from/sign` over `C`.
    fn judge_signed(&self, req: &HttpRequest, body: &[u8]) -> Result<(), (StatusCode, String)> {
        let bad = |msg: String| (StatusCode::UNPROCESSABLE_ENTITY, msg);
        if !media_type_is(req, "application/xml") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "signed: Content-Type must be application/xml".into(),
            ));
        }
        let cert_b64 = super::header(req, SIGNER_CERTIFICATE)
            .ok_or_else(|| bad(format!("{SIGNER_CERTIFICATE} header missing")))?;
        let der = STANDARD
            .decode(cert_b64)
            .map_err(|e| bad(format!("{SIGNER_CERTIFICATE}: not base64: {e}")))?;
        let cert = X509::from_der(&der)
            .map_err(|e| bad(format!("{SIGNER_CERTIFICATE}: not a DER certificate: {e}")))?;
        let ims = ImsMessage::parse(body).map_err(|e| bad(format!("the iMS: {e}")))?;
        let sig = ims
            .from_sign
            .as_deref()
            .ok_or_else(|| bad("the iMS: from/sign is empty".into()))?;
        let c = ims
            .canonical_c()
            .map_err(|e| bad(format!("the iMS: C: {e}")))?;
        tls::chains_to(&cert, &self.trust).map_err(|e| {
            bad(format!(
                "the signer's certificate does not chain to the CA: {e}"
            ))
        })?;
        let key = cert
            .public_key()
            .map_err(|e| bad(format!("the signer's certificate: key: {e}")))?;
        let ok = Verifier::new(MessageDigest::sha256(), &key)
            .and_then(|mut v| v.verify_oneshot(sig, &c))
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(bad(
                "from/sign does not verify over C with the signer's certificate".into(),
            ))
        }
    }
}

/// The body of an `outcome` event (CONTRACT §11).
#[derive(Debug, Deserialize)]
struct OutcomeBody {
    request_id: String,
    #[serde(rename = "ref")]
    _reference: Option<String>,
    status: String,
    amount: String,
    #[serde(rename = "reason")]
    _reason: Option<String>,
}

/// `outcome`: a known status, an iMS amount, and the key `<request_id>:<status>`.
fn judge_outcome(
    req: &HttpRequest,
    key: &str,
    body: &[u8],
) -> Result<(String, String), (StatusCode, String)> {
    let bad = |msg: String| (StatusCode::UNPROCESSABLE_ENTITY, msg);
    if !media_type_is(req, "application/json") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "outcome: Content-Type must be application/json".into(),
        ));
    }
    let o: OutcomeBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("outcome body: {e}")))?;
    if !OUTCOMES.contains(&o.status.as_str()) {
        return Err(bad(format!(
            "outcome status {:?}: not settled, rolled_back or failed",
            o.status
        )));
    }
    Money::parse(&o.amount).map_err(|e| bad(format!("outcome amount {:?}: {e}", o.amount)))?;
    let want = format!("{}:{}", o.request_id, o.status);
    if key != want {
        return Err(bad(format!("Idempotency-Key must be {want}")));
    }
    Ok((o.request_id, o.status))
}

async fn events(
    req: HttpRequest,
    body: web::Bytes,
    fsp: web::Data<Fsp>,
    control: web::Data<Control>,
) -> HttpResponse {
    if let Err(refused) = tls::require_relay(&req) {
        return actix_web::ResponseError::error_response(&refused);
    }
    let mode = control.get();
    match mode {
        Mode::Fail500 => {
            fsp.count(|s| s.injected += 1);
            return error(StatusCode::INTERNAL_SERVER_ERROR, "injected by mode 500");
        }
        Mode::Timeout => {
            fsp.count(|s| s.injected += 1);
            return hold().await;
        }
        Mode::Ok | Mode::Slow(_) | Mode::Reject(_) => {}
    }
    let (key, event) = match event_headers(&req) {
        Ok(v) => v,
        Err(refused) => {
            fsp.count(|s| s.malformed += 1);
            return actix_web::ResponseError::error_response(&refused);
        }
    };
    let answer = match fsp.replay(&key) {
        Some(a) => a,
        None => {
            let (answer, effect) = match event.as_str() {
                "signed" => match fsp.judge_signed(&req, &body) {
                    Ok(()) => (
                        Answer::received(),
                        Effect::Signed {
                            request_id: key.clone(),
                        },
                    ),
                    Err((status, msg)) => {
                        log(&format!("sim fsp: signed {key}: {status}: {msg}"));
                        (Answer::refused(status, &msg), Effect::SignedBad)
                    }
                },
                "outcome" => match judge_outcome(&req, &key, &body) {
                    Ok((request_id, status)) => {
                        (Answer::received(), Effect::Outcome { request_id, status })
                    }
                    Err((status, msg)) => {
                        log(&format!("sim fsp: outcome {key}: {status}: {msg}"));
                        (Answer::refused(status, &msg), Effect::OutcomeBad)
                    }
                },
                other => {
                    fsp.count(|s| s.malformed += 1);
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("TMCS-Event {other:?}: this FSP takes signed and outcome"),
                    );
                }
            };
            fsp.record(key, event, answer, effect)
        }
    };
    if let Mode::Slow(d) = mode {
        actix_web::rt::time::sleep(d).await;
    }
    answer.response()
}

async fn stats(fsp: web::Data<Fsp>) -> HttpResponse {
    let s = fsp.state();
    let keys = s.by_key.len();
    let view = Stats {
        deliveries: s.deliveries,
        keys,
        duplicates: s
            .deliveries
            .saturating_sub(u64::try_from(keys).unwrap_or(u64::MAX)),
        signed_verified: s.signed_verified,
        signed_bad: s.signed_bad,
        outcomes: &s.outcomes,
        outcomes_bad: s.outcomes_bad,
        malformed: s.malformed,
        injected: s.injected,
        by_key: s
            .by_key
            .iter()
            .map(|(k, e)| {
                (
                    k.as_str(),
                    KeyView {
                        count: e.count,
                        event: &e.event,
                        status: e.status,
                        accepted: e.accepted,
                    },
                )
            })
            .collect(),
        by_request: &s.by_request,
    };
    HttpResponse::Ok().json(view)
}

/// Writes the state file shortly after changes, several changes at once.
async fn flusher(fsp: Arc<Fsp>) {
    loop {
        fsp.dirty.notified().await;
        actix_web::rt::time::sleep(FLUSH_DELAY).await;
        let f = fsp.clone();
        match web::block(move || f.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log(&format!("sim fsp: state file {}: {e}", fsp.path.display())),
            Err(e) => log(&format!("sim fsp: state file: {e}")),
        }
    }
}

pub(crate) async fn run(a: FspArgs) -> Result<(), SimError> {
    let trust = tls::trust_store(&a.common.ca)?;
    let fsp = Arc::new(Fsp::open(a.common.state.clone(), trust)?);
    let failed_write = |e: std::io::Error| {
        SimError::Setup(format!("state file {}: {e}", a.common.state.display()))
    };
    fsp.flush().map_err(failed_write)?;
    actix_web::rt::spawn(flusher(fsp.clone()));
    let data = web::Data::from(fsp.clone());
    let control = web::Data::new(Control::new(false));
    let served = serve(&a.common, move |cfg| {
        cfg.app_data(data.clone())
            .app_data(control.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/events", web::post().to(events))
            .route("/stats", web::get().to(stats));
        control_routes(cfg);
        cfg.default_service(web::to(not_found));
    })
    .await;
    let flushed = fsp.flush().map_err(failed_write);
    served.and(flushed)
}
