//! Paths as flows name them: compared after making them absolute and lexically clean, so
//! that `inbox/a`, `./inbox/a` and `inbox/b/../a` are the same folder.

use std::path::{Component, Path, PathBuf};

/// Makes a path absolute and removes `.` and `..` without touching the filesystem (the
/// folder may not exist yet, and a symlink must not make two flows' folders look apart).
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_folder_normalize_alike() {
        let a = normalize(Path::new("inbox/a"));
        assert!(a.is_absolute(), "{a:?}");
        assert_eq!(normalize(Path::new("./inbox/a")), a);
        assert_eq!(normalize(Path::new("inbox/b/../a")), a);
        assert_ne!(normalize(Path::new("inbox/b")), a);
    }
}
