//! `tmcs-tools sim fsp` and `tmcs-tools sim bank`: the parties that tmcs
//! relays to (CONTRACT §11, §12), as real HTTPS servers for tests, the demo
//! and the benchmark.
//!
//! # Common flags
//!
//! | flag | meaning |
//! |---|---|
//! | `--listen ADDR` | default `127.0.0.1:0`; the bound address is printed as one line `listening on https://HOST:PORT` on stdout; then serve until SIGTERM or SIGINT |
//! | `--cert FILE --key FILE` | the simulator's TLS server certificate (chain, leaf first) and key, PEM |
//! | `--ca FILE` | PEM bundle (the tmcs `ca.pem`): client certificates must chain to it |
//! | `--state FILE` | where the counts survive a restart: the FSP a JSON file, the bank a SQLite file |
//!
//! **mTLS on every route.** The TLS handshake is refused without a client
//! certificate that OpenSSL verifies against `--ca` (`PEER |
//! FAIL_IF_NO_PEER_CERT`, purpose `sslclient`). The routes that tmcs calls
//! (`/events`, `/instructions`, `/reservations`) also want subject CN
//! `tmcs-relay` and extendedKeyUsage clientAuth, else `403`; the test
//! routes (`/stats`, `/control`, `/balances`) take any client certificate
//! that chains to `--ca`. Errors are `{"error":"…"}`.
//!
//! Every tmcs call carries `Idempotency-Key` and `TMCS-Event`; the same key
//! again gets the stored answer and has no second effect.
//!
//! **`POST /control`** `{"mode":"ok"|"500"|"timeout"|"slow"|"reject","slow_ms"?:N,"reason"?:"AM04"}`
//! (`reject` and `reason` for the bank only) → `200 {"mode",…}`; `GET
//! /control` shows the mode. It applies to `/events` (FSP) and
//! `/instructions` (bank) and is not persisted (a restart is `ok`):
//! * `500`: answer `500`, no effect, counted as `injected`;
//! * `timeout`: hold the request 120 s, no effect (then `504`), `injected`;
//! * `slow`: do the work, then wait `slow_ms` (default 1000) before answering,
//!   so that a caller that gives up meanwhile has had the effect and must
//!   deduplicate by its idempotency key;
//! * `reject` (bank): new instructions are answered `RJCT` with `reason`
//!   (default `AM04`), nothing moves.
//!
//! # `sim fsp`
//!
//! `POST /events` (the FSP party's `callback_url` is `https://HOST:PORT/events`):
//! * `TMCS-Event: signed`, `Content-Type: application/xml`, the signed iMS,
//!   `TMCS-Signer-Certificate: <base64 DER of the payer's certificate>`,
//!   `Idempotency-Key: <request_id>`. The iMS is parsed with
//!   [`tmcs::ims::ImsMessage::parse`], `C` rebuilt, `from/sign` verified over
//!   `C` with the certificate's key, and the certificate verified against
//!   `--ca` → `200 {"received":true}`; otherwise `422 {"error"}`.
//! * `TMCS-Event: outcome`, `Content-Type: application/json`,
//!   `{"request_id","ref","status","amount","reason"?}` with `status` one of
//!   `settled`, `rolled_back`, `failed` and `Idempotency-Key:
//!   <request_id>:<status>` → `200 {"received":true}`; otherwise `422`.
//! * A missing `Idempotency-Key` or `TMCS-Event`, or another event → `400`
//!   (counted as `malformed`, not per key); a wrong `Content-Type` → `415`.
//!
//! `GET /stats` → `{"deliveries" (raw, answered by the handler),"keys","duplicates"
//! (deliveries − keys),"signed_verified","signed_bad","outcomes":{"settled","rolled_back","failed"},
//! "outcomes_bad","malformed","injected","by_key":{KEY:{"count","event","status" (HTTP),"accepted"}},
//! "by_request":{REQUEST_ID:["signed","outcome:settled",…]}}`. The effect
//! counts (`signed_*`, `outcomes*`, `by_request`) count each key once. The
//! state file is rewritten atomically at most every 50 ms and at shutdown.
//!
//! # `sim bank`
//!
//! Flags also: `--xsd FILE` (default: the built-in copy of `schemas/pain.001.001.09.xsd`,
//! from the current directory), `--opening-balance N` (minor units an
//! account starts with in any currency, default 1000000).
//!
//! * `POST /instructions` (the bank party's `callback_url` is
//!   `https://HOST:PORT/instructions`), `TMCS-Event: instruction`,
//!   `Content-Type: application/xml`, a `pain.001.001.09`. A key seen before
//!   → its stored `pain.002` again. Else `xmllint --schema` must pass and
//!   the message must hold what CONTRACT §11 says (one `PmtInf` with one
//!   `CdtTrfTxInf`, `NbOfTxs` 1, `CtrlSum` = `InstdAmt`, `PmtMtd` `TRF`,
//!   `MsgId` = `PmtInfId` = the `Idempotency-Key` without hyphens), else
//!   `400 {"error":"pain.001 does not validate: …"}` and `invalid` counts it.
//!   Then, in one SQLite transaction: the debtor's available balance (balance
//!   − held) ≥ `InstdAmt` → debit, credit, `ACSC`; else `RJCT` `AM04`,
//!   nothing moves. → `200`, `application/xml`, a `pain.002.001.10`.
//! * `POST /reservations {"reservation_id","account","amount":"EUR0.37"}` →
//!   `201 {"reservation_id","account","amount"}` (the same id again: the same
//!   answer), `409` when the available balance is short (or the id was used
//!   with other values); `DELETE /reservations/{id}` → `204` (also when
//!   unknown: deleting twice is fine). The same under
//!   `/instructions/reservations`, since §12 calls `<bank callback_url>/reservations`
//!   and the callback_url is `…/instructions`.
//! * `GET /balances` → `{"opening_balance","accounts":{ACCOUNT:{CCY:minor}},"held":{ACCOUNT:{CCY:minor}}}`
//!   (an account not listed has the opening balance); `POST /balances
//!   {"account","currency","minor_units"}` sets one.
//! * `GET /stats` → `{"instructions" (raw, answered with a pain.002),"keys","duplicates","settled","rejected",
//!   "invalid","injected","reservations","held","by_key":{KEY:{"count","status":"ACSC"|"RJCT"}}}`.

pub mod bank;
mod bank_store;
pub mod fsp;
mod pain;
mod tls;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

/// The simulators.
#[derive(Debug, Clone, Subcommand)]
pub enum SimCommand {
    /// An FSP that takes tmcs's `signed` and `outcome` events at `POST /events`,
    /// verifies the payer's signature over C and counts deliveries per idempotency key.
    Fsp(FspArgs),
    /// A bank that takes pain.001 instructions at `POST /instructions`, validates
    /// them against the XSD, moves balances in SQLite and answers pain.002.
    Bank(BankArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on; the bound one is printed as `listening on https://…`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The simulator's TLS server certificate (PEM, leaf first).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// PEM bundle that client certificates must chain to (the tmcs ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// State file: JSON (fsp) or SQLite (bank); created when missing.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct FspArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BankArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The pain.001.001.09 XSD that every instruction must validate against
    /// (xmllint); default: the copy of CONTRACT §11's XSD built into this
    /// binary (`schemas/pain.001.001.09.xsd`), written next to the state file.
    #[arg(long, value_name = "FILE")]
    pub xsd: Option<PathBuf>,
    /// Minor units that an account not seen before starts with, in any currency.
    #[arg(long, value_name = "MINOR_UNITS", default_value_t = 1_000_000)]
    pub opening_balance: i64,
}

/// Why a simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Flags, files, certificates: exit status 2.
    #[error("{0}")]
    Setup(String),
    /// Anything else: exit status 1.
    #[error("{0}")]
    Failed(String),
}

pub fn run(cmd: SimCommand) -> Result<(), SimError> {
    let system = actix_web::rt::System::new();
    match cmd {
        SimCommand::Fsp(a) => system.block_on(fsp::run(a)),
        SimCommand::Bank(a) => system.block_on(bank::run(a)),
    }
}

/// Binds with mTLS, prints `listening on https://ADDR`, serves until a signal.
async fn serve<F>(common: &CommonArgs, configure: F) -> Result<(), SimError>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let acceptor = tls::acceptor(&common.cert, &common.key, &common.ca)?;
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .on_connect(tls::capture_peer)
        // Requests held by `timeout` must not hold up a restart.
        .shutdown_timeout(1)
        .bind_openssl(&common.listen, acceptor)
        .map_err(|e| SimError::Setup(format!("listen on {}: {e}", common.listen)))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| SimError::Setup(format!("listen on {}: no address", common.listen)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on https://{addr}")
        .and_then(|()| out.flush())
        .map_err(|e| SimError::Failed(format!("stdout: {e}")))?;
    drop(out);
    server
        .run()
        .await
        .map_err(|e| SimError::Failed(format!("server: {e}")))
}

/// One line on stderr (the simulators' only log).
fn log(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// `{"error": msg}` with `status`.
fn error(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: msg })
}

/// A refused request: `{"error": msg}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {msg}")]
pub(crate) struct Refusal {
    status: StatusCode,
    msg: String,
}

impl Refusal {
    fn new(status: StatusCode, msg: impl Into<String>) -> Refusal {
        Refusal {
            status,
            msg: msg.into(),
        }
    }
}

impl actix_web::ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        error(self.status, &self.msg)
    }
}

/// A header's value, when present and visible ASCII.
fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub(crate) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub(crate) const TMCS_EVENT: &str = "TMCS-Event";
pub(crate) const SIGNER_CERTIFICATE: &str = "TMCS-Signer-Certificate";

/// The longest idempotency key taken (tmcs's are a UUID, or a UUID and a status).
const MAX_KEY_LEN: usize = 200;

/// `Idempotency-Key` and `TMCS-Event`, or the `400` that says which is missing.
fn event_headers(req: &HttpRequest) -> Result<(String, String), Refusal> {
    let key = header(req, IDEMPOTENCY_KEY)
        .filter(|k| k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key header missing (or longer than 200)",
            )
        })?;
    let event = header(req, TMCS_EVENT)
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "TMCS-Event header missing"))?;
    Ok((key.to_string(), event.to_string()))
}

/// Whether the request's media type (parameters ignored) is `want`.
fn media_type_is(req: &HttpRequest, want: &str) -> bool {
    header(req, "content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(want))
}

/// How long `timeout` holds a request.
const HOLD: Duration = Duration::from_secs(120);

/// What the simulator does with the next tmcs call (`POST /control`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    Ok,
    Fail500,
    Timeout,
    Slow(Duration),
    Reject(String),
}

impl Mode {
    fn view(&self) -> ControlView {
        let (mode, slow_ms, reason) = match self {
            Mode::Ok => ("ok", None, None),
            Mode::Fail500 => ("500", None, None),
            Mode::Timeout => ("timeout", None, None),
            Mode::Slow(d) => (
                "slow",
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                None,
            ),
            Mode::Reject(r) => ("reject", None, Some(r.clone())),
        };
        ControlView {
            mode,
            slow_ms,
            reason,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    mode: String,
    slow_ms: Option<u64>,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct ControlView {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The shared `/control` switch.
#[derive(Debug)]
pub(crate) struct Control {
    mode: Mutex<Mode>,
    allow_reject: bool,
}

impl Control {
    fn new(allow_reject: bool) -> Control {
        Control {
            mode: Mutex::new(Mode::Ok),
            allow_reject,
        }
    }

    fn get(&self) -> Mode {
        match self.mode.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, mode: Mode) {
        match self.mode.lock() {
            Ok(mut m) => *m = mode,
            Err(poisoned) => *poisoned.into_inner() = mode,
        }
    }

    fn parse(&self, body: &[u8]) -> Result<Mode, String> {
        let b: ControlBody = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
        if b.reason.is_some() && b.mode != "reject" {
            return Err("reason goes with mode reject".into());
        }
        if b.slow_ms.is_some() && b.mode != "slow" {
            return Err("slow_ms goes with mode slow".into());
        }
        match b.mode.as_str() {
            "ok" => Ok(Mode::Ok),
            "500" => Ok(Mode::Fail500),
            "timeout" => Ok(Mode::Timeout),
            "slow" => Ok(Mode::Slow(Duration::from_millis(b.slow_ms.unwrap_or(1000)))),
            "reject" if self.allow_reject => {
                let reason = b.reason.unwrap_or_else(|| "AM04".into());
                // ExternalStatusReason1Code: 1–4 characters.
                if reason.is_empty()
                    || reason.len() > 4
                    || !reason.bytes().all(|c| c.is_ascii_alphanumeric())
                {
                    return Err("reason: 1-4 letters or digits, e.g. AM04".into());
                }
                Ok(Mode::Reject(reason))
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

async fn get_control(control: web::Data<Control>) -> HttpResponse {
    HttpResponse::Ok().json(control.get().view())
}

async fn post_control(control: web::Data<Control>, body: web::Bytes) -> HttpResponse {
    match control.parse(&body) {
        Ok(mode) => {
            log(&format!("control: mode {:?}", mode));
            control.set(mode.clone());
            HttpResponse::Ok().json(mode.view())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `/control` on both simulators.
fn control_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/control", web::get().to(get_control))
        .route("/control", web::post().to(post_control));
}

/// Holds a request for [`HOLD`], then answers `504`.
async fn hold() -> HttpResponse {
    actix_web::rt::time::sleep(HOLD).await;
    error(StatusCode::GATEWAY_TIMEOUT, "held by mode timeout")
}

/// The largest body taken (an iMS is at most 16 KiB; a pain.001 a few).
const MAX_BODY: usize = 256 * 1024;

/// The routes' default error for an unknown path.
async fn not_found() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, synced,
/// then renamed over it.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
