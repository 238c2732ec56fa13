//! Jute, ZooKeeper's binary record encoding: the primitives, the length-prefixed frames they
//! travel in, and the [`Record`] trait that `proto` builds every request and reply from.
//!
//! The encoding (`org.apache.jute.BinaryInputArchive`/`BinaryOutputArchive`) is big-endian:
//! `int` is 4 bytes, `long` 8, `boolean` 1; `buffer` and `ustring` are an `int` length (-1 for
//! null) followed by the bytes; `vector` is an `int` count (-1 for null) followed by the items.
//! A record is its fields in order, with no tags and no padding.
//!
//! The [`Reader`] never panics: every malformed input (too few bytes, a negative length other
//! than -1, a length past the end or beyond `jute.maxbuffer`, a string that is not UTF-8, a
//! vector whose count cannot fit in the bytes left) is a [`JuteError`] that names the field.
//!
//! ```
//! use squall_coordinator::jute::{JuteWrite, Reader};
//! let mut out = Vec::new();
//! out.write_int(7);
//! out.write_ustring("/a");
//! let mut reader = Reader::new(&out);
//! assert_eq!(reader.read_int().unwrap(), 7);
//! assert_eq!(reader.read_ustring().unwrap(), Some("/a"));
//! assert!(reader.is_empty());
//! ```

use std::fmt;

/// ZooKeeper's default `jute.maxbuffer`: 0xfffff = 1,048,575 bytes.
///
/// The server closes a connection whose frame length is negative or larger than this
/// (`NIOServerCnxn.readLength`, `NettyServerCnxn`: "Len error"): the limit covers the whole
/// frame, headers included, with no extra room. The extra room ZooKeeper adds
/// (`zookeeper.jute.maxbuffer.extrasize`, at least 1024 bytes) applies only to the length of a
/// single buffer or string inside a record (`BinaryInputArchive.checkLength`), which can never
/// matter for a field inside a frame that is itself within the limit.
pub const JUTE_MAX_BUFFER: usize = 0xfffff;

/// Why bytes could not be decoded: what went wrong and in which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JuteError {
    /// What went wrong.
    pub kind: JuteErrorKind,
    /// The fields being read, outermost first (e.g. `CreateRequest.acl`, `Acl.id`, `Id.scheme`).
    pub context: Vec<&'static str>,
}

/// The kinds of [`JuteError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JuteErrorKind {
    /// The input ended: `needed` bytes were wanted, `left` remained.
    Truncated {
        /// Bytes the next item needs.
        needed: usize,
        /// Bytes left in the input.
        left: usize,
    },
    /// A length or count below -1 (-1 alone means null).
    NegativeLength(i32),
    /// A buffer, string or frame longer than the limit (`jute.maxbuffer`).
    TooLong {
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string whose bytes are not UTF-8.
    InvalidUtf8,
    /// A vector count too large for the bytes left, even at the smallest item size.
    ImplausibleCount {
        /// The count given.
        count: usize,
        /// The fewest bytes one item takes.
        min_item_len: usize,
        /// Bytes left in the input.
        left: usize,
    },
    /// A null (length -1) where the record needs a value, e.g. a null path.
    UnexpectedNull,
    /// Well-formed jute that is not a valid record, e.g. an op that multi does not allow.
    Invalid(String),
}

impl JuteError {
    /// An error of this kind, with no field context yet.
    pub fn new(kind: JuteErrorKind) -> JuteError {
        JuteError { kind, context: Vec::new() }
    }

    /// A record that decodes but makes no sense, with the reason.
    pub fn invalid(reason: impl Into<String>) -> JuteError {
        JuteError::new(JuteErrorKind::Invalid(reason.into()))
    }

    /// Adds the field being read when the error happened (callers add outer fields last).
    pub fn within(mut self, field: &'static str) -> JuteError {
        self.context.insert(0, field);
        self
    }
}

impl fmt::Display for JuteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context.join(" > "))?;
        }
        match &self.kind {
            JuteErrorKind::Truncated { needed, left } => {
                write!(f, "truncated input: needs {needed} more bytes, {left} left")
            }
            JuteErrorKind::NegativeLength(len) => write!(f, "negative length {len} (only -1, for null, is allowed)"),
            JuteErrorKind::TooLong { len, max } => {
                write!(f, "length {len} is larger than jute.maxbuffer ({max} bytes)")
            }
            JuteErrorKind::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            JuteErrorKind::ImplausibleCount { count, min_item_len, left } => write!(
                f,
                "vector of {count} items needs at least {} bytes, only {left} left",
                count.saturating_mul(*min_item_len)
            ),
            JuteErrorKind::UnexpectedNull => write!(f, "null where a value is required"),
            JuteErrorKind::Invalid(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for JuteError {}

/// Reads jute primitives from a byte slice, front to back; see the module doc.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`. A buffer or string length above [`JUTE_MAX_BUFFER`] is refused as
    /// [`JuteErrorKind::TooLong`] unless `buf` itself is larger (a frame read under a raised
    /// `jute.maxbuffer`), in which case only lengths past the end are refused.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0, max_len: JUTE_MAX_BUFFER.max(buf.len()) }
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// How many bytes were read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], JuteError> {
        let left = self.remaining();
        if n > left {
            return Err(JuteError::new(JuteErrorKind::Truncated { needed: n, left }));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], JuteError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A jute `int`.
    pub fn read_int(&mut self) -> Result<i32, JuteError> {
        self.take_array().map(i32::from_be_bytes)
    }

    /// A jute `long`.
    pub fn read_long(&mut self) -> Result<i64, JuteError> {
        self.take_array().map(i64::from_be_bytes)
    }

    /// A jute `boolean`: any non-zero byte is true, as Java's `DataInput.readBoolean` reads it.
    pub fn read_bool(&mut self) -> Result<bool, JuteError> {
        self.take_array::<1>().map(|[b]| b != 0)
    }

    /// A length or count: `None` for -1 (null), an error below -1.
    fn read_len(&mut self) -> Result<Option<usize>, JuteError> {
        match self.read_int()? {
            -1 => Ok(None),
            len if len < 0 => Err(JuteError::new(JuteErrorKind::NegativeLength(len))),
            len => Ok(Some(len as usize)),
        }
    }

    /// A jute `buffer`: `None` for null.
    pub fn read_buffer(&mut self) -> Result<Option<&'a [u8]>, JuteError> {
        let Some(len) = self.read_len()? else { return Ok(None) };
        if len > self.max_len {
            return Err(JuteError::new(JuteErrorKind::TooLong { len, max: self.max_len }));
        }
        self.take(len).map(Some)
    }

    /// A jute `ustring`: `None` for null; the bytes must be UTF-8.
    pub fn read_ustring(&mut self) -> Result<Option<&'a str>, JuteError> {
        match self.read_buffer()? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| JuteError::new(JuteErrorKind::InvalidUtf8)),
        }
    }

    /// A jute `vector` count: `None` for null. The count is refused when even items of
    /// `min_item_len` bytes could not fit in what is left, so a caller may allocate it.
    pub fn read_vector_len(&mut self, min_item_len: usize) -> Result<Option<usize>, JuteError> {
        let Some(count) = self.read_len()? else { return Ok(None) };
        let left = self.remaining();
        if count.saturating_mul(min_item_len.max(1)) > left {
            return Err(JuteError::new(JuteErrorKind::ImplausibleCount { count, min_item_len, left }));
        }
        Ok(Some(count))
    }

    /// A record.
    pub fn read<T: Record>(&mut self) -> Result<T, JuteError> {
        T::read(self)
    }
}

/// A type with a jute encoding: a primitive, a vector, or a record of them.
pub trait Record: Sized {
    /// The fewest bytes an encoding takes; bounds the count of a vector of this type.
    const MIN_LEN: usize;

    /// Decodes one value.
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError>;

    /// Appends the encoding.
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W);
}

impl Record for i32 {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        reader.read_int()
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_int(*self);
    }
}

impl Record for i64 {
    const MIN_LEN: usize = 8;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        reader.read_long()
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_long(*self);
    }
}

impl Record for bool {
    const MIN_LEN: usize = 1;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        reader.read_bool()
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_bool(*self);
    }
}

/// A `ustring` that must not be null (paths, schemes, names).
impl Record for String {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        match reader.read_ustring()? {
            Some(s) => Ok(s.to_owned()),
            None => Err(JuteError::new(JuteErrorKind::UnexpectedNull)),
        }
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_ustring(self);
    }
}

/// A `ustring` held inline when short (ACL schemes and ids).
impl Record for smol_str::SmolStr {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        match reader.read_ustring()? {
            Some(s) => Ok(smol_str::SmolStr::new(s)),
            None => Err(JuteError::new(JuteErrorKind::UnexpectedNull)),
        }
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_ustring(self);
    }
}

/// A `ustring` that may be null (written back as null).
impl Record for Option<String> {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        Ok(reader.read_ustring()?.map(str::to_owned))
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        match self {
            Some(s) => out.write_ustring(s),
            None => out.write_int(-1),
        }
    }
}

/// A `buffer`. Null reads as empty: ZooKeeper clients send null data (`create(path, null, …)`)
/// and every consumer treats it as no bytes; it is written back as an empty buffer.
impl Record for Vec<u8> {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        Ok(reader.read_buffer()?.map(<[u8]>::to_vec).unwrap_or_default())
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_buffer(self);
    }
}

/// A `vector`. Null reads as empty (no client sends one where a list matters).
impl<T: Record> Record for Vec<T> {
    const MIN_LEN: usize = 4;
    fn read(reader: &mut Reader<'_>) -> Result<Self, JuteError> {
        let count = reader.read_vector_len(T::MIN_LEN)?.unwrap_or(0);
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::read(reader)?);
        }
        Ok(items)
    }
    fn write<W: JuteWrite + ?Sized>(&self, out: &mut W) {
        out.write_vector(self);
    }
}

/// Converts a length to jute's `int`.
///
/// Every length written comes from a record the server built from data it already bounded by
/// `jute.maxbuffer` (znode data ≤ 1 MiB, frames ≤ 1 MiB), far below `i32::MAX`; a larger one is a
/// bug upstream that must not go out as a corrupt length.
fn wire_len(len: usize) -> i32 {
    i32::try_from(len).expect("jute length exceeds i32::MAX: records are bounded by jute.maxbuffer")
}

/// Where a frame's 4-byte length prefix sits, returned by [`JuteWrite::begin_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a frame must be closed with end_frame"]
pub struct FrameMark(usize);

/// Writes jute into a growable byte buffer (`Vec<u8>` or `bytes::BytesMut`).
pub trait JuteWrite {
    /// Appends raw bytes.
    fn put_slice(&mut self, bytes: &[u8]);
    /// How many bytes the buffer holds.
    fn written(&self) -> usize;
    /// Overwrites 4 bytes at `at` (a frame's length prefix).
    fn patch(&mut self, at: usize, bytes: [u8; 4]);

    /// A jute `int`.
    fn write_int(&mut self, v: i32) {
        self.put_slice(&v.to_be_bytes());
    }
    /// A jute `long`.
    fn write_long(&mut self, v: i64) {
        self.put_slice(&v.to_be_bytes());
    }
    /// A jute `boolean` (0 or 1).
    fn write_bool(&mut self, v: bool) {
        self.put_slice(&[u8::from(v)]);
    }
    /// A jute `buffer` (never null).
    fn write_buffer(&mut self, bytes: &[u8]) {
        self.write_int(wire_len(bytes.len()));
        self.put_slice(bytes);
    }
    /// A jute `ustring` (never null).
    fn write_ustring(&mut self, s: &str) {
        self.write_buffer(s.as_bytes());
    }
    /// A jute `vector` (never null).
    fn write_vector<T: Record>(&mut self, items: &[T]) {
        self.write_int(wire_len(items.len()));
        for item in items {
            item.write(self);
        }
    }
    /// A record.
    fn write_record<T: Record>(&mut self, record: &T) {
        record.write(self);
    }
    /// Starts a frame: reserves its 4-byte length prefix.
    fn begin_frame(&mut self) -> FrameMark {
        let mark = FrameMark(self.written());
        self.put_slice(&[0; 4]);
        mark
    }
    /// Ends a frame: writes the number of bytes since [`JuteWrite::begin_frame`] into its prefix.
    fn end_frame(&mut self, mark: FrameMark) {
        let len = self.written() - mark.0 - 4;
        self.patch(mark.0, wire_len(len).to_be_bytes());
    }
}

impl JuteWrite for Vec<u8> {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn written(&self) -> usize {
        self.len()
    }
    fn patch(&mut self, at: usize, bytes: [u8; 4]) {
        self[at..at + 4].copy_from_slice(&bytes);
    }
}

impl JuteWrite for bytes::BytesMut {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn written(&self) -> usize {
        self.len()
    }
    fn patch(&mut self, at: usize, bytes: [u8; 4]) {
        self[at..at + 4].copy_from_slice(&bytes);
    }
}

/// The payload length a 4-byte frame prefix announces, refused when negative or above
/// `max_len` (ZooKeeper's "Len error": pass [`JUTE_MAX_BUFFER`] for its default). A server
/// closes the connection on the error.
pub fn frame_len(prefix: [u8; 4], max_len: usize) -> Result<usize, JuteError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 {
        return Err(JuteError::new(JuteErrorKind::NegativeLength(len)).within("frame length"));
    }
    let len = len as usize;
    if len > max_len {
        return Err(JuteError::new(JuteErrorKind::TooLong { len, max: max_len }).within("frame length"));
    }
    Ok(len)
}

/// Splits the first complete frame off `buf` (bytes read from a connection): `Ok(None)` while
/// the prefix or the payload is still incomplete, else the payload and the bytes it used,
/// prefix included. The length is checked as soon as the prefix is there, so an oversized
/// frame is refused before its payload arrives.
pub fn split_frame(buf: &[u8], max_len: usize) -> Result<Option<(&[u8], usize)>, JuteError> {
    let Some(prefix) = buf.first_chunk::<4>() else { return Ok(None) };
    let len = frame_len(*prefix, max_len)?;
    Ok(buf.get(4..4 + len).map(|payload| (payload, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<T: std::fmt::Debug>(result: Result<T, JuteError>) -> JuteErrorKind {
        result.unwrap_err().kind
    }

    #[test]
    fn primitives_round_trip_big_endian() {
        let mut out = Vec::new();
        out.write_int(-2);
        out.write_long(0x0102_0304_0506_0708);
        out.write_bool(true);
        out.write_bool(false);
        out.write_buffer(b"ab");
        out.write_ustring("é");
        out.write_vector(&["x".to_string(), String::new()]);
        assert_eq!(
            out,
            [
                &[0xff, 0xff, 0xff, 0xfe][..],
                &[1, 2, 3, 4, 5, 6, 7, 8],
                &[1, 0],
                &[0, 0, 0, 2, b'a', b'b'],
                &[0, 0, 0, 2, 0xc3, 0xa9],
                &[0, 0, 0, 2, 0, 0, 0, 1, b'x', 0, 0, 0, 0],
            ]
            .concat()
        );
        let mut r = Reader::new(&out);
        assert_eq!(r.read_int(), Ok(-2));
        assert_eq!(r.read_long(), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.read_bool(), Ok(true));
        assert_eq!(r.read_bool(), Ok(false));
        assert_eq!(r.read_buffer(), Ok(Some(&b"ab"[..])));
        assert_eq!(r.read_ustring(), Ok(Some("é")));
        assert_eq!(r.read::<Vec<String>>(), Ok(vec!["x".to_string(), String::new()]));
        assert!(r.is_empty());
        assert_eq!(r.position(), out.len());
    }

    #[test]
    fn bytes_mut_writes_the_same() {
        let mut a = Vec::new();
        let mut b = bytes::BytesMut::new();
        let mark = a.begin_frame();
        a.write_ustring("/x");
        a.end_frame(mark);
        let mark = b.begin_frame();
        b.write_ustring("/x");
        b.end_frame(mark);
        assert_eq!(&a[..], &b[..]);
        assert_eq!(a, [0, 0, 0, 6, 0, 0, 0, 2, b'/', b'x']);
    }

    #[test]
    fn nulls() {
        let minus_one = (-1i32).to_be_bytes();
        assert_eq!(Reader::new(&minus_one).read_buffer(), Ok(None));
        assert_eq!(Reader::new(&minus_one).read_ustring(), Ok(None));
        assert_eq!(Reader::new(&minus_one).read_vector_len(4), Ok(None));
        assert_eq!(Reader::new(&minus_one).read::<Vec<u8>>(), Ok(Vec::new()));
        assert_eq!(Reader::new(&minus_one).read::<Vec<String>>(), Ok(Vec::new()));
        assert_eq!(Reader::new(&minus_one).read::<Option<String>>(), Ok(None));
        assert_eq!(kind(Reader::new(&minus_one).read::<String>()), JuteErrorKind::UnexpectedNull);
        let mut out = Vec::new();
        None::<String>.write(&mut out);
        assert_eq!(out, minus_one);
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert_eq!(kind(Reader::new(&[0, 0, 0]).read_int()), JuteErrorKind::Truncated { needed: 4, left: 3 });
        assert_eq!(kind(Reader::new(&[0; 7]).read_long()), JuteErrorKind::Truncated { needed: 8, left: 7 });
        assert_eq!(kind(Reader::new(&[]).read_bool()), JuteErrorKind::Truncated { needed: 1, left: 0 });
        assert_eq!(
            kind(Reader::new(&[0, 0, 0, 5, b'a']).read_buffer()),
            JuteErrorKind::Truncated { needed: 5, left: 1 }
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        let len = |n: i32| n.to_be_bytes();
        assert_eq!(kind(Reader::new(&len(-2)).read_buffer()), JuteErrorKind::NegativeLength(-2));
        assert_eq!(kind(Reader::new(&len(i32::MIN)).read_ustring()), JuteErrorKind::NegativeLength(i32::MIN));
        assert_eq!(kind(Reader::new(&len(-7)).read_vector_len(1)), JuteErrorKind::NegativeLength(-7));
        assert_eq!(
            kind(Reader::new(&len(0x10_0000)).read_buffer()),
            JuteErrorKind::TooLong { len: 0x10_0000, max: JUTE_MAX_BUFFER }
        );
        assert_eq!(
            kind(Reader::new(&len(i32::MAX)).read_buffer()),
            JuteErrorKind::TooLong { len: i32::MAX as usize, max: JUTE_MAX_BUFFER }
        );
        // Within the limit but past the end.
        assert_eq!(
            kind(Reader::new(&len(JUTE_MAX_BUFFER as i32)).read_buffer()),
            JuteErrorKind::Truncated { needed: JUTE_MAX_BUFFER, left: 0 }
        );
    }

    #[test]
    fn a_larger_input_raises_the_field_limit() {
        let mut big = Vec::new();
        big.write_buffer(&vec![7; JUTE_MAX_BUFFER + 1]);
        assert_eq!(Reader::new(&big).read_buffer().unwrap().map(<[u8]>::len), Some(JUTE_MAX_BUFFER + 1));
    }

    #[test]
    fn strings_must_be_utf8() {
        assert_eq!(kind(Reader::new(&[0, 0, 0, 2, 0xc3, 0x28]).read_ustring()), JuteErrorKind::InvalidUtf8);
        assert_eq!(kind(Reader::new(&[0, 0, 0, 1, 0xff]).read::<String>()), JuteErrorKind::InvalidUtf8);
        // A buffer is bytes: anything goes.
        assert_eq!(Reader::new(&[0, 0, 0, 1, 0xff]).read_buffer(), Ok(Some(&[0xff][..])));
    }

    #[test]
    fn absurd_vector_counts_are_refused_before_allocating() {
        let mut input = 1_000_000i32.to_be_bytes().to_vec();
        input.extend_from_slice(&[0; 64]);
        assert_eq!(
            kind(Reader::new(&input).read::<Vec<String>>()),
            JuteErrorKind::ImplausibleCount { count: 1_000_000, min_item_len: 4, left: 64 }
        );
        // Exactly enough room for 16 empty strings is fine.
        let mut ok = 16i32.to_be_bytes().to_vec();
        ok.extend_from_slice(&[0; 64]);
        assert_eq!(Reader::new(&ok).read::<Vec<String>>().unwrap().len(), 16);
        assert_eq!(
            kind(Reader::new(&i32::MAX.to_be_bytes()).read::<Vec<bool>>()),
            JuteErrorKind::ImplausibleCount { count: i32::MAX as usize, min_item_len: 1, left: 0 }
        );
    }

    #[test]
    fn bools_read_like_java() {
        assert_eq!(Reader::new(&[2]).read_bool(), Ok(true));
        assert_eq!(Reader::new(&[0xff]).read_bool(), Ok(true));
    }

    #[test]
    fn errors_name_their_fields() {
        let err = JuteError::new(JuteErrorKind::InvalidUtf8).within("Id.scheme").within("CreateRequest.acl");
        assert_eq!(err.context, ["CreateRequest.acl", "Id.scheme"]);
        assert_eq!(err.to_string(), "CreateRequest.acl > Id.scheme: string is not valid UTF-8");
        let err = Reader::new(&[0, 0]).read_int().unwrap_err();
        assert_eq!(err.to_string(), "truncated input: needs 4 more bytes, 2 left");
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(frame_len([0, 0, 0, 0], JUTE_MAX_BUFFER), Ok(0));
        assert_eq!(frame_len([0, 0x0f, 0xff, 0xff], JUTE_MAX_BUFFER), Ok(JUTE_MAX_BUFFER));
        assert_eq!(
            frame_len([0, 0x10, 0, 0], JUTE_MAX_BUFFER).unwrap_err().kind,
            JuteErrorKind::TooLong { len: JUTE_MAX_BUFFER + 1, max: JUTE_MAX_BUFFER }
        );
        assert_eq!(frame_len([0xff; 4], JUTE_MAX_BUFFER).unwrap_err().kind, JuteErrorKind::NegativeLength(-1));
        let err = frame_len(*b"ruok", JUTE_MAX_BUFFER).unwrap_err();
        assert!(err.to_string().starts_with("frame length: length 1920298859 is larger than jute.maxbuffer"), "{err}");
    }

    #[test]
    fn split_frame_waits_for_whole_frames() {
        let stream = [0, 0, 0, 2, 9, 8, 0, 0, 0, 1, 7];
        assert_eq!(split_frame(&stream[..3], 16), Ok(None));
        assert_eq!(split_frame(&stream[..5], 16), Ok(None));
        assert_eq!(split_frame(&stream, 16), Ok(Some((&[9, 8][..], 6))));
        assert_eq!(split_frame(&stream[6..], 16), Ok(Some((&[7][..], 5))));
        // Oversized: refused from the prefix alone.
        assert!(split_frame(&[0, 0, 1, 0], 16).is_err());
    }
}
