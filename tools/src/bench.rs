//! `tmcs bench` (`tmcs-tools bench`): drives the real HTTPS service (embedded defaults, real
//! argon2 parameters) with concurrent handsets — submit, read, authorise —
//! for a fixed time, then measures in the same run the floor: the same
//! server-side crypto per authorisation in a loop in-process, without HTTP
//! or the database. Prints one JSON line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::demo::{fail, party_client, sign, DemoError, Party};
use crate::trip::{
    activate_handsets, register_parties, Payment, SimTls, Sims, Terms, MERCHANT_IBAN, PAYER_IBAN,
};
use tmcs::app::App;
use tmcs::clock::SharedClock;
use tmcs::config::Config;
use tmcs::hsm::{EcUsage, GeneratedKey};
use tmcs::ims::Tier;
use tmcs_client::Handset;

#[derive(Debug, Clone, Copy)]
pub struct BenchOpts {
    pub seconds: u64,
    pub handsets: usize,
    pub floor_seconds: u64,
}

pub(crate) const PIN: &str = "480263";

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() as f64 - 1.0)).round();
    sorted.get(rank as usize).copied().unwrap_or_default()
}

/// This process's resident set size in MiB (server and load generator
/// together: the service runs in-process), from `/proc/self/status`.
pub fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round2(kib / 1024.0))
}

/// The cores to spread in-process work over (floors, seeding, messages).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn run(cfg: Config, clock: SharedClock, opts: BenchOpts) -> Result<Value, DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(run_async(cfg, clock, opts))
}

pub(crate) struct Shared {
    pub(crate) base: String,
    pub(crate) fsp: awc::Client,
    pub(crate) anon: awc::Client,
    pub(crate) merchant: Arc<Party>,
    pub(crate) fsp_party: Arc<Party>,
    pub(crate) app: App,
}

/// One handset's loop: submit → GET → authorise until `deadline`.
async fn handset_loop(
    sh: std::rc::Rc<Shared>,
    h: Handset,
    idx: usize,
    deadline: Instant,
    submit_ms: Arc<std::sync::Mutex<Vec<f64>>>,
    auth_ms: Arc<std::sync::Mutex<Vec<f64>>>,
    errors: Arc<AtomicU64>,
) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        match one_cycle(&sh, &h, idx, n).await {
            Ok((s, a)) => {
                if let Ok(mut v) = submit_ms.lock() {
                    v.push(s);
                }
                if let Ok(mut v) = auth_ms.lock() {
                    v.push(a);
                }
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "bench cycle failed");
            }
        }
    }
}

pub(crate) async fn one_cycle(
    sh: &Shared,
    h: &Handset,
    idx: usize,
    n: u64,
) -> Result<(f64, f64), DemoError> {
    let reference = format!("B-{idx}-{n}-{}", sh.app.svc.clock.now().unix_timestamp());
    let paid = Payment {
        base: &sh.base,
        fsp_client: &sh.fsp,
        anon: &sh.anon,
        merchant: &sh.merchant,
        fsp: &sh.fsp_party,
        clock: &sh.app.svc.clock,
    }
    .pay(
        h,
        PIN,
        &Terms {
            reference: &reference,
            amount: "EUR1.00",
            tier: Tier::Small,
            payable: "1234-5678",
            receivable: "9876-5432",
        },
    )
    .await?;
    Ok((paid.submit_ms, paid.authorize_ms))
}

/// The server's crypto per authorisation, without HTTP or the database:
/// two party signature checks (M, F), two device signature checks (read,
/// authorise), the display signature, the PIN block (HSM ECDH + HKDF +
/// AES-GCM), the PIN verifier (argon2id + HSM HMAC) and the HSM signature over C.
fn crypto_floor(
    app: &App,
    merchant: &Party,
    fsp_party: &Party,
    seconds: u64,
) -> Result<(f64, usize), DemoError> {
    let threads = cores();
    let key = app
        .hsm
        .generate_ec_p256("tmcs:bench-floor", EcUsage::Sign)
        .map_err(|e| fail(e.to_string()))?;
    let transport_pem = app.svc.pki.transport.info.pem.clone();
    let h =
        Handset::new("+4900000000", transport_pem.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let device_spki = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        h.device_spki_b64().map_err(|e| fail(e.to_string()))?,
    )
    .map_err(|e| fail(e.to_string()))?;
    let device =
        openssl::pkey::PKey::public_key_from_der(&device_spki).map_err(|e| fail(e.to_string()))?;
    let hdr = h
        .device_header("GET", "/x", 1)
        .map_err(|e| fail(e.to_string()))?;
    let dev_sig = tmcs::api::parse_device_header(&hdr)
        .ok_or_else(|| fail("header"))?
        .sig;
    let dev_msg = tmcs::api::device_message("GET", "/x", &h.msisdn, 1);
    let c = b"ims-c1\ntype:small\nref:x\nfrom.id:tel:+4900000000\nto.id:a@merchant.b\ntimestamp:2026-01-01T00:00:00Z\namount:EUR1.00\n".to_vec();
    let m_sig = sign(&merchant.key, &c)?;
    let f_sig = sign(&fsp_party.key, &c)?;
    let blocks: Vec<String> = (0..64)
        .map(|i| h.auth_pin_block(&format!("r{i}"), "n", "d", PIN))
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let floor = Floor {
        app,
        key: &key,
        blocks: &blocks,
        c: &c,
        m_sig: &m_sig,
        f_sig: &f_sig,
        device: &device,
        dev_sig: &dev_sig,
        dev_msg: &dev_msg,
        merchant_pem: &merchant.cert_pem,
        fsp_pem: &fsp_party.cert_pem,
    };
    let count = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (floor, count, errors) = (&floor, &count, &errors);
            scope.spawn(move || {
                let mut i = t;
                while Instant::now() < deadline {
                    match floor.once(i) {
                        Ok(true) => count.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    i += threads;
                }
            });
        }
    });
    let _ = app.hsm.destroy_key(&key.id);
    if errors.load(Ordering::Relaxed) > 0 {
        return Err(fail("the crypto floor loop had errors"));
    }
    let per_s = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((per_s, threads))
}

struct Floor<'a> {
    app: &'a App,
    key: &'a GeneratedKey,
    blocks: &'a [String],
    c: &'a [u8],
    m_sig: &'a [u8],
    f_sig: &'a [u8],
    device: &'a openssl::pkey::PKey<openssl::pkey::Public>,
    dev_sig: &'a [u8],
    dev_msg: &'a str,
    merchant_pem: &'a str,
    fsp_pem: &'a str,
}

impl Floor<'_> {
    fn once(&self, i: usize) -> Result<bool, DemoError> {
        let app = self.app;
        let e = |e: &dyn std::fmt::Display| fail(e.to_string());
        let mut ok = crate::demo::verify(self.merchant_pem, self.c, self.m_sig)?;
        ok &= crate::demo::verify(self.fsp_pem, self.c, self.f_sig)?;
        for _ in 0..2 {
            let mut v =
                openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), self.device)
                    .map_err(|x| e(&x))?;
            ok &= v
                .verify_oneshot(self.dev_sig, self.dev_msg.as_bytes())
                .unwrap_or(false);
        }
        app.hsm
            .sign_sha256(&app.svc.pki.keys.display, self.c)
            .map_err(|x| e(&x))?;
        let block = self
            .blocks
            .get(i % self.blocks.len())
            .ok_or_else(|| fail("block"))?;
        tmcs::subscriber::pinblock::open(
            &app.hsm as &dyn tmcs::hsm::Custody,
            &app.svc.pki.keys.transport,
            &app.svc.pki.transport.point,
            block,
        )
        .map_err(|x| e(&x))?;
        app.svc
            .pins
            .verifier(&app.hsm as &dyn tmcs::hsm::Custody, &[7u8; 16], PIN)
            .map_err(|x| e(&x))?;
        app.hsm
            .sign_sha256(&self.key.id, self.c)
            .map_err(|x| e(&x))?;
        Ok(ok)
    }
}

/// Sum of a histogram (seconds) and its count, by label value (or all).
fn histogram(app: &App, name: &str, label: Option<(&str, &str)>) -> (f64, u64) {
    let mut sum = 0.0;
    let mut count = 0;
    for fam in app.registry.gather() {
        if fam.name() != name {
            continue;
        }
        for m in fam.get_metric() {
            let matches = label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            });
            if matches {
                let h = m.get_histogram();
                sum += h.get_sample_sum();
                count += h.get_sample_count();
            }
        }
    }
    (sum, count)
}

/// `tmcs init` and the service in this process, with a merchant and an
/// FSP registered: what a signing benchmark's handsets pay through.
pub(crate) async fn serve_with_parties(
    cfg: &Config,
    clock: SharedClock,
) -> Result<(crate::demo::Local, std::rc::Rc<Shared>), DemoError> {
    let local = crate::demo::start_local(cfg, clock).await?;
    let (merchant, fsp_party) = crate::demo::bench_parties(&local).await?;
    let sh = std::rc::Rc::new(Shared {
        base: local.base.clone(),
        fsp: party_client(&local.ca, &fsp_party)?,
        anon: local.anon.clone(),
        merchant: Arc::new(merchant),
        fsp_party: Arc::new(fsp_party),
        app: local.app.clone(),
    });
    Ok((local, sh))
}

async fn run_async(cfg: Config, clock: SharedClock, opts: BenchOpts) -> Result<Value, DemoError> {
    let (local, sh) = serve_with_parties(&cfg, clock).await?;
    let crate::demo::Local {
        app,
        base,
        anon,
        operator,
        ..
    } = &local;
    let (merchant, fsp_party) = (sh.merchant.clone(), sh.fsp_party.clone());

    // Handsets: registered and activated through the real API.
    let handsets = activate_handsets(base, operator, anon, 0, opts.handsets, PIN).await?;

    // Baselines of the server metrics before the timed phase.
    let hsm_before = histogram(app, "tmcs_hsm_operation_seconds", None);
    let argon_before = histogram(app, "tmcs_pin_argon2_seconds", None);
    let wait_before = histogram(app, "tmcs_pin_argon2_wait_seconds", None);

    let submit_ms = Arc::new(std::sync::Mutex::new(Vec::new()));
    let auth_ms = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let rss_start = rss_mb();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let tasks: Vec<_> = handsets
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            handset_loop(
                sh.clone(),
                h,
                i,
                deadline,
                submit_ms.clone(),
                auth_ms.clone(),
                errors.clone(),
            )
        })
        .collect();
    futures_util::future::join_all(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    let rss_end = rss_mb();

    let hsm_after = histogram(app, "tmcs_hsm_operation_seconds", None);
    let argon_after = histogram(app, "tmcs_pin_argon2_seconds", None);
    let wait_after = histogram(app, "tmcs_pin_argon2_wait_seconds", None);
    let mut auth = auth_ms.lock().map(|v| v.clone()).unwrap_or_default();
    let subs = submit_ms.lock().map(|v| v.clone()).unwrap_or_default();
    auth.sort_by(f64::total_cmp);
    let mut subs_sorted = subs.clone();
    subs_sorted.sort_by(f64::total_cmp);
    let n_auth = auth.len() as f64;
    let auth_per_s = n_auth / elapsed;
    let sub_per_s = subs.len() as f64 / elapsed;

    local.stop().await;
    let app2 = app.clone();
    let floor_seconds = opts.floor_seconds;
    let (floor, threads) = actix_web::rt::task::spawn_blocking(move || {
        crypto_floor(&app2, &merchant, &fsp_party, floor_seconds)
    })
    .await
    .map_err(|e| fail(e.to_string()))??;
    let per = |d: (f64, u64), b: (f64, u64)| {
        if n_auth > 0.0 {
            (d.0 - b.0) * 1000.0 / n_auth
        } else {
            0.0
        }
    };
    let p = &app.svc.pins.params;
    Ok(json!({
        "scenario": "signing",
        "backend": app.svc.store.backend().name(),
        "seconds": round2(elapsed),
        "handsets": opts.handsets,
        "submissions_per_s": round2(sub_per_s),
        "authorizations_per_s": round2(auth_per_s),
        "p50_ms": round2(percentile(&auth, 50.0)),
        "p99_ms": round2(percentile(&auth, 99.0)),
        "submit_p50_ms": round2(percentile(&subs_sorted, 50.0)),
        "submit_p99_ms": round2(percentile(&subs_sorted, 99.0)),
        "crypto_floor_per_s": round2(floor),
        "crypto_floor_threads": threads,
        "ratio": round2(if floor > 0.0 { auth_per_s / floor } else { 0.0 }),
        "errors": errors.load(Ordering::Relaxed),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "argon2": { "algorithm": "argon2id", "m_kib": p.m_cost(), "t": p.t_cost(), "p": p.p_cost(),
                    "concurrency": app.svc.pins.slots.capacity() },
        "profile_ms_per_cycle": {
            "hsm_ops": round2(per(hsm_after, hsm_before)),
            "argon2": round2(per(argon_after, argon_before)),
            "argon2_wait": round2(per(wait_after, wait_before)),
        },
    }))
}

/// `--scenario relay`: handsets pay through the relay in mode `fsp+bank`
/// (FSP, merchant and bank simulators as processes) for `seconds`; then the
/// outbox drains. Signed→settled is measured per request from its audit
/// events (`request.signed` → `request.settled`, milliseconds); the
/// baseline is the authorisation rate of the same run: a relay that keeps
/// up settles as fast as tmcs signs (ratio 1).
pub fn run_relay(cfg: Config, clock: SharedClock, opts: BenchOpts) -> Result<Value, DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(relay_async(cfg, clock, opts))
}

async fn relay_async(cfg: Config, clock: SharedClock, opts: BenchOpts) -> Result<Value, DemoError> {
    let local = crate::demo::start_local(&cfg, clock).await?;
    let exe = std::env::current_exe().map_err(|e| fail(e.to_string()))?;
    let sims = Sims::start(&exe, &SimTls::of(&cfg), &cfg.data_dir)?;
    let crate::demo::Local {
        app,
        base,
        ca,
        anon,
        operator,
        ..
    } = &local;
    let parties = register_parties(base, operator, &sims).await?;
    let fsp = party_client(ca, &parties.fsp)?;
    let handsets = activate_handsets(base, operator, anon, 1, opts.handsets, PIN).await?;
    let pay = Payment {
        base,
        fsp_client: &fsp,
        anon,
        merchant: &parties.merchant,
        fsp: &parties.fsp,
        clock: &app.svc.clock,
    };
    let ids = std::cell::RefCell::new(Vec::new());
    let errors = std::cell::Cell::new(0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let loops = handsets.iter().enumerate().map(|(i, h)| {
        let (pay, ids, errors) = (&pay, &ids, &errors);
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let reference = format!("R-{i}-{n}-{}", app.svc.clock.now().unix_timestamp());
                let terms = Terms {
                    reference: &reference,
                    amount: "EUR1.00",
                    tier: Tier::Small,
                    payable: PAYER_IBAN,
                    receivable: MERCHANT_IBAN,
                };
                match pay.pay(h, PIN, &terms).await {
                    Ok(p) => ids.borrow_mut().push(p.request_id),
                    Err(e) => {
                        errors.set(errors.get() + 1);
                        tracing::warn!(error = %e, "relay bench payment failed");
                    }
                }
            }
        }
    });
    futures_util::future::join_all(loops).await;
    let paying = start.elapsed().as_secs_f64();
    let ids = ids.into_inner();
    // Drain: every payment ends.
    let mut unsettled = 0u64;
    for id in &ids {
        if pay
            .await_status(id, &["settled"], Duration::from_secs(60))
            .await
            .is_err()
        {
            unsettled += 1;
        }
    }
    let app2 = app.clone();
    let latencies = actix_web::rt::task::spawn_blocking(move || signed_to_settled(&app2))
        .await
        .map_err(|e| fail(e.to_string()))??;
    let bank = sims.bank.get(operator, "/stats").await?;
    local.stop().await;
    let mut ms: Vec<f64> = latencies.iter().map(|(_, _, d)| *d).collect();
    ms.sort_by(f64::total_cmp);
    let first_signed = latencies.iter().map(|(s, _, _)| *s).min().unwrap_or(0);
    let last_settled = latencies.iter().map(|(_, e, _)| *e).max().unwrap_or(0);
    let span_s = (last_settled - first_signed).max(1) as f64 / 1000.0;
    let settled_per_s = ms.len() as f64 / span_s;
    let auth_per_s = ids.len() as f64 / paying;
    Ok(json!({
        "scenario": "relay",
        "backend": app.svc.store.backend().name(),
        "mode": "fsp+bank",
        "seconds": round2(paying),
        "handsets": opts.handsets,
        "payments": ids.len(),
        "authorizations_per_s": round2(auth_per_s),
        "settled": ms.len(),
        "settled_per_s": round2(settled_per_s),
        "signed_to_settled_p50_ms": round2(percentile(&ms, 50.0)),
        "signed_to_settled_p99_ms": round2(percentile(&ms, 99.0)),
        "ratio": round2(if auth_per_s > 0.0 { settled_per_s / auth_per_s } else { 0.0 }),
        "unsettled": unsettled,
        "errors": errors.get(),
        "bank_instructions": bank["instructions"],
        "bank_duplicates": bank["duplicates"],
        "per_target_concurrency": app.svc.relay.settings.per_target,
    }))
}

/// Per settled request: when it was signed and settled (unix ms), and the
/// milliseconds between, from the audit events.
fn signed_to_settled(app: &App) -> Result<Vec<(i64, i64, f64)>, DemoError> {
    use std::collections::HashMap;
    use tmcs::store::audit_rows::{self, EventFilter};
    let times = |action: &str| -> Result<HashMap<String, i64>, DemoError> {
        let mut out = HashMap::new();
        let mut after = 0;
        loop {
            let rows = app
                .svc
                .store
                .read(|c| {
                    audit_rows::list(
                        c,
                        &EventFilter {
                            subject: None,
                            action: Some(action.to_string()),
                            after_seq: after,
                            limit: 1000,
                        },
                    )
                })
                .map_err(|e| fail(e.to_string()))?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for r in rows {
                let ts = tmcs::clock::parse_rfc3339(&r.ts)
                    .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
                    .unwrap_or(0);
                if let Some(s) = r.subject {
                    out.insert(s, ts);
                }
            }
        }
        Ok(out)
    };
    let signed = times("request.signed")?;
    let settled = times("request.settled")?;
    Ok(settled
        .iter()
        .filter_map(|(subject, end)| {
            let start = signed.get(subject)?;
            Some((*start, *end, (*end - *start) as f64))
        })
        .collect())
}
