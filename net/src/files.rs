//! Atomic file writes: the one implementation every binary uses for ready files, module records,
//! compiled-module caches and secrets. The bytes go to a temporary file beside the target, are
//! synced, then renamed over the target: a reader sees the old file or the new one, never half of
//! one. Each write has a temporary name of its own (the target's name, `.tmp-`, the process id
//! and a counter): with one fixed name, two writers of one file renamed each other's bytes or
//! failed with "No such file or directory". A crash leaves the temporary file behind;
//! [`sweep_temp`] removes such files when their folder is opened again. Key files (the router's
//! ticket key) are read and written here too; `proto` only turns text into keys.

use outpost_proto::keys::{
    Ed25519SigningKey as SigningKey, generate_signing_key, signing_key_from_text, signing_key_to_text,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What every temporary name holds, and what [`sweep_temp`] looks for.
const TEMP_MARK: &str = ".tmp-";

fn temp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!("{TEMP_MARK}{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Removes the temporary files that writes interrupted by a crash left in `dir` (not below it);
/// returns how many. Call it when the folder is opened, before anything writes there.
pub fn sweep_temp(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // `.tmp` alone is what writes made before each had a name of its own.
        if (name.contains(TEMP_MARK) || name.ends_with(".tmp"))
            && entry.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::info!(file = %entry.path().display(), "removed a temporary file left by an interrupted write");
            removed += 1;
        }
    }
    removed
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
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

/// Reads the signing key at `path`, which must exist.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| KeyFileError::Io { path: path.display().to_string(), source })?;
    signing_key_from_text(&text).map_err(|source| KeyFileError::Key { path: path.display().to_string(), source })
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
    fn concurrent_writers_of_one_file_all_succeed_and_one_of_them_wins_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("module.json");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    (0..20).map(|_| write_atomic(&path, &[i; 4096])).collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() == 4096 && bytes.iter().all(|b| *b == bytes[0]), "a mix of writers");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("module.json")], "temporary files left behind");
    }

    #[test]
    fn sweeping_removes_what_interrupted_writes_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["module.json", "abc.wasm", "module.json.tmp-123-4", "abc.wasm.tmp", "acked"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("keep.tmp-1-1")).unwrap();
        assert_eq!(sweep_temp(dir.path()), 2);
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["abc.wasm", "acked", "keep.tmp-1-1", "module.json"]);
        assert_eq!(sweep_temp(&dir.path().join("missing")), 0);
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
