//! `tmcs bench --population N`: seeds N active subscribers through the
//! domain layer (`tmcs::subscriber::seed`: real keys as `hsm.key_storage`
//! says, wrapped by default, and real certificates, in batches on every
//! core), then drives the real HTTPS service with concurrent handsets whose
//! payer is drawn at random from the whole population for every payment.
//! A payer's device key is derived from its index, so the load generator
//! keeps no per-payer state. The seeding runs in a child process
//! (`tmcs-tools seed-population`, on the same data dir, database and
//! token), so the benchmark process's RSS is the service's (and the load
//! generator's), not what building N certificates left in malloc's arenas.
//! Prints one JSON line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::Private;
use serde_json::{json, Value};

use crate::bench::{one_cycle, percentile, round2, rss_mb, BenchOpts, Shared, PIN};
use crate::demo::{fail, DemoError};
use tmcs::clock::SharedClock;
use tmcs::config::Config;
use tmcs::subscriber::seed::{seed_batch, Seed, SeedPin};
use tmcs_client::Handset;

/// Subscribers per seeding transaction.
const BATCH: usize = 500;

pub fn run(
    cfg: Config,
    clock: SharedClock,
    opts: BenchOpts,
    population: usize,
) -> Result<Value, DemoError> {
    let system = actix_web::rt::System::new();
    system.block_on(run_async(cfg, clock, opts, population))
}

/// The payers' numbers: `+49170` and eight digits.
fn msisdn(i: usize) -> String {
    format!("+49170{i:08}")
}

/// Payer `i`'s device key: a P-256 scalar from SHA-256(seed ‖ i).
fn device_key(seed: &[u8; 32], i: usize) -> Result<EcKey<Private>, DemoError> {
    let e = |e: openssl::error::ErrorStack| fail(format!("device key: {e}"));
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    let mut ctx = BigNumContext::new().map_err(e)?;
    let mut order = BigNum::new().map_err(e)?;
    group.order(&mut order, &mut ctx).map_err(e)?;
    let mut h = openssl::sha::Sha256::new();
    h.update(seed);
    h.update(&(i as u64).to_be_bytes());
    let raw = BigNum::from_slice(&h.finish()).map_err(e)?;
    let mut d = BigNum::new().map_err(e)?;
    d.nnmod(&raw, &order, &mut ctx).map_err(e)?;
    if d.num_bits() == 0 {
        d = BigNum::from_u32(1).map_err(e)?;
    }
    let mut public = EcPoint::new(&group).map_err(e)?;
    public.mul_generator2(&group, &d, &mut ctx).map_err(e)?;
    EcKey::from_private_components(&group, &d, &public).map_err(e)
}

fn device_spki_b64(key: &EcKey<Private>) -> Result<String, DemoError> {
    use base64::Engine as _;
    let der = openssl::pkey::PKey::from_ec_key(key.clone())
        .and_then(|k| k.public_key_to_der())
        .map_err(|e| fail(format!("device key: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

/// `tmcs-tools seed-population`: opens the installation in `cfg` and seeds
/// `n` subscribers whose device keys derive from `key_seed_hex`; returns
/// the seconds the seeding took.
pub fn seed_in_this_process(
    cfg: Config,
    clock: SharedClock,
    n: usize,
    key_seed_hex: &str,
) -> Result<f64, DemoError> {
    let key_seed: [u8; 32] = hex::decode(key_seed_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("--key-seed: 64 hex digits"))?;
    let app = tmcs::app::App::open(cfg, clock).map_err(|e| fail(format!("open: {e}")))?;
    seed(&app, &key_seed, n)
}

/// Runs `tmcs-tools seed-population` on `cfg`'s data dir; returns the
/// seconds the seeding took.
fn seed_in_a_child(cfg: &Config, n: usize, key_seed: &[u8; 32]) -> Result<f64, DemoError> {
    let exe = std::env::current_exe().map_err(|e| fail(format!("current exe: {e}")))?;
    let o = std::process::Command::new(exe)
        .arg("seed-population")
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .arg("--population")
        .arg(n.to_string())
        .arg("--key-seed")
        .arg(hex::encode(key_seed))
        .output()
        .map_err(|e| fail(format!("seed-population: {e}")))?;
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(fail(format!(
            "seed-population: {}{}",
            out,
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    out.trim()
        .parse()
        .map_err(|_| fail(format!("seed-population printed {out:?}")))
}

/// Seeds `n` subscribers on every core; returns the seconds it took.
fn seed(app: &tmcs::app::App, key_seed: &[u8; 32], n: usize) -> Result<f64, DemoError> {
    let start = Instant::now();
    let pin = SeedPin::new(&app.svc, PIN).map_err(|e| fail(format!("seed PIN: {e}")))?;
    let threads = crate::bench::cores();
    let batches = n.div_ceil(BATCH);
    std::thread::scope(|scope| -> Result<(), DemoError> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let pin = &pin;
                scope.spawn(move || -> Result<(), DemoError> {
                    for b in (t..batches).step_by(threads) {
                        let seeds = (b * BATCH..((b + 1) * BATCH).min(n))
                            .map(|i| {
                                Ok(Seed {
                                    msisdn: msisdn(i),
                                    device_spki_b64: device_spki_b64(&device_key(key_seed, i)?)?,
                                })
                            })
                            .collect::<Result<Vec<_>, DemoError>>()?;
                        seed_batch(&app.svc, pin, &seeds)
                            .map_err(|e| fail(format!("seeding batch {b}: {e}")))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| fail("a seeding thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// Who can pay: the population and how to rebuild any payer's handset.
#[derive(Clone)]
struct Payers {
    transport: Arc<Vec<u8>>,
    key_seed: [u8; 32],
    population: usize,
}

/// One handset loop: a random payer of the population per payment.
async fn payer_loop(
    sh: std::rc::Rc<Shared>,
    payers: Payers,
    idx: usize,
    deadline: Instant,
    auth_ms: std::rc::Rc<std::cell::RefCell<Vec<f64>>>,
    errors: Arc<AtomicU64>,
) {
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let mut r = [0u8; 8];
        let i = match openssl::rand::rand_bytes(&mut r) {
            Ok(()) => (u64::from_be_bytes(r) % payers.population as u64) as usize,
            Err(_) => idx % payers.population,
        };
        let cycle = async {
            let key = device_key(&payers.key_seed, i)?;
            let h = Handset::with_device_key(&msisdn(i), &payers.transport, key)
                .map_err(|e| fail(format!("handset: {e}")))?;
            one_cycle(&sh, &h, idx, n).await
        };
        match cycle.await {
            Ok((_, a)) => auth_ms.borrow_mut().push(a),
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "population bench cycle failed");
            }
        }
    }
}

async fn run_async(
    cfg: Config,
    clock: SharedClock,
    opts: BenchOpts,
    population: usize,
) -> Result<Value, DemoError> {
    if population == 0 {
        return Err(fail("--population must be at least 1"));
    }
    let (local, sh) = crate::bench::serve_with_parties(&cfg, clock).await?;
    let transport = Arc::new(crate::trip::transport_pem(&local.anon, &local.base).await?);

    let mut key_seed = [0u8; 32];
    openssl::rand::rand_bytes(&mut key_seed).map_err(|e| fail(e.to_string()))?;
    let cfg2 = cfg.clone();
    let seed_seconds =
        actix_web::rt::task::spawn_blocking(move || seed_in_a_child(&cfg2, population, &key_seed))
            .await
            .map_err(|e| fail(e.to_string()))??;
    let rss_after_seed = rss_mb();

    let auth_ms = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let payers = Payers {
        transport,
        key_seed,
        population,
    };
    let loops = (0..opts.handsets).map(|idx| {
        payer_loop(
            sh.clone(),
            payers.clone(),
            idx,
            deadline,
            auth_ms.clone(),
            errors.clone(),
        )
    });
    futures_util::future::join_all(loops).await;
    let elapsed = start.elapsed().as_secs_f64();
    let rss = rss_mb();
    local.stop().await;
    let mut auth = auth_ms.borrow().clone();
    auth.sort_by(f64::total_cmp);
    Ok(json!({
        "scenario": "population",
        "backend": sh.app.svc.store.backend().name(),
        "population": population,
        "authorizations_per_s": round2(auth.len() as f64 / elapsed),
        "p50_ms": round2(percentile(&auth, 50.0)),
        "p99_ms": round2(percentile(&auth, 99.0)),
        "rss_mb": rss,
        "rss_mb_after_seed": rss_after_seed,
        "seed_per_s": round2(population as f64 / seed_seconds),
        "seed_seconds": round2(seed_seconds),
        "key_storage": sh.app.cfg.file.hsm.key_storage.as_str(),
        "seconds": round2(elapsed),
        "handsets": opts.handsets,
        "errors": errors.load(Ordering::Relaxed),
    }))
}
