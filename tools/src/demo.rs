//! `tmcs demo` (`tmcs-tools demo`): the whole flow on the embedded defaults, in one process,
//! through the real HTTPS API — merchant → FSP → tmcs → handset → tmcs →
//! FSP — with the real HSM, database and PIN-block crypto. Exit 0 only when
//! every signature verifies.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use serde_json::{json, Value};

use tmcs::app::App;
use tmcs::clock::SharedClock;
use tmcs::config::Config;
use tmcs::ims::{ImsMessage, Money, PartyId, Ref, Tier};
use tmcs_client::Handset;

use crate::trip::{
    balance, receipt_message, register_parties, Payment, SimTls, Sims, MERCHANT_IBAN, PAYER_IBAN,
};

/// Minor units as `EUR 1234.56`.
fn cents(minor: i64) -> String {
    format!("EUR {}.{:02}", minor / 100, (minor % 100).abs())
}

/// What went wrong, in words for the console.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(pub String);

pub fn fail(msg: impl Into<String>) -> DemoError {
    DemoError(msg.into())
}

macro_rules! ctx {
    ($e:expr, $what:expr) => {
        $e.map_err(|e| fail(format!("{}: {}", $what, e)))
    };
}

struct Out {
    step: u32,
    start: Instant,
}

impl Out {
    fn step(&mut self, title: &str) {
        self.step += 1;
        let _ = writeln!(
            std::io::stdout(),
            "\n[{:>2}] {title}  (+{} ms)",
            self.step,
            self.start.elapsed().as_millis()
        );
    }
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        for l in text.lines() {
            let _ = writeln!(out, "     {l}");
        }
    }
}

pub struct Party {
    pub id: String,
    pub key: PKey<Private>,
    pub cert_pem: String,
}

pub fn p256_key() -> Result<PKey<Private>, DemoError> {
    let group = ctx!(
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1),
        "curve"
    )?;
    let key = ctx!(openssl::ec::EcKey::generate(&group), "key generation")?;
    ctx!(PKey::from_ec_key(key), "key")
}

/// A CSR for `key`, built with rcgen from the key's PKCS#8 form.
pub fn csr_pem(key: &PKey<Private>, cn: &str) -> Result<String, DemoError> {
    let der = ctx!(key.private_key_to_pkcs8(), "pkcs8")?;
    let kp = ctx!(rcgen::KeyPair::try_from(der.as_slice()), "key for the CSR")?;
    let mut params = ctx!(rcgen::CertificateParams::new(Vec::<String>::new()), "CSR")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = ctx!(params.serialize_request(&kp), "CSR")?;
    ctx!(csr.pem(), "CSR PEM")
}

pub fn sign(key: &PKey<Private>, msg: &[u8]) -> Result<Vec<u8>, DemoError> {
    let mut s = ctx!(Signer::new(MessageDigest::sha256(), key), "signer")?;
    ctx!(s.sign_oneshot_to_vec(msg), "signing")
}

fn public_key(cert_pem: &str) -> Result<PKey<Public>, DemoError> {
    ctx!(
        X509::from_pem(cert_pem.as_bytes()).and_then(|x| x.public_key()),
        "certificate"
    )
}

pub fn verify(cert_pem: &str, msg: &[u8], sig: &[u8]) -> Result<bool, DemoError> {
    let key = public_key(cert_pem)?;
    let mut v = ctx!(Verifier::new(MessageDigest::sha256(), &key), "verifier")?;
    Ok(v.verify_oneshot(sig, msg).unwrap_or(false))
}

pub async fn call(
    req: awc::ClientRequest,
    body: Option<&Value>,
    what: &str,
) -> Result<(u16, Value), DemoError> {
    let sent = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    };
    let mut res = sent.map_err(|e| fail(format!("{what}: {e}")))?;
    let status = res.status().as_u16();
    let bytes = ctx!(res.body().limit(1 << 20).await, what)?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status >= 400 {
        return Err(fail(format!("{what}: HTTP {status} {v}")));
    }
    Ok((status, v))
}

pub fn text(v: &Value, key: &str) -> Result<String, DemoError> {
    v[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail(format!("answer without `{key}`: {v}")))
}

/// Runs the demo in `data_dir` (already empty) with `cfg`. Blocks.
pub fn run(cfg: Config, clock: SharedClock) -> Result<(), DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(run_async(cfg, clock))
}

/// A freshly initialised installation serving in this process, with
/// clients for it (what the demo and the benchmark run against).
pub(crate) struct Local {
    pub(crate) app: App,
    pub(crate) handle: actix_web::dev::ServerHandle,
    pub(crate) base: String,
    /// The plain-HTTP PKI listener: `http://127.0.0.1:<port>` and its handle.
    pub(crate) pki: Option<(String, actix_web::dev::ServerHandle)>,
    pub(crate) ca: std::path::PathBuf,
    pub(crate) anon: awc::Client,
    pub(crate) operator: awc::Client,
    pub(crate) created: usize,
}

impl Local {
    /// Stops the listeners.
    pub(crate) async fn stop(&self) {
        if let Some((_, h)) = &self.pki {
            h.stop(true).await;
        }
        self.handle.stop(true).await;
    }
}

/// `tmcs init`, then the HTTPS service on a free port of this actix system.
pub(crate) async fn start_local(cfg: &Config, clock: SharedClock) -> Result<Local, DemoError> {
    let (cfg2, clock2) = (cfg.clone(), clock.clone());
    let report = ctx!(
        actix_web::rt::task::spawn_blocking(move || tmcs::init::init(&cfg2, clock2.as_ref())).await,
        "init"
    )?;
    let report = ctx!(report, "init")?;
    let app = ctx!(App::open(cfg.clone(), clock), "open")?;
    let bound = ctx!(tmcs::api::bind(app.clone()), "bind")?;
    let port = bound
        .addrs
        .first()
        .map(|a| a.port())
        .ok_or_else(|| fail("no listener"))?;
    let handle = bound.server.handle();
    actix_web::rt::spawn(bound.server);
    // The relay, as `tmcs serve` runs it (HTTPS with the relay certificate).
    if app.svc.relay.enabled() {
        let transport = tmcs_server::relay_transport(cfg).map_err(fail)?;
        actix_web::rt::spawn(tmcs::relay::worker::run(app.svc.clone(), transport));
    }
    let pki = bound.pki.and_then(|l| {
        let port = l.addrs.first()?.port();
        let h = l.server.handle();
        actix_web::rt::spawn(l.server);
        Some((format!("http://127.0.0.1:{port}"), h))
    });
    let ca = cfg.ca_pem.clone();
    let anon = ctx!(tmcs_client::https::https_client(&ca, None), "client")?;
    let identity = (
        cfg.clients_dir.join("operator.crt"),
        cfg.clients_dir.join("operator.key"),
    );
    let operator = ctx!(
        tmcs_client::https::https_client(&ca, Some((&identity.0, &identity.1))),
        "operator client"
    )?;
    Ok(Local {
        app,
        handle,
        base: format!("https://localhost:{port}"),
        pki,
        ca,
        anon,
        operator,
        created: report.created.len(),
    })
}

async fn run_async(cfg: Config, clock: SharedClock) -> Result<(), DemoError> {
    let mut out = Out {
        step: 0,
        start: Instant::now(),
    };
    out.step(
        "tmcs init: SoftHSM2 token, HSM keys, database, CA hierarchy, TLS and client certificates",
    );
    let l = start_local(&cfg, clock).await?;
    out.line(&format!(
        "data dir {} ({} items created)",
        cfg.data_dir.display(),
        l.created
    ));
    out.step(&format!("tmcs serve: HTTPS with mTLS roles on {}", l.base));
    let (_, ready) = call(l.anon.get(format!("{}/readyz", l.base)), None, "readyz").await?;
    out.line(&format!("/readyz: {ready}"));
    out.step(
        "the FSP, the merchant and the bank: simulators over HTTPS with mTLS (tmcs-tools sim)",
    );
    let exe = ctx!(std::env::current_exe(), "tmcs-tools")?;
    let sims = Sims::start(&exe, &SimTls::of(&cfg), &cfg.data_dir)?;
    for s in [&sims.fsp, &sims.merchant, &sims.bank] {
        out.line(&format!("{:<8} {}", s.kind, s.url));
    }
    out.line(&format!(
        "relay mode {}: tmcs instructs the bank itself ({})",
        l.app.svc.relay.settings.mode.as_str(),
        l.app.svc.relay.settings.bank.as_deref().unwrap_or("-")
    ));
    let result = flow(&mut out, &l, &sims).await;
    l.stop().await;
    result
}

/// Registers a party by CSR through the operator API; returns it and its
/// certificate fingerprint.
pub(crate) async fn register_party(
    base: &str,
    operator: &awc::Client,
    id: &str,
    kind: &str,
) -> Result<(Party, String), DemoError> {
    register_party_with(base, operator, id, kind, None).await
}

/// The benchmarks' merchant and FSP, registered by CSR.
pub(crate) async fn bench_parties(l: &Local) -> Result<(Party, Party), DemoError> {
    let (base, operator) = (&l.base, &l.operator);
    let (merchant, _) =
        register_party(base, operator, "Bench.Shop@merchant.bench", "merchant").await?;
    let (fsp, _) = register_party(base, operator, "Bench.FSP@fsp.bench", "fsp").await?;
    Ok((merchant, fsp))
}

/// [`register_party`] with the party's `callback_url` (where the relay
/// delivers to it).
pub async fn register_party_with(
    base: &str,
    operator: &awc::Client,
    id: &str,
    kind: &str,
    callback_url: Option<&str>,
) -> Result<(Party, String), DemoError> {
    let key = p256_key()?;
    let mut body = json!({ "party_id": id, "kind": kind, "csr": csr_pem(&key, id)? });
    if let Some(u) = callback_url {
        body["callback_url"] = json!(u);
    }
    let (_, v) = call(
        operator.post(format!("{base}/v1/admin/parties")),
        Some(&body),
        "register party",
    )
    .await?;
    Ok((
        Party {
            id: id.to_string(),
            key,
            cert_pem: text(&v, "certificate")?,
        },
        text(&v, "fingerprint")?,
    ))
}

/// An mTLS client for a party registered by CSR.
pub fn party_client(ca: &Path, p: &Party) -> Result<awc::Client, DemoError> {
    let key_pem = ctx!(p.key.private_key_to_pem_pkcs8(), "party key")?;
    ctx!(
        tmcs_client::https::https_client_pem(ca, &p.cert_pem, &String::from_utf8_lossy(&key_pem)),
        "party client"
    )
}

async fn flow(out: &mut Out, l: &Local, sims: &Sims) -> Result<(), DemoError> {
    let (app, base, ca, anon, operator) = (&l.app, l.base.as_str(), &l.ca, &l.anon, &l.operator);
    // Parties by CSR, with where the relay reaches them.
    out.step("operator registers the merchant, the FSP and the bank (CSR → certificate from the tmcs CA, callback URL)");
    let parties = register_parties(base, operator, sims).await?;
    for (p, kind, sim) in [
        (&parties.merchant, "merchant", &sims.merchant),
        (&parties.fsp, "fsp", &sims.fsp),
        (&parties.bank, "bank", &sims.bank),
    ] {
        out.line(&format!("{kind:<8} {}  → {}", p.id, sim.url));
    }
    let (merchant, fsp) = (&parties.merchant, &parties.fsp);
    let fsp_client = party_client(ca, fsp)?;

    // The subscriber.
    let msisdn = "+4915112345678";
    let person = "John.Bernard@person.xbank";
    // Eight digits: long enough that a chance match in hex output is negligible (the tests grep for it).
    let pin = "48291635";
    out.step(&format!(
        "operator registers subscriber {msisdn} ({person}); a one-time activation code"
    ));
    let (_, v) = call(
        operator.post(format!("{base}/v1/admin/subscribers")),
        Some(&json!({ "msisdn": msisdn, "display_name": "John Bernard", "kyc_ref": "KYC-DEMO-1", "party_id": person })),
        "register subscriber",
    )
    .await?;
    let code = text(&v, "activation_code")?;
    out.line(&format!(
        "activation code delivered out of band (expires {})",
        text(&v, "activation_expires_at")?
    ));

    out.step("handset activates: PIN block (ECIES to the HSM transport key) → key generated in the HSM, certificate issued");
    let mut res = ctx!(
        anon.get(format!("{base}/pki/transport.pem")).send().await,
        "transport.pem"
    )?;
    let transport = ctx!(res.body().await, "transport.pem")?;
    let handset = ctx!(Handset::new(msisdn, &transport), "handset")?;
    let body = ctx!(handset.activation_body(&code, pin), "activation body")?;
    let (_, v) = call(
        anon.post(format!("{base}/v1/handset/activate")),
        Some(&body),
        "activate",
    )
    .await?;
    let sub_cert = text(&v, "certificate")?;
    let sub_info = ctx!(
        tmcs::pki::CertInfo::from_pem(&sub_cert),
        "subscriber certificate"
    )?;
    out.line(&format!(
        "subscriber certificate: CN={} serial {}",
        sub_info.common_name, sub_info.serial_hex
    ));

    // The payer's instrument (CONTRACT §12): the account, proven by the
    // micro-amount the bank reserved on it; then paid by alias.
    let pay = Payment {
        base,
        fsp_client: &fsp_client,
        anon,
        merchant,
        fsp,
        clock: &app.svc.clock,
    };
    out.step("payer links an account (POST /v1/handset/instruments): the bank reserves a micro-amount on it");
    let (st, v) = pay
        .handset(
            &handset,
            "POST",
            "/v1/handset/instruments",
            Some(&json!({ "account": PAYER_IBAN, "alias": "main" })),
        )
        .await?;
    if st != 202 || v["status"] != "verifying" {
        return Err(fail(format!("link: HTTP {st} {v}")));
    }
    let instrument_id = text(&v, "instrument_id")?;
    out.line(&format!(
        "instrument {instrument_id}: verifying (alias main)"
    ));
    let held = sims.bank.get(operator, "/balances").await?["held"][PAYER_IBAN]["EUR"]
        .as_i64()
        .unwrap_or(0);
    out.line("the payer reads the held amount in their banking app (it is never stored or logged by tmcs)");
    out.step("payer confirms the amount (POST …/confirm): the instrument is active, the reservation released");
    let (st, v) = pay
        .handset(
            &handset,
            "POST",
            &format!("/v1/handset/instruments/{instrument_id}/confirm"),
            Some(&json!({ "amount": format!("EUR{}.{:02}", held / 100, held % 100) })),
        )
        .await?;
    if st != 200 || v["status"] != "active" {
        return Err(fail(format!("confirm: HTTP {st} {v}")));
    }
    let (_, list) = pay
        .handset(&handset, "GET", "/v1/handset/instruments", None)
        .await?;
    for i in list["instruments"].as_array().into_iter().flatten() {
        out.line(&format!(
            "{} {} {}",
            i["alias"].as_str().unwrap_or(""),
            i["account_masked"].as_str().unwrap_or(""),
            i["status"].as_str().unwrap_or("")
        ));
    }

    // The iMS.
    out.step("merchant builds the iMS and signs M; the FSP adds the accounts (the payer's as alias:main) and signs F");
    let now = app.svc.clock.now();
    let mut m = ImsMessage {
        tier: Tier::Medium,
        reference: Some(ctx!(Ref::new("POS-7-000123"), "ref")?),
        from: ctx!(person.parse::<PartyId>(), "from")?,
        from_sign: None,
        to: ctx!(merchant.id.parse::<PartyId>(), "to")?,
        to_sign: None,
        fsp_sign: None,
        timestamp: now.replace_nanosecond(0).unwrap_or(now),
        account_payable: "alias:main".into(),
        account_receivable: MERCHANT_IBAN.into(),
        amount: ctx!(Money::parse("EUR1000.00"), "amount")?,
    };
    let m_bytes = m.canonical_m();
    m.to_sign = Some(sign(&merchant.key, &m_bytes)?);
    let f_bytes = ctx!(m.canonical_f(), "F")?;
    m.fsp_sign = Some(sign(&fsp.key, &f_bytes)?);
    let c_bytes = ctx!(m.canonical_c(), "C")?;
    let xml = m.to_xml();
    out.line(&String::from_utf8_lossy(&m_bytes));

    let before = sims.bank.get(operator, "/balances").await?;
    let amount_minor = i64::try_from(m.amount.minor()).unwrap_or(i64::MAX);
    out.line(&format!(
        "bank balances before: payer {PAYER_IBAN} {}, merchant {MERCHANT_IBAN} {}",
        cents(balance(&before, PAYER_IBAN, "EUR")),
        cents(balance(&before, MERCHANT_IBAN, "EUR"))
    ));

    out.step("FSP submits the iMS to tmcs over mTLS (POST /v1/fsp/messages)");
    let mut res = ctx!(
        fsp_client
            .post(format!("{base}/v1/fsp/messages"))
            .insert_header(("content-type", "application/xml"))
            .send_body(xml.clone())
            .await,
        "submit"
    )?;
    let status = res.status().as_u16();
    let v: Value =
        serde_json::from_slice(&ctx!(res.body().await, "submit")?).unwrap_or(Value::Null);
    if status != 202 {
        return Err(fail(format!("submit: HTTP {status} {v}")));
    }
    let request_id = text(&v, "request_id")?;
    let vc = text(&v, "verification_code")?;
    out.line(&format!(
        "request {request_id}: {} until {}",
        text(&v, "status")?,
        text(&v, "expires_at")?
    ));
    out.line(&format!("verification code shown at the POS: {vc}"));

    out.step("handset fetches the request (device-key signed) and checks the trusted dialog");
    let path = format!("/v1/handset/requests/{request_id}");
    let hdr = ctx!(
        handset.device_header("GET", &path, app.svc.clock.now().unix_timestamp()),
        "device header"
    )?;
    let (_, v) = call(
        anon.get(format!("{base}{path}"))
            .insert_header(("authorization", hdr)),
        None,
        "handset request",
    )
    .await?;
    let nonce = text(&v, "nonce")?;
    let dtbs = text(&v, "dtbs_sha256")?;
    let own_dtbs = tmcs::signing::b64url(&openssl::sha::sha256(&c_bytes));
    if dtbs != own_dtbs {
        return Err(fail("dtbs_sha256 is not SHA-256 of C"));
    }
    let display = &v["display"];
    let mut display_msg = tmcs::signing::display_message(
        &request_id,
        display["payee"].as_str().unwrap_or(""),
        display["amount"].as_str().unwrap_or(""),
        &text(&v, "verification_code")?,
        &dtbs,
        &text(&v, "expires_at")?,
    );
    // An alias payment: display_sig also covers which instrument pays.
    if let Some(alias) = v["instrument"].as_str() {
        display_msg.push_str(&format!("instrument:{alias}\n"));
    }
    let display_sig = ctx!(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            text(&v, "display_sig")?
        ),
        "display_sig"
    )?;
    let display_ok = verify(
        &app.svc.pki.display.info.pem,
        display_msg.as_bytes(),
        &display_sig,
    )?;
    if !display_ok || text(&v, "verification_code")? != vc {
        return Err(fail(
            "the display signature or the verification code does not check out",
        ));
    }
    out.line(&format!(
        "display: {}",
        display["text"].as_str().unwrap_or("")
    ));
    out.line(&format!(
        "verification code on the handset: {vc} (matches the POS)"
    ));
    out.line("display_sig verifies with /pki/display.pem");

    out.step("user enters the PIN; the PIN block binds request id, nonce and dtbs_sha256");
    let apath = format!("{path}/authorize");
    let block = ctx!(
        handset.auth_pin_block(&request_id, &nonce, &dtbs, pin),
        "PIN block"
    )?;
    let hdr = ctx!(
        handset.device_header("POST", &apath, app.svc.clock.now().unix_timestamp()),
        "device header"
    )?;
    let (_, v) = call(
        anon.post(format!("{base}{apath}"))
            .insert_header(("authorization", hdr)),
        Some(&json!({ "pin_block": block })),
        "authorize",
    )
    .await?;
    let sig_b64 = text(&v, "signature")?;
    out.line(&format!(
        "tmcs signed C in the HSM with the payer's key: {} ({})",
        text(&v, "status")?,
        sig_b64
    ));

    out.step("tmcs relays (steps 6-9): the signed iMS to the FSP, the pain.001 to the bank, the outcome to the FSP and the merchant");
    let v = pay
        .await_status(
            &request_id,
            &["settled", "rolled_back", "failed"],
            std::time::Duration::from_secs(60),
        )
        .await?;
    if v["status"] != "settled" {
        return Err(fail(format!("the payment did not settle: {v}")));
    }
    let signed_xml = text(&v, "ims")?;
    let (_, list) = call(
        operator.get(format!("{base}/v1/admin/relay?limit=100")),
        None,
        "relay deliveries",
    )
    .await?;
    for d in list["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["request_id"] == request_id.as_str())
        .rev()
    {
        out.line(&format!(
            "{:<12} → {:<30} {} after {} attempt(s)",
            d["event"].as_str().unwrap_or(""),
            d["target"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["attempts"]
        ));
    }
    let fsp_stats = sims.fsp.get(operator, "/stats").await?;
    out.line(&format!(
        "the FSP got the signed iMS {} time(s) and verified the payer's signature over C: {}",
        fsp_stats["by_key"][&request_id]["count"], fsp_stats["signed_verified"]
    ));
    out.line(&format!("status: {}", text(&v, "status")?));
    out.line(&signed_xml);

    out.step("everyone checks the three signatures (ECDSA P-256/SHA-256, as `openssl dgst -sha256 -verify` would)");
    let signed = ctx!(ImsMessage::parse(signed_xml.as_bytes()), "signed iMS")?;
    let (Some(s_m), Some(s_f), Some(s_c)) = (&signed.to_sign, &signed.fsp_sign, &signed.from_sign)
    else {
        return Err(fail("the signed iMS lacks a signature"));
    };
    let c2 = ctx!(signed.canonical_c(), "C")?;
    let checks = [
        (
            "merchant over M",
            verify(&merchant.cert_pem, &signed.canonical_m(), s_m)?,
        ),
        (
            "FSP over F",
            verify(&fsp.cert_pem, &ctx!(signed.canonical_f(), "F")?, s_f)?,
        ),
        (
            "payer (tmcs, HSM) over C",
            verify(&sub_cert, &c2, s_c)? && c2 == c_bytes,
        ),
    ];
    for (what, ok) in &checks {
        out.line(&format!(
            "{what}: {}",
            if *ok { "verified" } else { "FAILED" }
        ));
    }
    if checks.iter().any(|(_, ok)| !ok) {
        return Err(fail("a signature did not verify"));
    }

    out.step("the bank settled (pain.002 ACSC): the balances moved by exactly the amount");
    let after = sims.bank.get(operator, "/balances").await?;
    let moved = [
        (
            PAYER_IBAN,
            "payer",
            balance(&before, PAYER_IBAN, "EUR"),
            balance(&after, PAYER_IBAN, "EUR"),
            -amount_minor,
        ),
        (
            MERCHANT_IBAN,
            "merchant",
            balance(&before, MERCHANT_IBAN, "EUR"),
            balance(&after, MERCHANT_IBAN, "EUR"),
            amount_minor,
        ),
    ];
    for (iban, who, b, a, want) in moved {
        out.line(&format!("{who:<8} {iban}: {} → {}", cents(b), cents(a)));
        if a - b != want {
            return Err(fail(format!(
                "{who}'s balance moved by {} minor units, not {want}",
                a - b
            )));
        }
    }
    let bank_stats = sims.bank.get(operator, "/stats").await?;
    out.line(&format!(
        "bank: {} instruction(s) settled, {} invalid against the pain.001.001.09 XSD",
        bank_stats["settled"], bank_stats["invalid"]
    ));

    out.step("merchant notice (step 9): the outcome at the merchant's callback");
    let key = format!("{request_id}:settled");
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let merchant_stats = loop {
        let st = sims.merchant.get(operator, "/stats").await?;
        if st["by_key"][&key]["count"].as_i64().unwrap_or(0) >= 1 {
            break st;
        }
        if Instant::now() > deadline {
            return Err(fail(format!("the merchant was not told: {st}")));
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    out.line(&format!(
        "merchant got outcome {key} ({} time(s))",
        merchant_stats["by_key"][&key]["count"]
    ));

    out.step(
        "the payer's receipt (step 10, GET /v1/handset/receipts/{id}), signed with the display key",
    );
    let r = pay.receipt(&handset, &request_id).await?;
    let receipt_sig = ctx!(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            text(&r, "receipt_sig")?
        ),
        "receipt_sig"
    )?;
    out.line(&receipt_message(&r));
    if !verify(
        &app.svc.pki.display.info.pem,
        receipt_message(&r).as_bytes(),
        &receipt_sig,
    )? {
        return Err(fail("the receipt's signature does not verify"));
    }
    out.line("receipt_sig verifies with /pki/display.pem");

    out.step("auditor: the hash chain and its signed checkpoints verify");
    let app2 = app.clone();
    let report = ctx!(
        actix_web::rt::task::spawn_blocking(move || {
            let svc = &app2.svc;
            tmcs::audit::make_checkpoint(
                &svc.store,
                svc.custody.as_ref(),
                &svc.pki.keys.audit,
                svc.clock.now(),
            )
            .map_err(|e| e.to_string())?;
            let key = svc.pki.audit_public_key().map_err(|e| e.to_string())?;
            tmcs::audit::verify_store(&svc.store, &key, &[]).map_err(|e| e.to_string())
        })
        .await,
        "audit"
    )?;
    let report = report.map_err(fail)?;
    out.line(&format!(
        "{} events, {} signed checkpoints, head {}",
        report.events, report.checkpoints, report.head_hash
    ));

    out.step("auditor: the evidence of the payment (GET /v1/audit/evidence/{id}), checked offline");
    let data = &app.cfg.data_dir;
    let auditor = ctx!(
        tmcs_client::https::https_client(
            ca,
            Some((
                &app.cfg.clients_dir.join("auditor.crt"),
                &app.cfg.clients_dir.join("auditor.key"),
            )),
        ),
        "auditor client"
    )?;
    let mut res = ctx!(
        auditor
            .get(format!("{base}/v1/audit/evidence/{request_id}"))
            .send()
            .await,
        "evidence"
    )?;
    let bundle = ctx!(res.body().limit(4 << 20).await, "evidence")?;
    if res.status().as_u16() != 200 {
        return Err(fail(format!(
            "evidence: HTTP {} {}",
            res.status(),
            String::from_utf8_lossy(&bundle)
        )));
    }
    let path = data.join(format!("evidence-{request_id}.json"));
    ctx!(
        std::fs::write(&path, &bundle),
        "writing the evidence bundle"
    )?;
    out.line(&format!("evidence bundle: {}", path.display()));
    let (ca_pem, audit_pem) = (
        ctx!(std::fs::read(ca), "ca.pem")?,
        ctx!(std::fs::read(data.join("audit.pem")), "audit.pem")?,
    );
    let verified = tmcs::audit::evidence::verify(&bundle, &ca_pem, &audit_pem)
        .map_err(|e| fail(format!("the evidence does not verify: {e}")))?;
    for c in &verified.checks {
        out.line(&format!("ok: {c}"));
    }
    out.line(&format!(
        "evidence verified offline; again with (the data dir is removed at exit unless the demo \
         ran with --keep): tmcs audit evidence verify {} --ca {} --audit-cert {}",
        path.display(),
        ca.display(),
        data.join("audit.pem").display()
    ));
    out.step("demo complete: the payment settled, every signature verified");
    Ok(())
}

/// A fresh temporary data dir for the demo (kept only with `keep`).
pub fn temp_data_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("tmcs-demo-").tempdir()
}

/// For `tmcs demo`: the clock.
pub fn system_clock() -> SharedClock {
    Arc::new(tmcs::clock::SystemClock)
}
