//! `tmcs bench --scenario ocsp`: the OCSP responder on the plain-HTTP PKI
//! listener against `openssl ocsp -index` on an equivalent CA, in the same
//! run, with the same request mix and the same client at the same
//! concurrency (issue #8, finding 8).
//!
//! * tmcs: 20 certificates issued by its CA (parties by CSR), 10 of them
//!   revoked `keyCompromise`; answers signed by the HSM OCSP key.
//! * openssl: a software P-256 CA and responder, an `index.txt` with the
//!   same 20 serials and statuses.
//! * The mix: each serial asked with and without a nonce (openssl's
//!   default 16 bytes), round-robin, over 8 keep-alive connections
//!   (reconnecting when a server closes).
//!
//! One JSON line: `{"scenario":"ocsp","tmcs_per_s","openssl_per_s","ratio",
//! "tmcs_p99_ms", …}`, with the HSM signatures tmcs made while measured
//! (pre-signed answers need none) and a static answer's rate on the same
//! listener (`GET /pki/ca.pem`) for scale.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::bench::round2;
use crate::demo::{fail, register_party, DemoError};
use crate::loadgen::{self, Req};
use tmcs::clock::SharedClock;
use tmcs::config::Config;

const CERTIFICATES: usize = 20;
const CONNECTIONS: usize = 8;

/// An `OCSPResponse` with responseStatus successful (0).
fn ocsp_ok(body: &[u8]) -> bool {
    let Some(&first) = body.get(1) else {
        return false;
    };
    let header = if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    };
    body.first() == Some(&0x30) && body.get(header..header + 3) == Some(&[0x0a, 0x01, 0x00][..])
}

fn pem_ok(body: &[u8]) -> bool {
    body.starts_with(b"-----BEGIN CERTIFICATE-----")
}

fn openssl(args: &[&str]) -> Result<(), DemoError> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| fail(format!("openssl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn path_str(p: &Path) -> Result<&str, DemoError> {
    p.to_str().ok_or_else(|| fail("non-UTF-8 path"))
}

/// The OCSP requests (each serial with and without a nonce) for `issuer_pem`.
fn requests(
    dir: &Path,
    tag: &str,
    issuer_pem: &Path,
    serials: &[String],
) -> Result<Vec<Req>, DemoError> {
    let mut out = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        for nonce in [false, true] {
            let file = dir.join(format!("{tag}-{i}-{nonce}.der"));
            let hex = format!("0x{serial}");
            let mut args = vec![
                "ocsp",
                "-issuer",
                path_str(issuer_pem)?,
                "-serial",
                &hex,
                "-reqout",
                path_str(&file)?,
            ];
            if !nonce {
                args.push("-no_nonce");
            }
            openssl(&args)?;
            out.push(Req {
                method: "POST",
                path: "/pki/ocsp".into(),
                content_type: "application/ocsp-request",
                body: std::fs::read(&file).map_err(|e| fail(e.to_string()))?,
            });
        }
    }
    Ok(out)
}

/// A software CA with an OCSP responder certificate and an `index.txt`
/// listing `serials` (the first `revoked` of them revoked).
struct OpensslCa {
    ca: PathBuf,
    rsp: PathBuf,
    rsp_key: PathBuf,
    index: PathBuf,
}

fn openssl_ca(dir: &Path, serials: &[String], revoked: usize) -> Result<OpensslCa, DemoError> {
    let p = |f: &str| dir.join(f);
    let (ca_key, ca, rsp_key, rsp_csr, rsp, ext, index) = (
        p("ca.key"),
        p("ca.pem"),
        p("rsp.key"),
        p("rsp.csr"),
        p("rsp.pem"),
        p("rsp.ext"),
        p("index.txt"),
    );
    for key in [&ca_key, &rsp_key] {
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            path_str(key)?,
        ])?;
    }
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        path_str(&ca_key)?,
        "-subj",
        "/CN=bench-ocsp-ca",
        "-days",
        "30",
        "-out",
        path_str(&ca)?,
    ])?;
    openssl(&[
        "req",
        "-new",
        "-key",
        path_str(&rsp_key)?,
        "-subj",
        "/CN=bench-ocsp-responder",
        "-out",
        path_str(&rsp_csr)?,
    ])?;
    std::fs::write(
        &ext,
        "extendedKeyUsage=OCSPSigning\nkeyUsage=critical,digitalSignature\n",
    )
    .map_err(|e| fail(e.to_string()))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&rsp_csr)?,
        "-CA",
        path_str(&ca)?,
        "-CAkey",
        path_str(&ca_key)?,
        "-set_serial",
        "1",
        "-days",
        "30",
        "-extfile",
        path_str(&ext)?,
        "-out",
        path_str(&rsp)?,
    ])?;
    let mut lines = String::new();
    for (i, s) in serials.iter().enumerate() {
        let serial = s.to_ascii_uppercase();
        if i < revoked {
            lines.push_str(&format!(
                "R\t351231235959Z\t250101000000Z,keyCompromise\t{serial}\tunknown\t/CN=leaf{i}\n"
            ));
        } else {
            lines.push_str(&format!(
                "V\t351231235959Z\t\t{serial}\tunknown\t/CN=leaf{i}\n"
            ));
        }
    }
    std::fs::write(&index, lines).map_err(|e| fail(e.to_string()))?;
    Ok(OpensslCa {
        ca,
        rsp,
        rsp_key,
        index,
    })
}

fn free_port() -> Result<u16, DemoError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    Ok(l.local_addr().map_err(|e| fail(e.to_string()))?.port())
}

/// Sum of the HSM signature count.
fn hsm_signatures(app: &tmcs::app::App) -> u64 {
    app.hsm
        .metrics()
        .op_seconds
        .with_label_values(&["ecdsa_sign"])
        .get_sample_count()
}

pub fn run(cfg: Config, clock: SharedClock, dir: &Path, seconds: u64) -> Result<Value, DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(run_async(cfg, clock, dir.join("ocsp-bench"), seconds))
}

async fn run_async(
    cfg: Config,
    clock: SharedClock,
    dir: PathBuf,
    seconds: u64,
) -> Result<Value, DemoError> {
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let local = crate::demo::start_local(&cfg, clock).await?;
    let (pki_base, _) = local
        .pki
        .clone()
        .ok_or_else(|| fail("pki.http_listen is disabled"))?;
    let tmcs_addr: SocketAddr = pki_base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| fail(format!("{pki_base}: {e}")))?;

    // tmcs: certificates by CSR, the first half revoked.
    let mut serials = Vec::new();
    for i in 0..CERTIFICATES {
        let id = format!("Bench.Shop{i}@merchant.bench");
        let (party, _) = register_party(&local.base, &local.operator, &id, "merchant").await?;
        let info =
            tmcs::pki::CertInfo::from_pem(&party.cert_pem).map_err(|e| fail(e.to_string()))?;
        serials.push(info.serial_hex);
        if i < CERTIFICATES / 2 {
            crate::demo::call(
                local
                    .operator
                    .post(format!("{}/v1/admin/parties/{id}/revoke", local.base)),
                Some(&json!({ "reason": "keyCompromise" })),
                "revoke",
            )
            .await?;
        }
    }
    let issuing = dir.join("tmcs-issuing.pem");
    std::fs::write(&issuing, &local.app.svc.pki.issuing.info.pem)
        .map_err(|e| fail(e.to_string()))?;
    let tmcs_reqs = requests(&dir, "tmcs", &issuing, &serials)?;

    // openssl: the equivalent CA and its responder.
    let ca = openssl_ca(&dir, &serials, CERTIFICATES / 2)?;
    let openssl_reqs = requests(&dir, "openssl", &ca.ca, &serials)?;
    let port = free_port()?;
    let port_s = port.to_string();
    let mut responder = Command::new("openssl")
        .args([
            "ocsp",
            "-index",
            path_str(&ca.index)?,
            "-CA",
            path_str(&ca.ca)?,
            "-rsigner",
            path_str(&ca.rsp)?,
            "-rkey",
            path_str(&ca.rsp_key)?,
            "-port",
            &port_s,
            "-nmin",
            "60",
            "-ignore_err",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("openssl ocsp: {e}")))?;
    let openssl_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let duration = Duration::from_secs(seconds.max(1));

    let measured = async {
        // Warm-up: every tmcs request once (pre-signs the answers); openssl
        // answers its first request (no probe connection without a request:
        // openssl 3.0's responder spins on one).
        for r in &tmcs_reqs {
            if !loadgen::wait_until_serving(tmcs_addr, r, ocsp_ok).await {
                return Err(fail("tmcs OCSP did not answer"));
            }
        }
        let first = openssl_reqs.first().ok_or_else(|| fail("no requests"))?;
        if !loadgen::wait_until_serving(openssl_addr, first, ocsp_ok).await {
            return Err(fail("openssl ocsp did not answer"));
        }
        let signed_before = hsm_signatures(&local.app);
        let tmcs = loadgen::run(tmcs_addr, &tmcs_reqs, CONNECTIONS, duration, ocsp_ok).await;
        let tmcs_signed = hsm_signatures(&local.app) - signed_before;
        let openssl =
            loadgen::run(openssl_addr, &openssl_reqs, CONNECTIONS, duration, ocsp_ok).await;
        let static_req = Req {
            method: "GET",
            path: "/pki/ca.pem".into(),
            content_type: "text/plain",
            body: Vec::new(),
        };
        let fixed = loadgen::run(tmcs_addr, &[static_req], CONNECTIONS, duration / 2, pem_ok).await;
        Ok((tmcs, tmcs_signed, openssl, fixed))
    }
    .await;
    let _ = responder.kill();
    let _ = responder.wait();
    local.stop().await;
    let (tmcs, tmcs_signed, openssl, fixed) = measured?;
    if tmcs.errors > 0 || tmcs.ok == 0 {
        return Err(fail(format!(
            "tmcs OCSP: {} errors, {} answers",
            tmcs.errors, tmcs.ok
        )));
    }
    let ratio = if openssl.per_s() > 0.0 {
        tmcs.per_s() / openssl.per_s()
    } else {
        0.0
    };
    Ok(json!({
        "scenario": "ocsp",
        "tmcs_per_s": round2(tmcs.per_s()),
        "openssl_per_s": round2(openssl.per_s()),
        "ratio": round2(ratio),
        "tmcs_p99_ms": round2(tmcs.percentile(99.0)),
        "tmcs_p50_ms": round2(tmcs.percentile(50.0)),
        "openssl_p99_ms": round2(openssl.percentile(99.0)),
        "static_per_s": round2(fixed.per_s()),
        "static_over_ocsp": round2(if tmcs.per_s() > 0.0 { fixed.per_s() / tmcs.per_s() } else { 0.0 }),
        "tmcs_hsm_signatures": tmcs_signed,
        "connections": CONNECTIONS,
        "certificates": CERTIFICATES,
        "revoked": CERTIFICATES / 2,
        "nonce_share": 0.5,
        "seconds": seconds,
        "errors": { "tmcs": tmcs.errors, "openssl": openssl.errors },
        "reconnects": { "tmcs": tmcs.reconnects, "openssl": openssl.reconnects },
    }))
}
