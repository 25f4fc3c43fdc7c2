use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The directory holding PostgreSQL's server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    bindir: PathBuf,
}

const REQUIRED: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

impl Binaries {
    /// Finds the server binaries: an explicit directory first, then `pg_config --bindir`, then the
    /// newest `/usr/lib/postgresql/*/bin` (Debian keeps server binaries off `PATH`).
    pub fn find(explicit: Option<&Path>) -> Result<Self, Error> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        candidates.extend(explicit.map(Path::to_path_buf));
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                candidates.push(PathBuf::from(dir));
            }
        }
        candidates.extend(debian_bindirs(Path::new("/usr/lib/postgresql")));
        Self::first_complete(&candidates)
    }

    fn first_complete(candidates: &[PathBuf]) -> Result<Self, Error> {
        candidates
            .iter()
            .find(|dir| REQUIRED.iter().all(|b| dir.join(b).is_file()))
            .map(|dir| Binaries {
                bindir: dir.clone(),
            })
            .ok_or_else(|| Error::BinariesNotFound {
                searched: if candidates.is_empty() {
                    "pg_config (not on PATH), /usr/lib/postgresql/*/bin (none)".into()
                } else {
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Path of one program in the server's bin directory (`pg_dump`, `pgbench`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|m| std::cmp::Reverse(m.0));
    majors.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_error_names_every_place_searched() {
        let err = Binaries::first_complete(&[PathBuf::from("/nonexistent/pg/bin")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/pg/bin"), "{text}");
        assert!(text.contains("apt-get install"), "{text}");
    }

    #[test]
    fn a_directory_missing_one_binary_is_skipped() {
        let partial = tempfile::tempdir().unwrap();
        std::fs::write(partial.path().join("initdb"), "").unwrap();
        let full = tempfile::tempdir().unwrap();
        for b in REQUIRED {
            std::fs::write(full.path().join(b), "").unwrap();
        }
        let found = Binaries::first_complete(&[partial.path().into(), full.path().into()]).unwrap();
        assert_eq!(found.bindir(), full.path());
    }

    #[test]
    fn debian_layout_is_listed_newest_first() {
        let root = tempfile::tempdir().unwrap();
        for v in ["13", "16", "9", "notaversion"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).unwrap();
        }
        let dirs = debian_bindirs(root.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["16", "13", "9"]);
    }
}
