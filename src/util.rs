//! Small helpers shared by the stages: checksums, relative paths, atomic writes and
//! temporary output names that vanish unless the run succeeds.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Appends the `items` `list` does not hold yet (warnings said once however many scenes say
/// them).
pub fn push_new(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

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

/// Hex sha256 of bytes.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
            s
        })
}

/// A token naming this process uniquely across machines and restarts: host name, process
/// id (1 in every container) and start time.
pub fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{host}_{}_{nanos:x}", std::process::id())
    })
}

/// Writes `bytes` to `path` through a temporary name unique to this process, then renames:
/// several processes may write the same file at once and readers never see half of it.
pub fn write_atomic_shared(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    write_via(&process_partial_name(path), path, bytes.as_ref())
}

/// Writes `bytes` to `tmp` (registered as a temporary file), fsyncs it and renames it to
/// `path`; on failure `tmp` is removed.
fn write_via(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::interrupt::register(tmp);
    let r = std::fs::write(tmp, bytes)
        .and_then(|()| std::fs::File::open(tmp)?.sync_all())
        .and_then(|()| {
            crate::interrupt::critical(|reg| {
                reg.forget(tmp);
                std::fs::rename(tmp, path)
            })
        });
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
        crate::interrupt::forget(tmp);
    }
    r
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
    write_via(&partial_name(path), path, bytes)
}

/// A hidden temporary name for `path` unique to this process ([`process_token`]): two
/// processes writing the same file at once (a retried shard whose first pod still runs)
/// never write the same temporary file.
#[must_use]
pub fn process_partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", process_token()))
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
/// Each is registered with [`crate::interrupt`] when tracked (before it is created), so
/// SIGINT / SIGTERM remove it too.
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
        crate::interrupt::register(&path);
        self.paths.push(path.clone());
        path
    }

    /// Keeps the files (the run succeeded and renamed them).
    pub fn disarm(&mut self) {
        crate::interrupt::critical(|reg| self.disarm_with(reg));
    }

    /// [`TempFiles::disarm`] inside [`crate::interrupt::critical`].
    pub fn disarm_with(&mut self, reg: &mut crate::interrupt::Registry) {
        for p in self.paths.drain(..) {
            reg.forget(&p);
        }
        self.armed = false;
    }

    /// Renames each `(temporary, final)` pair into place and keeps the files, in one step a
    /// signal cannot split: after it every output is in place, or (a rename failed) the
    /// files not yet renamed are removed when this set is dropped.
    pub fn commit(
        &mut self,
        moves: Vec<(PathBuf, PathBuf)>,
    ) -> Result<(), crate::error::OutputError> {
        crate::interrupt::critical(|reg| {
            for (from, to) in moves {
                std::fs::rename(&from, &to)
                    .map_err(|source| crate::error::OutputError::Io { path: to, source })?;
            }
            self.disarm_with(reg);
            Ok(())
        })
    }

    /// Removes every tracked file now.
    pub fn cleanup(&mut self) {
        for p in self.paths.drain(..) {
            let _ = std::fs::remove_file(&p);
            crate::interrupt::forget(&p);
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

/// `path` with `suffix` appended to its file name (`a.tif` + `.aux.xml`).
#[must_use]
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether an I/O error means the disk (or the user's quota) is full.
#[must_use]
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// The proleptic Gregorian date (year, month, day) `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
#[must_use]
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
#[must_use]
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the Unix epoch as an RFC 3339 UTC timestamp (`2026-11-27T13:55:43Z`).
#[must_use]
pub fn rfc3339(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current time as an RFC 3339 UTC timestamp.
#[must_use]
pub fn now_rfc3339() -> String {
    rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
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
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_793_743), "2026-11-27T15:35:43Z");
    }

    #[test]
    fn partial_names_are_hidden_siblings() {
        assert_eq!(
            partial_name(Path::new("/o/s.classes.tif")),
            PathBuf::from("/o/.s.classes.tif.partial")
        );
    }
}
