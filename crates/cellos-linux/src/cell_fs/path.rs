//! Validation and splitting of cell paths. Nothing here touches the filesystem: `..` is left
//! for the kernel to resolve (`RESOLVE_IN_ROOT` keeps it at the cell's root), `.` and empty
//! components are dropped.

use super::error::CellFsError;

/// `PATH_MAX` of Linux, in bytes.
pub const PATH_MAX: usize = 4096;
/// `NAME_MAX` of Linux: the longest single component, in bytes.
pub const NAME_MAX: usize = 255;

/// A validated cell path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellPath<'a> {
    /// Components after dropping empty ones and `.`; `..` kept.
    comps: Vec<&'a str>,
}

impl<'a> CellPath<'a> {
    pub fn parse(path: &'a str) -> Result<Self, CellFsError> {
        if path.is_empty() {
            return Err(CellFsError::invalid(
                path,
                "the path is empty; give an absolute cell path such as /workspace/file",
            ));
        }
        if path.len() > PATH_MAX {
            return Err(CellFsError::invalid(
                path,
                format!(
                    "the path is {} bytes, longer than PATH_MAX ({PATH_MAX})",
                    path.len()
                ),
            ));
        }
        if path.contains('\0') {
            return Err(CellFsError::invalid(path, "the path contains a NUL byte"));
        }
        if !path.starts_with('/') {
            return Err(CellFsError::invalid(
                path,
                "the path is relative; cell paths are absolute (start with /)",
            ));
        }
        let mut comps = Vec::new();
        for c in path.split('/') {
            if c.is_empty() || c == "." {
                continue;
            }
            if c.len() > NAME_MAX {
                return Err(CellFsError::invalid(
                    path,
                    format!(
                        "a component is {} bytes, longer than NAME_MAX ({NAME_MAX})",
                        c.len()
                    ),
                ));
            }
            comps.push(c);
        }
        Ok(CellPath { comps })
    }

    /// The final component, unless the path names the root or ends in `..` (then the entry has
    /// no name in a parent we could hold, and only whole-path lookups make sense).
    pub fn name(&self) -> Option<&'a str> {
        match self.comps.last() {
            Some(&"..") | None => None,
            Some(n) => Some(n),
        }
    }

    /// The parent of [`Self::name`], relative to the root (`.` for the root itself).
    pub fn parent_rel(&self) -> String {
        let n = self.comps.len().saturating_sub(1);
        join(&self.comps[..n])
    }

    /// The whole path, relative to the root.
    pub fn full_rel(&self) -> String {
        join(&self.comps)
    }

    /// Every prefix of the path, relative to the root, with the component it ends in.
    pub fn prefixes(&self) -> impl Iterator<Item = (String, &'a str)> + '_ {
        (1..=self.comps.len()).map(|i| (join(&self.comps[..i]), self.comps[i - 1]))
    }
}

fn join(comps: &[&str]) -> String {
    if comps.is_empty() {
        ".".to_string()
    } else {
        comps.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(p: &str) -> String {
        match CellPath::parse(p) {
            Err(CellFsError::InvalidPath { reason, .. }) => reason,
            other => panic!("{p:?}: expected InvalidPath, got {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_paths() {
        assert!(reason("").contains("empty"));
        assert!(reason("workspace/a").contains("relative"));
        assert!(reason("./a").contains("relative"));
        assert!(reason("/a\0b").contains("NUL"));
        assert!(reason(&format!("/{}", "a/".repeat(2100))).contains("PATH_MAX"));
        assert!(reason(&format!("/x/{}", "n".repeat(256))).contains("NAME_MAX"));
    }

    #[test]
    fn accepts_limits() {
        let p = format!("/{}", "n".repeat(255));
        assert_eq!(CellPath::parse(&p).unwrap().name(), Some(&p[1..]));
        let p = format!("/{}", "a/".repeat(2047)); // 4095 bytes
        assert_eq!(CellPath::parse(&p).unwrap().comps.len(), 2047);
    }

    #[test]
    fn splits() {
        let p = CellPath::parse("/workspace//./a.txt").unwrap();
        assert_eq!(p.name(), Some("a.txt"));
        assert_eq!(p.parent_rel(), "workspace");
        assert_eq!(p.full_rel(), "workspace/a.txt");

        let p = CellPath::parse("/a.txt").unwrap();
        assert_eq!(p.parent_rel(), ".");

        for root in ["/", "//", "/./.", "/a/..", "/../.."] {
            let p = CellPath::parse(root).unwrap();
            assert_eq!(p.name(), None, "{root}");
        }
        assert_eq!(CellPath::parse("/").unwrap().full_rel(), ".");

        let p = CellPath::parse("/../../etc/passwd").unwrap();
        assert_eq!(p.parent_rel(), "../../etc");
        assert_eq!(p.name(), Some("passwd"));

        let p = CellPath::parse("/a/b").unwrap();
        let pre: Vec<_> = p.prefixes().collect();
        assert_eq!(pre, vec![("a".to_string(), "a"), ("a/b".to_string(), "b")]);
    }
}
