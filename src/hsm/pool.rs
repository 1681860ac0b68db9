//! The bounded session pool, the anchor login, the key-handle cache and
//! recovery after a lost session or login.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use super::error::{is_recoverable, HsmError};
use super::{HsmMetrics, HsmSettings, KeyId};

/// An operation's failure: either straight from PKCS#11 (and maybe
/// recoverable) or already one of ours.
#[derive(Debug)]
pub(crate) enum OpError {
    Ck(CkError),
    Hsm(HsmError),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Ck(e)
    }
}

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Hsm(e)
    }
}

impl OpError {
    fn into_hsm(self) -> HsmError {
        match self {
            OpError::Ck(e) => e.into(),
            OpError::Hsm(e) => e,
        }
    }
}

struct State {
    slot: Slot,
    generation: u64,
    idle: Vec<Session>,
    in_use: usize,
    /// Keeps the application logged in: closing the last session logs out.
    anchor: Option<Session>,
}

/// Object handles by (`CKA_ID`, class), valid for one pool generation.
/// Bounded (quick_cache, S3-FIFO eviction): with wrapped subscriber keys
/// the token holds a handful of keys; with token keys an evicted handle is
/// simply found again.
struct HandleCache {
    generation: u64,
    map: quick_cache::unsync::Cache<(Vec<u8>, u8), ObjectHandle>,
}

/// Handles kept at most (server keys, KEKs, the hottest token keys).
pub(crate) const HANDLE_CACHE_CAPACITY: usize = 4_096;

pub(crate) struct Pool {
    ctx: Pkcs11,
    pub(crate) label: String,
    pin: SecretString,
    max_sessions: usize,
    timeout: Duration,
    state: Mutex<State>,
    available: Condvar,
    handles: Mutex<HandleCache>,
    pub(crate) metrics: HsmMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Finds the slot whose token carries `label`. Slot ids change when tokens
/// are initialised, so the label is the stable name.
pub(crate) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let _slots = super::context::slot_list_lock();
    for slot in ctx.get_slots_with_initialized_token()? {
        let info = ctx.get_token_info(slot)?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound(label.to_string()))
}

fn login(session: &Session, pin: &SecretString) -> Result<(), HsmError> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Pool {
    pub(crate) fn open(
        ctx: Pkcs11,
        settings: &HsmSettings,
        metrics: HsmMetrics,
    ) -> Result<Pool, HsmError> {
        let slot = find_slot(&ctx, &settings.token_label)?;
        let anchor = ctx.open_rw_session(slot)?;
        login(&anchor, &settings.pin)?;
        metrics.set_pool(0, 0, settings.sessions);
        Ok(Pool {
            ctx,
            label: settings.token_label.clone(),
            pin: settings.pin.clone(),
            max_sessions: settings.sessions.max(1),
            timeout: settings.session_timeout,
            state: Mutex::new(State {
                slot,
                generation: 0,
                idle: Vec::new(),
                in_use: 0,
                anchor: Some(anchor),
            }),
            available: Condvar::new(),
            handles: Mutex::new(HandleCache {
                generation: 0,
                map: quick_cache::unsync::Cache::new(HANDLE_CACHE_CAPACITY),
            }),
            metrics,
        })
    }

    /// Runs `f` on a pooled session; on a lost session or login, rebuilds the
    /// pool, logs in again and retries once.
    pub(crate) fn run<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Lease<'_>) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        let start = Instant::now();
        let result = self.run_with_recovery(op, f);
        self.metrics
            .observe(op, start.elapsed(), result.as_ref().err());
        result
    }

    fn run_with_recovery<T>(
        &self,
        op: &'static str,
        f: impl Fn(&Lease<'_>) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        let mut recovered = false;
        loop {
            let lease = self.checkout()?;
            match f(&lease) {
                Ok(v) => return Ok(v),
                Err(OpError::Ck(e)) if !recovered && is_recoverable(&e) => {
                    let generation = lease.generation;
                    drop(lease);
                    tracing::warn!(op, error = %e, "HSM session or login lost; recovering");
                    self.recover(generation)?;
                    recovered = true;
                }
                Err(e) => return Err(e.into_hsm()),
            }
        }
    }

    pub(crate) fn checkout(&self) -> Result<Lease<'_>, HsmError> {
        let deadline = Instant::now() + self.timeout;
        let mut st = lock(&self.state);
        loop {
            if let Some(session) = st.idle.pop() {
                st.in_use += 1;
                self.metrics
                    .set_pool(st.idle.len(), st.in_use, self.max_sessions);
                return Ok(Lease {
                    pool: self,
                    session: Some(session),
                    generation: st.generation,
                });
            }
            if st.in_use + st.idle.len() < self.max_sessions {
                st.in_use += 1;
                let (slot, generation) = (st.slot, st.generation);
                drop(st);
                return match self.ctx.open_rw_session(slot) {
                    Ok(session) => Ok(Lease {
                        pool: self,
                        session: Some(session),
                        generation,
                    }),
                    Err(e) => {
                        let mut st = lock(&self.state);
                        st.in_use = st.in_use.saturating_sub(1);
                        self.available.notify_one();
                        Err(e.into())
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                self.metrics.pool_timeouts.inc();
                return Err(HsmError::PoolTimeout(
                    u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                ));
            }
            st = self
                .available
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn checkin(&self, session: Session, generation: u64) {
        let mut st = lock(&self.state);
        st.in_use = st.in_use.saturating_sub(1);
        if generation == st.generation {
            st.idle.push(session);
        } else {
            drop(session);
        }
        self.metrics
            .set_pool(st.idle.len(), st.in_use, self.max_sessions);
        self.available.notify_one();
    }

    /// Rebuilds the pool after a failure seen on `failed_generation`; a no-op
    /// when another thread has already done it.
    fn recover(&self, failed_generation: u64) -> Result<(), HsmError> {
        let mut st = lock(&self.state);
        if st.generation != failed_generation {
            return Ok(());
        }
        st.generation += 1;
        st.idle.clear();
        let slot = find_slot(&self.ctx, &self.label)?;
        st.slot = slot;
        let anchor = self.ctx.open_rw_session(slot)?;
        login(&anchor, &self.pin)?;
        let old = st.anchor.replace(anchor);
        drop(old);
        {
            let mut cache = lock(&self.handles);
            cache.generation = st.generation;
            cache.map.clear();
        }
        self.metrics.recoveries.inc();
        self.metrics
            .set_pool(st.idle.len(), st.in_use, self.max_sessions);
        tracing::info!(
            generation = st.generation,
            "HSM session pool rebuilt and logged in"
        );
        Ok(())
    }

    pub(crate) fn simulate_session_loss(&self) -> Result<(), HsmError> {
        let slot = lock(&self.state).slot;
        let s = self.ctx.open_rw_session(slot)?;
        s.logout()?;
        Ok(())
    }
}

/// A session borrowed from the pool; it goes back on drop.
pub struct Lease<'a> {
    pool: &'a Pool,
    session: Option<Session>,
    generation: u64,
}

impl Lease<'_> {
    pub(crate) fn session(&self) -> Result<&Session, HsmError> {
        // `session` is only taken in `drop`, so this never fails in practice.
        self.session
            .as_ref()
            .ok_or_else(|| HsmError::Unexpected("lease without a session".into()))
    }

    /// The handle of the object of `class` with `CKA_ID` = `id`, cached.
    pub(crate) fn handle(&self, id: &KeyId, class: ObjectClass) -> Result<ObjectHandle, OpError> {
        let tag = if class == ObjectClass::PRIVATE_KEY {
            1
        } else if class == ObjectClass::PUBLIC_KEY {
            2
        } else if class == ObjectClass::SECRET_KEY {
            3
        } else {
            0
        };
        let key = (id.as_bytes().to_vec(), tag);
        {
            let cache = lock(&self.pool.handles);
            if cache.generation == self.generation {
                if let Some(h) = cache.map.get(&key) {
                    return Ok(*h);
                }
            }
        }
        let found = self.session()?.find_objects(&[
            Attribute::Class(class),
            Attribute::Id(id.as_bytes().to_vec()),
        ])?;
        let h = *found
            .first()
            .ok_or_else(|| HsmError::KeyNotFound(id.to_hex()))?;
        let mut cache = lock(&self.pool.handles);
        if cache.generation == self.generation {
            cache.map.insert(key, h);
        }
        Ok(h)
    }

    pub(crate) fn forget(&self, id: &KeyId) {
        let mut cache = lock(&self.pool.handles);
        cache.map.retain(|(k, _), _| k.as_slice() != id.as_bytes());
    }

    pub(crate) fn check_logged_in(&self) -> Result<(), OpError> {
        let info = self.session()?.get_session_info()?;
        match info.session_state() {
            SessionState::RwUser | SessionState::RoUser => Ok(()),
            _ => Err(OpError::Ck(CkError::Pkcs11(
                RvError::UserNotLoggedIn,
                Function::GetSessionInfo,
            ))),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.checkin(s, self.generation);
        }
    }
}
