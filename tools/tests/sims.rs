//! `tmcs-tools sim fsp` and `tmcs-tools sim bank` as real processes, with a
//! test CA made here (rcgen) and driven over mTLS by `tmcs_client::https`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

use tmcs::clock::{Clock as _, SystemClock};
use tmcs::ims::{ImsMessage, Money, PartyId, Ref, Tier};

// ---------------------------------------------------------------- PKI

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A P-256 leaf certificate and its key, PEM.
    fn leaf(&self, cn: &str, sans: &[&str], eku: Vec<ExtendedKeyUsagePurpose>) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = eku;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }
}

struct Identity {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

impl Identity {
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        let key = PKey::private_key_from_pem(self.key_pem.as_bytes()).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.sign_oneshot_to_vec(data).unwrap()
    }
}

/// The test CA, the simulators' server certificate, the relay's client
/// certificate and the strangers.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    relay: Identity,
    /// Same CA, clientAuth, CN `fsp-tests`: fine for /stats, not for tmcs's routes.
    other_cn: Identity,
    /// Same CA, CN `tmcs-relay`, no extendedKeyUsage.
    relay_no_eku: Identity,
    /// Another CA, CN `tmcs-relay`, clientAuth.
    foreign_relay: Identity,
    foreign: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("sims test CA");
        let server = ca.leaf(
            "localhost",
            &["localhost", "127.0.0.1"],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        );
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        let client = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let relay = ca.leaf("tmcs-relay", &[], client.clone());
        let other_cn = ca.leaf("fsp-tests", &[], client.clone());
        let relay_no_eku = ca.leaf("tmcs-relay", &[], vec![]);
        let foreign = Ca::new("another CA");
        let foreign_relay = foreign.leaf("tmcs-relay", &[], client);
        Pki {
            dir,
            ca,
            relay,
            other_cn,
            relay_no_eku,
            foreign_relay,
            foreign,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, id: &Identity) -> awc::Client {
        tmcs_client::https::https_client_pem(&self.path("ca.pem"), &id.cert_pem, &id.key_pem)
            .unwrap()
    }

    fn anonymous(&self) -> awc::Client {
        tmcs_client::https::https_client(&self.path("ca.pem"), None).unwrap()
    }
}

// ---------------------------------------------------------------- processes

/// The workspace root (it holds `schemas/`, the copy of CONTRACT §11's XSD).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The contract's XSD (beside the checkout), else the repository's copy.
fn xsd() -> PathBuf {
    let p = common::contract_xsd();
    assert!(
        p.is_file(),
        "{} is missing (the ISO 20022 XSD of CONTRACT §11)",
        p.display()
    );
    p
}

/// xmllint must be there (CI installs libxml2-utils; `make deps` does too).
fn require_xmllint() {
    let ok = Command::new("xmllint")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "xmllint is missing: install libxml2-utils (apt-get install libxml2-utils, or make deps)"
    );
}

/// `xmllint --noout --schema XSD -` over `xml`.
fn xmllint_validates(xml: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema"])
        .arg(xsd())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

struct Sim {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    url: String,
    stderr: PathBuf,
}

impl Sim {
    fn start(pki: &Pki, kind: &str, state: &Path) -> Sim {
        let stderr = pki.path(&format!("{kind}-{}.stderr", std::process::id()));
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tmcs-tools"))
            .args(["sim", kind, "--cert"])
            .arg(pki.path("server.pem"))
            .arg("--key")
            .arg(pki.path("server.key"))
            .arg("--ca")
            .arg(pki.path("ca.pem"))
            .arg("--state")
            .arg(state)
            .args(if kind == "bank" {
                vec![std::ffi::OsString::from("--xsd"), xsd().into_os_string()]
            } else {
                Vec::new()
            })
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = match line.trim().strip_prefix("listening on ") {
            Some(u) if u.starts_with("https://127.0.0.1:") => u.to_string(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sim {kind} did not start: {line:?}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            }
        };
        Sim {
            child,
            _stdout: out,
            url,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGTERM (this child only), then its exit status.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        self.child.wait().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    actix_web::rt::System::new().block_on(f)
}

async fn get_json(c: &awc::Client, url: &str) -> Value {
    let mut r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.json::<Value>().limit(4 << 20).await.unwrap()
}

async fn post_json(c: &awc::Client, url: &str, body: Value) -> (u16, Value) {
    let mut r = c.post(url).send_json(&body).await.unwrap();
    let status = r.status().as_u16();
    let body = r.body().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A call as tmcs makes it: `Idempotency-Key`, `TMCS-Event`, a media type.
async fn deliver(
    c: &awc::Client,
    url: &str,
    key: &str,
    event: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = c
        .post(url)
        .insert_header(("Idempotency-Key", key))
        .insert_header(("TMCS-Event", event))
        .insert_header(("Content-Type", content_type));
    for (k, v) in extra {
        req = req.insert_header((*k, *v));
    }
    let mut r = req.send_body(body.to_string()).await.unwrap();
    let status = r.status().as_u16();
    let body = r.body().await.unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

// ---------------------------------------------------------------- fixtures

/// A fully signed iMS (CONTRACT §5): the merchant over M, the FSP over F,
/// the payer over C.
fn signed_ims(payer: &Identity, merchant: &Identity, fsp: &Identity, amount: &str) -> String {
    let now = SystemClock.now().replace_nanosecond(0).unwrap();
    let mut m = ImsMessage {
        tier: Tier::Medium,
        reference: Some(Ref::new("POS-7-000123").unwrap()),
        from: "John.Bernard@person.xbank".parse::<PartyId>().unwrap(),
        from_sign: None,
        to: "Merkur.Trade@merchant.xbank".parse::<PartyId>().unwrap(),
        to_sign: None,
        fsp_sign: None,
        timestamp: now,
        account_payable: "1234-5678-9abc".into(),
        account_receivable: "9876-543-21de".into(),
        amount: Money::parse(amount).unwrap(),
    };
    m.to_sign = Some(merchant.sign(&m.canonical_m()));
    m.fsp_sign = Some(fsp.sign(&m.canonical_f().unwrap()));
    m.from_sign = Some(payer.sign(&m.canonical_c().unwrap()));
    m.to_xml()
}

/// A pain.001.001.09 as CONTRACT §11 describes what tmcs sends: one PmtInf
/// with one CdtTrfTxInf, MsgId = PmtInfId = the request id without hyphens.
fn pain001(request_id: &str, debtor_iban: &str, creditor: &str, amount: &str) -> String {
    let id = request_id.replace('-', "");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">
  <CstmrCdtTrfInitn>
    <GrpHdr>
      <MsgId>{id}</MsgId>
      <CreDtTm>2026-05-27T12:34:40Z</CreDtTm>
      <NbOfTxs>1</NbOfTxs>
      <CtrlSum>{amount}</CtrlSum>
      <InitgPty><Nm>tmcs</Nm></InitgPty>
    </GrpHdr>
    <PmtInf>
      <PmtInfId>{id}</PmtInfId>
      <PmtMtd>TRF</PmtMtd>
      <NbOfTxs>1</NbOfTxs>
      <CtrlSum>{amount}</CtrlSum>
      <ReqdExctnDt><Dt>2026-05-27</Dt></ReqdExctnDt>
      <Dbtr><Nm>John.Bernard@person.xbank</Nm></Dbtr>
      <DbtrAcct><Id><IBAN>{debtor_iban}</IBAN></Id></DbtrAcct>
      <DbtrAgt><FinInstnId><Othr><Id>NOTPROVIDED</Id></Othr></FinInstnId></DbtrAgt>
      <CdtTrfTxInf>
        <PmtId><EndToEndId>POS-7-000123</EndToEndId></PmtId>
        <Amt><InstdAmt Ccy="EUR">{amount}</InstdAmt></Amt>
        <CdtrAgt><FinInstnId><Othr><Id>NOTPROVIDED</Id></Othr></FinInstnId></CdtrAgt>
        <Cdtr><Nm>Merkur.Trade@merchant.xbank</Nm></Cdtr>
        <CdtrAcct><Id><Othr><Id>{creditor}</Id></Othr></Id></CdtrAcct>
        <RmtInf><Ustrd>POS-7-000123 Merkur.Trade@merchant.xbank</Ustrd></RmtInf>
      </CdtTrfTxInf>
    </PmtInf>
  </CstmrCdtTrfInitn>
</Document>
"#
    )
}

/// The text of the first element named `name` (any namespace prefix).
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let mut r = quick_xml::reader::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match r.read_event().unwrap() {
            quick_xml::events::Event::Start(e) if e.local_name().as_ref() == name => inside = true,
            quick_xml::events::Event::Text(t) if inside => {
                return Some(t.xml10_content().trim().to_string())
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

const DEBTOR: &str = "DE89370400440532013000";
const CREDITOR: &str = "9876-543-21de";

// ---------------------------------------------------------------- FSP

#[test]
fn fsp_verifies_the_payers_signature_and_counts_per_key() {
    let pki = Pki::new();
    let state = pki.path("fsp.json");
    let mut sim = Sim::start(&pki, "fsp", &state);
    let payer = pki.ca.leaf("payer", &[], vec![]);
    let merchant = pki.ca.leaf("merchant", &[], vec![]);
    let fsp = pki.ca.leaf("fsp", &[], vec![]);
    let payer_b64 = STANDARD.encode(&payer.cert_der);
    let good = signed_ims(&payer, &merchant, &fsp, "EUR100.00");
    let rid = "0b7c6f3e-8a52-4d8e-9a55-3c2b8f1d2e4a";
    block_on(async {
        let c = pki.client(&pki.relay);
        let events = sim.url("/events");
        let cert = [("TMCS-Signer-Certificate", payer_b64.as_str())];
        // A real signed iMS → 200, twice under one key → counted twice raw, once distinct.
        for _ in 0..2 {
            let (s, b) = deliver(&c, &events, rid, "signed", "application/xml", &cert, &good).await;
            assert_eq!(s, 200, "{b}\n{}", sim.log());
            assert_eq!(
                serde_json::from_str::<Value>(&b).unwrap(),
                json!({"received": true})
            );
        }
        // Tampered after signing → 422.
        let tampered = good.replace("EUR100.00", "EUR900.00");
        assert_ne!(tampered, good);
        let (s, b) = deliver(
            &c,
            &events,
            "k-tampered",
            "signed",
            "application/xml",
            &cert,
            &tampered,
        )
        .await;
        assert_eq!(s, 422, "{b}");
        assert!(b.contains("does not verify"), "{b}");
        // Signed right, but by a certificate of another CA → 422.
        let stranger = pki.foreign.leaf("payer", &[], vec![]);
        let stranger_b64 = STANDARD.encode(&stranger.cert_der);
        let forged = signed_ims(&stranger, &merchant, &fsp, "EUR100.00");
        let (s, b) = deliver(
            &c,
            &events,
            "k-stranger",
            "signed",
            "application/xml",
            &[("TMCS-Signer-Certificate", stranger_b64.as_str())],
            &forged,
        )
        .await;
        assert_eq!(s, 422, "{b}");
        assert!(b.contains("does not chain"), "{b}");
        // Without the payer's certificate → 422.
        let (s, _) = deliver(
            &c,
            &events,
            "k-nocert",
            "signed",
            "application/xml",
            &[],
            &good,
        )
        .await;
        assert_eq!(s, 422);
        // The outcome.
        let outcome = json!({"request_id": rid, "ref": "POS-7-000123", "status": "settled", "amount": "EUR100.00"}).to_string();
        let okey = format!("{rid}:settled");
        let (s, b) = deliver(
            &c,
            &events,
            &okey,
            "outcome",
            "application/json",
            &[],
            &outcome,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        // The same key again answers the same, whatever comes with it.
        let (s, _) = deliver(
            &c,
            &events,
            "k-tampered",
            "signed",
            "application/xml",
            &cert,
            &good,
        )
        .await;
        assert_eq!(s, 422, "a key keeps its first answer");
        // One new key delivered 8 times at once: verified and counted once.
        let rid2 = "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5";
        let answers = futures_util::future::join_all(
            (0..8).map(|_| deliver(&c, &events, rid2, "signed", "application/xml", &cert, &good)),
        )
        .await;
        assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
        // No idempotency key → 400, not counted per key.
        let r = c
            .post(&events)
            .insert_header(("TMCS-Event", "signed"))
            .send_body(good.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        let st = get_json(&c, &sim.url("/stats")).await;
        assert_eq!(st["deliveries"], 15, "{st}");
        assert_eq!(st["keys"], 6, "{st}");
        assert_eq!(st["duplicates"], 9, "{st}");
        assert_eq!(st["signed_verified"], 2, "{st}");
        assert_eq!(st["by_key"][rid2]["count"], 8, "{st}");
        assert_eq!(st["signed_bad"], 3, "{st}");
        assert_eq!(
            st["outcomes"],
            json!({"settled": 1, "rolled_back": 0, "failed": 0})
        );
        assert_eq!(st["malformed"], 1, "{st}");
        assert_eq!(
            st["by_key"][rid],
            json!({"count": 2, "event": "signed", "status": 200, "accepted": true})
        );
        assert_eq!(st["by_key"]["k-tampered"]["count"], 2);
        assert_eq!(st["by_request"][rid], json!(["signed", "outcome:settled"]));
    });
    // The counts survive a restart (SIGTERM, then the same --state).
    let before = block_on(async { get_json(&pki.client(&pki.relay), &sim.url("/stats")).await });
    let status = sim.terminate();
    assert!(status.success(), "{status:?}\n{}", sim.log());
    let sim = Sim::start(&pki, "fsp", &state);
    let after = block_on(async { get_json(&pki.client(&pki.relay), &sim.url("/stats")).await });
    assert_eq!(before, after);
}

// ---------------------------------------------------------------- bank

#[test]
fn bank_validates_settles_once_and_rejects_short_balances() {
    require_xmllint();
    let pki = Pki::new();
    let sim = Sim::start(&pki, "bank", &pki.path("bank.db"));
    let rid = "5f0d3c2a-1b4e-4f6a-8c7d-9e0f1a2b3c4d";
    let ins = pain001(rid, DEBTOR, CREDITOR, "12.34");
    xmllint_validates(&ins).unwrap();
    block_on(async {
        let c = pki.client(&pki.relay);
        let url = sim.url("/instructions");
        let (s, _) = post_json(
            &c,
            &sim.url("/balances"),
            json!({"account": DEBTOR, "currency": "EUR", "minor_units": 5000}),
        )
        .await;
        assert_eq!(s, 200);

        // Settled: ACSC, the balances move by exactly the amount.
        let (s, first) = deliver(&c, &url, rid, "instruction", "application/xml", &[], &ins).await;
        assert_eq!(s, 200, "{first}\n{}", sim.log());
        assert!(
            first.contains("xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.002.001.10\""),
            "{first}"
        );
        assert_eq!(
            xml_text(&first, "OrgnlMsgId").unwrap(),
            rid.replace('-', "")
        );
        assert_eq!(xml_text(&first, "OrgnlMsgNmId").unwrap(), "pain.001.001.09");
        assert_eq!(xml_text(&first, "GrpSts").unwrap(), "ACSC");
        assert_eq!(
            xml_text(&first, "OrgnlPmtInfId").unwrap(),
            rid.replace('-', "")
        );
        assert_eq!(xml_text(&first, "OrgnlEndToEndId").unwrap(), "POS-7-000123");
        assert_eq!(xml_text(&first, "TxSts").unwrap(), "ACSC");
        assert!(xml_text(&first, "CreDtTm").is_some() && xml_text(&first, "MsgId").is_some());
        let b = get_json(&c, &sim.url("/balances")).await;
        assert_eq!(b["accounts"][DEBTOR]["EUR"], 5000 - 1234, "{b}");
        assert_eq!(b["accounts"][CREDITOR]["EUR"], 1_000_000 + 1234, "{b}");

        // The same key again: the same pain.002, no second debit.
        let (s, again) = deliver(&c, &url, rid, "instruction", "application/xml", &[], &ins).await;
        assert_eq!(s, 200);
        assert_eq!(again, first);
        assert_eq!(get_json(&c, &sim.url("/balances")).await, b);

        // Short: RJCT AM04, nothing moves.
        let rid2 = "6a1e4d3b-2c5f-4a7b-9d8e-0f1a2b3c4d5e";
        let (s, rj) = deliver(
            &c,
            &url,
            rid2,
            "instruction",
            "application/xml",
            &[],
            &pain001(rid2, DEBTOR, CREDITOR, "40.00"),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(xml_text(&rj, "GrpSts").unwrap(), "RJCT");
        assert_eq!(xml_text(&rj, "TxSts").unwrap(), "RJCT");
        assert_eq!(xml_text(&rj, "Cd").unwrap(), "AM04");
        assert_eq!(
            rj.matches("<Cd>AM04</Cd>").count(),
            2,
            "group and transaction reason: {rj}"
        );
        assert_eq!(get_json(&c, &sim.url("/balances")).await, b);

        // Breaking the XSD → 400, counted as invalid, nothing moves.
        let rid3 = "7b2f5e4c-3d6a-4b8c-8e9f-1a2b3c4d5e6f";
        let bad = pain001(rid3, DEBTOR, CREDITOR, "1.00")
            .replace("<PmtMtd>TRF</PmtMtd>", "<PmtMtd>CASH</PmtMtd>");
        assert!(xmllint_validates(&bad).is_err());
        let (s, e) = deliver(&c, &url, rid3, "instruction", "application/xml", &[], &bad).await;
        assert_eq!(s, 400, "{e}");
        assert!(e.contains("pain.001 does not validate"), "{e}");
        assert_eq!(get_json(&c, &sim.url("/balances")).await, b);

        // Mode reject: RJCT with the reason asked for.
        let (s, _) = post_json(
            &c,
            &sim.url("/control"),
            json!({"mode": "reject", "reason": "AC04"}),
        )
        .await;
        assert_eq!(s, 200);
        let rid4 = "8c3a6f5d-4e7b-4c9d-9fa0-2b3c4d5e6f70";
        let (s, rj) = deliver(
            &c,
            &url,
            rid4,
            "instruction",
            "application/xml",
            &[],
            &pain001(rid4, DEBTOR, CREDITOR, "1.00"),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(xml_text(&rj, "GrpSts").unwrap(), "RJCT");
        assert_eq!(xml_text(&rj, "Cd").unwrap(), "AC04");
        let (s, _) = post_json(&c, &sim.url("/control"), json!({"mode": "ok"})).await;
        assert_eq!(s, 200);
        // A rejected key stays rejected.
        let (_, again) = deliver(
            &c,
            &url,
            rid4,
            "instruction",
            "application/xml",
            &[],
            &pain001(rid4, DEBTOR, CREDITOR, "1.00"),
        )
        .await;
        assert_eq!(xml_text(&again, "GrpSts").unwrap(), "RJCT");
        assert_eq!(get_json(&c, &sim.url("/balances")).await, b);

        // MsgId must be the key without hyphens (CONTRACT §11) → 400, invalid.
        let other = "0f0e0d0c-0b0a-4908-8706-050403020100";
        let (s, e) = deliver(
            &c,
            &url,
            other,
            "instruction",
            "application/xml",
            &[],
            &pain001(rid3, DEBTOR, CREDITOR, "1.00"),
        )
        .await;
        assert_eq!(s, 400, "{e}");
        assert!(e.contains("MsgId"), "{e}");

        let st = get_json(&c, &sim.url("/stats")).await;
        assert_eq!(st["instructions"], 5, "{st}");
        assert_eq!(st["keys"], 3, "{st}");
        assert_eq!(st["duplicates"], 2, "{st}");
        assert_eq!(st["settled"], 1, "{st}");
        assert_eq!(st["rejected"], 2, "{st}");
        assert_eq!(st["invalid"], 2, "{st}");
        assert_eq!(st["by_key"][rid], json!({"count": 2, "status": "ACSC"}));
        assert_eq!(st["by_key"][rid2], json!({"count": 1, "status": "RJCT"}));

        // Reservations hold against the available balance (§12).
        let res = sim.url("/reservations");
        let (s, r) = post_json(
            &c,
            &res,
            json!({"reservation_id": "r-1", "account": DEBTOR, "amount": "EUR0.37"}),
        )
        .await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(
            r,
            json!({"reservation_id": "r-1", "account": DEBTOR, "amount": "EUR0.37"})
        );
        let (s, _) = post_json(
            &c,
            &res,
            json!({"reservation_id": "r-1", "account": DEBTOR, "amount": "EUR0.37"}),
        )
        .await;
        assert_eq!(s, 201, "the same reservation again");
        // 50.00 − 12.34 − 0.37 = 37.29 available.
        let (s, _) = post_json(
            &c,
            &res,
            json!({"reservation_id": "r-2", "account": DEBTOR, "amount": "EUR37.30"}),
        )
        .await;
        assert_eq!(s, 409);
        let st = get_json(&c, &sim.url("/stats")).await;
        assert_eq!(st["held"], json!({DEBTOR: {"EUR": 37}}), "{st}");
        assert_eq!(
            get_json(&c, &sim.url("/balances")).await["held"],
            json!({DEBTOR: {"EUR": 37}})
        );
        // An instruction cannot spend what is held.
        let rid5 = "9d4b7a6e-5f8c-4dae-8b01-3c4d5e6f7081";
        let (_, rj) = deliver(
            &c,
            &url,
            rid5,
            "instruction",
            "application/xml",
            &[],
            &pain001(rid5, DEBTOR, CREDITOR, "37.30"),
        )
        .await;
        assert_eq!(xml_text(&rj, "GrpSts").unwrap(), "RJCT");
        for _ in 0..2 {
            let r = c.delete(sim.url("/reservations/r-1")).send().await.unwrap();
            assert_eq!(r.status(), 204);
        }
        assert_eq!(get_json(&c, &sim.url("/stats")).await["held"], json!({}));
        // §12's path: <callback_url>/reservations with callback_url …/instructions.
        let (s, _) = post_json(
            &c,
            &sim.url("/instructions/reservations"),
            json!({"reservation_id": "r-3", "account": DEBTOR, "amount": "EUR0.05"}),
        )
        .await;
        assert_eq!(s, 201);
        assert_eq!(
            get_json(&c, &sim.url("/balances")).await["held"],
            json!({DEBTOR: {"EUR": 5}})
        );
        let r = c
            .delete(sim.url("/instructions/reservations/r-3"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(get_json(&c, &sim.url("/stats")).await["held"], json!({}));

        // One new key delivered 8 times at once: one debit, one answer.
        let before = get_json(&c, &sim.url("/balances")).await;
        let rid6 = "ae5c8b7f-6091-4ebf-9c12-4d5e6f708192";
        let body = pain001(rid6, DEBTOR, CREDITOR, "0.10");
        let answers = futures_util::future::join_all(
            (0..8).map(|_| deliver(&c, &url, rid6, "instruction", "application/xml", &[], &body)),
        )
        .await;
        assert!(
            answers.iter().all(|a| a == &answers[0] && a.0 == 200),
            "{answers:?}"
        );
        let after = get_json(&c, &sim.url("/balances")).await;
        assert_eq!(
            after["accounts"][DEBTOR]["EUR"],
            before["accounts"][DEBTOR]["EUR"].as_i64().unwrap() - 10
        );
        assert_eq!(
            after["accounts"][CREDITOR]["EUR"],
            before["accounts"][CREDITOR]["EUR"].as_i64().unwrap() + 10
        );
        let st = get_json(&c, &sim.url("/stats")).await;
        assert_eq!(st["by_key"][rid6], json!({"count": 8, "status": "ACSC"}));
        assert_eq!(st["invalid"], 2, "{st}");
    });
}

// ---------------------------------------------------------------- mTLS

/// A stranger's request fails in the handshake (or, at the latest, when
/// the answer is read).
async fn refused_in_tls(c: &awc::Client, url: &str) -> bool {
    match c.get(url).send().await {
        Err(_) => true,
        Ok(mut r) => r.body().await.is_err(),
    }
}

#[test]
fn strangers_are_refused() {
    require_xmllint();
    let pki = Pki::new();
    let fsp = Sim::start(&pki, "fsp", &pki.path("fsp.json"));
    let bank = Sim::start(&pki, "bank", &pki.path("bank.db"));
    let ims = signed_ims(&pki.relay, &pki.relay, &pki.relay, "EUR1.00");
    let ins = pain001(
        "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d",
        DEBTOR,
        CREDITOR,
        "1.00",
    );
    block_on(async {
        for sim in [&fsp, &bank] {
            let stats = sim.url("/stats");
            assert!(
                refused_in_tls(&pki.anonymous(), &stats).await,
                "no client certificate"
            );
            assert!(
                refused_in_tls(&pki.client(&pki.foreign_relay), &stats).await,
                "another CA"
            );
            // The same CA with another CN: the test routes yes, tmcs's routes no.
            get_json(&pki.client(&pki.other_cn), &stats).await;
        }
        for (id, why) in [
            (&pki.other_cn, "another CN"),
            (&pki.relay_no_eku, "no clientAuth"),
        ] {
            let c = pki.client(id);
            let (s, b) = deliver(
                &c,
                &fsp.url("/events"),
                "k1",
                "signed",
                "application/xml",
                &[],
                &ims,
            )
            .await;
            assert_eq!(s, 403, "{why}: {b}");
            let (s, b) = deliver(
                &c,
                &bank.url("/instructions"),
                "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d",
                "instruction",
                "application/xml",
                &[],
                &ins,
            )
            .await;
            assert_eq!(s, 403, "{why}: {b}");
            let r = c
                .post(bank.url("/reservations"))
                .send_json(&json!({"reservation_id": "r", "account": "a", "amount": "EUR0.10"}))
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{why}");
        }
        // Nothing was counted.
        let c = pki.client(&pki.relay);
        assert_eq!(get_json(&c, &fsp.url("/stats")).await["deliveries"], 0);
        let st = get_json(&c, &bank.url("/stats")).await;
        assert_eq!(
            (st["instructions"].clone(), st["reservations"].clone()),
            (json!(0), json!(0))
        );
    });
}

// ---------------------------------------------------------------- control

#[test]
fn control_modes() {
    require_xmllint();
    let pki = Pki::new();
    let fsp = Sim::start(&pki, "fsp", &pki.path("fsp.json"));
    let bank = Sim::start(&pki, "bank", &pki.path("bank.db"));
    let outcome = |rid: &str| {
        json!({"request_id": rid, "ref": null, "status": "failed", "amount": "EUR1.00", "reason": "relay.failed"}).to_string()
    };
    block_on(async {
        let c = pki.client(&pki.relay);
        let events = fsp.url("/events");
        let instructions = bank.url("/instructions");
        let (s, _) = post_json(&c, &fsp.url("/control"), json!({"mode": "bogus"})).await;
        assert_eq!(s, 400);
        let (s, _) = post_json(&c, &fsp.url("/control"), json!({"mode": "reject"})).await;
        assert_eq!(s, 400, "reject is the bank's");

        // 500: answered 500, no effect.
        for sim in [&fsp, &bank] {
            let (s, v) = post_json(&c, &sim.url("/control"), json!({"mode": "500"})).await;
            assert_eq!((s, v), (200, json!({"mode": "500"})));
        }
        let (s, _) = deliver(
            &c,
            &events,
            "a:failed",
            "outcome",
            "application/json",
            &[],
            &outcome("a"),
        )
        .await;
        assert_eq!(s, 500);
        let rid = "1b2c3d4e-5f60-4718-89ab-cdef01234567";
        let ins = pain001(rid, DEBTOR, CREDITOR, "2.50");
        let (s, _) = deliver(
            &c,
            &instructions,
            rid,
            "instruction",
            "application/xml",
            &[],
            &ins,
        )
        .await;
        assert_eq!(s, 500);
        let fs = get_json(&c, &fsp.url("/stats")).await;
        assert_eq!(
            (fs["deliveries"].clone(), fs["injected"].clone()),
            (json!(0), json!(1)),
            "{fs}"
        );
        let bs = get_json(&c, &bank.url("/stats")).await;
        assert_eq!(
            (bs["instructions"].clone(), bs["injected"].clone()),
            (json!(0), json!(1)),
            "{bs}"
        );
        assert_eq!(
            get_json(&c, &bank.url("/balances")).await["accounts"],
            json!({})
        );

        // timeout: no answer (the client gives up).
        let (s, _) = post_json(&c, &fsp.url("/control"), json!({"mode": "timeout"})).await;
        assert_eq!(s, 200);
        let r = c
            .post(&events)
            .timeout(Duration::from_millis(700))
            .insert_header(("Idempotency-Key", "b:failed"))
            .insert_header(("TMCS-Event", "outcome"))
            .insert_header(("Content-Type", "application/json"))
            .send_body(outcome("b"))
            .await;
        assert!(r.is_err(), "mode timeout answered");

        // slow: answered, after the delay.
        for sim in [&fsp, &bank] {
            let (s, v) = post_json(
                &c,
                &sim.url("/control"),
                json!({"mode": "slow", "slow_ms": 600}),
            )
            .await;
            assert_eq!((s, v), (200, json!({"mode": "slow", "slow_ms": 600})));
        }
        let t = Instant::now();
        let (s, _) = deliver(
            &c,
            &events,
            "c:failed",
            "outcome",
            "application/json",
            &[],
            &outcome("c"),
        )
        .await;
        assert_eq!(s, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let (s, b) = deliver(
            &c,
            &instructions,
            rid,
            "instruction",
            "application/xml",
            &[],
            &ins,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(xml_text(&b, "GrpSts").unwrap(), "ACSC");

        // ok again.
        for sim in [&fsp, &bank] {
            let (s, _) = post_json(&c, &sim.url("/control"), json!({"mode": "ok"})).await;
            assert_eq!(s, 200);
            assert_eq!(
                get_json(&c, &sim.url("/control")).await,
                json!({"mode": "ok"})
            );
        }
        let t = Instant::now();
        let (s, _) = deliver(
            &c,
            &events,
            "d:failed",
            "outcome",
            "application/json",
            &[],
            &outcome("d"),
        )
        .await;
        assert_eq!(s, 200);
        assert!(t.elapsed() < Duration::from_millis(600));
        let fs = get_json(&c, &fsp.url("/stats")).await;
        assert_eq!(fs["outcomes"]["failed"], 2, "{fs}");
        assert_eq!(fs["injected"], 2, "{fs}");
    });
}
