//! SoftHSM2 development tokens: the config file and token creation through
//! PKCS#11 itself (`C_InitToken` on the free slot, then `C_InitPIN`).

use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use secrecy::SecretString;

use super::pool::find_slot;
use super::{context, HsmError};

/// Writes a SoftHSM2 config whose token directory is `<conf dir>/tokens`,
/// unless the file exists already. Returns the token directory.
pub fn write_conf(conf: &Path) -> Result<PathBuf, HsmError> {
    let dir = conf
        .parent()
        .ok_or_else(|| HsmError::Config(format!("bad SoftHSM2 config path {}", conf.display())))?;
    let tokens = dir.join("tokens");
    let io = |e: std::io::Error| HsmError::Config(format!("{}: {e}", conf.display()));
    std::fs::create_dir_all(&tokens).map_err(io)?;
    restrict_dir(dir).map_err(io)?;
    restrict_dir(&tokens).map_err(io)?;
    if !conf.exists() {
        let text = format!(
            "# written by tmcs: SoftHSM2 development token store\n\
             directories.tokendir = {}\n\
             objectstore.backend = file\n\
             log.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        );
        std::fs::write(conf, text).map_err(io)?;
    }
    Ok(tokens)
}

fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates the token `label` when it does not exist. Returns whether it did.
pub fn ensure_token(
    module: &str,
    softhsm_conf: Option<&Path>,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<bool, HsmError> {
    // Tokens are created one at a time: two threads must not pick the same free slot.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let ctx = context::context(module, softhsm_conf)?;
    match find_slot(&ctx, label) {
        Ok(_) => return Ok(false),
        Err(HsmError::TokenNotFound(_)) => {}
        Err(e) => return Err(e),
    }
    {
        let _slots = context::slot_list_lock();
        let mut free = None;
        for slot in ctx.get_slots_with_token()? {
            if !ctx.get_token_info(slot)?.token_initialized() {
                free = Some(slot);
                break;
            }
        }
        let slot = free.ok_or_else(|| {
            HsmError::Config("no uninitialised slot to create the token in".into())
        })?;
        ctx.init_token(slot, so_pin, label)?;
    }
    // The slot id changes once the token is initialised: look it up by label.
    let slot = find_slot(&ctx, label)?;
    let session = ctx.open_rw_session(slot)?;
    session.login(UserType::So, Some(so_pin))?;
    session.init_pin(user_pin)?;
    session.logout()?;
    Ok(true)
}
