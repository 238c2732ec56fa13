//! The data directory of a replica's Raft log: its layout and the identity check that keeps one
//! node from starting on another node's (or a foreign, or a damaged) directory.
//!
//! Layout, all inside the directory the caller names:
//!
//! ```text
//! meta.json   identity: {"format":"squall-raft-store","version":1,"node_id":…}
//! log/        raft-log's chunked write-ahead log (entries, vote, committed log id)
//! log-reaped/ second names of the log's chunk files (see `chunk_reaper`)
//! ```
//!
//! Other files (the state machine's snapshots, say) may live beside them. A fresh directory gets
//! `log/` first and `meta.json` last (written to a temp file, fsynced, renamed, and the directory
//! fsynced), so a directory with `meta.json` always has a complete layout. Every refusal happens
//! before anything in the directory is created, changed or removed.

use std::fs;
use std::fs::File;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The identity file of a data directory.
pub const IDENTITY_FILE: &str = "meta.json";
/// The subdirectory that holds raft-log's write-ahead log.
pub const LOG_DIR: &str = "log";

const IDENTITY_TMP: &str = "meta.json.tmp";
const FORMAT: &str = "squall-raft-store";
const FORMAT_VERSION: u32 = 1;

/// Why a replica's data directory was refused. Each message names the directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    /// The directory was initialized by another node.
    #[error(
        "data directory {dir} belongs to node {found}, not to node {expected}: start node {found} on it, \
         or give node {expected} a directory of its own"
    )]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// The node id recorded in its identity file.
        found: String,
        /// The node id this process runs as.
        expected: String,
    },
    /// The directory holds something that is not a Squall Raft store.
    #[error("data directory {dir} is not a Squall Raft store: {reason}; give the replica an empty or new directory")]
    Foreign {
        /// The directory.
        dir: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The directory is a Squall Raft store, but damaged.
    #[error("data directory {dir} is corrupt: {reason}; nothing was changed")]
    Corrupt {
        /// The directory.
        dir: PathBuf,
        /// What is damaged.
        reason: String,
    },
    /// The store was written by a newer Squall.
    #[error(
        "data directory {dir} has store format version {found}, but this build reads version {supported} only: \
         run a newer squall"
    )]
    UnsupportedVersion {
        /// The directory.
        dir: PathBuf,
        /// The version in its identity file.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// A file system operation failed.
    #[error("cannot {action} in data directory {dir}: {error}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error from the operating system (part of the message, so printed once).
        error: io::Error,
    },
    /// raft-log refused to open the write-ahead log (damaged records, locked by another process).
    #[error("cannot open the Raft log in {dir}: {error}")]
    Log {
        /// The log directory.
        dir: PathBuf,
        /// raft-log's error (part of the message, so printed once).
        error: io::Error,
    },
}

/// The contents of `meta.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    format: String,
    version: u32,
    node_id: serde_json::Value,
}

/// Checks (or, for a new or empty directory, initializes) the data directory `dir` for node
/// `node_id` and returns the path of its `log/` subdirectory.
pub(crate) fn prepare<N>(dir: &Path, node_id: &N) -> Result<PathBuf, StoreOpenError>
where
    N: Serialize + DeserializeOwned + PartialEq + std::fmt::Display,
{
    let io_err = |action| move |source| StoreOpenError::Io { dir: dir.to_path_buf(), action, error: source };
    let foreign = |reason: String| StoreOpenError::Foreign { dir: dir.to_path_buf(), reason };
    let corrupt = |reason: String| StoreOpenError::Corrupt { dir: dir.to_path_buf(), reason };

    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(foreign("it is a file, not a directory".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err("create the directory"))?;
            return initialize(dir, node_id);
        }
        Err(e) => return Err(io_err("inspect the directory")(e)),
    }

    let log_dir = dir.join(LOG_DIR);
    let bytes = match fs::read(dir.join(IDENTITY_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match unexpected_entries(dir).map_err(io_err("list the directory"))? {
                None => initialize(dir, node_id),
                Some(found) => Err(foreign(format!("it holds {found} but no {IDENTITY_FILE}"))),
            };
        }
        Err(e) => return Err(io_err("read meta.json")(e)),
    };

    let identity: Identity = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("{IDENTITY_FILE} is not a valid identity file ({e})")))?;
    if identity.format != FORMAT {
        return Err(foreign(format!("{IDENTITY_FILE} names format '{}', expected '{FORMAT}'", identity.format)));
    }
    if identity.version > FORMAT_VERSION {
        return Err(StoreOpenError::UnsupportedVersion {
            dir: dir.to_path_buf(),
            found: identity.version,
            supported: FORMAT_VERSION,
        });
    }
    if identity.version == 0 {
        return Err(corrupt(format!("{IDENTITY_FILE} has format version 0")));
    }
    let found: N = serde_json::from_value(identity.node_id.clone())
        .map_err(|e| corrupt(format!("{IDENTITY_FILE} has node_id {} ({e})", identity.node_id)))?;
    if &found != node_id {
        return Err(StoreOpenError::WrongNode {
            dir: dir.to_path_buf(),
            found: found.to_string(),
            expected: node_id.to_string(),
        });
    }
    if !log_dir.is_dir() {
        return Err(corrupt(format!(
            "{LOG_DIR}/ is missing, so this node's votes and log entries are gone; a voter that forgets them \
             can break Raft's safety: restore {LOG_DIR}/, or remove the node from the cluster and re-add it \
             with an empty directory"
        )));
    }
    Ok(log_dir)
}

/// Returns a description of what in `dir` keeps it from being a new store, or `None` when it
/// holds nothing but the leftovers of an initialization that was interrupted (an empty `log/`
/// and a `meta.json.tmp`).
fn unexpected_entries(dir: &Path) -> io::Result<Option<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = match name.as_str() {
            IDENTITY_TMP => true,
            LOG_DIR => entry.file_type()?.is_dir() && only_lock_file(&entry.path())?,
            _ => false,
        };
        if !leftover {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    let shown = names.iter().take(3).map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    let more = if names.len() > 3 { format!(" and {} more", names.len() - 3) } else { String::new() };
    Ok(Some(format!("{shown}{more}")))
}

/// True if `dir` is empty or holds only raft-log's lock file.
fn only_lock_file(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        if entry?.file_name() != "LOCK" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Lays out a new store in `dir` (known to be empty but for interrupted-initialization leftovers).
fn initialize<N: Serialize>(dir: &Path, node_id: &N) -> Result<PathBuf, StoreOpenError> {
    let io_err = |action| move |source| StoreOpenError::Io { dir: dir.to_path_buf(), action, error: source };
    let log_dir = dir.join(LOG_DIR);
    fs::create_dir_all(&log_dir).map_err(io_err("create log/"))?;

    let identity = Identity {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        node_id: serde_json::to_value(node_id)
            .map_err(|e| io_err("encode the node id")(io::Error::new(io::ErrorKind::InvalidInput, e)))?,
    };
    let mut bytes = serde_json::to_vec_pretty(&identity).expect("an Identity always encodes to JSON");
    bytes.push(b'\n');

    let tmp = dir.join(IDENTITY_TMP);
    let mut file = File::create(&tmp).map_err(io_err("create meta.json.tmp"))?;
    file.write_all(&bytes).map_err(io_err("write meta.json.tmp"))?;
    file.sync_all().map_err(io_err("fsync meta.json.tmp"))?;
    drop(file);
    fs::rename(&tmp, dir.join(IDENTITY_FILE)).map_err(io_err("rename meta.json.tmp to meta.json"))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync the directory"))?;
    Ok(log_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files.push((path.clone(), Vec::new()));
                    stack.push(path);
                } else {
                    let bytes = fs::read(&path).unwrap();
                    files.push((path, bytes));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn raft_data_dir_new_directory_is_initialized_and_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node-1");
        let log_dir = prepare(&dir, &1u64).unwrap();
        assert_eq!(log_dir, dir.join(LOG_DIR));
        assert!(dir.join(IDENTITY_FILE).is_file());
        assert!(!dir.join(IDENTITY_TMP).exists());
        assert_eq!(prepare(&dir, &1u64).unwrap(), log_dir);
    }

    #[test]
    fn raft_data_dir_of_another_node_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path(), &1u64).unwrap();
        let before = snapshot(tmp.path());
        let err = prepare(tmp.path(), &2u64).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreOpenError::WrongNode { .. }), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(msg.contains("belongs to node 1, not to node 2"), "{msg}");
        assert_eq!(before, snapshot(tmp.path()));
    }

    #[test]
    fn raft_data_dir_with_foreign_files_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("version-2"), b"zookeeper").unwrap();
        let before = snapshot(tmp.path());
        let err = prepare(tmp.path(), &1u64).unwrap_err();
        assert!(matches!(err, StoreOpenError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("'version-2'"), "{err}");
        assert_eq!(before, snapshot(tmp.path()));

        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(IDENTITY_FILE), br#"{"format":"etcd","version":1,"node_id":1}"#).unwrap();
        let err = prepare(tmp.path(), &1u64).unwrap_err();
        assert!(matches!(err, StoreOpenError::Foreign { .. }), "{err}");
    }

    #[test]
    fn raft_data_dir_with_corrupt_identity_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path(), &1u64).unwrap();
        for garbage in [&b"{\"format\":\"squall-raft-st"[..], b"\0\0\0\0", b"{\"format\":\"squall-raft-store\"}"] {
            fs::write(tmp.path().join(IDENTITY_FILE), garbage).unwrap();
            let before = snapshot(tmp.path());
            let err = prepare(tmp.path(), &1u64).unwrap_err();
            assert!(matches!(err, StoreOpenError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("meta.json is not a valid identity file"), "{err}");
            assert_eq!(before, snapshot(tmp.path()));
        }
    }

    #[test]
    fn raft_data_dir_newer_format_or_missing_log_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path(), &1u64).unwrap();
        fs::write(tmp.path().join(IDENTITY_FILE), br#"{"format":"squall-raft-store","version":9,"node_id":1}"#)
            .unwrap();
        let err = prepare(tmp.path(), &1u64).unwrap_err();
        assert!(matches!(err, StoreOpenError::UnsupportedVersion { found: 9, .. }), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path(), &1u64).unwrap();
        fs::remove_dir(tmp.path().join(LOG_DIR)).unwrap();
        let err = prepare(tmp.path(), &1u64).unwrap_err();
        assert!(err.to_string().contains("log/ is missing"), "{err}");
        assert!(!tmp.path().join(LOG_DIR).exists());
    }

    #[test]
    fn raft_data_dir_interrupted_initialization_is_completed() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join(LOG_DIR)).unwrap();
        fs::write(tmp.path().join(LOG_DIR).join("LOCK"), b"").unwrap();
        fs::write(tmp.path().join(IDENTITY_TMP), b"{\"form").unwrap();
        prepare(tmp.path(), &7u64).unwrap();
        assert!(prepare(tmp.path(), &7u64).is_ok());
        assert!(matches!(prepare(tmp.path(), &8u64), Err(StoreOpenError::WrongNode { .. })));
    }
}
