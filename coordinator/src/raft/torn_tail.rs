//! Telling a torn last write from a damaged log.
//!
//! A crash during a flush can leave the end of the last WAL chunk holding part of a record: its
//! length field promises more bytes than the file has, or the file was extended with zeros that
//! were never overwritten. That write was never acknowledged (acknowledgement waits for its
//! fsync), so dropping it is what Raft allows. raft-log's own recovery (`truncate_incomplete_record`)
//! decides this from the first unreadable record alone: a record whose length field runs past
//! the end of the file is taken for a torn write even when the length was damaged in the middle
//! of the log, and everything after it — acknowledged entries — is cut off.
//!
//! So [`LogStore`](super::LogStore) opens raft-log with that recovery off and, when the open
//! fails, asks [`judge`] whether the failure is a torn tail: the first unreadable record is in
//! the last chunk, and nothing after it is data — for a record cut short, no complete,
//! checksummed record starts anywhere after it; for any other error, only zeros follow. Only
//! then is the log reopened with raft-log's truncation on, which cuts exactly there.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use raft_log::ChunkId;
use raft_log::DumpApi;
use raft_log::RaftLogRecord;
use raft_log::codeq::Decode;
use raft_log::codeq::Span;

/// An incomplete last write at the end of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TornTail {
    /// The chunk file holding it (the last one).
    pub chunk: String,
    /// Where, in that file, the incomplete write starts.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub len: u64,
}

/// Whether the log in `config.dir`, which raft-log refused to open, ends with a torn write and
/// is otherwise intact. `Ok(None)`: the damage is elsewhere, or data follows it.
pub(super) fn judge<T: raft_log::Types>(config: &Arc<raft_log::Config>) -> io::Result<Option<TornTail>> {
    let first_error = first_unreadable_record::<T>(config)?;
    let Some(FirstError { chunk, offset, kind, last_chunk }) = first_error else {
        return Ok(None);
    };
    if chunk != last_chunk {
        return Ok(None);
    }
    let path = config.wal.chunk_path(chunk);
    let file = std::fs::File::open(&path)?;
    let size = file.metadata()?.len();
    let mut rest = vec![0u8; usize::try_from(size.saturating_sub(offset)).map_err(io::Error::other)?];
    file.read_exact_at(&mut rest, offset)?;
    let torn = if kind == io::ErrorKind::UnexpectedEof {
        (1..rest.len()).all(|at| !is_record_at::<T>(&rest[at..]))
    } else {
        rest.iter().all(|&b| b == 0)
    };
    let len = rest.len() as u64;
    Ok(torn.then_some(TornTail { chunk: path, offset, len }))
}

struct FirstError {
    chunk: ChunkId,
    /// Offset in the chunk file of the record that could not be read.
    offset: u64,
    kind: io::ErrorKind,
    last_chunk: ChunkId,
}

/// Reads every chunk as raft-log would and reports the first record it cannot read.
fn first_unreadable_record<T: raft_log::Types>(config: &Arc<raft_log::Config>) -> io::Result<Option<FirstError>> {
    let dump = raft_log::Dump::<T>::new(config.clone())?;
    let mut first: Option<(ChunkId, u64, io::ErrorKind)> = None;
    let mut readable_end = (ChunkId(u64::MAX), 0u64);
    let mut last_chunk = ChunkId(0);
    dump.write_with(|chunk, _index, record| {
        last_chunk = chunk;
        if readable_end.0 != chunk {
            readable_end = (chunk, 0);
        }
        match record {
            Ok((segment, _)) => readable_end.1 = segment.end().0,
            Err(error) if first.is_none() => first = Some((chunk, readable_end.1, error.kind())),
            Err(_) => {}
        }
        Ok(())
    })?;
    Ok(first.map(|(chunk, offset, kind)| FirstError { chunk, offset, kind, last_chunk }))
}

/// Whether a whole record, checksum included, starts at the beginning of `bytes`.
fn is_record_at<T: raft_log::Types>(bytes: &[u8]) -> bool {
    // A cheap look first: every action record starts with its type (0..=4) and, but for
    // TruncateAfter's option flag, the short length-prefixed log id or vote. Decoding is the
    // judge; the look only keeps the scan linear on ordinary bytes.
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let plausible = match u32_at(0) {
        Some(3) => true,
        Some(0..=4) => u32_at(4).is_some_and(|len| len <= 256),
        _ => false,
    };
    plausible && RaftLogRecord::<T>::decode(bytes).is_ok()
}
