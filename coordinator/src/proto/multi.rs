//! Multi (op 14) and multiRead (op 22): a sequence of ops, each framed by a [`MultiHeader`] and
//! ended by `MultiHeader{type: -1, done: true, err: -1}`, and the results framed the same way
//! (`MultiOperationRecord.java`, `MultiResponse.java`).
//!
//! A multi carries only writes and check; a multiRead only getData and getChildren. ZooKeeper
//! refuses anything else in them (an IOException, answered with MarshallingError), so decoding
//! does too. A failed multi is answered with ReplyHeader err 0 and one error result per op
//! ([`rollback`]).

use super::OpCode;
use super::records::{
    CheckVersionRequest, CreateRequest, CreateTtlRequest, DeleteRequest, GetChildrenRequest, GetDataRequest,
    MultiHeader, SetDataRequest,
};
use crate::error::KeeperError;
use crate::jute::{JuteError, JuteWrite, Reader, Record};
use crate::stat::{CreateMode, Stat};

/// One op of a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// Op 1: answered with [`MultiResult::Create`].
    Create(CreateRequest),
    /// Op 15: answered with [`MultiResult::Create2`].
    Create2(CreateRequest),
    /// Op 19: answered with [`MultiResult::Create2`].
    CreateContainer(CreateRequest),
    /// Op 21: answered with [`MultiResult::Create2`].
    CreateTtl(CreateTtlRequest),
    /// Op 2.
    Delete(DeleteRequest),
    /// Op 5.
    SetData(SetDataRequest),
    /// Op 13.
    Check(CheckVersionRequest),
}

impl MultiOp {
    /// The op code that frames this op.
    pub fn op_code(&self) -> OpCode {
        match self {
            MultiOp::Create(_) => OpCode::Create,
            MultiOp::Create2(_) => OpCode::Create2,
            MultiOp::CreateContainer(_) => OpCode::CreateContainer,
            MultiOp::CreateTtl(_) => OpCode::CreateTtl,
            MultiOp::Delete(_) => OpCode::Delete,
            MultiOp::SetData(_) => OpCode::SetData,
            MultiOp::Check(_) => OpCode::Check,
        }
    }

    /// The znode the op acts on.
    pub fn path(&self) -> &str {
        match self {
            MultiOp::Create(r) | MultiOp::Create2(r) | MultiOp::CreateContainer(r) => &r.path,
            MultiOp::CreateTtl(r) => &r.path,
            MultiOp::Delete(r) => &r.path,
            MultiOp::SetData(r) => &r.path,
            MultiOp::Check(r) => &r.path,
        }
    }

    fn read(op: i32, reader: &mut Reader<'_>) -> Result<MultiOp, JuteError> {
        let op = match OpCode::from_code(op) {
            Some(OpCode::Create) => MultiOp::Create(reader.read()?),
            Some(OpCode::Create2) => MultiOp::Create2(reader.read()?),
            Some(OpCode::CreateContainer) => MultiOp::CreateContainer(reader.read()?),
            Some(OpCode::CreateTtl) => MultiOp::CreateTtl(reader.read()?),
            Some(OpCode::Delete) => MultiOp::Delete(reader.read()?),
            Some(OpCode::SetData) => MultiOp::SetData(reader.read()?),
            Some(OpCode::Check) => MultiOp::Check(reader.read()?),
            _ => return Err(JuteError::invalid(format!("op {op} is not allowed in a multi"))),
        };
        // Inside a multi ZooKeeper checks the flag while decoding (an IOException), unlike a
        // plain create, which answers BadArguments.
        let flags = match &op {
            MultiOp::Create(r) | MultiOp::Create2(r) | MultiOp::CreateContainer(r) => Some(r.flags),
            MultiOp::CreateTtl(r) => Some(r.flags),
            _ => None,
        };
        if let Some(flags) = flags.filter(|&f| CreateMode::from_flag(f).is_none()) {
            return Err(JuteError::invalid(format!("invalid create flags {flags} in a multi")));
        }
        Ok(op)
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            MultiOp::Create(r) | MultiOp::Create2(r) | MultiOp::CreateContainer(r) => r.write(out),
            MultiOp::CreateTtl(r) => r.write(out),
            MultiOp::Delete(r) => r.write(out),
            MultiOp::SetData(r) => r.write(out),
            MultiOp::Check(r) => r.write(out),
        }
    }
}

/// One op of a multiRead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiReadOp {
    /// Op 4 (`watch` is ignored: multiRead sets no watches).
    GetData(GetDataRequest),
    /// Op 8 (`watch` is ignored).
    GetChildren(GetChildrenRequest),
}

impl MultiReadOp {
    /// The op code that frames this op.
    pub fn op_code(&self) -> OpCode {
        match self {
            MultiReadOp::GetData(_) => OpCode::GetData,
            MultiReadOp::GetChildren(_) => OpCode::GetChildren,
        }
    }

    /// The znode the op reads.
    pub fn path(&self) -> &str {
        match self {
            MultiReadOp::GetData(r) => &r.path,
            MultiReadOp::GetChildren(r) => &r.path,
        }
    }

    fn read(op: i32, reader: &mut Reader<'_>) -> Result<MultiReadOp, JuteError> {
        match OpCode::from_code(op) {
            Some(OpCode::GetData) => Ok(MultiReadOp::GetData(reader.read()?)),
            Some(OpCode::GetChildren) => Ok(MultiReadOp::GetChildren(reader.read()?)),
            _ => Err(JuteError::invalid(format!("op {op} is not allowed in a multiRead"))),
        }
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            MultiReadOp::GetData(r) => r.write(out),
            MultiReadOp::GetChildren(r) => r.write(out),
        }
    }
}

/// One result of a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// For op 1: `CreateResponse`.
    Create {
        /// The created path (with its sequence suffix).
        path: String,
    },
    /// For ops 15, 19 and 21: `Create2Response` (ZooKeeper answers createContainer and
    /// createTTL inside a multi as create2).
    Create2 {
        /// The created path.
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// For op 2: no body.
    Delete,
    /// For op 5: `SetDataResponse`.
    SetData {
        /// The node's new stat.
        stat: Stat,
    },
    /// For op 13: no body.
    Check,
    /// Op -1 with `ErrorResponse{err}`; in a rolled-back multi, 0 for the ops before the one that
    /// failed and -2 (RuntimeInconsistency) for those after it.
    Error {
        /// The error code, or 0.
        err: i32,
    },
}

/// The results of a multi that failed at op `failed` (0-based) of `ops`, with `err`: ZooKeeper
/// rolls the whole multi back and reports `Error{0}` before the failure, `Error{err}` at it and
/// `Error{-2}` (RuntimeInconsistency) after it; the reply header's err stays 0.
///
/// ```
/// use squall_coordinator::{KeeperError, proto::{rollback, MultiResult}};
/// let results = rollback(3, 1, KeeperError::BadVersion);
/// assert_eq!(results, vec![MultiResult::Error { err: 0 }, MultiResult::Error { err: -103 }, MultiResult::Error { err: -2 }]);
/// ```
pub fn rollback(ops: usize, failed: usize, err: KeeperError) -> Vec<MultiResult> {
    (0..ops)
        .map(|i| MultiResult::Error {
            err: match i.cmp(&failed) {
                std::cmp::Ordering::Less => 0,
                std::cmp::Ordering::Equal => err.code(),
                std::cmp::Ordering::Greater => KeeperError::RuntimeInconsistency.code(),
            },
        })
        .collect()
}

impl MultiResult {
    fn header(&self) -> MultiHeader {
        let (op, err) = match self {
            MultiResult::Create { .. } => (OpCode::Create, 0),
            MultiResult::Create2 { .. } => (OpCode::Create2, 0),
            MultiResult::Delete => (OpCode::Delete, 0),
            MultiResult::SetData { .. } => (OpCode::SetData, 0),
            MultiResult::Check => (OpCode::Check, 0),
            MultiResult::Error { err } => (OpCode::Error, *err),
        };
        MultiHeader { op: op.code(), done: false, err }
    }

    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        self.header().write(out);
        match self {
            MultiResult::Create { path } => out.write_ustring(path),
            MultiResult::Create2 { path, stat } => {
                out.write_ustring(path);
                stat.write(out);
            }
            MultiResult::SetData { stat } => stat.write(out),
            MultiResult::Delete | MultiResult::Check => {}
            MultiResult::Error { err } => out.write_int(*err),
        }
    }

    fn read(header: &MultiHeader, reader: &mut Reader<'_>) -> Result<MultiResult, JuteError> {
        Ok(match OpCode::from_code(header.op) {
            Some(OpCode::Create) => MultiResult::Create { path: reader.read()? },
            Some(OpCode::Create2) => MultiResult::Create2 { path: reader.read()?, stat: reader.read()? },
            Some(OpCode::Delete) => MultiResult::Delete,
            Some(OpCode::SetData) => MultiResult::SetData { stat: reader.read()? },
            Some(OpCode::Check) => MultiResult::Check,
            Some(OpCode::Error) => MultiResult::Error { err: reader.read_int()? },
            _ => return Err(JuteError::invalid(format!("op {} is not a multi result", header.op))),
        })
    }
}

/// One result of a multiRead: each op succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiReadResult {
    /// For op 4: `GetDataResponse`.
    GetData {
        /// The node's data.
        data: Vec<u8>,
        /// Its stat.
        stat: Stat,
    },
    /// For op 8: `GetChildrenResponse`.
    GetChildren {
        /// The children's names.
        children: Vec<String>,
    },
    /// Op -1 with `ErrorResponse{err}`.
    Error {
        /// The error code.
        err: i32,
    },
}

impl MultiReadResult {
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            MultiReadResult::GetData { data, stat } => {
                MultiHeader { op: OpCode::GetData.code(), done: false, err: 0 }.write(out);
                out.write_buffer(data);
                stat.write(out);
            }
            MultiReadResult::GetChildren { children } => {
                MultiHeader { op: OpCode::GetChildren.code(), done: false, err: 0 }.write(out);
                out.write_vector(children);
            }
            MultiReadResult::Error { err } => {
                MultiHeader { op: OpCode::Error.code(), done: false, err: *err }.write(out);
                out.write_int(*err);
            }
        }
    }

    fn read(header: &MultiHeader, reader: &mut Reader<'_>) -> Result<MultiReadResult, JuteError> {
        Ok(match OpCode::from_code(header.op) {
            Some(OpCode::GetData) => MultiReadResult::GetData { data: reader.read()?, stat: reader.read()? },
            Some(OpCode::GetChildren) => MultiReadResult::GetChildren { children: reader.read()? },
            Some(OpCode::Error) => MultiReadResult::Error { err: reader.read_int()? },
            _ => return Err(JuteError::invalid(format!("op {} is not a multiRead result", header.op))),
        })
    }
}

const END: MultiHeader = MultiHeader { op: -1, done: true, err: -1 };

/// Reads framed items until the end marker (`done`; its type and err are not checked, as
/// ZooKeeper does not check them). Every item takes at least a 9-byte header, so the loop ends
/// with the input.
fn read_framed<T>(
    reader: &mut Reader<'_>,
    mut item: impl FnMut(&MultiHeader, &mut Reader<'_>) -> Result<T, JuteError>,
) -> Result<Vec<T>, JuteError> {
    let mut items = Vec::new();
    loop {
        let header: MultiHeader = reader.read()?;
        if header.done {
            return Ok(items);
        }
        items.push(item(&header, reader).map_err(|e| e.within("multi"))?);
    }
}

pub(super) fn read_ops(reader: &mut Reader<'_>) -> Result<Vec<MultiOp>, JuteError> {
    read_framed(reader, |h, r| MultiOp::read(h.op, r))
}

pub(super) fn read_read_ops(reader: &mut Reader<'_>) -> Result<Vec<MultiReadOp>, JuteError> {
    read_framed(reader, |h, r| MultiReadOp::read(h.op, r))
}

pub(super) fn read_results(reader: &mut Reader<'_>) -> Result<Vec<MultiResult>, JuteError> {
    read_framed(reader, MultiResult::read)
}

pub(super) fn read_read_results(reader: &mut Reader<'_>) -> Result<Vec<MultiReadResult>, JuteError> {
    read_framed(reader, MultiReadResult::read)
}

pub(super) fn write_ops<W: JuteWrite + ?Sized>(ops: &[MultiOp], out: &mut W) {
    for op in ops {
        MultiHeader { op: op.op_code().code(), done: false, err: -1 }.write(out);
        op.write(out);
    }
    END.write(out);
}

pub(super) fn write_read_ops<W: JuteWrite + ?Sized>(ops: &[MultiReadOp], out: &mut W) {
    for op in ops {
        MultiHeader { op: op.op_code().code(), done: false, err: -1 }.write(out);
        op.write(out);
    }
    END.write(out);
}

pub(super) fn write_results<W: JuteWrite + ?Sized>(results: &[MultiResult], out: &mut W) {
    for result in results {
        result.write(out);
    }
    END.write(out);
}

pub(super) fn write_read_results<W: JuteWrite + ?Sized>(results: &[MultiReadResult], out: &mut W) {
    for result in results {
        result.write(out);
    }
    END.write(out);
}
