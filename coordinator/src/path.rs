//! Znode paths: ZooKeeper's validation rules and the few reserved paths.

/// The root znode.
pub const ROOT: &str = "/";
/// ZooKeeper's system subtree, created with the tree and never deleted.
pub const ZOOKEEPER: &str = "/zookeeper";
/// Where ZooKeeper keeps quota definitions (created empty; quotas are not enforced).
pub const QUOTA: &str = "/zookeeper/quota";
/// Where ZooKeeper publishes the ensemble configuration (readable by anyone, writable by no client).
pub const CONFIG: &str = "/zookeeper/config";

/// Why a znode path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid znode path '{path}': {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a znode path by ZooKeeper's rules (`PathUtils.validatePath`): absolute, no empty, `.` or
/// `..` segment, no trailing slash (except the root), and none of the characters ZooKeeper refuses:
/// NUL, control characters (U+0001–U+001F, U+007F–U+009F), the private-use area U+E000–U+F8FF and
/// U+FFF0–U+FFFF.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let fail = |reason| Err(PathError { path: path.to_string(), reason });
    if !path.starts_with('/') {
        return fail("must start with '/'");
    }
    if path == ROOT {
        return Ok(());
    }
    if path.ends_with('/') {
        return fail("must not end with '/'");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return fail("empty segment"),
            "." | ".." => return fail("relative segment"),
            s if s.chars().any(|c| c == '\0' || c.is_control()) => return fail("control character"),
            s if s.chars().any(is_refused_char) => return fail("character ZooKeeper does not allow"),
            _ => {}
        }
    }
    Ok(())
}

fn is_refused_char(c: char) -> bool {
    matches!(c, '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}')
}

/// Splits a path into its parent and last segment the way ZooKeeper does (at the last `/`):
/// `/a/b` gives `("/a", "b")`, `/a` gives `("/", "a")`. `None` when there is no `/` at all.
pub(crate) fn split_parent(path: &str) -> Option<(&str, &str)> {
    let slash = path.rfind('/')?;
    let parent = if slash == 0 { ROOT } else { &path[..slash] };
    Some((parent, &path[slash + 1..]))
}

/// The four paths ZooKeeper never lets a client delete (`DataTree.isSpecialPath`).
pub(crate) fn is_special(path: &str) -> bool {
    matches!(path, ROOT | ZOOKEEPER | QUOTA | CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_paths() {
        for ok in ["/", "/a", "/a/b-c/d.e", "/a/...", "/a/.b", "/ünï/çødé", "/a b"] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a/b",
            "/a/",
            "//a",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/.",
            "/a\u{0}",
            "/a\u{1f}",
            "/a\u{7f}",
            "/a\u{85}",
            "/\u{e000}",
            "/x\u{f8ff}",
            "/\u{fff0}",
            "/\u{ffff}",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_names_path_and_reason() {
        let err = validate_path("/a//b").unwrap_err();
        assert_eq!(err.path, "/a//b");
        assert_eq!(err.reason, "empty segment");
        assert_eq!(err.to_string(), "invalid znode path '/a//b': empty segment");
    }

    #[test]
    fn split_parent_like_zookeeper() {
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/a/b/c"), Some(("/a/b", "c")));
        assert_eq!(split_parent("/a/"), Some(("/a", "")));
        assert_eq!(split_parent("/"), Some(("/", "")));
        assert_eq!(split_parent("abc"), None);
    }

    #[test]
    fn special_paths() {
        for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(is_special(p), "{p}");
        }
        for p in ["/zookeeper/x", "/zoo", "/zookeeper/quota/a"] {
            assert!(!is_special(p), "{p}");
        }
    }
}
