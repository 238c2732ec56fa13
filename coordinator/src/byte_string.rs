//! Byte vectors in serde as byte strings rather than sequences of numbers.
//!
//! serde writes a `Vec<u8>` one number at a time; postcard gives a byte string the very same
//! bytes (a length, then the bytes) but copies it whole. Everything postcard encodes for Raft —
//! the data of every write, in the log and on the wire, and the snapshots' nested bodies — goes
//! through here, so old logs and snapshots read the same. Decoding accepts either form.
//!
//! Use on a field with `#[serde(with = "crate::byte_string")]`.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes `bytes` as one byte string.
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads a byte string, or a sequence of numbers that fit in a byte.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    ByteBuf::deserialize(deserializer).map(|b| b.0)
}

/// Borrowed bytes that serialize as one byte string.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Owned bytes read from a byte string or a sequence of numbers.
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsString {
        #[serde(with = "crate::byte_string")]
        data: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct AsNumbers {
        data: Vec<u8>,
    }

    /// Logs and snapshots written before byte strings read the same, and the other way round.
    #[test]
    fn postcard_writes_a_byte_string_as_it_wrote_the_numbers() {
        for data in [vec![], vec![0, 1, 255], vec![b'x'; 300]] {
            let string = postcard::to_stdvec(&AsString { data: data.clone() }).unwrap();
            let numbers = postcard::to_stdvec(&AsNumbers { data: data.clone() }).unwrap();
            assert_eq!(string, numbers);
            assert_eq!(postcard::from_bytes::<AsString>(&numbers).unwrap().data, data);
            assert_eq!(postcard::from_bytes::<AsNumbers>(&string).unwrap().data, data);
        }
    }

    #[test]
    fn json_reads_numbers_and_refuses_what_is_not_a_byte() {
        let read: AsString = serde_json::from_str(r#"{"data":[1,2,3]}"#).unwrap();
        assert_eq!(read.data, vec![1, 2, 3]);
        assert!(serde_json::from_str::<AsString>(r#"{"data":[256]}"#).is_err());
        assert!(postcard::from_bytes::<AsString>(&[5, 1]).is_err(), "a length past the end is an error");
    }
}
