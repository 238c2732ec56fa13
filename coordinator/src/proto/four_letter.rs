//! Four-letter words: ZooKeeper reads the first 4 bytes of a new connection as a frame length,
//! and when they spell a known command (`server/command/FourLetterCommands.java`) it runs the
//! command, writes its text and closes the connection instead.
//!
//! No command can be mistaken for a frame: lowercase ASCII read as a big-endian `int` is over
//! 1.6 billion, far above `jute.maxbuffer`.

use crate::jute::{self, JuteError};

/// A four-letter command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FourLetterWord {
    /// `conf`: the server's configuration.
    Conf,
    /// `cons`: the connections and their sessions.
    Cons,
    /// `crst`: reset the connection statistics.
    Crst,
    /// `dirs`: the size of the snapshot and log directories.
    Dirs,
    /// `dump`: the sessions and their ephemerals.
    Dump,
    /// `envi`: the environment, including `zookeeper.version=` (read by kazoo).
    Envi,
    /// `gtmk`: the trace mask.
    Gtmk,
    /// `hash`: the tree digest history.
    Hash,
    /// `isro`: `ro` or `rw`.
    Isro,
    /// `mntr`: monitoring variables, one `key\tvalue` per line.
    Mntr,
    /// `reqs`: outstanding requests (ZooKeeper ≤ 3.4; no longer in `FourLetterCommands`).
    Reqs,
    /// `ruok`: answered `imok`.
    Ruok,
    /// `srst`: reset the server statistics.
    Srst,
    /// `srvr`: version, latencies, counts, mode (used by `zkServer.sh status`).
    Srvr,
    /// `stat`: `srvr` plus the connections.
    Stat,
    /// `stmk`: set the trace mask, sent as the 8-byte `long` that follows the command.
    Stmk,
    /// `wchc`: watches by session.
    Wchc,
    /// `wchp`: watches by path.
    Wchp,
    /// `wchs`: a watch summary.
    Wchs,
}

const WORDS: [(FourLetterWord, &str); 19] = [
    (FourLetterWord::Conf, "conf"),
    (FourLetterWord::Cons, "cons"),
    (FourLetterWord::Crst, "crst"),
    (FourLetterWord::Dirs, "dirs"),
    (FourLetterWord::Dump, "dump"),
    (FourLetterWord::Envi, "envi"),
    (FourLetterWord::Gtmk, "gtmk"),
    (FourLetterWord::Hash, "hash"),
    (FourLetterWord::Isro, "isro"),
    (FourLetterWord::Mntr, "mntr"),
    (FourLetterWord::Reqs, "reqs"),
    (FourLetterWord::Ruok, "ruok"),
    (FourLetterWord::Srst, "srst"),
    (FourLetterWord::Srvr, "srvr"),
    (FourLetterWord::Stat, "stat"),
    (FourLetterWord::Stmk, "stmk"),
    (FourLetterWord::Wchc, "wchc"),
    (FourLetterWord::Wchp, "wchp"),
    (FourLetterWord::Wchs, "wchs"),
];

impl FourLetterWord {
    /// The command the first 4 bytes of a connection spell, if any (exact lowercase match).
    pub fn from_prefix(prefix: [u8; 4]) -> Option<FourLetterWord> {
        WORDS.iter().find(|(_, word)| word.as_bytes() == prefix).map(|&(cmd, _)| cmd)
    }

    /// The four letters.
    pub fn as_str(self) -> &'static str {
        WORDS.iter().find(|(cmd, _)| *cmd == self).map_or("", |&(_, word)| word)
    }

    /// How many bytes the command carries after its four letters: 8 for `stmk` (the trace
    /// mask, a `long`), else 0.
    pub fn argument_len(self) -> usize {
        if self == FourLetterWord::Stmk { 8 } else { 0 }
    }
}

impl std::fmt::Display for FourLetterWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the first 4 bytes of a new connection announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStart {
    /// A four-letter command: answer it in plain text and close.
    Command(FourLetterWord),
    /// A frame of this many bytes: the `ConnectRequest`.
    Frame(usize),
}

/// Classifies the first 4 bytes of a new connection: a four-letter word, else a frame length
/// checked against `max_len` (pass [`jute::JUTE_MAX_BUFFER`] for ZooKeeper's default). Only the
/// first 4 bytes of a connection are checked this way; later prefixes go to
/// [`jute::frame_len`].
///
/// ```
/// use squall_coordinator::jute::JUTE_MAX_BUFFER;
/// use squall_coordinator::proto::{connection_start, ConnectionStart, FourLetterWord};
/// assert_eq!(connection_start(*b"ruok", JUTE_MAX_BUFFER), Ok(ConnectionStart::Command(FourLetterWord::Ruok)));
/// assert_eq!(connection_start([0, 0, 0, 45], JUTE_MAX_BUFFER), Ok(ConnectionStart::Frame(45)));
/// assert!(connection_start(*b"RUOK", JUTE_MAX_BUFFER).is_err());
/// ```
pub fn connection_start(prefix: [u8; 4], max_len: usize) -> Result<ConnectionStart, JuteError> {
    match FourLetterWord::from_prefix(prefix) {
        Some(cmd) => Ok(ConnectionStart::Command(cmd)),
        None => jute::frame_len(prefix, max_len).map(ConnectionStart::Frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jute::JUTE_MAX_BUFFER;

    #[test]
    fn every_word_round_trips_and_is_never_a_valid_length() {
        for (cmd, word) in WORDS {
            let prefix: [u8; 4] = word.as_bytes().try_into().unwrap();
            assert_eq!(FourLetterWord::from_prefix(prefix), Some(cmd));
            assert_eq!(cmd.as_str(), word);
            assert_eq!(cmd.to_string(), word);
            assert!(i32::from_be_bytes(prefix) as usize > JUTE_MAX_BUFFER, "{word}");
        }
    }

    #[test]
    fn the_words_of_the_brief_and_of_zookeeper_are_known() {
        let listed = "ruok srvr stat mntr envi conf cons wchs dump reqs crst srst dirs isro gtmk stmk wchc wchp hash";
        for word in listed.split(' ') {
            let prefix: [u8; 4] = word.as_bytes().try_into().unwrap();
            assert!(FourLetterWord::from_prefix(prefix).is_some(), "{word}");
        }
        assert_eq!(FourLetterWord::Stmk.argument_len(), 8);
        assert_eq!(FourLetterWord::Ruok.argument_len(), 0);
    }

    #[test]
    fn other_prefixes_are_lengths() {
        assert_eq!(connection_start([0, 0, 0, 44], JUTE_MAX_BUFFER), Ok(ConnectionStart::Frame(44)));
        assert_eq!(
            connection_start([0, 0x0f, 0xff, 0xff], JUTE_MAX_BUFFER),
            Ok(ConnectionStart::Frame(JUTE_MAX_BUFFER))
        );
        for bad in [*b"RUOK", *b"ruo\n", *b"zzzz", [0xff, 0xf4, 0xff, 0xfd], [0, 0x10, 0, 0]] {
            assert!(connection_start(bad, JUTE_MAX_BUFFER).is_err(), "{bad:?}");
        }
    }
}
