//! Small file helpers: private files (0600), idempotent writes, secrets.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use secrecy::SecretString;

/// Creates `dir` (and parents) with `mode`. A directory that already exists
/// keeps the mode its owner gave it (it may be shared, e.g. `/var/lib`).
pub fn ensure_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Creates an empty file with mode 0600 unless it exists (so that a file
/// another program fills, like a SQLite database and the `-wal` and `-shm`
/// files SQLite gives the same mode, is private from its first byte).
pub fn create_private(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `content` to `path` with `mode` unless it already holds exactly
/// that. Returns whether it wrote. The write goes to a temp file first and is
/// renamed into place, so readers never see half a file.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> std::io::Result<bool> {
    if let Ok(existing) = std::fs::read(path) {
        if existing == content {
            let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if current != mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            return Ok(false);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Reads a one-line secret from a file that must not be readable by group or others.
pub fn read_secret_file(path: &Path) -> std::io::Result<SecretString> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} must not be readable by group or others (chmod 600)",
                path.display()
            ),
        ));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    let line = text.trim();
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(line.to_string()))
}

/// A random secret of `len` characters from [A-Za-z0-9].
pub fn random_token(len: usize) -> Result<SecretString, openssl::error::ErrorStack> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = zeroize::Zeroizing::new(String::with_capacity(len));
    let mut buf = zeroize::Zeroizing::new([0u8; 1]);
    while out.len() < len {
        openssl::rand::rand_bytes(&mut buf[..])?;
        let b = buf[0] as usize;
        // Rejection sampling keeps the distribution uniform.
        let limit = 256 - 256 % ALPHABET.len();
        if b < limit {
            if let Some(c) = ALPHABET.get(b % ALPHABET.len()) {
                out.push(char::from(*c));
            }
        }
    }
    Ok(SecretString::from(out.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn private_files_and_idempotent_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/secret");
        assert!(write_if_changed(&p, b"x\n", 0o600).unwrap());
        assert!(!write_if_changed(&p, b"x\n", 0o600).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret_file(&p).unwrap().expose_secret(), "x");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret_file(&p).is_err());
    }

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_eq!(a.expose_secret().len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
