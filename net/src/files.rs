//! Atomic file writes: the one implementation every binary uses for ready files, module records,
//! compiled-module caches and secrets. The bytes go to a temp name beside the target (the target's
//! name plus `.tmp`, so two files in one folder never share a temp name), are synced, then renamed
//! over the target: a reader sees the old file or the new one, never half of one. Key files
//! (the router's ticket key) are read and written here too; `proto` only turns text into keys.

use outpost_proto::keys::{
    Ed25519SigningKey as SigningKey, generate_signing_key, signing_key_from_text, signing_key_to_text,
};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write(path, contents, false)
}

/// Writes a secret atomically, readable by the owner only (mode 0600).
pub fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write(path, contents, true)
}

/// A key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file holds something that is not a signing key.
    #[error("key file {path}: {source}")]
    Key {
        /// Which file.
        path: String,
        /// Why it did not decode.
        source: outpost_proto::keys::KeyError,
    },
}

/// Reads the signing key at `path`, or generates one and writes it there (mode 0600) if the file
/// does not exist yet. Used for keys that must survive restarts, like the router's ticket key.
pub fn load_or_generate_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => signing_key_from_text(&text)
            .map_err(|source| KeyFileError::Key { path: path.display().to_string(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = generate_signing_key();
            write_secret(path, signing_key_to_text(&key).as_bytes()).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_temp_names_do_not_collide() {
        let dir = std::env::temp_dir().join(format!("outpost-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("ready.json"), dir.join("ready.stats"));
        assert_ne!(temp_path(&a), temp_path(&b));
        write_atomic(&a, b"one").unwrap();
        write_atomic(&a, b"two").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"two");
        assert!(!temp_path(&a).exists());
        write_secret(&b, b"s").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(write_atomic(&dir.join("missing-dir/x"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("outpost-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ticket.key");
        let _ = std::fs::remove_file(&path);
        let a = load_or_generate_signing_key(&path).unwrap();
        let b = load_or_generate_signing_key(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
