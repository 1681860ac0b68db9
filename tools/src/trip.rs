//! The whole trip of a payment through the relay (CONTRACT §11), shared by
//! the demo, the relay benchmark and the relay tests: the FSP, merchant and
//! bank simulators as processes (`tmcs-tools sim …`), the parties with
//! their callback URLs, activated handsets, and one payment from the
//! merchant's message to the handset's authorisation.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tmcs::clock::SharedClock;
use tmcs::ims::{ImsMessage, Money, PartyId, Ref, Tier};
use tmcs_client::Handset;

use crate::demo::{call, fail, register_party_with, sign, text, DemoError, Party};

/// The merchant, FSP and bank of the trip.
pub const MERCHANT: &str = "Merkur.Trade@merchant.xbank";
pub const FSP: &str = "Demo.FSP@fsp.xbank";
pub const BANK: &str = "Demo.Bank@bank.xbank";

/// The payer's and the merchant's accounts at the simulated bank (valid IBANs).
pub const PAYER_IBAN: &str = "DE89370400440532013000";
pub const MERCHANT_IBAN: &str = "DE02120300000000202051";

/// The simulators' TLS files: their server certificate and key (any that
/// chains to `relay.ca_file`), and the CA bundle client certificates must
/// chain to (the tmcs `ca.pem`, which issued the relay certificate).
#[derive(Debug, Clone)]
pub struct SimTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl SimTls {
    /// The tmcs installation's own TLS server certificate (CN localhost,
    /// from the tmcs CA): enough for simulators on this machine.
    pub fn of(cfg: &tmcs::config::Config) -> SimTls {
        SimTls {
            cert: cfg.tls_cert.clone(),
            key: cfg.tls_key.clone(),
            ca: cfg.ca_pem.clone(),
        }
    }
}

/// A running simulator process; killed when dropped.
#[derive(Debug)]
pub struct SimProc {
    pub kind: &'static str,
    /// `https://localhost:<port>`.
    pub url: String,
    child: Child,
}

impl SimProc {
    /// Starts `tools_exe sim <kind>` with its state in `state` and waits for
    /// its `listening on …` line.
    pub fn start(
        tools_exe: &Path,
        kind: &'static str,
        tls: &SimTls,
        state: &Path,
        extra: &[&str],
    ) -> Result<SimProc, DemoError> {
        let log = std::fs::File::create(state.with_extension("log"))
            .map_err(|e| fail(format!("sim {kind} log: {e}")))?;
        let mut child = Command::new(tools_exe)
            .args(["sim", kind, "--listen", "127.0.0.1:0", "--cert"])
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .arg("--ca")
            .arg(&tls.ca)
            .arg("--state")
            .arg(state)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("sim {kind}: {e}")))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("listening on https://127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok());
        match port {
            Some(port) => Ok(SimProc {
                kind,
                url: format!("https://localhost:{port}"),
                child,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(fail(format!(
                    "sim {kind} did not start (see {})",
                    state.with_extension("log").display()
                )))
            }
        }
    }

    /// `GET <path>` of the simulator (any client certificate from the CA).
    pub async fn get(&self, client: &awc::Client, path: &str) -> Result<Value, DemoError> {
        let (_, v) = call(
            client.get(format!("{}{path}", self.url)),
            None,
            &format!("sim {} {path}", self.kind),
        )
        .await?;
        Ok(v)
    }

    /// Sets the simulator's mode (`ok`, `500`, `timeout`, `slow`, bank `reject`).
    pub async fn control(&self, client: &awc::Client, body: Value) -> Result<(), DemoError> {
        call(
            client.post(format!("{}/control", self.url)),
            Some(&body),
            &format!("sim {} control", self.kind),
        )
        .await?;
        Ok(())
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three simulators of a trip: the FSP, the merchant (an FSP simulator
/// taking the merchant's outcomes) and the bank.
#[derive(Debug)]
pub struct Sims {
    pub fsp: SimProc,
    pub merchant: SimProc,
    pub bank: SimProc,
}

impl Sims {
    /// Starts them with their state under `dir`; the bank judges every
    /// pain.001 with its built-in copy of CONTRACT §11's XSD.
    pub fn start(tools_exe: &Path, tls: &SimTls, dir: &Path) -> Result<Sims, DemoError> {
        Self::start_judged_by(tools_exe, tls, dir, None)
    }

    /// [`Sims::start`], the bank judging every pain.001 with the XSD at
    /// `bank_xsd` (its `--xsd`) when one is given.
    pub fn start_judged_by(
        tools_exe: &Path,
        tls: &SimTls,
        dir: &Path,
        bank_xsd: Option<&Path>,
    ) -> Result<Sims, DemoError> {
        let xsd = bank_xsd.map(|p| p.to_string_lossy().into_owned());
        let bank_args: Vec<&str> = match &xsd {
            Some(p) => vec!["--xsd", p],
            None => Vec::new(),
        };
        Ok(Sims {
            fsp: SimProc::start(tools_exe, "fsp", tls, &dir.join("sim-fsp.json"), &[])?,
            merchant: SimProc::start(tools_exe, "fsp", tls, &dir.join("sim-merchant.json"), &[])?,
            bank: SimProc::start(tools_exe, "bank", tls, &dir.join("sim-bank.db"), &bank_args)?,
        })
    }
}

/// The parties of a trip, registered by CSR with their callback URLs.
pub struct Parties {
    pub merchant: Party,
    pub fsp: Party,
    pub bank: Party,
}

pub async fn register_parties(
    base: &str,
    operator: &awc::Client,
    sims: &Sims,
) -> Result<Parties, DemoError> {
    let merchant = register_party_with(
        base,
        operator,
        MERCHANT,
        "merchant",
        Some(&format!("{}/events", sims.merchant.url)),
    )
    .await?
    .0;
    let fsp = register_party_with(
        base,
        operator,
        FSP,
        "fsp",
        Some(&format!("{}/events", sims.fsp.url)),
    )
    .await?
    .0;
    let bank = register_party_with(
        base,
        operator,
        BANK,
        "bank",
        Some(&format!("{}/instructions", sims.bank.url)),
    )
    .await?
    .0;
    Ok(Parties {
        merchant,
        fsp,
        bank,
    })
}

/// `/pki/transport.pem`: what a handset seals PIN blocks to.
pub async fn transport_pem(anon: &awc::Client, base: &str) -> Result<Vec<u8>, DemoError> {
    let mut res = anon
        .get(format!("{base}/pki/transport.pem"))
        .send()
        .await
        .map_err(|e| fail(format!("transport.pem: {e}")))?;
    let body = res
        .body()
        .await
        .map_err(|e| fail(format!("transport.pem: {e}")))?;
    Ok(body.to_vec())
}

/// Registers and activates `n` handsets (`+49160<prefix><n>`) with `pin`.
pub async fn activate_handsets(
    base: &str,
    operator: &awc::Client,
    anon: &awc::Client,
    prefix: u32,
    n: usize,
    pin: &str,
) -> Result<Vec<Handset>, DemoError> {
    let transport = transport_pem(anon, base).await?;
    let mut handsets = Vec::with_capacity(n);
    for i in 0..n {
        let msisdn = format!("+49160{prefix:02}{:05}", i + 1);
        let (_, v) = call(
            operator.post(format!("{base}/v1/admin/subscribers")),
            Some(&json!({ "msisdn": msisdn, "display_name": format!("Payer {i}"), "kyc_ref": "KYC-TRIP" })),
            "register subscriber",
        )
        .await?;
        let h = Handset::new(&msisdn, &transport).map_err(|e| fail(e.to_string()))?;
        let body = h
            .activation_body(&text(&v, "activation_code")?, pin)
            .map_err(|e| fail(e.to_string()))?;
        call(
            anon.post(format!("{base}/v1/handset/activate")),
            Some(&body),
            "activate",
        )
        .await?;
        handsets.push(h);
    }
    Ok(handsets)
}

/// One payment's terms.
#[derive(Debug, Clone)]
pub struct Terms<'a> {
    pub reference: &'a str,
    /// As in the iMS, e.g. `EUR12.34` (tier `small` up to the policy's limit).
    pub amount: &'a str,
    pub tier: Tier,
    pub payable: &'a str,
    pub receivable: &'a str,
}

/// The iMS of `t` from `tel:<msisdn>` to `merchant` at `now`, signed by the
/// merchant (M) and the FSP (F).
pub fn message(
    merchant: &Party,
    fsp: &Party,
    msisdn: &str,
    t: &Terms<'_>,
    now: time::OffsetDateTime,
) -> Result<ImsMessage, DemoError> {
    let mut m = ImsMessage {
        tier: t.tier,
        reference: Some(Ref::new(t.reference).map_err(|e| fail(e.to_string()))?),
        from: format!("tel:{msisdn}")
            .parse::<PartyId>()
            .map_err(|e| fail(e.to_string()))?,
        from_sign: None,
        to: merchant
            .id
            .parse::<PartyId>()
            .map_err(|e| fail(e.to_string()))?,
        to_sign: None,
        fsp_sign: None,
        timestamp: now.replace_nanosecond(0).unwrap_or(now),
        account_payable: t.payable.into(),
        account_receivable: t.receivable.into(),
        amount: Money::parse(t.amount).map_err(|e| fail(e.to_string()))?,
    };
    m.to_sign = Some(sign(&merchant.key, &m.canonical_m())?);
    m.fsp_sign = Some(sign(
        &fsp.key,
        &m.canonical_f().map_err(|e| fail(e.to_string()))?,
    )?);
    Ok(m)
}

/// Who pays whom through which tmcs.
pub struct Payment<'a> {
    pub base: &'a str,
    /// The FSP's mTLS client.
    pub fsp_client: &'a awc::Client,
    /// A client for the handset API (server-authenticated TLS only).
    pub anon: &'a awc::Client,
    pub merchant: &'a Party,
    pub fsp: &'a Party,
    pub clock: &'a SharedClock,
}

/// What one payment took: its request id, and the submission and
/// authorisation times (ms).
#[derive(Debug, Clone)]
pub struct Paid {
    pub request_id: String,
    pub submit_ms: f64,
    pub authorize_ms: f64,
}

impl Payment<'_> {
    /// The merchant signs M, the FSP signs F and submits; the handset reads
    /// the request and authorises it with `pin`.
    pub async fn pay(&self, h: &Handset, pin: &str, t: &Terms<'_>) -> Result<Paid, DemoError> {
        let t0 = Instant::now();
        let id = self.submit(h, t).await?;
        let submit_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let view = self.view(h, &id).await?;
        let t1 = Instant::now();
        self.authorize(h, pin, &id, &view).await?;
        Ok(Paid {
            request_id: id,
            submit_ms,
            authorize_ms: t1.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The iMS of `t` from the handset's payer to the merchant, signed by
    /// the merchant (M) and the FSP (F).
    pub fn message(&self, h: &Handset, t: &Terms<'_>) -> Result<ImsMessage, DemoError> {
        message(self.merchant, self.fsp, &h.msisdn, t, self.clock.now())
    }

    /// The FSP submits the message of `t`: `(status, answer)`.
    pub async fn submit_raw(&self, h: &Handset, t: &Terms<'_>) -> Result<(u16, Value), DemoError> {
        let m = self.message(h, t)?;
        let mut res = self
            .fsp_client
            .post(format!("{}/v1/fsp/messages", self.base))
            .insert_header(("content-type", "application/xml"))
            .send_body(m.to_xml())
            .await
            .map_err(|e| fail(format!("submit: {e}")))?;
        let body = res.body().await.map_err(|e| fail(format!("submit: {e}")))?;
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Ok((res.status().as_u16(), v))
    }

    /// The FSP submits the message of `t`; a new request's id.
    pub async fn submit(&self, h: &Handset, t: &Terms<'_>) -> Result<String, DemoError> {
        match self.submit_raw(h, t).await? {
            (202, v) => text(&v, "request_id"),
            (st, v) => Err(fail(format!("submit: HTTP {st} {v}"))),
        }
    }

    /// The handset reads request `id` (`GET /v1/handset/requests/{id}`).
    pub async fn view(&self, h: &Handset, id: &str) -> Result<Value, DemoError> {
        let path = format!("/v1/handset/requests/{id}");
        let hdr = h
            .device_header("GET", &path, self.clock.now().unix_timestamp())
            .map_err(|e| fail(e.to_string()))?;
        let (_, r) = call(
            self.anon
                .get(format!("{}{path}", self.base))
                .insert_header(("authorization", hdr)),
            None,
            "read",
        )
        .await?;
        Ok(r)
    }

    /// The handset authorises request `id` as read in `view` with `pin`.
    pub async fn authorize(
        &self,
        h: &Handset,
        pin: &str,
        id: &str,
        view: &Value,
    ) -> Result<Value, DemoError> {
        let block = h
            .auth_pin_block(id, &text(view, "nonce")?, &text(view, "dtbs_sha256")?, pin)
            .map_err(|e| fail(e.to_string()))?;
        let apath = format!("/v1/handset/requests/{id}/authorize");
        let hdr = h
            .device_header("POST", &apath, self.clock.now().unix_timestamp())
            .map_err(|e| fail(e.to_string()))?;
        let (_, v) = call(
            self.anon
                .post(format!("{}{apath}", self.base))
                .insert_header(("authorization", hdr)),
            Some(&json!({ "pin_block": block })),
            "authorize",
        )
        .await?;
        Ok(v)
    }

    /// A device-authenticated handset call: `(status, answer)`, errors included.
    pub async fn handset(
        &self,
        h: &Handset,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), DemoError> {
        let hdr = h
            .device_header(method, path, self.clock.now().unix_timestamp())
            .map_err(|e| fail(e.to_string()))?;
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.anon.post(url),
            "DELETE" => self.anon.delete(url),
            _ => self.anon.get(url),
        }
        .insert_header(("authorization", hdr));
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut res = sent.map_err(|e| fail(format!("{method} {path}: {e}")))?;
        let bytes = res
            .body()
            .limit(1 << 20)
            .await
            .map_err(|e| fail(format!("{method} {path}: {e}")))?;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((res.status().as_u16(), v))
    }

    /// Polls `GET /v1/fsp/requests/{id}` until its status is one of
    /// `want`, or `within` passes; returns the last view.
    pub async fn await_status(
        &self,
        id: &str,
        want: &[&str],
        within: Duration,
    ) -> Result<Value, DemoError> {
        let deadline = Instant::now() + within;
        loop {
            let (_, v) = call(
                self.fsp_client
                    .get(format!("{}/v1/fsp/requests/{id}", self.base)),
                None,
                "status",
            )
            .await?;
            let status = v["status"].as_str().unwrap_or_default();
            if want.contains(&status) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "request {id} is {status}, not {want:?}, after {within:?}"
                )));
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The payer's receipt (`GET /v1/handset/receipts/{id}`).
    pub async fn receipt(&self, h: &Handset, id: &str) -> Result<Value, DemoError> {
        match self
            .handset(h, "GET", &format!("/v1/handset/receipts/{id}"), None)
            .await?
        {
            (200, v) => Ok(v),
            (st, v) => Err(fail(format!("receipt: HTTP {st} {v}"))),
        }
    }
}

/// The bytes a receipt's `receipt_sig` covers (CONTRACT §11), from the
/// receipt's own fields.
pub fn receipt_message(r: &Value) -> String {
    let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    format!(
        "tmcs-receipt-v1\nrequest_id:{}\nstatus:{}\nref:{}\npayee:{}\namount:{}\nts:{}\n",
        f("request_id"),
        f("status"),
        f("ref"),
        f("payee"),
        f("amount"),
        f("ts")
    )
}

/// A balance at the simulated bank, in minor units (0 when unknown).
pub fn balance(balances: &Value, account: &str, currency: &str) -> i64 {
    balances["accounts"][account][currency]
        .as_i64()
        .unwrap_or_else(|| balances["opening_balance"].as_i64().unwrap_or(0))
}
