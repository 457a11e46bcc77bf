//! Locks of the job layer, taken with `flock(2)` on small files in the job folder so that
//! they die with their process (kill -9 included): the kernel releases them.
//!
//! - `<out>/.eoinfer/<name>/job.lock`: every process working on a run (the whole run, a
//!   shard, a merge) holds it shared; discarding the run's work (`--force`, a replaced plan,
//!   a failed run's debris) needs it exclusive, so it never happens under a running shard.
//! - `<out>/.eoinfer/<name>/<process>.lock` (`main`, `shard-2-of-8`, `merge`): exclusive;
//!   a second process for the same job fails at once, naming the first (its pid and host
//!   are written into the file).
//! - `<out>/.eoinfer/catalog.lock`: serialises updates of the folder's shared files
//!   (`catalog.json`).
//!
//! Lock files are never deleted (a deleted lock file could split one lock into two: a process
//! holding the old file and one holding a new file at the same path); [`Held`] also checks
//! after every acquisition that the path still names the file it locked.
//!
//! `EOINFER_LOCKS=off` turns locking off for file systems without `flock`: shards may still
//! run side by side, but nothing stops a second process on the same job or shard, so eoinfer
//! then never removes a failed run's plan or replaces a plan by itself (only `--force` does).

use crate::error::JobError;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The outcome of a lock attempt that does not wait.
enum TryLockError {
    /// Another process holds the lock.
    WouldBlock,
    /// `flock` failed.
    Error(std::io::Error),
}

/// `flock(2)` with `op` (`LOCK_SH`, `LOCK_EX`, `LOCK_UN`, with `LOCK_NB` not waiting),
/// retried when a signal interrupts it.
fn flock(file: &File, op: i32) -> Result<(), TryLockError> {
    loop {
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Err(TryLockError::WouldBlock),
            _ => return Err(TryLockError::Error(e)),
        }
    }
}

/// Takes `op` waiting for it (no `LOCK_NB`).
fn flock_wait(file: &File, op: i32) -> std::io::Result<()> {
    flock(file, op).map_err(|e| match e {
        TryLockError::WouldBlock => std::io::Error::from_raw_os_error(libc::EWOULDBLOCK),
        TryLockError::Error(e) => e,
    })
}

/// Whether locking is on (`EOINFER_LOCKS` is not `off`).
#[must_use]
pub fn enabled() -> bool {
    std::env::var("EOINFER_LOCKS").map_or(true, |v| !v.eq_ignore_ascii_case("off"))
}

/// Kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Several holders.
    Shared,
    /// One holder.
    Exclusive,
}

/// A held lock (released when dropped; with locking off it holds nothing).
#[derive(Debug)]
pub struct Held {
    file: Option<File>,
    path: PathBuf,
    mode: Mode,
}

/// What the last exclusive holder wrote into a lock file (`pid 12 on node-3, since ...`).
fn holder_text(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.trim().to_string()
}

/// Who holds a lock, for messages.
fn holder(path: &Path) -> String {
    let text = holder_text(path);
    if text.is_empty() {
        "another eoinfer".into()
    } else {
        format!("another eoinfer ({text})")
    }
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

fn lock_error(path: &Path, source: std::io::Error) -> JobError {
    if unsupported(&source) {
        JobError::LocksUnsupported {
            path: path.to_path_buf(),
            source,
        }
    } else {
        JobError::Lock {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether `file` (open) is still the file at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Held {
    /// Takes the lock at `path` without waiting. `Ok(None)` when another process holds it
    /// (in a conflicting mode).
    pub fn try_take(path: &Path, mode: Mode) -> Result<Option<Self>, JobError> {
        Self::acquire(path, mode, false)
    }

    /// Takes the lock at `path`, waiting for it.
    pub fn wait(path: &Path, mode: Mode) -> Result<Self, JobError> {
        Self::acquire(path, mode, true).map(|h| h.expect("a waiting lock is taken"))
    }

    /// Opens the lock file, creating it (read-only when the folder or the file cannot be
    /// written, as for a finished run in another user's folder: `flock` needs no write
    /// access).
    fn open(path: &Path) -> Result<File, JobError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .or_else(|e| {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::EPERM)
                ) {
                    File::open(path)
                } else {
                    Err(e)
                }
            })
            .map_err(|e| lock_error(path, e))
    }

    fn acquire(path: &Path, mode: Mode, wait: bool) -> Result<Option<Self>, JobError> {
        if !enabled() {
            return Ok(Some(Self {
                file: None,
                path: path.to_path_buf(),
                mode,
            }));
        }
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | if wait { 0 } else { libc::LOCK_NB };
        loop {
            let file = Self::open(path)?;
            match flock(&file, op) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(lock_error(path, e)),
            }
            // Lock files are not deleted, but should one be (by hand), a holder of the old
            // file and of a new one at the same path must not both think they hold it.
            if same_file(&file, path) {
                let mut held = Self {
                    file: Some(file),
                    path: path.to_path_buf(),
                    mode,
                };
                if mode == Mode::Exclusive {
                    held.write_holder();
                }
                return Ok(Some(held));
            }
        }
    }

    /// Takes an exclusive lock for `job` (a description: folder, name, process) or fails at
    /// once naming the process that holds it.
    pub fn exclusive(path: &Path, job: &str) -> Result<Self, JobError> {
        Self::try_take(path, Mode::Exclusive)?.ok_or_else(|| JobError::Busy {
            holder: holder(path),
            job: job.to_string(),
            lock: path.to_path_buf(),
        })
    }

    /// Writes this process's pid, host and start time into the (exclusively held) file.
    fn write_holder(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let text = format!(
                "pid {} on {}, since {}\n",
                std::process::id(),
                host.trim(),
                crate::util::now_rfc3339()
            );
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = f.write_all(text.as_bytes());
        }
    }

    /// Turns a shared lock into an exclusive one without waiting; `Ok(false)` when another
    /// process holds the lock too. (flock converts by releasing and re-taking: after a
    /// `false` the lock is taken shared again, waiting for a moment if `restore_wait`, else
    /// only if it is free at once.)
    pub fn try_upgrade(&mut self, restore_wait: bool) -> Result<bool, JobError> {
        let Some(f) = self.file.as_ref() else {
            return Ok(true);
        };
        match flock(f, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                self.mode = Mode::Exclusive;
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => {
                if restore_wait {
                    flock_wait(f, libc::LOCK_SH).map_err(|e| lock_error(&self.path, e))?;
                } else {
                    let _ = flock(f, libc::LOCK_SH | libc::LOCK_NB);
                }
                Ok(false)
            }
            Err(TryLockError::Error(e)) => Err(lock_error(&self.path, e)),
        }
    }

    /// Turns an exclusive lock back into a shared one.
    pub fn downgrade(&mut self) -> Result<(), JobError> {
        if let Some(f) = self.file.as_ref() {
            if self.mode == Mode::Exclusive {
                flock_wait(f, libc::LOCK_SH).map_err(|e| lock_error(&self.path, e))?;
                self.mode = Mode::Shared;
            }
        }
        Ok(())
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a lock is really held (locking is on).
    #[must_use]
    pub fn is_real(&self) -> bool {
        self.file.is_some()
    }

    /// Whether the lock is held exclusively.
    #[must_use]
    pub fn is_exclusive(&self) -> bool {
        self.mode == Mode::Exclusive
    }
}

/// The processes holding the `<process>.lock` files in a job folder, for messages
/// ("pid 12 on node-3, since ...; ..."), empty when none is held.
#[must_use]
pub fn holders(work: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(work) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.extension().is_none_or(|e| e != "lock") || name == "job.lock" {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        if matches!(
            flock(&f, libc::LOCK_SH | libc::LOCK_NB),
            Err(TryLockError::WouldBlock)
        ) {
            out.push(format!(
                "{} ({})",
                name.trim_end_matches(".lock"),
                holder_text(&p)
            ));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_excludes_a_second_holder_and_names_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w/main.lock");
        let first = Held::exclusive(&path, "the job").expect("first");
        let err = Held::exclusive(&path, "the job").expect_err("second");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("the job"), "{text}");
        assert_eq!(holders(&dir.path().join("w")).len(), 1);
        drop(first);
        assert!(Held::exclusive(&path, "the job").is_ok());
        assert!(holders(&dir.path().join("w")).is_empty());
    }

    #[test]
    fn shared_holders_block_an_upgrade_until_they_are_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.lock");
        let mut a = Held::try_take(&path, Mode::Shared)
            .expect("a")
            .expect("free");
        let b = Held::try_take(&path, Mode::Shared)
            .expect("b")
            .expect("shared");
        assert!(!a.try_upgrade(true).expect("upgrade"));
        assert!(!a.is_exclusive());
        drop(b);
        assert!(a.try_upgrade(true).expect("upgrade"));
        assert!(Held::try_take(&path, Mode::Shared).expect("c").is_none());
        a.downgrade().expect("downgrade");
        assert!(Held::try_take(&path, Mode::Shared).expect("d").is_some());
    }

    #[test]
    fn a_deleted_lock_file_is_not_locked_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.lock");
        let a = Held::exclusive(&path, "x").expect("a");
        // The holder deletes the file (as a discarded job does), then another process
        // locks the path: it gets a new file, and the old holder's file is gone.
        std::fs::remove_file(&path).expect("remove");
        let b = Held::exclusive(&path, "x").expect("b");
        assert!(same_file(b.file.as_ref().expect("file"), &path));
        assert!(!same_file(a.file.as_ref().expect("file"), &path));
    }
}
