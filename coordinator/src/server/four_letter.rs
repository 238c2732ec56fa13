//! Four-letter words: `echo ruok | nc host 2181`. The answers follow ZooKeeper 3.8's layout so
//! that monitoring scripts written for it read them.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::proto::FourLetterWord;
use crate::replica::ReplicaInner;

/// ZooKeeper's answer while a server has no quorum.
const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

/// The version this server reports itself compatible with.
pub(crate) const ZOOKEEPER_VERSION: &str = "3.8.4-squall";

/// The text answering `word`.
pub(crate) fn answer(replica: &ReplicaInner, word: FourLetterWord) -> String {
    let serving = replica.serving() && replica.leader_known();
    match word {
        FourLetterWord::Srvr | FourLetterWord::Stat | FourLetterWord::Mntr if !serving => NOT_SERVING.into(),
        FourLetterWord::Ruok => "imok".into(),
        FourLetterWord::Srvr => srvr(replica, false),
        FourLetterWord::Stat => srvr(replica, true),
        FourLetterWord::Mntr => mntr(replica),
        FourLetterWord::Envi => envi(),
        FourLetterWord::Conf => conf(replica),
        FourLetterWord::Cons => cons(replica),
        FourLetterWord::Wchs => wchs(replica),
        FourLetterWord::Isro => "rw".into(),
        other => format!("{} is not executed because it is not in the whitelist.\n", other.as_str()),
    }
}

fn srvr(replica: &ReplicaInner, with_clients: bool) -> String {
    let mut out = format!("Zookeeper version: {ZOOKEEPER_VERSION}, built on squall\n");
    if with_clients {
        out.push_str("Clients:\n");
        for session in replica.hub.connected_sessions() {
            let _ = writeln!(out, " /session:{session:#x}[1](queued=0,recved=0,sent=0)");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Latency min/avg/max: 0/0.0/0");
    let _ = writeln!(out, "Received: {}", replica.counters.received.load(Ordering::Relaxed));
    let _ = writeln!(out, "Sent: {}", replica.counters.sent.load(Ordering::Relaxed));
    let _ = writeln!(out, "Connections: {}", replica.hub.connection_count());
    let _ = writeln!(out, "Outstanding: 0");
    let _ = writeln!(out, "Zxid: {:#x}", replica.state.last_zxid());
    let _ = writeln!(out, "Mode: {}", replica.mode());
    let _ = writeln!(out, "Node count: {}", replica.state.read(|s| s.tree().node_count()));
    out
}

fn mntr(replica: &ReplicaInner) -> String {
    let (nodes, ephemerals, sessions) =
        replica.state.read(|s| (s.tree().node_count(), s.tree().ephemeral_count(), s.sessions().count()));
    let watches = replica.hub.watches().len();
    let rows: Vec<(&str, String)> = vec![
        ("zk_version", ZOOKEEPER_VERSION.to_string()),
        ("zk_server_state", replica.mode().to_string()),
        ("zk_znode_count", nodes.to_string()),
        ("zk_ephemerals_count", ephemerals.to_string()),
        ("zk_watch_count", watches.to_string()),
        ("zk_global_sessions", sessions.to_string()),
        ("zk_num_alive_connections", replica.hub.connection_count().to_string()),
        ("zk_packets_received", replica.counters.received.load(Ordering::Relaxed).to_string()),
        ("zk_packets_sent", replica.counters.sent.load(Ordering::Relaxed).to_string()),
        ("zk_outstanding_requests", "0".to_string()),
        ("zk_last_zxid", format!("{:#x}", replica.state.last_zxid())),
        ("zk_uptime", replica.started.elapsed().as_millis().to_string()),
        ("zk_peer_count", replica.config.peers.len().max(1).to_string()),
    ];
    rows.into_iter().map(|(k, v)| format!("{k}\t{v}\n")).collect()
}

fn envi() -> String {
    let mut out = String::from("Environment:\n");
    let _ = writeln!(out, "zookeeper.version={ZOOKEEPER_VERSION}, built on squall");
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let _ = writeln!(out, "host.name={host}");
    let _ = writeln!(out, "squall.version={}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "os.name={}", std::env::consts::OS);
    let _ = writeln!(out, "os.arch={}", std::env::consts::ARCH);
    let _ = writeln!(out, "user.dir={}", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
    out
}

fn conf(replica: &ReplicaInner) -> String {
    let c = &replica.config;
    let tick = c.tick.as_millis();
    let mut out = String::new();
    let _ = writeln!(out, "clientPort={}", c.client_addr.port());
    let _ = writeln!(out, "clientPortAddress={}", c.client_addr.ip());
    let _ = writeln!(out, "dataDir={}", c.data_dir.display());
    let _ = writeln!(out, "dataLogDir={}", c.data_dir.display());
    let _ = writeln!(out, "tickTime={tick}");
    let _ = writeln!(out, "minSessionTimeout={}", tick * u128::from(crate::session::MIN_TIMEOUT_TICKS));
    let _ = writeln!(out, "maxSessionTimeout={}", tick * u128::from(crate::session::MAX_TIMEOUT_TICKS));
    let _ = writeln!(out, "serverId={}", c.id);
    for (id, addr) in &c.peers {
        let _ = writeln!(out, "server.{id}={addr}");
    }
    out
}

fn cons(replica: &ReplicaInner) -> String {
    let mut out = String::new();
    for session in replica.hub.connected_sessions() {
        let _ = writeln!(out, " /session:{session:#x}[1](queued=0,sid={session:#x})");
    }
    out.push('\n');
    out
}

fn wchs(replica: &ReplicaInner) -> String {
    let watches = replica.hub.watches().len();
    let connections = replica.hub.connection_count();
    format!("{connections} connections watching {watches} paths\nTotal watches:{watches}\n")
}
