//! Frees the disk space of purged log chunks away from the log's flush thread.
//!
//! raft-log deletes a chunk file once a purge emptied it, on its flush thread, between two
//! fsyncs. Deleting a chunk file takes this machine's disk about 10–15 ms per 16 MiB (strace of
//! the replicas: the `unlink` itself), and for all that time the replica's log cannot sync; and
//! every replica purges at about the same index, right after its snapshot. (The larger stalls
//! around a chunk's end came from raft-log's payload cache: see `log_store::encode_entries`.)
//!
//! So before each purge the log store gives every chunk file a second name in `log-reaped/`
//! beside `log/` (a hard link, [`ChunkReaper::adopt`]): raft-log's delete then only removes a
//! name, and a background thread of low priority frees the space once a chunk's name in `log/`
//! is gone, a few MiB at a time (truncating the file, then removing the empty file). The thread
//! only ever touches files whose name raft-log has removed, so the log itself is never changed.
//! Where hard links fail (a file system without them), raft-log deletes the files itself, as
//! before. Links left by a crash are freed when the store opens again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The directory, beside `log/`, that holds the second names of the chunk files.
pub(crate) const REAPED_DIR: &str = "log-reaped";
/// How much of a file is freed at a time, and the pause after each step.
const STEP: u64 = 4 << 20;
const PAUSE: Duration = Duration::from_millis(2);
/// How often the thread looks for chunks to free when nobody wakes it.
const POLL: Duration = Duration::from_secs(1);

/// See the module documentation. Dropping it stops the thread.
pub(crate) struct ChunkReaper {
    log_dir: PathBuf,
    reaped_dir: PathBuf,
    wake: mpsc::Sender<()>,
}

impl ChunkReaper {
    /// Starts freeing chunks of `log_dir` through `data_dir/log-reaped/`.
    pub(crate) fn start(data_dir: &Path, log_dir: &Path) -> io::Result<ChunkReaper> {
        let reaped_dir = data_dir.join(REAPED_DIR);
        fs::create_dir_all(&reaped_dir)?;
        let (wake, woken) = mpsc::channel();
        let (log, reaped) = (log_dir.to_path_buf(), reaped_dir.clone());
        std::thread::Builder::new().name("log-reaper".into()).spawn(move || {
            crate::background::lower_thread_priority();
            loop {
                if let Err(e) = reap(&log, &reaped) {
                    tracing::warn!("cannot free purged log chunks in {}: {e}", reaped.display());
                }
                match woken.recv_timeout(POLL) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(ChunkReaper { log_dir: log_dir.to_path_buf(), reaped_dir, wake })
    }

    /// Gives every chunk file in `log/` that has none yet its second name. Call before a purge:
    /// a chunk can only be deleted by one.
    pub(crate) fn adopt(&self) {
        if let Err(e) = self.link_all() {
            tracing::debug!(
                "cannot link log chunks into {}: raft-log deletes them itself: {e}",
                self.reaped_dir.display()
            );
        }
    }

    /// Has the thread look for chunks to free now.
    pub(crate) fn wake(&self) {
        let _ = self.wake.send(());
    }

    fn link_all(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.log_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".wal") {
                continue;
            }
            match fs::hard_link(entry.path(), self.reaped_dir.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Frees every file in `reaped` whose name is gone from `log`.
fn reap(log: &Path, reaped: &Path) -> io::Result<()> {
    for entry in fs::read_dir(reaped)? {
        let entry = entry?;
        if log.join(entry.file_name()).exists() {
            continue;
        }
        free(&entry.path())?;
    }
    Ok(())
}

/// Shortens the file at `path` a [`STEP`] at a time, then removes it.
fn free(path: &Path) -> io::Result<()> {
    let file = fs::OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(STEP);
        file.set_len(len)?;
        std::thread::sleep(PAUSE);
    }
    drop(file);
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_chunk_deleted_from_the_log_is_freed_and_the_others_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::create_dir(&log).unwrap();
        let chunk = |name: &str| log.join(name);
        fs::write(chunk("r-1.wal"), vec![1u8; 9 << 20]).unwrap();
        fs::write(chunk("r-2.wal"), b"kept").unwrap();
        fs::write(chunk("LOCK"), b"").unwrap();
        let reaper = ChunkReaper::start(dir.path(), &log).unwrap();
        reaper.adopt();
        let reaped = dir.path().join(REAPED_DIR);
        assert_eq!(fs::metadata(chunk("r-1.wal")).unwrap().nlink(), 2, "a second name");
        assert!(!reaped.join("LOCK").exists(), "only chunk files are adopted");

        fs::remove_file(chunk("r-1.wal")).unwrap();
        reaper.wake();
        wait_until("r-1.wal is freed", || !reaped.join("r-1.wal").exists());
        assert_eq!(fs::read(chunk("r-2.wal")).unwrap(), b"kept", "a chunk still in the log is untouched");
        assert!(reaped.join("r-2.wal").exists());

        // Adopting again is harmless; a new chunk gets its second name too.
        fs::write(chunk("r-3.wal"), b"new").unwrap();
        reaper.adopt();
        assert_eq!(fs::metadata(chunk("r-3.wal")).unwrap().nlink(), 2);
    }

    /// Second names left by a crash are freed when the store opens again.
    #[test]
    fn leftovers_of_a_crash_are_freed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::create_dir(&log).unwrap();
        let reaped = dir.path().join(REAPED_DIR);
        fs::create_dir(&reaped).unwrap();
        fs::write(reaped.join("r-0.wal"), vec![0u8; 1 << 20]).unwrap();
        let _reaper = ChunkReaper::start(dir.path(), &log).unwrap();
        wait_until("the leftover is freed", || !reaped.join("r-0.wal").exists());
    }
}
