//! Squall's coordinator: the znode store that will hold cluster membership, assignments, master
//! election and Kafka offsets, replicated with openraft and served over the ZooKeeper protocol.
//!
//! This crate is only begun: it holds the validation of znode paths, which the runtime and the
//! CLI already share. The store itself is issue 3.

/// Why a znode path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid znode path '{path}': {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a znode path by ZooKeeper's rules: absolute, no empty, `.` or `..` segment, no
/// trailing slash (except the root), no NUL or control characters.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    let fail = |reason| Err(PathError { path: path.to_string(), reason });
    if !path.starts_with('/') {
        return fail("must start with '/'");
    }
    if path == "/" {
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
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["/", "/a", "/a/b-c/d.e"] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\u{0}"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }
}
