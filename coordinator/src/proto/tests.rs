//! Golden bytes, round trips of every record, malformed input, and a fixed-seed fuzz loop.
//!
//! The golden frames are written out by hand from `zookeeper.jute` (field order and types),
//! `BinaryOutputArchive` (big-endian ints and longs, 1-byte booleans, int-length-prefixed
//! buffers, strings and vectors), `ClientCnxn.java` (special xids, 4-byte frame prefix),
//! `MultiOperationRecord.java`/`MultiResponse.java` (multi framing) and `ProtocolManager.java`
//! (the optional readOnly byte); none were produced by this codec.

use super::records::*;
use super::*;
use crate::acl::{Acl, Id, perms};
use crate::jute::{JUTE_MAX_BUFFER, JuteErrorKind, split_frame};

/// Strips and checks the 4-byte length prefix of a single frame.
fn payload(frame: &[u8]) -> &[u8] {
    let (payload, used) = split_frame(frame, JUTE_MAX_BUFFER).unwrap().unwrap();
    assert_eq!(used, frame.len(), "exactly one frame");
    payload
}

fn request_frame(xid: i32, request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, xid, request);
    out
}

fn reply_frame(xid: i32, zxid: i64, result: Result<&Response, KeeperError>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_reply(&mut out, xid, zxid, result);
    out
}

fn sample_stat() -> Stat {
    Stat {
        czxid: 1,
        mzxid: 2,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_000_001,
        version: 3,
        cversion: 4,
        aversion: 5,
        ephemeral_owner: 0x0100_0000_0000_0007,
        data_length: 2,
        num_children: 6,
        pzxid: 7,
    }
}

// ---------------------------------------------------------------------------------------------
// Golden bytes.

const PASSWD: [u8; 16] = [0xaa; 16];

/// ConnectRequest{protocolVersion 0, lastZxidSeen 0x1_00000005, timeOut 30000,
/// sessionId 0x0102030405060708, passwd 16 × 0xaa, readOnly false}: 45 bytes
/// (ClickHouse's `ZooKeeperConstants.h` agrees: 44 without readOnly).
fn golden_connect_request() -> Vec<u8> {
    [
        &[0, 0, 0, 45][..],        // frame length
        &[0, 0, 0, 0],             // int protocolVersion
        &[0, 0, 0, 1, 0, 0, 0, 5], // long lastZxidSeen
        &[0, 0, 0x75, 0x30],       // int timeOut = 30000
        &[1, 2, 3, 4, 5, 6, 7, 8], // long sessionId
        &[0, 0, 0, 16],            // buffer passwd: length
        &PASSWD,                   //   bytes
        &[0],                      // boolean readOnly
    ]
    .concat()
}

#[test]
fn golden_connect_request_decodes() {
    let frame = golden_connect_request();
    let expected = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0x1_0000_0005,
        timeout: 30_000,
        session_id: 0x0102_0304_0506_0708,
        passwd: PASSWD.to_vec(),
        read_only: Some(false),
    };
    assert_eq!(ConnectRequest::decode(payload(&frame)), Ok(expected.clone()));
    let mut out = Vec::new();
    expected.encode(&mut out);
    assert_eq!(out, frame);

    // A ZooKeeper ≤ 3.3 client sends no readOnly byte: 44 bytes, decoded as None and answered
    // without the byte.
    let old = ConnectRequest::decode(&frame[4..48]).unwrap();
    assert_eq!(old.read_only, None);
    assert_eq!(old.passwd, PASSWD);
    let mut out = Vec::new();
    old.encode(&mut out);
    assert_eq!(out[..4], [0, 0, 0, 44]);
    assert_eq!(out[4..], frame[4..48]);
}

#[test]
fn golden_connect_response() {
    let request = ConnectRequest::decode(payload(&golden_connect_request())).unwrap();
    let mut out = Vec::new();
    ConnectResponse::accept(&request, 30_000, 0x0102_0304_0506_0708, PASSWD.to_vec()).encode(&mut out);
    let expected = [
        &[0, 0, 0, 37][..],        // frame length
        &[0, 0, 0, 0],             // int protocolVersion
        &[0, 0, 0x75, 0x30],       // int timeOut
        &[1, 2, 3, 4, 5, 6, 7, 8], // long sessionId
        &[0, 0, 0, 16],            // buffer passwd
        &PASSWD,
        &[0], // boolean readOnly
    ]
    .concat();
    assert_eq!(out, expected);
    assert_eq!(ConnectResponse::decode(payload(&out)).unwrap().read_only, Some(false));

    // No readOnly byte for a client that sent none: 36 bytes.
    let old = ConnectRequest { read_only: None, ..request.clone() };
    let mut out = Vec::new();
    ConnectResponse::accept(&old, 30_000, 0x0102_0304_0506_0708, PASSWD.to_vec()).encode(&mut out);
    assert_eq!(out[..4], [0, 0, 0, 36]);
    assert_eq!(out[4..], expected[4..40]);

    // Refused: timeout 0, session 0, 16 zero bytes.
    let mut out = Vec::new();
    ConnectResponse::refuse(&request).encode(&mut out);
    assert_eq!(out, [&[0, 0, 0, 37][..], &[0; 16], &[0, 0, 0, 16], &[0; 16], &[0]].concat());
}

#[test]
fn golden_reply_header() {
    // ReplyHeader{xid 5, zxid 0x1f, err -101 NoNode}: 16 bytes, and no body after an error.
    let frame = reply_frame(5, 0x1f, Err(KeeperError::NoNode));
    let expected = [
        &[0, 0, 0, 16][..],           // frame length
        &[0, 0, 0, 5],                // int xid
        &[0, 0, 0, 0, 0, 0, 0, 0x1f], // long zxid
        &[0xff, 0xff, 0xff, 0x9b],    // int err = -101
    ]
    .concat();
    assert_eq!(frame, expected);
    let (header, body) = decode_reply(payload(&frame), OpCode::GetData.code()).unwrap();
    assert_eq!(header, ReplyHeader { xid: 5, zxid: 0x1f, err: -101 });
    assert_eq!(body, None);

    // Ping reply: xid -2, no body.
    let mut ping = Vec::new();
    encode_ping_reply(&mut ping, 0x1f);
    assert_eq!(ping, [&[0, 0, 0, 16][..], &[0xff, 0xff, 0xff, 0xfe], &[0, 0, 0, 0, 0, 0, 0, 0x1f], &[0; 4]].concat());
}

#[test]
fn golden_create_request() {
    // RequestHeader{xid 1, type 1} + CreateRequest{"/a", "hi", [ACL{31, world:anyone}], flags 3}.
    let expected = [
        &[0, 0, 0, 51][..],                                // frame length
        &[0, 0, 0, 1],                                     // int xid
        &[0, 0, 0, 1],                                     // int type = create
        &[0, 0, 0, 2, b'/', b'a'],                         // ustring path
        &[0, 0, 0, 2, b'h', b'i'],                         // buffer data
        &[0, 0, 0, 1],                                     // vector<ACL> count
        &[0, 0, 0, 31],                                    //   int perms = ALL
        &[0, 0, 0, 5, b'w', b'o', b'r', b'l', b'd'],       //   ustring scheme
        &[0, 0, 0, 6, b'a', b'n', b'y', b'o', b'n', b'e'], //   ustring id
        &[0, 0, 0, 3],                                     // int flags = EPHEMERAL_SEQUENTIAL
    ]
    .concat();
    let request =
        Request::Create(CreateRequest { path: "/a".into(), data: b"hi".to_vec(), acl: Acl::open_unsafe(), flags: 3 });
    assert_eq!(request_frame(1, &request), expected);
    let (header, decoded) = decode_request(payload(&expected)).unwrap();
    assert_eq!(header, RequestHeader { xid: 1, op: 1 });
    assert_eq!(decoded, request);
    let Request::Create(create) = decoded else { unreachable!() };
    assert_eq!(create.mode(), Some(crate::stat::CreateMode::EphemeralSequential));
}

/// multi [check("/a", 3), delete("/b", -1)] with xid 9.
fn golden_multi_request() -> Vec<u8> {
    [
        &[0, 0, 0, 55][..],                                   // frame length
        &[0, 0, 0, 9],                                        // int xid
        &[0, 0, 0, 14],                                       // int type = multi
        &[0, 0, 0, 13, 0, 0xff, 0xff, 0xff, 0xff],            // MultiHeader{type 13 check, done false, err -1}
        &[0, 0, 0, 2, b'/', b'a', 0, 0, 0, 3],                // CheckVersionRequest{"/a", 3}
        &[0, 0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff],             // MultiHeader{type 2 delete, false, -1}
        &[0, 0, 0, 2, b'/', b'b', 0xff, 0xff, 0xff, 0xff],    // DeleteRequest{"/b", -1}
        &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff], // MultiHeader{-1, true, -1}: end
    ]
    .concat()
}

#[test]
fn golden_multi_request_and_its_error_response() {
    let request = Request::Multi(vec![
        MultiOp::Check(CheckVersionRequest { path: "/a".into(), version: 3 }),
        MultiOp::Delete(DeleteRequest { path: "/b".into(), version: -1 }),
    ]);
    assert_eq!(request_frame(9, &request), golden_multi_request());
    assert_eq!(decode_request(payload(&golden_multi_request())).unwrap(), (RequestHeader { xid: 9, op: 14 }, request));

    // The check fails with BadVersion: header err 0, then one error result per op.
    let response = Response::Multi(rollback(2, 0, KeeperError::BadVersion));
    let frame = reply_frame(9, 0x20, Ok(&response));
    let expected = [
        &[0, 0, 0, 51][..],                                   // frame length
        &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0], // ReplyHeader{9, 0x20, 0}
        &[0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0x99], // MultiHeader{-1, false, -103}
        &[0xff, 0xff, 0xff, 0x99],                            // ErrorResponse{-103}
        &[0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xfe], // MultiHeader{-1, false, -2}
        &[0xff, 0xff, 0xff, 0xfe],                            // ErrorResponse{-2}
        &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff], // end
    ]
    .concat();
    assert_eq!(frame, expected);
    assert_eq!(
        decode_reply(payload(&frame), 14).unwrap(),
        (ReplyHeader { xid: 9, zxid: 0x20, err: 0 }, Some(response))
    );
}

#[test]
fn golden_watcher_event_notification() {
    let mut frame = Vec::new();
    encode_notification(&mut frame, 0x21, &WatcherEvent::new(event_type::NODE_DATA_CHANGED, "/a"));
    let expected = [
        &[0, 0, 0, 30][..],           // frame length
        &[0xff, 0xff, 0xff, 0xff],    // int xid = -1
        &[0, 0, 0, 0, 0, 0, 0, 0x21], // long zxid
        &[0, 0, 0, 0],                // int err
        &[0, 0, 0, 3],                // int type = NodeDataChanged
        &[0, 0, 0, 3],                // int state = SyncConnected
        &[0, 0, 0, 2, b'/', b'a'],    // ustring path
    ]
    .concat();
    assert_eq!(frame, expected);
    let (header, event) = decode_notification(payload(&frame)).unwrap();
    assert_eq!(header, ReplyHeader { xid: -1, zxid: 0x21, err: 0 });
    assert_eq!(event, WatcherEvent { event_type: 3, state: 3, path: "/a".into() });

    // The tree's events map onto the same numbers.
    use crate::watch::{EventType, WatchEvent};
    for (kind, code) in [
        (EventType::NodeCreated, event_type::NODE_CREATED),
        (EventType::NodeDeleted, event_type::NODE_DELETED),
        (EventType::NodeDataChanged, event_type::NODE_DATA_CHANGED),
        (EventType::NodeChildrenChanged, event_type::NODE_CHILDREN_CHANGED),
    ] {
        let event = WatcherEvent::from(&WatchEvent::new(kind, "/p", 9));
        assert_eq!(event, WatcherEvent { event_type: code, state: keeper_state::SYNC_CONNECTED, path: "/p".into() });
    }
}

#[test]
fn golden_add_watch_reply_has_an_error_response_body() {
    // FinalRequestProcessor answers addWatch with `new ErrorResponse(0)`.
    let frame = reply_frame(3, 7, Ok(&Response::AddWatch));
    assert_eq!(frame, [&[0, 0, 0, 20][..], &[0, 0, 0, 3], &[0, 0, 0, 0, 0, 0, 0, 7], &[0; 4], &[0; 4]].concat());
}

#[test]
fn golden_stat_is_68_bytes_in_wire_order() {
    let mut out = Vec::new();
    sample_stat().write(&mut out);
    let expected = [
        &1i64.to_be_bytes()[..],
        &2i64.to_be_bytes(),
        &1_700_000_000_000i64.to_be_bytes(),
        &1_700_000_000_001i64.to_be_bytes(),
        &3i32.to_be_bytes(),
        &4i32.to_be_bytes(),
        &5i32.to_be_bytes(),
        &0x0100_0000_0000_0007i64.to_be_bytes(),
        &2i32.to_be_bytes(),
        &6i32.to_be_bytes(),
        &7i64.to_be_bytes(),
    ]
    .concat();
    assert_eq!(out, expected);
    assert_eq!(out.len(), Stat::MIN_LEN);
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn every_request() -> Vec<Request> {
    let acl = vec![Acl::new(perms::READ, Id::anyone()), Acl::new(perms::ALL, Id::new("digest", "u:h="))];
    let create = CreateRequest { path: "/c".into(), data: vec![0, 1, 255], acl: acl.clone(), flags: 4 };
    let ttl = CreateTtlRequest { path: "/t".into(), data: b"t".to_vec(), acl: acl.clone(), flags: 5, ttl: 60_000 };
    let watches = SetWatches {
        relative_zxid: 99,
        data_watches: vec!["/d".into()],
        exist_watches: vec!["/e".into(), "/é".into()],
        child_watches: vec![],
    };
    vec![
        Request::Create(create.clone()),
        Request::Create2(create.clone()),
        Request::CreateContainer(create.clone()),
        Request::CreateTtl(ttl.clone()),
        Request::Delete(DeleteRequest { path: "/d".into(), version: 7 }),
        Request::Exists(ExistsRequest { path: "/e".into(), watch: true }),
        Request::GetData(GetDataRequest { path: "/g".into(), watch: false }),
        Request::SetData(SetDataRequest { path: "/s".into(), data: vec![9; 100], version: -1 }),
        Request::GetAcl(GetAclRequest { path: "/a".into() }),
        Request::SetAcl(SetAclRequest { path: "/a".into(), acl: acl.clone(), version: 2 }),
        Request::GetChildren(GetChildrenRequest { path: "/".into(), watch: true }),
        Request::GetChildren2(GetChildrenRequest { path: "/x".into(), watch: false }),
        Request::Sync(SyncRequest { path: "/y".into() }),
        Request::Ping,
        Request::Multi(vec![
            MultiOp::Create(create.clone()),
            MultiOp::Create2(create.clone()),
            MultiOp::CreateContainer(create.clone()),
            MultiOp::CreateTtl(ttl),
            MultiOp::Delete(DeleteRequest { path: "/d".into(), version: 1 }),
            MultiOp::SetData(SetDataRequest { path: "/s".into(), data: vec![], version: 4 }),
            MultiOp::Check(CheckVersionRequest { path: "/c".into(), version: -1 }),
        ]),
        Request::Multi(vec![]),
        Request::MultiRead(vec![
            MultiReadOp::GetData(GetDataRequest { path: "/g".into(), watch: false }),
            MultiReadOp::GetChildren(GetChildrenRequest { path: "/h".into(), watch: false }),
        ]),
        Request::Reconfig(ReconfigRequest {
            joining_servers: Some("server.4=h:1:2;3".into()),
            leaving_servers: None,
            new_members: None,
            cur_config_id: -1,
        }),
        Request::CheckWatches(WatchesRequest { path: "/w".into(), watcher_type: watcher_type::DATA }),
        Request::RemoveWatches(WatchesRequest { path: "/w".into(), watcher_type: watcher_type::ANY }),
        Request::Auth(AuthPacket { auth_type: 0, scheme: "digest".into(), auth: b"u:p".to_vec() }),
        Request::SetWatches(watches.clone()),
        Request::SetWatches2(SetWatches2 {
            persistent_watches: vec!["/p".into()],
            persistent_recursive_watches: vec!["/r".into(), "/r2".into()],
            ..watches.into()
        }),
        Request::Sasl(SaslRequest { token: vec![1, 2, 3] }),
        Request::GetEphemerals(GetEphemeralsRequest { prefix_path: Some("/e".into()) }),
        Request::GetEphemerals(GetEphemeralsRequest { prefix_path: None }),
        Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path: "/n".into() }),
        Request::AddWatch(AddWatchRequest { path: "/w".into(), mode: add_watch_mode::PERSISTENT_RECURSIVE }),
        Request::WhoAmI,
        Request::CloseSession,
        Request::Unsupported(13),
        Request::Unsupported(20),
        Request::Unsupported(-10),
        Request::Unsupported(999),
    ]
}

/// Each response with the op it answers.
fn every_response() -> Vec<(OpCode, Response)> {
    let stat = sample_stat();
    vec![
        (OpCode::Delete, Response::Empty),
        (OpCode::Create, Response::Create { path: "/c0000000001".into() }),
        (OpCode::Create2, Response::Create2 { path: "/c".into(), stat }),
        (OpCode::CreateContainer, Response::Create2 { path: "/c".into(), stat }),
        (OpCode::CreateTtl, Response::Create2 { path: "/t".into(), stat }),
        (OpCode::Exists, Response::Stat(stat)),
        (OpCode::SetData, Response::Stat(stat)),
        (OpCode::SetAcl, Response::Stat(stat)),
        (OpCode::GetData, Response::GetData { data: b"hi".to_vec(), stat }),
        (OpCode::Reconfig, Response::GetData { data: b"server.1=...".to_vec(), stat }),
        (OpCode::GetAcl, Response::GetAcl { acl: Acl::creator_all(), stat }),
        (OpCode::GetChildren, Response::GetChildren { children: vec!["a".into(), "b".into()] }),
        (OpCode::GetChildren2, Response::GetChildren2 { children: vec![], stat }),
        (OpCode::Sync, Response::Sync { path: "/s".into() }),
        (
            OpCode::Multi,
            Response::Multi(vec![
                MultiResult::Create { path: "/a".into() },
                MultiResult::Create2 { path: "/b".into(), stat },
                MultiResult::Delete,
                MultiResult::SetData { stat },
                MultiResult::Check,
            ]),
        ),
        (OpCode::Multi, Response::Multi(rollback(3, 2, KeeperError::NodeExists))),
        (
            OpCode::MultiRead,
            Response::MultiRead(vec![
                MultiReadResult::GetData { data: vec![1], stat },
                MultiReadResult::Error { err: KeeperError::NoNode.code() },
                MultiReadResult::GetChildren { children: vec!["x".into()] },
            ]),
        ),
        (OpCode::Sasl, Response::Sasl { token: vec![4, 5] }),
        (OpCode::GetEphemerals, Response::GetEphemerals { ephemerals: vec!["/e/1".into()] }),
        (OpCode::GetAllChildrenNumber, Response::GetAllChildrenNumber { total_number: 12 }),
        (OpCode::AddWatch, Response::AddWatch),
        (
            OpCode::WhoAmI,
            Response::WhoAmI { client_info: vec![ClientInfo { auth_scheme: "ip".into(), user: "127.0.0.1".into() }] },
        ),
        (OpCode::SetWatches, Response::Empty),
        (OpCode::CloseSession, Response::Empty),
    ]
}

#[test]
fn every_request_round_trips() {
    for (i, request) in every_request().into_iter().enumerate() {
        let frame = request_frame(i as i32, &request);
        let (header, decoded) = decode_request(payload(&frame)).unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_eq!(header, RequestHeader { xid: i as i32, op: request.op() });
        assert_eq!(decoded, request);
    }
}

#[test]
fn every_response_round_trips_and_answers_its_op() {
    for (op, response) in every_response() {
        assert!(response.answers(op.code()), "{response:?} for {op:?}");
        let frame = reply_frame(11, 0x30, Ok(&response));
        let decoded = decode_reply(payload(&frame), op.code()).unwrap_or_else(|e| panic!("{response:?}: {e}"));
        assert_eq!(decoded, (ReplyHeader { xid: 11, zxid: 0x30, err: 0 }, Some(response)), "{op:?}");
    }
    assert!(!Response::Empty.answers(OpCode::AddWatch.code()), "addWatch needs its ErrorResponse body");
    assert!(!Response::Stat(Stat::default()).answers(OpCode::GetData.code()));
    assert!(Response::Empty.answers(OpCode::Ping.code()));
}

#[test]
fn op_codes_match_zoo_defs() {
    let expected = [
        (OpCode::Notification, 0),
        (OpCode::Create, 1),
        (OpCode::Delete, 2),
        (OpCode::Exists, 3),
        (OpCode::GetData, 4),
        (OpCode::SetData, 5),
        (OpCode::GetAcl, 6),
        (OpCode::SetAcl, 7),
        (OpCode::GetChildren, 8),
        (OpCode::Sync, 9),
        (OpCode::Ping, 11),
        (OpCode::GetChildren2, 12),
        (OpCode::Check, 13),
        (OpCode::Multi, 14),
        (OpCode::Create2, 15),
        (OpCode::Reconfig, 16),
        (OpCode::CheckWatches, 17),
        (OpCode::RemoveWatches, 18),
        (OpCode::CreateContainer, 19),
        (OpCode::DeleteContainer, 20),
        (OpCode::CreateTtl, 21),
        (OpCode::MultiRead, 22),
        (OpCode::Auth, 100),
        (OpCode::SetWatches, 101),
        (OpCode::Sasl, 102),
        (OpCode::GetEphemerals, 103),
        (OpCode::GetAllChildrenNumber, 104),
        (OpCode::SetWatches2, 105),
        (OpCode::AddWatch, 106),
        (OpCode::WhoAmI, 107),
        (OpCode::CreateSession, -10),
        (OpCode::CloseSession, -11),
        (OpCode::Error, -1),
    ];
    assert_eq!(expected.len(), OP_CODES.len());
    for (op, code) in expected {
        assert_eq!(op.code(), code, "{op:?}");
        assert_eq!(OpCode::from_code(code), Some(op));
    }
    for unknown in [10, 23, 99, 108, -2, -12, i32::MAX] {
        assert_eq!(OpCode::from_code(unknown), None);
    }
}

#[test]
fn record_sizes() {
    // MIN_LEN is the size of a record whose strings, buffers and vectors are empty.
    assert_eq!(RequestHeader::MIN_LEN, 8);
    assert_eq!(ReplyHeader::MIN_LEN, 16);
    assert_eq!(MultiHeader::MIN_LEN, 9);
    assert_eq!(Acl::MIN_LEN, 12);
    let mut out = Vec::new();
    CreateTtlRequest::default().write(&mut out);
    assert_eq!(out.len(), CreateTtlRequest::MIN_LEN);
}

#[test]
fn set_watches_upgrade_keeps_the_lists() {
    let v1 = SetWatches { relative_zxid: 5, data_watches: vec!["/a".into()], ..Default::default() };
    let v2: SetWatches2 = v1.into();
    assert_eq!(v2.relative_zxid, 5);
    assert_eq!(v2.data_watches, ["/a"]);
    assert!(v2.persistent_watches.is_empty());
}

#[test]
fn get_ephemerals_prefix_follows_zookeeper() {
    let prefix = |p: Option<&str>| GetEphemeralsRequest { prefix_path: p.map(Into::into) }.prefix().map(str::to_owned);
    assert_eq!(prefix(None), None);
    assert_eq!(prefix(Some("")), None);
    assert_eq!(prefix(Some(" / ")), None);
    assert_eq!(prefix(Some("/app")), Some("/app".into()));
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper's decoding quirks.

#[test]
fn trailing_bytes_after_a_body_are_ignored() {
    let mut frame = request_frame(4, &Request::Sync(SyncRequest { path: "/s".into() }));
    frame.extend_from_slice(&[1, 2, 3]);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(decode_request(payload(&frame)).unwrap().1, Request::Sync(SyncRequest { path: "/s".into() }));
}

#[test]
fn null_data_reads_as_empty_and_null_paths_are_refused() {
    let mut body = vec![0, 0, 0, 1, 0, 0, 0, 1]; // RequestHeader{1, create}
    body.extend_from_slice(&[0, 0, 0, 2, b'/', b'n']); // path
    body.extend_from_slice(&[0xff; 4]); // data: null
    body.extend_from_slice(&[0xff; 4]); // acl: null vector
    body.extend_from_slice(&[0, 0, 0, 0]); // flags
    let (_, request) = decode_request(&body).unwrap();
    assert_eq!(request, Request::Create(CreateRequest { path: "/n".into(), data: vec![], acl: vec![], flags: 0 }));

    let null_path = [&[0, 0, 0, 1, 0, 0, 0, 9][..], &[0xff; 4]].concat(); // sync(null)
    let err = decode_request(&null_path).unwrap_err();
    assert_eq!(err.header, Some(RequestHeader { xid: 1, op: 9 }));
    assert_eq!(err.error.kind, JuteErrorKind::UnexpectedNull);
    assert_eq!(
        err.to_string(),
        "malformed request body (xid 1, op 9): SyncRequest.path: null where a value is required"
    );
}

#[test]
fn unknown_create_flags_stay_raw_outside_a_multi_and_fail_inside() {
    let create = CreateRequest { path: "/a".into(), data: vec![], acl: Acl::open_unsafe(), flags: 42 };
    let (_, decoded) = decode_request(payload(&request_frame(1, &Request::Create(create.clone())))).unwrap();
    let Request::Create(decoded) = decoded else { unreachable!() };
    assert_eq!((decoded.flags, decoded.mode()), (42, None));

    let multi = request_frame(2, &Request::Multi(vec![MultiOp::Create(create)]));
    let err = decode_request(payload(&multi)).unwrap_err();
    assert_eq!(err.header, Some(RequestHeader { xid: 2, op: 14 }));
    assert!(err.to_string().contains("invalid create flags 42"), "{err}");
}

#[test]
fn multi_refuses_ops_of_the_wrong_kind() {
    // A getData inside a multi (14), framed by hand.
    let mut frame = vec![0, 0, 0, 3, 0, 0, 0, 14];
    frame.extend_from_slice(&[0, 0, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]);
    frame.extend_from_slice(&[0, 0, 0, 2, b'/', b'a', 0]);
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff]);
    let err = decode_request(&frame).unwrap_err();
    assert!(err.to_string().contains("op 4 is not allowed in a multi"), "{err}");

    // A delete inside a multiRead (22).
    frame[7] = 22;
    frame[11] = 2;
    let err = decode_request(&frame).unwrap_err();
    assert!(err.to_string().contains("op 2 is not allowed in a multiRead"), "{err}");

    // A multi without its end marker is truncated.
    let good = request_frame(3, &Request::Multi(vec![MultiOp::Check(CheckVersionRequest::default())]));
    let cut = &good[4..good.len() - 9];
    assert!(matches!(decode_request(cut).unwrap_err().error.kind, JuteErrorKind::Truncated { .. }));
}

#[test]
fn unsupported_ops_keep_their_header() {
    let frame = [0, 0, 0, 8, 0, 0, 0, 13, 1, 2, 3];
    assert_eq!(decode_request(&frame), Ok((RequestHeader { xid: 8, op: 13 }, Request::Unsupported(13))));
}

// ---------------------------------------------------------------------------------------------
// Malformed input: every class is an error.

fn body_error(frame: &[u8]) -> JuteErrorKind {
    let err = decode_request(frame).unwrap_err();
    assert!(err.header.is_some(), "header should have decoded: {err}");
    err.error.kind
}

#[test]
fn malformed_input_classes_are_errors() {
    // Header too short: no header in the error.
    for len in 0..8 {
        let err = decode_request(&[0; 8][..len]).unwrap_err();
        assert_eq!(err.header, None);
        assert!(err.to_string().starts_with("malformed request header"), "{err}");
    }
    let get_data =
        |path_len: i32, path: &[u8]| [&[0, 0, 0, 1, 0, 0, 0, 4][..], &path_len.to_be_bytes(), path, &[1]].concat();
    // Negative length other than -1.
    assert_eq!(body_error(&get_data(-2, b"")), JuteErrorKind::NegativeLength(-2));
    // Length past the end.
    assert_eq!(body_error(&get_data(100, b"/a")), JuteErrorKind::Truncated { needed: 100, left: 3 });
    // Length beyond jute.maxbuffer.
    assert_eq!(
        body_error(&get_data(0x7fff_ffff, b"/a")),
        JuteErrorKind::TooLong { len: 0x7fff_ffff, max: JUTE_MAX_BUFFER }
    );
    // Not UTF-8.
    assert_eq!(body_error(&get_data(2, &[b'/', 0xff])), JuteErrorKind::InvalidUtf8);
    // Missing trailing field (the watch flag).
    let cut = get_data(2, b"/a");
    assert_eq!(body_error(&cut[..cut.len() - 1]), JuteErrorKind::Truncated { needed: 1, left: 0 });
    // Absurd vector count: setWatches claiming 10^9 data watches.
    let set_watches =
        [&[0xff, 0xff, 0xff, 0xf8, 0, 0, 0, 101][..], &[0; 8], &1_000_000_000i32.to_be_bytes(), &[0; 12]].concat();
    assert_eq!(
        body_error(&set_watches),
        JuteErrorKind::ImplausibleCount { count: 1_000_000_000, min_item_len: 4, left: 12 }
    );
    // Absurd ACL count in a create.
    let create =
        [&[0, 0, 0, 1, 0, 0, 0, 1][..], &[0, 0, 0, 1, b'/'], &[0, 0, 0, 0], &[0x10, 0, 0, 0], &[0; 30]].concat();
    let err = decode_request(&create).unwrap_err();
    assert!(matches!(err.error.kind, JuteErrorKind::ImplausibleCount { min_item_len: 12, .. }), "{err}");
    assert_eq!(err.error.context, ["CreateRequest.acl"]);

    // Connect requests and frames.
    assert!(ConnectRequest::decode(&golden_connect_request()[4..20]).is_err());
    assert!(ConnectRequest::decode(&[]).is_err());
    assert!(crate::jute::frame_len([0x80, 0, 0, 0], JUTE_MAX_BUFFER).is_err());
    assert!(crate::jute::frame_len([0, 0x10, 0, 0], JUTE_MAX_BUFFER).is_err());
    // Notifications: wrong xid, truncated event.
    let mut frame = Vec::new();
    encode_notification(&mut frame, 1, &WatcherEvent::new(event_type::NODE_CREATED, "/a"));
    assert!(decode_notification(&frame[4..frame.len() - 1]).is_err());
    frame[7] = 0xfe;
    assert!(decode_notification(&frame[4..]).is_err());
}

#[test]
fn nested_errors_name_the_path_to_the_field() {
    // create whose only ACL has a non-UTF-8 id.
    let create = [
        &[0, 0, 0, 1, 0, 0, 0, 1][..],
        &[0, 0, 0, 1, b'/'],
        &[0, 0, 0, 0],
        &[0, 0, 0, 1, 0, 0, 0, 31],
        &[0, 0, 0, 5, b'w', b'o', b'r', b'l', b'd'],
        &[0, 0, 0, 1, 0xc0],
        &[0, 0, 0, 0],
    ]
    .concat();
    let err = decode_request(&create).unwrap_err();
    assert_eq!(err.error.context, ["CreateRequest.acl", "ACL.id", "Id.id"]);
    assert_eq!(
        err.to_string(),
        "malformed request body (xid 1, op 1): CreateRequest.acl > ACL.id > Id.id: string is not valid UTF-8"
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing with a fixed seed: no input panics, and whatever decodes re-encodes to itself.

/// SplitMix64: tiny, fast, and reproducible; a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn int(&mut self) -> i32 {
        match self.below(4) {
            0 => [0, -1, 1, i32::MAX, i32::MIN][self.below(5)],
            _ => self.next() as i32,
        }
    }

    fn long(&mut self) -> i64 {
        if self.chance(4) { [0, -1, i64::MAX, i64::MIN][self.below(4)] } else { self.next() as i64 }
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        (0..self.below(max + 1)).map(|_| self.next() as u8).collect()
    }

    fn string(&mut self) -> String {
        const CHARS: [char; 8] = ['/', 'a', 'z', '0', '-', 'é', '€', '😀'];
        (0..self.below(12)).map(|_| CHARS[self.below(CHARS.len())]).collect()
    }

    fn strings(&mut self) -> Vec<String> {
        (0..self.below(4)).map(|_| self.string()).collect()
    }

    fn stat(&mut self) -> Stat {
        Stat {
            czxid: self.long(),
            mzxid: self.long(),
            ctime: self.long(),
            mtime: self.long(),
            version: self.int(),
            cversion: self.int(),
            aversion: self.int(),
            ephemeral_owner: self.long(),
            data_length: self.int(),
            num_children: self.int(),
            pzxid: self.long(),
        }
    }

    fn acl(&mut self) -> Vec<Acl> {
        (0..self.below(3)).map(|_| Acl::new(self.int(), Id::new(self.string(), self.string()))).collect()
    }

    fn flags(&mut self) -> i32 {
        self.below(7) as i32
    }

    fn create(&mut self) -> CreateRequest {
        CreateRequest { path: self.string(), data: self.bytes(40), acl: self.acl(), flags: self.flags() }
    }

    fn create_ttl(&mut self) -> CreateTtlRequest {
        CreateTtlRequest {
            path: self.string(),
            data: self.bytes(40),
            acl: self.acl(),
            flags: self.flags(),
            ttl: self.long(),
        }
    }

    fn opt_string(&mut self) -> Option<String> {
        if self.chance(3) { None } else { Some(self.string()) }
    }

    fn multi_op(&mut self) -> MultiOp {
        match self.below(7) {
            0 => MultiOp::Create(self.create()),
            1 => MultiOp::Create2(self.create()),
            2 => MultiOp::CreateContainer(self.create()),
            3 => MultiOp::CreateTtl(self.create_ttl()),
            4 => MultiOp::Delete(DeleteRequest { path: self.string(), version: self.int() }),
            5 => MultiOp::SetData(SetDataRequest { path: self.string(), data: self.bytes(20), version: self.int() }),
            _ => MultiOp::Check(CheckVersionRequest { path: self.string(), version: self.int() }),
        }
    }

    fn request(&mut self) -> Request {
        let path = self.string();
        let watch = self.chance(2);
        match self.below(30) {
            0 => Request::Create(self.create()),
            1 => Request::Create2(self.create()),
            2 => Request::CreateContainer(self.create()),
            3 => Request::CreateTtl(self.create_ttl()),
            4 => Request::Delete(DeleteRequest { path, version: self.int() }),
            5 => Request::Exists(ExistsRequest { path, watch }),
            6 => Request::GetData(GetDataRequest { path, watch }),
            7 => Request::SetData(SetDataRequest { path, data: self.bytes(60), version: self.int() }),
            8 => Request::GetAcl(GetAclRequest { path }),
            9 => Request::SetAcl(SetAclRequest { path, acl: self.acl(), version: self.int() }),
            10 => Request::GetChildren(GetChildrenRequest { path, watch }),
            11 => Request::GetChildren2(GetChildrenRequest { path, watch }),
            12 => Request::Sync(SyncRequest { path }),
            13 => Request::Ping,
            14 => Request::Multi((0..self.below(5)).map(|_| self.multi_op()).collect()),
            15 => Request::MultiRead(
                (0..self.below(4))
                    .map(|_| {
                        let (path, watch) = (self.string(), self.chance(2));
                        if self.chance(2) {
                            MultiReadOp::GetData(GetDataRequest { path, watch })
                        } else {
                            MultiReadOp::GetChildren(GetChildrenRequest { path, watch })
                        }
                    })
                    .collect(),
            ),
            16 => Request::Reconfig(ReconfigRequest {
                joining_servers: self.opt_string(),
                leaving_servers: self.opt_string(),
                new_members: self.opt_string(),
                cur_config_id: self.long(),
            }),
            17 => Request::CheckWatches(WatchesRequest { path, watcher_type: self.int() }),
            18 => Request::RemoveWatches(WatchesRequest { path, watcher_type: self.int() }),
            19 => Request::Auth(AuthPacket { auth_type: self.int(), scheme: path, auth: self.bytes(20) }),
            20 => Request::SetWatches(SetWatches {
                relative_zxid: self.long(),
                data_watches: self.strings(),
                exist_watches: self.strings(),
                child_watches: self.strings(),
            }),
            21 => Request::SetWatches2(SetWatches2 {
                relative_zxid: self.long(),
                data_watches: self.strings(),
                exist_watches: self.strings(),
                child_watches: self.strings(),
                persistent_watches: self.strings(),
                persistent_recursive_watches: self.strings(),
            }),
            22 => Request::Sasl(SaslRequest { token: self.bytes(30) }),
            23 => Request::GetEphemerals(GetEphemeralsRequest { prefix_path: self.opt_string() }),
            24 => Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path }),
            25 => Request::AddWatch(AddWatchRequest { path, mode: self.int() }),
            26 => Request::WhoAmI,
            27 => Request::CloseSession,
            _ => {
                let op = self.int();
                Request::Unsupported(if OpCode::from_code(op).is_some() { 13 } else { op })
            }
        }
    }

    fn response(&mut self) -> (OpCode, Response) {
        let stat = self.stat();
        match self.below(14) {
            0 => (OpCode::Create, Response::Create { path: self.string() }),
            1 => (OpCode::Create2, Response::Create2 { path: self.string(), stat }),
            2 => (OpCode::Exists, Response::Stat(stat)),
            3 => (OpCode::GetData, Response::GetData { data: self.bytes(50), stat }),
            4 => (OpCode::GetAcl, Response::GetAcl { acl: self.acl(), stat }),
            5 => (OpCode::GetChildren, Response::GetChildren { children: self.strings() }),
            6 => (OpCode::GetChildren2, Response::GetChildren2 { children: self.strings(), stat }),
            7 => (OpCode::Sync, Response::Sync { path: self.string() }),
            8 => {
                let results = (0..self.below(5))
                    .map(|_| match self.below(6) {
                        0 => MultiResult::Create { path: self.string() },
                        1 => MultiResult::Create2 { path: self.string(), stat: self.stat() },
                        2 => MultiResult::Delete,
                        3 => MultiResult::SetData { stat: self.stat() },
                        4 => MultiResult::Check,
                        _ => MultiResult::Error { err: self.int() },
                    })
                    .collect();
                (OpCode::Multi, Response::Multi(results))
            }
            9 => {
                let results = (0..self.below(5))
                    .map(|_| match self.below(3) {
                        0 => MultiReadResult::GetData { data: self.bytes(10), stat: self.stat() },
                        1 => MultiReadResult::GetChildren { children: self.strings() },
                        _ => MultiReadResult::Error { err: self.int() },
                    })
                    .collect();
                (OpCode::MultiRead, Response::MultiRead(results))
            }
            10 => (OpCode::GetEphemerals, Response::GetEphemerals { ephemerals: self.strings() }),
            11 => (OpCode::GetAllChildrenNumber, Response::GetAllChildrenNumber { total_number: self.int() }),
            12 => (
                OpCode::WhoAmI,
                Response::WhoAmI {
                    client_info: (0..self.below(3))
                        .map(|_| ClientInfo { auth_scheme: self.string(), user: self.string() })
                        .collect(),
                },
            ),
            _ => (OpCode::AddWatch, Response::AddWatch),
        }
    }

    /// `frame` with a few random bytes changed, inserted or removed.
    fn mutate(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut out = frame.to_vec();
        for _ in 0..1 + self.below(3) {
            let at = self.below(out.len() + 1);
            match self.below(4) {
                0 if at < out.len() => out[at] = self.next() as u8,
                1 if at < out.len() => out[at] ^= 1 << self.below(8),
                2 => out.insert(at, [0, 0xff, 0x7f, 0x80][self.below(4)]),
                _ if at < out.len() => {
                    out.remove(at);
                }
                _ => {}
            }
        }
        out
    }
}

const SEED: u64 = 0x5157_4a11_2026;

#[test]
fn generated_requests_and_responses_round_trip() {
    let mut rng = Rng(SEED);
    for i in 0..3_000 {
        let request = rng.request();
        let frame = request_frame(i, &request);
        assert_eq!(decode_request(payload(&frame)), Ok((RequestHeader { xid: i, op: request.op() }, request)));

        let (op, response) = rng.response();
        let (xid, zxid) = (rng.int(), rng.long());
        let frame = reply_frame(xid, zxid, Ok(&response));
        assert_eq!(decode_reply(payload(&frame), op.code()), Ok((ReplyHeader { xid, zxid, err: 0 }, Some(response))));
    }
}

/// Decodes `bytes` with every decoder there is; none may panic, and a request that decodes must
/// re-encode to bytes that decode to the same request.
fn decode_everything(bytes: &[u8]) {
    use crate::jute::Reader;
    if let Ok((header, request)) = decode_request(bytes) {
        let again = request_frame(header.xid, &request);
        assert_eq!(decode_request(payload(&again)), Ok((header, request)));
    }
    if let Ok(connect) = ConnectRequest::decode(bytes) {
        let mut again = Vec::new();
        connect.encode(&mut again);
        assert_eq!(ConnectRequest::decode(payload(&again)), Ok(connect));
    }
    let _ = ConnectResponse::decode(bytes);
    let _ = decode_notification(bytes);
    for op in OP_CODES {
        let _ = decode_reply(bytes, op.code());
    }
    macro_rules! read_each {
        ($($t:ty),*) => {$(
            let _ = Reader::new(bytes).read::<$t>();
        )*};
    }
    read_each!(
        RequestHeader,
        ReplyHeader,
        MultiHeader,
        AuthPacket,
        WatcherEvent,
        CreateRequest,
        CreateTtlRequest,
        DeleteRequest,
        ExistsRequest,
        GetDataRequest,
        SetDataRequest,
        GetAclRequest,
        SetAclRequest,
        GetChildrenRequest,
        SyncRequest,
        CheckVersionRequest,
        WatchesRequest,
        SetWatches,
        SetWatches2,
        GetEphemeralsRequest,
        GetAllChildrenNumberRequest,
        AddWatchRequest,
        ReconfigRequest,
        SaslRequest,
        ClientInfo,
        Stat,
        Acl,
        Id,
        Vec<Acl>,
        Vec<String>,
        Vec<ClientInfo>
    );
    if let Some(prefix) = bytes.first_chunk::<4>() {
        let _ = connection_start(*prefix, JUTE_MAX_BUFFER);
    }
    let _ = split_frame(bytes, JUTE_MAX_BUFFER);
}

#[test]
fn every_truncated_prefix_is_an_error_and_none_panics() {
    let mut frames: Vec<Vec<u8>> = every_request().iter().map(|r| request_frame(1, r)).collect();
    let mut rng = Rng(SEED ^ 1);
    frames.extend((0..200).map(|i| request_frame(i, &rng.request())));
    for frame in &frames {
        let body = payload(frame);
        let (_, request) = decode_request(body).unwrap();
        for cut in 0..body.len() {
            decode_everything(&body[..cut]);
            assert!(decode_request(&body[..cut]).is_err(), "{request:?} decoded from {cut} of {} bytes", body.len());
        }
    }

    let connect = golden_connect_request();
    let connect = payload(&connect);
    for cut in 0..connect.len() {
        decode_everything(&connect[..cut]);
        // Only the readOnly byte is optional.
        assert_eq!(ConnectRequest::decode(&connect[..cut]).is_ok(), cut == connect.len() - 1, "cut {cut}");
    }

    for (op, response) in every_response() {
        let frame = reply_frame(1, 2, Ok(&response));
        let body = payload(&frame);
        for cut in 0..body.len() {
            decode_everything(&body[..cut]);
            assert!(decode_reply(&body[..cut], op.code()).is_err(), "{response:?} decoded from {cut} bytes");
        }
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = Rng(SEED ^ 2);
    for _ in 0..4_000 {
        // Pure noise, sometimes behind a valid request header so the body decoders run.
        let mut noise = rng.bytes(64);
        if rng.chance(2) {
            let op = OP_CODES[rng.below(OP_CODES.len())].code();
            noise.splice(0..0, [&rng.int().to_be_bytes()[..], &op.to_be_bytes()].concat());
        }
        decode_everything(&noise);

        // Valid frames with a few bytes changed.
        let request = request_frame(rng.int(), &rng.request());
        decode_everything(&rng.mutate(payload(&request)));
        let (_, response) = rng.response();
        let reply = reply_frame(rng.int(), rng.long(), Ok(&response));
        decode_everything(&rng.mutate(payload(&reply)));
    }
}
