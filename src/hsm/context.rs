//! The PKCS#11 module is loaded and `C_Initialize`d once per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};

use super::HsmError;

struct Loaded {
    ctx: Pkcs11,
    softhsm_conf: Option<PathBuf>,
}

static CONTEXTS: OnceLock<Mutex<HashMap<String, Loaded>>> = OnceLock::new();

/// Held around every slot enumeration (`C_GetSlotList`) and token
/// initialisation of the process. SoftHSM2 2.6 rescans its token directory
/// in `C_GetSlotList`, and two threads rescanning at once can abort the
/// process (`SlotManager::insertToken: Assertion 'result.second' failed`,
/// seen when pools opened while another thread created a token).
pub(crate) fn slot_list_lock() -> std::sync::MutexGuard<'static, ()> {
    static SLOTS: Mutex<()> = Mutex::new(());
    SLOTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Points SoftHSM2 at `conf` by setting `SOFTHSM2_CONF`. Call it at the start
/// of `main`, before any thread exists: the module reads the variable in
/// `C_Initialize`, and changing the environment of a threaded process is unsound.
pub fn prepare_process_env(conf: Option<&Path>) {
    if let Some(conf) = conf {
        if std::env::var_os("SOFTHSM2_CONF").as_deref() != Some(conf.as_os_str()) {
            std::env::set_var("SOFTHSM2_CONF", conf);
        }
    }
}

pub(crate) fn context(module: &str, softhsm_conf: Option<&Path>) -> Result<Pkcs11, HsmError> {
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = map.get(module) {
        if let (Some(want), Some(have)) = (softhsm_conf, loaded.softhsm_conf.as_deref()) {
            if want != have {
                return Err(HsmError::Config(format!(
                    "SoftHSM2 is already initialised in this process with {}; cannot switch to {}",
                    have.display(),
                    want.display()
                )));
            }
        }
        return Ok(loaded.ctx.clone());
    }
    if let Some(conf) = softhsm_conf {
        let env = std::env::var_os("SOFTHSM2_CONF");
        if env.as_deref() != Some(conf.as_os_str()) {
            return Err(HsmError::Config(format!(
                "SOFTHSM2_CONF must be {} before the module loads (call prepare_process_env first)",
                conf.display()
            )));
        }
    }
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::ModuleLoad {
        module: module.to_string(),
        reason: e.to_string(),
    })?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    map.insert(
        module.to_string(),
        Loaded {
            ctx: ctx.clone(),
            softhsm_conf: softhsm_conf.map(Path::to_path_buf),
        },
    );
    Ok(ctx)
}
