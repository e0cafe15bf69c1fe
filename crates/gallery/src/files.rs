//! File-system rules for the data directory: it belongs to facegate's user alone. The directory
//! is 0700 and refused when group or others may write it (they could plant or swap files); every
//! file in it is created 0600 (SQLite gives its -wal and -shm files the mode of their database).

use crate::error::{GalleryError, Result};
use std::path::Path;

/// Create `dir` (0700) or check an existing one: refused when group- or world-writable, and
/// narrowed to 0700 otherwise. A failure to set the mode is an error, not a shrug.
pub fn secure_dir(dir: &Path) -> Result<()> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| GalleryError::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = mode_of(dir)?;
        if existed && mode & 0o022 != 0 {
            return Err(GalleryError::Invalid(format!(
                "data directory {} is writable by group or others (mode {mode:03o}); make it the facegate user's alone: chmod 700",
                dir.display()
            )));
        }
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| GalleryError::io(dir, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = existed;
    Ok(())
}

/// Make sure `path` exists with mode 0600 before a library opens it (SQLite would create it with
/// the process umask, typically 0644): created empty if missing, narrowed if looser.
pub fn secure_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|e| GalleryError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if mode_of(path)? != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| GalleryError::io(path, e))?;
        }
    }
    Ok(())
}

/// The permission bits of `path`.
#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .map_err(|e| GalleryError::io(path, e))?
        .permissions()
        .mode()
        & 0o777)
}

/// Write `bytes` to a new file at `path`, mode 0600 (for temporary files renamed into place).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| GalleryError::io(path, e))?;
    f.write_all(bytes).map_err(|e| GalleryError::io(path, e))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_shared_directories_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("store.db");
        secure_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        secure_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600, "a loose file is narrowed");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = secure_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "a readable directory is narrowed");
    }
}
