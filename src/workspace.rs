//! Loading a workspace from disk: the IO edge in front of the pure front end.
//!
//! The checker reads template files through the [`Files`] trait, so tests can
//! serve them from memory and the checker itself never touches `std::fs`.

use crate::source::SourceMap;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Read access to files beside the journeys (`body file` templates).
pub trait Files {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// The file names (not paths) in a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskFiles;

impl Files for DiskFiles {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Files held in memory, for tests and generated workspaces.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    pub files: BTreeMap<PathBuf, String>,
}

impl Files for MemoryFiles {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
}

/// An error reading the workspace itself (exit code 2 in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("no .journey files found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Empty { paths: Vec<PathBuf> },
}

/// Reads every `.journey` file named, or found recursively under a named
/// directory, in a stable (sorted) order.
pub fn load(paths: &[PathBuf]) -> Result<SourceMap, LoadError> {
    let mut found = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => LoadError::NotFound { path: path.clone() },
            _ => LoadError::Io {
                path: path.clone(),
                source,
            },
        })?;
        if metadata.is_dir() {
            collect_dir(path, &mut found)?;
        } else {
            found.push(path.clone());
        }
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err(LoadError::Empty { paths: paths.to_vec() });
    }
    let mut sources = SourceMap::new();
    for path in found {
        // Bytes, not text: a file that is not UTF-8 gets a diagnostic (E0008).
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        sources.add_bytes(path, bytes);
    }
    Ok(sources)
}

fn collect_dir(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_dir(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "journey") {
            found.push(path);
        }
    }
    Ok(())
}
