//! PINs: the rules, the verifier and the shared try counter.
//!
//! Verifier = HMAC-SHA256 in the HSM (pepper key) over argon2id(PIN,
//! per-subscriber salt). A stolen database alone allows no offline search.
//! The try counter is authoritative and moves in the same transaction as
//! the comparison ([`check_in_tx`]).

use crate::problem::Problem;
use std::sync::{Condvar, Mutex};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use diesel::prelude::*;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{internal, reject, DomainResult};
use crate::hsm::{Custody, KeyId};
use crate::states::SubscriberState;
use crate::store::schema::subscribers;
use crate::store::DbConn;

/// The argon2 slots: at most `capacity` hashes run at once, each in its own
/// working memory, allocated once at start and reused (wiped after every
/// hash). No argon2 buffer ever goes back to malloc: freed 19 MiB buffers
/// used to pile up in glibc's per-thread arenas and the RSS grew to
/// gigabytes under signing load (issue #8, finding 0).
///
/// Slots are handed out first come, first served: every caller draws a
/// ticket and only the oldest waiting ticket may take a free slot, so a
/// waiting request is never overtaken by later arrivals.
pub struct Argon2Slots {
    state: Mutex<SlotState>,
    capacity: usize,
    cv: Condvar,
}

struct SlotState {
    free: Vec<Box<[Block]>>,
    next_ticket: u64,
    serving: u64,
}

impl std::fmt::Debug for Argon2Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2Slots")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Argon2Slots {
    /// `n` slots (at least one) of `blocks` argon2 blocks (1 KiB each).
    pub fn new(n: usize, blocks: usize) -> Self {
        let n = n.max(1);
        Argon2Slots {
            state: Mutex::new(SlotState {
                free: (0..n)
                    .map(|_| vec![Block::new(); blocks].into_boxed_slice())
                    .collect(),
                next_ticket: 0,
                serving: 0,
            }),
            capacity: n,
            cv: Condvar::new(),
        }
    }

    /// How many hashes may run at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with a slot's working memory, in arrival order.
    fn run<T>(&self, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let mut memory = {
            let mut st = self.lock();
            let ticket = st.next_ticket;
            st.next_ticket = st.next_ticket.wrapping_add(1);
            loop {
                if st.serving == ticket {
                    if let Some(m) = st.free.pop() {
                        st.serving = st.serving.wrapping_add(1);
                        break m;
                    }
                }
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        // The next ticket may take another free slot at once.
        self.cv.notify_all();
        let out = f(&mut memory);
        memory.iter_mut().for_each(Zeroize::zeroize);
        self.lock().free.push(memory);
        self.cv.notify_all();
        out
    }
}

/// The PIN and activation-code settings the domain needs.
#[derive(Debug, Clone)]
pub struct PinSettings {
    /// Wrong PINs (or activation codes) before the subscriber is blocked.
    pub max_attempts: u32,
    pub activation_code_digits: usize,
    pub activation_ttl_hours: u64,
}

/// argon2id parameters, the pepper key and the PIN settings.
#[derive(Debug)]
pub struct PinHasher {
    pub params: Params,
    pub pepper: KeyId,
    pub slots: Argon2Slots,
    pub min_len: usize,
    pub max_len: usize,
    pub settings: PinSettings,
    /// argon2 time per hash, waiting for a slot excluded.
    pub argon2_seconds: prometheus::Histogram,
    /// Time spent waiting for an argon2 slot.
    pub argon2_wait_seconds: prometheus::Histogram,
}

impl PinHasher {
    /// The argon2id parameters of `cfg`, checked.
    pub fn params(cfg: &crate::config::PinSection) -> Result<Params, String> {
        Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            Some(32),
        )
        .map_err(|e| format!("argon2 parameters: {e}"))
    }

    pub fn new(cfg: &crate::config::PinSection, pepper: KeyId) -> Result<PinHasher, String> {
        let params = Self::params(cfg)?;
        let blocks = params.block_count();
        let hist = |name: &str, help: &str| {
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
                ],
            ))
            .map_err(|e| e.to_string())
        };
        Ok(PinHasher {
            params,
            pepper,
            slots: Argon2Slots::new(
                match cfg.argon2_concurrency {
                    0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                    n => n,
                },
                blocks,
            ),
            min_len: cfg.min_length,
            max_len: cfg.max_length,
            settings: PinSettings {
                max_attempts: cfg.max_attempts,
                activation_code_digits: cfg.activation_code_digits,
                activation_ttl_hours: cfg.activation_ttl_hours,
            },
            argon2_seconds: hist("tmcs_pin_argon2_seconds", "argon2id time per PIN hash")?,
            argon2_wait_seconds: hist(
                "tmcs_pin_argon2_wait_seconds",
                "time waiting for a free argon2 slot",
            )?,
        })
    }

    /// "m=19456,t=2,p=1" for reports.
    pub fn describe(&self) -> String {
        format!(
            "argon2id m={}KiB t={} p={}",
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost()
        )
    }

    /// The verifier of `pin` under `salt`.
    pub fn verifier(&self, hsm: &dyn Custody, salt: &[u8], pin: &str) -> DomainResult<[u8; 32]> {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let mut hash = Zeroizing::new([0u8; 32]);
        let queued = std::time::Instant::now();
        self.slots
            .run(|memory| {
                self.argon2_wait_seconds
                    .observe(queued.elapsed().as_secs_f64());
                let start = std::time::Instant::now();
                let r = argon.hash_password_into_with_memory(
                    pin.as_bytes(),
                    salt,
                    &mut hash[..],
                    memory,
                );
                self.argon2_seconds.observe(start.elapsed().as_secs_f64());
                r
            })
            .map_err(|e| internal(format!("argon2: {e}")))?;
        let mut input = Vec::with_capacity(48);
        input.extend_from_slice(b"tmcs-pin-v1|");
        input.extend_from_slice(&hash[..]);
        let mac = hsm.hmac_sha256(&self.pepper, &input);
        zeroize::Zeroize::zeroize(&mut input);
        Ok(mac?)
    }

    /// PIN rules: digits only, within the configured length, not trivial.
    pub fn check_rules(&self, pin: &str) -> DomainResult<()> {
        if pin.len() < self.min_len
            || pin.len() > self.max_len
            || !pin.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(reject(
                Problem::PinInvalid,
                format!("a PIN is {}-{} digits", self.min_len, self.max_len),
            ));
        }
        if is_trivial(pin) {
            return Err(reject(
                Problem::PinTrivial,
                "the PIN is too easy to guess (repeated digits, a sequence or a common pattern)",
            ));
        }
        Ok(())
    }
}

/// Repeated digits (0000), straight runs up or down (1234, 9876, 7890),
/// repeated pairs (1212) and a few well-known picks.
pub fn is_trivial(pin: &str) -> bool {
    let d: Vec<i16> = pin
        .bytes()
        .map(|b| i16::from(b) - i16::from(b'0'))
        .collect();
    if d.len() < 2 {
        return true;
    }
    let steps: Vec<i16> = d.windows(2).map(|w| (w[1] - w[0]).rem_euclid(10)).collect();
    let same_step = steps.iter().all(|s| *s == steps[0]);
    if same_step && (steps[0] == 0 || steps[0] == 1 || steps[0] == 9) {
        return true;
    }
    if d.len() >= 4 && d.len() % 2 == 0 && d.chunks(2).all(|c| c == &d[..2]) {
        return true;
    }
    const COMMON: &[&str] = &[
        "1004",
        "2000",
        "6969",
        "1122",
        "112233",
        "121212",
        "123123",
        "159753",
        "147258369",
        "0852",
    ];
    COMMON.contains(&pin)
}

/// Constant-time equality (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// Result of one guarded comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Correct,
    /// Wrong; this many attempts remain (0 means now blocked).
    Wrong {
        left: u32,
    },
    /// Blocked before this attempt: the guess was not compared.
    Blocked,
}

/// Compares `candidate` with the stored secret hash of subscriber `id` in
/// the caller's transaction. The counter moves first (conditionally, so
/// concurrent guesses on several nodes cannot exceed `max`), then the
/// comparison decides: correct resets it, wrong keeps it and blocks at `max`.
/// `stored` reads the stored value (verifier or activation hash) inside the
/// same transaction.
pub fn check_in_tx(
    conn: &mut DbConn,
    id: &str,
    required_state: SubscriberState,
    max: u32,
    candidate: &[u8],
    stored: impl FnOnce(&mut DbConn) -> DomainResult<Option<Vec<u8>>>,
    now: i64,
) -> DomainResult<Check> {
    let max_i = i32::try_from(max).unwrap_or(i32::MAX);
    let counted = diesel::update(
        subscribers::table
            .filter(subscribers::id.eq(id))
            .filter(subscribers::state.eq(required_state.as_str()))
            .filter(subscribers::attempts.lt(max_i)),
    )
    .set((
        subscribers::attempts.eq(subscribers::attempts + 1),
        subscribers::updated_at.eq(now),
    ))
    .execute(conn)?;
    if counted == 0 {
        return Ok(Check::Blocked);
    }
    let expected = stored(conn)?;
    let ok = match expected {
        Some(e) => ct_eq(&e, candidate),
        None => false,
    };
    if ok {
        diesel::update(subscribers::table.find(id))
            .set(subscribers::attempts.eq(0))
            .execute(conn)?;
        return Ok(Check::Correct);
    }
    let attempts: i32 = subscribers::table
        .find(id)
        .select(subscribers::attempts)
        .first(conn)?;
    let left = max_i.saturating_sub(attempts).max(0);
    if left == 0 {
        diesel::update(subscribers::table.find(id))
            .set(subscribers::state.eq(SubscriberState::Blocked.as_str()))
            .execute(conn)?;
    }
    Ok(Check::Wrong {
        left: u32::try_from(left).unwrap_or(0),
    })
}

/// `v1|pin-old|<msisdn>|<PIN>` and `v1|pin-new|<msisdn>|<PIN>` (PIN change,
/// an additive extension of CONTRACT §7).
pub fn parse_pin_change(plain: &str, which: &str, msisdn: &str) -> DomainResult<Zeroizing<String>> {
    let f: Vec<&str> = plain.split('|').collect();
    match f.as_slice() {
        ["v1", w, m, pin] if *w == which && *m == msisdn && !pin.is_empty() => {
            Ok(Zeroizing::new((*pin).to_string()))
        }
        _ => Err(reject(
            Problem::PinblockInvalid,
            format!("not a {which} PIN block for this subscriber"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_pins() {
        for p in [
            "0000", "1111", "1234", "4321", "123456", "987654", "7890", "8901", "1212", "4545",
            "121212", "1004",
        ] {
            assert!(is_trivial(p), "{p} should be trivial");
        }
        for p in ["4826", "483920", "1357", "2580", "918273", "1243"] {
            assert!(!is_trivial(p), "{p} should be accepted");
        }
    }

    #[test]
    fn rules() {
        let cfg = crate::config::PinSection::default();
        let h = PinHasher::new(&cfg, KeyId::random().unwrap()).unwrap();
        assert!(h.check_rules("4826").is_ok());
        assert_eq!(
            h.check_rules("123").unwrap_err().problem(),
            Some(Problem::PinInvalid)
        );
        assert_eq!(
            h.check_rules("48a6").unwrap_err().problem(),
            Some(Problem::PinInvalid)
        );
        assert_eq!(
            h.check_rules("4826482648264").unwrap_err().problem(),
            Some(Problem::PinInvalid)
        );
        assert_eq!(
            h.check_rules("0000").unwrap_err().problem(),
            Some(Problem::PinTrivial)
        );
        assert_eq!(
            h.check_rules("1234").unwrap_err().problem(),
            Some(Problem::PinTrivial)
        );
        // Errors never echo the PIN.
        assert!(!h
            .check_rules("1234")
            .unwrap_err()
            .to_string()
            .contains("1234"));
    }

    #[test]
    fn slots_bound_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let slots = Arc::new(Argon2Slots::new(2, 4));
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..8)
            .map(|_| {
                let (slots, live, peak) = (slots.clone(), live.clone(), peak.clone());
                std::thread::spawn(move || {
                    slots.run(|_| {
                        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        live.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(slots.lock().free.len(), 2, "every slot came back");
    }

    /// Waiting callers get a slot in the order they asked for one.
    #[test]
    fn slots_are_first_come_first_served() {
        use std::sync::{mpsc, Arc};
        let slots = Arc::new(Argon2Slots::new(1, 1));
        let (order_tx, order_rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        // The holder takes the only slot and keeps it until told.
        let holder = {
            let slots = slots.clone();
            std::thread::spawn(move || slots.run(|_| hold_rx.recv().unwrap()))
        };
        while slots.lock().serving == 0 {
            std::thread::yield_now();
        }
        let mut waiters = Vec::new();
        for i in 0..6u64 {
            let (mine, order_tx) = (slots.clone(), order_tx.clone());
            waiters.push(std::thread::spawn(move || {
                mine.run(|_| order_tx.send(i).unwrap())
            }));
            // Wait until this one has drawn its ticket before starting the next.
            while slots.lock().next_ticket < i + 2 {
                std::thread::yield_now();
            }
        }
        hold_tx.send(()).unwrap();
        holder.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        let order: Vec<u64> = order_rx.try_iter().collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
    }

    /// A reused, wiped working memory gives the same hash as a fresh one,
    /// and the memory is zero again once the hash is done.
    #[test]
    fn reused_memory_gives_the_standard_hash() {
        let cfg = crate::config::PinSection {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            argon2_concurrency: 1,
            ..Default::default()
        };
        let h = PinHasher::new(&cfg, KeyId::random().unwrap()).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, h.params.clone());
        for pin in ["4826", "918273", "4826"] {
            let mut expected = [0u8; 32];
            argon
                .hash_password_into(pin.as_bytes(), b"salt-salt-16byte", &mut expected)
                .unwrap();
            let mut got = [0u8; 32];
            h.slots
                .run(|m| {
                    argon.hash_password_into_with_memory(
                        pin.as_bytes(),
                        b"salt-salt-16byte",
                        &mut got,
                        m,
                    )
                })
                .unwrap();
            assert_eq!(got, expected);
        }
        let st = h.slots.lock();
        let mem = st.free.first().unwrap();
        assert_eq!(mem.len(), h.params.block_count());
        let zero = format!("{:?}", Block::new());
        assert!(mem.iter().all(|b| format!("{b:?}") == zero), "wiped");
    }
}
