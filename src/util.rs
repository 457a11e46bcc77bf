//! Small helpers shared by the stages: checksums, relative paths, atomic writes and
//! temporary output names that vanish unless the run succeeds.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0_u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
            s
        }))
}

/// `target` relative to folder `base` (both made absolute), with `/` separators.
#[must_use]
pub fn relative_path(target: &Path, base: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let norm = |p: PathBuf| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        out
    };
    let t = norm(abs(target));
    let b = norm(abs(base));
    let common = t.iter().zip(&b).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), b.len() - common).collect();
    parts.extend(t[common..].iter().cloned());
    parts.join("/")
}

/// Writes `bytes` to a temporary name beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = partial_name(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The hidden temporary name an output is written under before it is renamed into place.
#[must_use]
pub fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Temporary files of one run: removed on drop unless [`TempFiles::disarm`] was called.
#[derive(Debug, Default)]
pub struct TempFiles {
    paths: Vec<PathBuf>,
    armed: bool,
}

impl TempFiles {
    /// An empty, armed set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            paths: Vec::new(),
            armed: true,
        }
    }

    /// Registers a path to remove if the run fails.
    pub fn track(&mut self, path: PathBuf) -> PathBuf {
        self.paths.push(path.clone());
        path
    }

    /// Keeps the files (the run succeeded and renamed them).
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Removes every tracked file now.
    pub fn cleanup(&mut self) {
        for p in self.paths.drain(..) {
            let _ = std::fs::remove_file(&p);
        }
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if self.armed {
            self.cleanup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_base() {
        assert_eq!(
            relative_path(Path::new("/a/b/c.onnx"), Path::new("/a/m")),
            "../b/c.onnx"
        );
        assert_eq!(
            relative_path(Path::new("/a/m/x/c.onnx"), Path::new("/a/m")),
            "x/c.onnx"
        );
    }

    #[test]
    fn partial_names_are_hidden_siblings() {
        assert_eq!(
            partial_name(Path::new("/o/s.classes.tif")),
            PathBuf::from("/o/.s.classes.tif.partial")
        );
    }
}
