//! Access control as ZooKeeper does it: ids, ACL entries, permission bits, the `world`, `auth`,
//! `digest` and `ip` schemes, the super user, and the interning table that lets a million znodes
//! share a handful of ACL lists.
//!
//! The tree never authenticates anyone: the session layer turns an `AuthPacket` into ids (see
//! [`digest_id`]) and passes them with every call. The checks here follow
//! `ZooKeeperServer.checkACL` and `PrepRequestProcessor.fixupACL`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use smol_str::SmolStr;

use crate::KeeperError;

/// Permission bits of an ACL entry (`ZooDefs.Perms`).
pub mod perms {
    /// Read the data and list the children.
    pub const READ: i32 = 1;
    /// Set the data.
    pub const WRITE: i32 = 2;
    /// Create children.
    pub const CREATE: i32 = 4;
    /// Delete children.
    pub const DELETE: i32 = 8;
    /// Set the ACL.
    pub const ADMIN: i32 = 16;
    /// Every permission.
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// An identity: a scheme (`world`, `digest`, `ip`, `auth`, `super`) and an id in that scheme.
///
/// Both parts are [`SmolStr`]s: up to 23 bytes (every scheme, `anyone`, an address) they are
/// held inline, so the ACLs and caller ids every write carries through the Raft log decode
/// without an allocation each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    /// The scheme, e.g. `digest`.
    pub scheme: SmolStr,
    /// The id, e.g. `alice:HASH` for `digest`, `10.0.0.0/8` for `ip`, `anyone` for `world`.
    pub id: SmolStr,
}

impl Id {
    /// An id from its two parts.
    pub fn new(scheme: impl Into<SmolStr>, id: impl Into<SmolStr>) -> Id {
        Id { scheme: scheme.into(), id: id.into() }
    }

    /// `world:anyone`, which every caller matches.
    pub fn anyone() -> Id {
        Id::new("world", "anyone")
    }
}

/// One ACL entry: the permissions `perms` (bits of [`perms`]) granted to `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// Bits of [`perms`].
    pub perms: i32,
    /// Who gets them.
    pub id: Id,
}

impl Acl {
    /// An entry from its parts.
    pub fn new(perms: i32, id: Id) -> Acl {
        Acl { perms, id }
    }

    /// `ZooDefs.Ids.OPEN_ACL_UNSAFE`: everything for anyone.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl::new(perms::ALL, Id::anyone())]
    }

    /// `ZooDefs.Ids.READ_ACL_UNSAFE`: read for anyone.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl::new(perms::READ, Id::anyone())]
    }

    /// `ZooDefs.Ids.CREATOR_ALL_ACL`: everything for the creator's authenticated ids.
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl::new(perms::ALL, Id::new("auth", ""))]
    }
}

/// ZooKeeper's digest of `user:password`: `user:base64(sha1("user:password"))`, as computed by
/// `DigestAuthenticationProvider.generateDigest`.
///
/// ```
/// use squall_coordinator::acl::generate_digest;
/// assert_eq!(generate_digest("super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
/// ```
pub fn generate_digest(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!("{user}:{}", base64(&hash))
}

/// The id a session gains when it authenticates with scheme `digest` and `user:password`.
pub fn digest_id(user_password: &str) -> Id {
    Id::new("digest", generate_digest(user_password))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Who may do everything: a `super` id, or a digest id equal to the configured super digest
/// (`zookeeper.DigestAuthenticationProvider.superDigest`, e.g. `super:D/InIHSb7yEEbrWz8b9l71RjZJU=`).
pub(crate) fn is_super(ids: &[Id], super_digest: Option<&str>) -> bool {
    ids.iter().any(|id| id.scheme == "super" || (id.scheme == "digest" && Some(id.id.as_str()) == super_digest))
}

/// `ZooKeeperServer.checkACL`: passes when the ACL is empty, the caller is super, or an entry that
/// grants any bit of `perm` matches one of the caller's ids (`world:anyone`, an equal `digest` id,
/// or an `ip` id inside the entry's `addr/bits`).
pub(crate) fn check(acl: &[Acl], perm: i32, ids: &[Id], super_digest: Option<&str>) -> Result<(), KeeperError> {
    if acl.is_empty() || is_super(ids, super_digest) {
        return Ok(());
    }
    let granted = acl.iter().filter(|a| a.perms & perm != 0).any(|a| {
        let id = &a.id;
        (id.scheme == "world" && id.id == "anyone")
            || ids.iter().any(|caller| caller.scheme == id.scheme && scheme_matches(&id.scheme, &caller.id, &id.id))
    });
    if granted { Ok(()) } else { Err(KeeperError::NoAuth) }
}

fn scheme_matches(scheme: &str, caller_id: &str, acl_id: &str) -> bool {
    match scheme {
        "digest" => caller_id == acl_id,
        "ip" => ip_matches(caller_id, acl_id),
        _ => false,
    }
}

/// `PrepRequestProcessor.fixupACL`: removes duplicates, refuses an empty list, expands `auth`
/// entries to the caller's authenticated (digest) ids, and refuses unknown schemes and malformed
/// ids with `InvalidAcl`.
pub(crate) fn fixup(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, KeeperError> {
    let mut unique: Vec<&Acl> = Vec::with_capacity(acl.len());
    for a in acl {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    if unique.is_empty() {
        return Err(KeeperError::InvalidAcl);
    }
    let mut out = Vec::with_capacity(unique.len());
    for a in unique {
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => out.push(a.clone()),
            "auth" => {
                // Only providers whose ids prove who the caller is count (`isAuthenticated`):
                // digest does, ip does not, and `super` has no provider at all.
                let mut any = false;
                for id in ids.iter().filter(|id| id.scheme == "digest") {
                    any = true;
                    out.push(Acl::new(a.perms, id.clone()));
                }
                if !any {
                    return Err(KeeperError::InvalidAcl);
                }
            }
            "digest" if java_split_len(&a.id.id, ':') == 2 => out.push(a.clone()),
            "ip" if parse_ip_acl(&a.id.id).is_some() => out.push(a.clone()),
            _ => return Err(KeeperError::InvalidAcl),
        }
    }
    Ok(out)
}

/// `getACL` without ADMIN permission: digest hashes are hidden (`user:x`), as ZooKeeper does.
pub(crate) fn mask_digests(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| match (a.id.scheme.as_str(), a.id.id.split_once(':')) {
            ("digest", Some((user, _))) => Acl::new(a.perms, Id::new("digest", format!("{user}:x"))),
            _ => a.clone(),
        })
        .collect()
}

/// The length of Java's `s.split(sep)`, which drops trailing empty strings.
fn java_split_len(s: &str, sep: char) -> usize {
    if s.is_empty() {
        return 1;
    }
    let parts: Vec<&str> = s.split(sep).collect();
    parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1)
}

/// An address (4 or 16 bytes) and a prefix length in bits.
fn parse_ip_acl(expr: &str) -> Option<(Vec<u8>, usize)> {
    let (addr, bits) = match expr.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (expr, None),
    };
    let addr = parse_ip(addr)?;
    let bits = match bits {
        Some(b) => b.parse::<usize>().ok().filter(|&b| b <= addr.len() * 8)?,
        None => addr.len() * 8,
    };
    Some((addr, bits))
}

fn parse_ip(addr: &str) -> Option<Vec<u8>> {
    if addr.contains(':') {
        return addr.parse::<std::net::Ipv6Addr>().ok().map(|a| a.octets().to_vec());
    }
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    parts.iter().map(|p| p.parse::<u8>().ok()).collect()
}

/// `IPAuthenticationProvider.matches`: the caller's address is inside `addr/bits`.
fn ip_matches(caller: &str, acl_expr: &str) -> bool {
    let (Some((net, bits)), Some(addr)) = (parse_ip_acl(acl_expr), parse_ip(caller)) else {
        return false;
    };
    if net.len() != addr.len() {
        return false;
    }
    (0..bits).all(|bit| {
        let mask = 0x80u8 >> (bit % 8);
        net[bit / 8] & mask == addr[bit / 8] & mask
    })
}

/// Interned ACL lists, shared by reference count (ZooKeeper's `ReferenceCountedACLCache`): znodes
/// store a 4-byte handle instead of their own list.
#[derive(Debug, Default, Clone)]
pub(crate) struct AclTable {
    lists: Vec<Option<(Vec<Acl>, u32)>>,
    by_value: HashMap<Vec<Acl>, u32>,
    free: Vec<u32>,
}

/// A handle into an [`AclTable`].
pub(crate) type AclRef = u32;

impl AclTable {
    /// Takes one reference to `acl`, adding it if new.
    pub(crate) fn intern(&mut self, acl: &[Acl]) -> AclRef {
        if let Some(&r) = self.by_value.get(acl) {
            if let Some((_, refs)) = &mut self.lists[r as usize] {
                *refs += 1;
            }
            return r;
        }
        let entry = Some((acl.to_vec(), 1));
        let r = match self.free.pop() {
            Some(r) => {
                self.lists[r as usize] = entry;
                r
            }
            None => {
                self.lists.push(entry);
                (self.lists.len() - 1) as AclRef
            }
        };
        self.by_value.insert(acl.to_vec(), r);
        r
    }

    /// Drops one reference; the list goes when its last user does.
    pub(crate) fn release(&mut self, r: AclRef) {
        let Some(slot) = self.lists.get_mut(r as usize) else { return };
        let Some((acl, refs)) = slot else { return };
        *refs -= 1;
        if *refs == 0 {
            self.by_value.remove(acl.as_slice());
            *slot = None;
            self.free.push(r);
        }
    }

    /// The list behind a handle (empty for a handle that is not in use, which never happens for
    /// a live znode).
    pub(crate) fn get(&self, r: AclRef) -> &[Acl] {
        match self.lists.get(r as usize) {
            Some(Some((acl, _))) => acl,
            _ => &[],
        }
    }

    /// How many distinct lists are in use.
    pub(crate) fn len(&self) -> usize {
        self.by_value.len()
    }

    /// The reference count of a handle (0 when not in use), for invariant checks.
    pub(crate) fn refs(&self, r: AclRef) -> u32 {
        match self.lists.get(r as usize) {
            Some(Some((_, refs))) => *refs,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(user: &str, pass: &str) -> Id {
        digest_id(&format!("{user}:{pass}"))
    }

    #[test]
    fn digest_matches_zookeeper() {
        // Values produced by DigestAuthenticationProvider.generateDigest.
        assert_eq!(generate_digest("super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
        assert_eq!(generate_digest("user:password"), "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY=");
        assert_eq!(digest_id("a:b").scheme, "digest");
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn world_anyone_grants_only_its_bits() {
        let acl = vec![Acl::new(perms::READ | perms::WRITE, Id::anyone())];
        assert_eq!(check(&acl, perms::READ, &[], None), Ok(()));
        assert_eq!(check(&acl, perms::WRITE, &[], None), Ok(()));
        assert_eq!(check(&acl, perms::DELETE, &[], None), Err(KeeperError::NoAuth));
        assert_eq!(check(&acl, perms::ADMIN, &[], None), Err(KeeperError::NoAuth));
        // Any of the requested bits is enough, as in ZooKeeper (getACL asks READ | ADMIN).
        assert_eq!(check(&acl, perms::READ | perms::ADMIN, &[], None), Ok(()));
    }

    #[test]
    fn empty_acl_allows_everything() {
        assert_eq!(check(&[], perms::ALL, &[], None), Ok(()));
    }

    #[test]
    fn digest_entries_match_equal_ids_only() {
        let alice = digest("alice", "secret");
        let acl = vec![Acl::new(perms::ALL, alice.clone())];
        assert_eq!(check(&acl, perms::READ, &[alice], None), Ok(()));
        assert_eq!(check(&acl, perms::READ, &[digest("alice", "wrong")], None), Err(KeeperError::NoAuth));
        assert_eq!(check(&acl, perms::READ, &[], None), Err(KeeperError::NoAuth));
        // Same id text under another scheme does not match.
        let other = Id::new("ip", acl[0].id.id.clone());
        assert_eq!(check(&acl, perms::READ, &[other], None), Err(KeeperError::NoAuth));
    }

    #[test]
    fn super_user_passes_everything() {
        let acl = vec![Acl::new(perms::READ, digest("alice", "secret"))];
        let root = digest("super", "test");
        let super_digest = generate_digest("super:test");
        assert_eq!(check(&acl, perms::ADMIN, std::slice::from_ref(&root), Some(&super_digest)), Ok(()));
        assert_eq!(check(&acl, perms::ADMIN, &[root], None), Err(KeeperError::NoAuth));
        assert_eq!(check(&acl, perms::ADMIN, &[Id::new("super", "")], None), Ok(()));
        assert_eq!(check(&acl, perms::ADMIN, &[digest("eve", "x")], Some(&super_digest)), Err(KeeperError::NoAuth));
    }

    #[test]
    fn ip_entries_match_by_prefix() {
        let acl = vec![Acl::new(perms::READ, Id::new("ip", "10.1.0.0/16"))];
        assert_eq!(check(&acl, perms::READ, &[Id::new("ip", "10.1.2.3")], None), Ok(()));
        assert_eq!(check(&acl, perms::READ, &[Id::new("ip", "10.2.0.1")], None), Err(KeeperError::NoAuth));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
        assert!(ip_matches("10.0.0.200", "10.0.0.128/25"));
        assert!(!ip_matches("10.0.0.100", "10.0.0.128/25"));
        assert!(ip_matches("::1", "::1"));
        assert!(ip_matches("fe80::1", "fe80::/10"));
        assert!(!ip_matches("::1", "127.0.0.1"));
        assert!(!ip_matches("junk", "127.0.0.1"));
    }

    #[test]
    fn fixup_refuses_bad_lists() {
        let alice = digest("alice", "pw");
        assert_eq!(fixup(&[], &[]), Err(KeeperError::InvalidAcl));
        for bad in [
            Id::new("world", "someone"),
            Id::new("nosuch", "x"),
            Id::new("super", ""),
            Id::new("digest", "no-colon"),
            Id::new("digest", "a:b:c"),
            Id::new("digest", "a::"),
            Id::new("ip", "300.1.1.1"),
            Id::new("ip", "10.0.0.1/33"),
            Id::new("ip", "host.example"),
        ] {
            assert_eq!(
                fixup(&[Acl::new(perms::ALL, bad.clone())], std::slice::from_ref(&alice)),
                Err(KeeperError::InvalidAcl),
                "{bad:?}"
            );
        }
        // `auth` needs an authenticated (digest) id; an ip id does not count.
        assert_eq!(fixup(&Acl::creator_all(), &[]), Err(KeeperError::InvalidAcl));
        assert_eq!(fixup(&Acl::creator_all(), &[Id::new("ip", "127.0.0.1")]), Err(KeeperError::InvalidAcl));
    }

    #[test]
    fn fixup_expands_auth_and_dedups() {
        let alice = digest("alice", "pw");
        let bob = digest("bob", "pw");
        let ip = Id::new("ip", "127.0.0.1");
        let acl = vec![
            Acl::new(perms::ALL, Id::new("auth", "")),
            Acl::open_unsafe()[0].clone(),
            Acl::open_unsafe()[0].clone(),
        ];
        let fixed = fixup(&acl, &[alice.clone(), ip, bob.clone()]).unwrap();
        assert_eq!(fixed, vec![Acl::new(perms::ALL, alice), Acl::new(perms::ALL, bob), Acl::open_unsafe()[0].clone()]);
        let ok =
            [Id::new("digest", "a:b"), Id::new("digest", "a:b:"), Id::new("ip", "10.0.0.0/8"), Id::new("ip", "::1")];
        for id in ok {
            assert!(fixup(&[Acl::new(perms::READ, id.clone())], &[]).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn masking_hides_hashes() {
        let acl = vec![Acl::new(perms::ALL, digest("alice", "pw")), Acl::open_unsafe()[0].clone()];
        let masked = mask_digests(&acl);
        assert_eq!(masked[0].id, Id::new("digest", "alice:x"));
        assert_eq!(masked[1], acl[1]);
    }

    #[test]
    fn table_shares_and_frees_lists() {
        let mut table = AclTable::default();
        let a = table.intern(&Acl::open_unsafe());
        let b = table.intern(&Acl::open_unsafe());
        let c = table.intern(&Acl::read_unsafe());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(table.len(), 2);
        table.release(a);
        assert_eq!(table.get(a), Acl::open_unsafe().as_slice());
        table.release(b);
        assert_eq!(table.get(a), &[] as &[Acl]);
        assert_eq!(table.len(), 1);
        let d = table.intern(&Acl::creator_all());
        assert_eq!(d, a, "freed handle is reused");
        assert_eq!(table.get(d), Acl::creator_all().as_slice());
    }
}
