//! SIGINT / SIGTERM and the run's temporary files. Every temporary file a command writes is
//! registered here before it is created; a signal removes them all, removes a run's debris
//! (a plan and journal without one finished block), prints what is done and how to go on,
//! and exits with 128 + the signal (130 for Ctrl-C, 143 for SIGTERM), the Unix convention.
//!
//! Steps that must not be cut in half by a signal (renaming a run's outputs into place,
//! journalling a block and releasing its parts) run inside [`critical`]: the signal waits
//! for them, and after it nothing else runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// What a signal has to clean up and report.
#[derive(Debug, Default)]
pub struct Registry {
    temps: BTreeSet<PathBuf>,
    job: Option<JobStatus>,
    debris: Option<crate::job::Debris>,
}

/// Progress of the resumable job this process works on, for the interrupt message.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// Blocks this process was to run (its shard, or all).
    pub blocks: usize,
    /// Of those, blocks finished (found done in the journal or run now).
    pub done: usize,
    /// ` of shard 1/3` or empty.
    pub scope: String,
}

impl Registry {
    /// Registers a temporary file (before creating it).
    pub fn add(&mut self, path: &Path) {
        self.temps.insert(path.to_path_buf());
    }

    /// Forgets a file (renamed into place, or journalled).
    pub fn forget(&mut self, path: &Path) {
        self.temps.remove(path);
    }

    /// The job's status, if a job runs.
    pub fn job_mut(&mut self) -> Option<&mut JobStatus> {
        self.job.as_mut()
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    temps: BTreeSet::new(),
    job: None,
    debris: None,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` with the registry locked: a signal arriving meanwhile waits until `f` is done.
pub fn critical<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut registry())
}

/// Registers a temporary file (before creating it).
pub fn register(path: &Path) {
    registry().add(path);
}

/// Forgets a temporary file.
pub fn forget(path: &Path) {
    registry().forget(path);
}

/// Sets (or clears) the job this process works on.
pub fn set_job(job: Option<JobStatus>) {
    registry().job = job;
}

/// Sets (or clears) what an interrupted run leaves behind when it finished no block: its
/// plan (if it wrote it) and its work folder.
pub fn set_debris(debris: Option<crate::job::Debris>) {
    registry().debris = debris;
}

/// The message printed when a signal stops the process.
fn message(job: Option<&JobStatus>) -> String {
    match job {
        Some(j) => format!(
            "interrupted: {} of {} blocks{} are done; rerun the same command to resume",
            j.done, j.blocks, j.scope
        ),
        None => {
            "interrupted: temporary files removed, no output was written; rerun the same command"
                .into()
        }
    }
}

/// Removes every registered temporary file and the job's debris. Returns the message.
///
/// No file can be registered any more (the registry is held), but a thread may be creating
/// one it registered just before: a second sweep a moment later removes those too.
fn clean_up(reg: &mut Registry) -> String {
    for p in &reg.temps {
        let _ = std::fs::remove_file(p);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    for p in std::mem::take(&mut reg.temps) {
        let _ = std::fs::remove_file(&p);
    }
    if reg.job.as_ref().is_none_or(|j| j.done == 0) {
        if let Some(d) = reg.debris.take() {
            d.remove();
        }
    }
    message(reg.job.as_ref())
}

/// Installs the SIGINT / SIGTERM handler (a thread waiting for the signals).
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        tracing::warn!(
            "cannot install the SIGINT/SIGTERM handler; an interrupted run may leave temporary files"
        );
        return;
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Hold the registry to the end: no other thread renames or journals now.
                let mut reg = registry();
                let text = clean_up(&mut reg);
                eprintln!("eoinfer: {text}");
                // _exit: no atexit handlers or static destructors run while other threads
                // (GDAL, ONNX Runtime) are still busy.
                unsafe { libc::_exit(128 + sig) };
            }
        })
        .map_or_else(
            |e| tracing::warn!("cannot start the signal thread: {e}"),
            drop,
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_how_many_blocks_are_done_and_how_to_resume() {
        let job = JobStatus {
            blocks: 4,
            done: 1,
            scope: " of shard 1/3".into(),
        };
        assert_eq!(
            message(Some(&job)),
            "interrupted: 1 of 4 blocks of shard 1/3 are done; rerun the same command to resume"
        );
        assert!(message(None).contains("no output was written"));
    }

    #[test]
    fn cleaning_up_removes_the_registered_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.partial");
        let b = dir.path().join("b.tif");
        std::fs::write(&a, b"x").expect("write");
        std::fs::write(&b, b"x").expect("write");
        let mut reg = Registry::default();
        reg.add(&a);
        reg.add(&b);
        reg.forget(&b);
        clean_up(&mut reg);
        assert!(!a.exists());
        assert!(b.exists());
    }
}
