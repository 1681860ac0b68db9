//! `tmcs bench --scenario submit`: FSP submissions alone (issue #11). The
//! real HTTPS service runs in-process; merchant-signed and FSP-signed iMS
//! from many payers, prepared before the timed phase, are posted once each
//! by concurrent FSP clients over mTLS keep-alive connections
//! (`POST /v1/fsp/messages`, answer 202). The floor is what the machine
//! does of a submission's own work, in-process on all cores: parsing the
//! iMS and checking its two signatures. Prints one JSON line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Public};
use serde_json::{json, Value};

use crate::bench::{cores, round2, PIN};
use crate::demo::{bench_parties, fail, DemoError, Party};
use crate::loadgen::{self, Load, Req};
use crate::trip::{activate_handsets, Terms};
use tmcs::clock::SharedClock;
use tmcs::config::Config;
use tmcs::ims::{ImsMessage, Tier};

/// Concurrent FSP clients, one keep-alive connection each.
pub const CLIENTS: usize = 8;
/// Payers the messages come from, in turn.
pub const PAYERS: usize = 256;
/// Messages prepared per second of the timed phase: more than tmcs takes
/// on the machines measured so far; the phase ends early if they run out.
const PER_SECOND: u64 = 5_000;

/// Runs the scenario: the timed phase for `seconds`, then the floor for
/// `floor_seconds`.
pub fn run(
    cfg: Config,
    clock: SharedClock,
    seconds: u64,
    floor_seconds: u64,
) -> Result<Value, DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(run_async(cfg, clock, seconds, floor_seconds))
}

/// `n` distinct messages (references `S-<i>`) from the payers in turn,
/// signed now by the merchant and the FSP, as XML; made on all cores.
fn messages(
    merchant: &Party,
    fsp: &Party,
    payers: &[String],
    n: usize,
    now: time::OffsetDateTime,
) -> Result<Vec<Vec<u8>>, DemoError> {
    let threads = cores();
    let chunk = n.div_ceil(threads).max(1);
    let made: Vec<Result<Vec<Vec<u8>>, DemoError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|first| {
                scope.spawn(move || {
                    (first..(first + chunk).min(n))
                        .map(|i| {
                            let reference = format!("S-{i}");
                            let terms = Terms {
                                reference: &reference,
                                amount: "EUR1.00",
                                tier: Tier::Small,
                                payable: "1234-5678",
                                receivable: "9876-5432",
                            };
                            let payer = payers.get(i % payers.len().max(1)).map_or("", |p| p);
                            crate::trip::message(merchant, fsp, payer, &terms, now)
                                .map(|m| m.to_xml().into_bytes())
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(fail("message thread"))))
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for part in made {
        all.extend(part?);
    }
    Ok(all)
}

fn public_key(p: &Party) -> Result<PKey<Public>, DemoError> {
    openssl::x509::X509::from_pem(p.cert_pem.as_bytes())
        .and_then(|x| x.public_key())
        .map_err(|e| fail(format!("certificate of {}: {e}", p.id)))
}

fn verifies(key: &PKey<Public>, msg: &[u8], sig: Option<&[u8]>) -> bool {
    let Some(sig) = sig else { return false };
    tmcs::pki::sha256_signature_verifies(key, msg, sig)
}

/// A submission's own work: the strict parse, then `to/sign` over M with
/// the merchant's key and `FSPsign` over F with the FSP's (keys parsed
/// once, as the service's key cache holds them).
fn parse_and_verify(body: &[u8], merchant: &PKey<Public>, fsp: &PKey<Public>) -> bool {
    let Ok(m) = ImsMessage::parse(body) else {
        return false;
    };
    let Ok(f) = m.canonical_f() else { return false };
    verifies(merchant, &m.canonical_m(), m.to_sign.as_deref())
        && verifies(fsp, &f, m.fsp_sign.as_deref())
}

/// The floor: [`parse_and_verify`] per second, one thread per core, for
/// `seconds`.
fn floor(
    bodies: &[Vec<u8>],
    merchant: &Party,
    fsp: &Party,
    seconds: u64,
) -> Result<(f64, usize), DemoError> {
    let (mk, fk) = (public_key(merchant)?, public_key(fsp)?);
    let threads = cores();
    let (count, errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds.max(1));
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (mk, fk, count, errors) = (&mk, &fk, &count, &errors);
            scope.spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    let ok = bodies
                        .get(i % bodies.len().max(1))
                        .is_some_and(|b| parse_and_verify(b, mk, fk));
                    let counter = if ok { count } else { errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += threads;
                }
            });
        }
    });
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(fail("the floor loop had messages that do not verify"));
    }
    let per_s = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((per_s, threads))
}

/// CPU time this process (the service and the load generator) has used,
/// from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name in parentheses; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn accepted(body: &[u8]) -> bool {
    body.windows(b"\"request_id\"".len())
        .any(|w| w == b"\"request_id\"")
}

async fn run_async(
    cfg: Config,
    clock: SharedClock,
    seconds: u64,
    floor_seconds: u64,
) -> Result<Value, DemoError> {
    let local = crate::demo::start_local(&cfg, clock).await?;
    let (app, base) = (&local.app, &local.base);
    let (merchant, fsp) = bench_parties(&local).await?;
    let payers: Vec<String> = activate_handsets(base, &local.operator, &local.anon, 2, PAYERS, PIN)
        .await?
        .into_iter()
        .map(|h| h.msisdn)
        .collect();
    let n = usize::try_from(seconds.saturating_mul(PER_SECOND)).unwrap_or(usize::MAX);
    let now = app.svc.clock.now();
    let bodies = messages(&merchant, &fsp, &payers, n, now)?;
    let requests: Vec<Req> = bodies
        .iter()
        .map(|b| Req {
            method: "POST",
            path: "/v1/fsp/messages".into(),
            content_type: "application/xml",
            body: b.clone(),
        })
        .collect();
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| fail(format!("no port in {base}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let key_pem = party_key_pem(&fsp)?;
    let connector = tmcs_client::https::connector_pem(&local.ca, &fsp.cert_pem, &key_pem)
        .map_err(|e| fail(format!("FSP TLS client: {e}")))?;
    let load = Load {
        connections: CLIENTS,
        duration: Duration::from_secs(seconds),
        status: 202,
        check: accepted,
        each_once: true,
        tls: Some((connector, "localhost".into())),
    };
    let cpu_before = cpu_seconds();
    let report = loadgen::run_load(addr, &requests, &load).await;
    let cpu = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    local.stop().await;
    drop(requests);

    let (floor_per_s, floor_threads) =
        actix_web::rt::task::spawn_blocking(move || floor(&bodies, &merchant, &fsp, floor_seconds))
            .await
            .map_err(|e| fail(e.to_string()))??;
    let per_s = report.per_s();
    Ok(json!({
        "scenario": "submit",
        "backend": app.svc.store.backend().name(),
        "seconds": round2(report.seconds),
        "clients": CLIENTS,
        "payers": PAYERS,
        "submissions": report.ok,
        "submissions_per_s": round2(per_s),
        "p50_ms": round2(report.percentile(50.0)),
        "p99_ms": round2(report.percentile(99.0)),
        "p999_ms": round2(report.percentile(99.9)),
        "floor_per_s": round2(floor_per_s),
        "floor_threads": floor_threads,
        "ratio": round2(if floor_per_s > 0.0 { per_s / floor_per_s } else { 0.0 }),
        "cpu_ms_per_submission": cpu
            .filter(|_| report.ok > 0)
            .map(|c| round2(c * 1000.0 / report.ok as f64)),
        "errors": report.errors,
        "reconnects": report.reconnects,
    }))
}

/// The FSP's private key as PEM (its client certificate's key).
fn party_key_pem(p: &Party) -> Result<String, DemoError> {
    p.key
        .private_key_to_pem_pkcs8()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .map_err(|e| fail(format!("key of {}: {e}", p.id)))
}
