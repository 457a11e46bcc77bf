//! The job layer of a resumable run around its blocks: the locks of the run
//! (`<out>/.eoinfer/<name>/`), its plan file `<out>/<name>.plan.json` (written, checked
//! against the inputs' fingerprints, replaced when nothing of it is finished), discarding
//! (`--force`), the debris of a run that finished no block, and the estimate of the disk
//! space a run still needs.

use crate::error::{Error, JobError, OutputError};
use crate::journal::{State, read_state, work_dir};
use crate::lock::{Held, Mode};
use crate::plan::JobPlan;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `<out>/<name>.plan.json`.
#[must_use]
pub fn plan_path(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}.plan.json"))
}

/// Writes `job` to `<out>/<name>.plan.json` (atomically, safe for several processes at
/// once); returns the text.
pub fn write_plan_file(out: &Path, job: &JobPlan) -> Result<String, Error> {
    let path = plan_path(out, &job.name);
    let mut text = serde_json::to_string_pretty(job).unwrap_or_default();
    text.push('\n');
    crate::util::write_atomic_shared(&path, &text).map_err(|source| OutputError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(text)
}

/// The plan document in `out` of run `name`, if there is one.
fn read_plan_doc(out: &Path, name: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(plan_path(out, name)).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_default())
}

/// Whether a journal holds finished work.
fn has_work(state: &State) -> bool {
    !state.blocks.is_empty() || state.merged
}

/// Removes everything in `work` but the lock files (which are never deleted, see
/// [`crate::lock`]).
fn clear_work(work: &Path) {
    let Ok(dir) = std::fs::read_dir(work) else {
        return;
    };
    for e in dir.flatten() {
        let p = e.path();
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else if !e.file_name().to_string_lossy().ends_with(".lock") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn lock_job(job_lock: &Arc<Mutex<Held>>) -> std::sync::MutexGuard<'_, Held> {
    job_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The locks a process holds on run `name` in `out`, and what it did to its plan file.
#[derive(Debug)]
pub struct JobGuard {
    out: PathBuf,
    name: String,
    work: PathBuf,
    process: String,
    job_lock: Arc<Mutex<Held>>,
    _process_lock: Held,
    created_plan: bool,
}

/// What a run that finished no block leaves behind (its plan, if it wrote it, its journals
/// and parts; the lock files stay): removed after a failure or an interrupt, when no block of
/// the run is finished by any process and no other process works on it. Never with locks
/// off (`EOINFER_LOCKS=off`), where other processes cannot be seen.
#[derive(Debug, Clone)]
pub struct Debris {
    out: PathBuf,
    name: String,
    work: PathBuf,
    created_plan: bool,
    job_lock: Arc<Mutex<Held>>,
}

impl Debris {
    /// Removes the debris if the run has no finished block; returns whether it did. Never
    /// waits (it runs in the signal handler too): a busy job lock means "not now".
    #[allow(clippy::must_use_candidate)]
    pub fn remove(&self) -> bool {
        if !crate::lock::enabled() {
            return false;
        }
        let Ok(mut lock) = self.job_lock.try_lock() else {
            return false;
        };
        if !lock.try_upgrade(false).unwrap_or(false) {
            return false;
        }
        let removed = if read_state(&self.work).is_ok_and(|s| has_work(&s)) {
            false
        } else {
            if self.created_plan {
                let _ = std::fs::remove_file(plan_path(&self.out, &self.name));
            }
            clear_work(&self.work);
            true
        };
        let _ = lock.downgrade();
        removed
    }
}

impl JobGuard {
    /// Takes the locks of `process` (`main`, `shard-2-of-8`, `merge`) on run `name` in
    /// `out`: the job lock shared, the process lock exclusive. A second process for the same
    /// job fails at once, naming the first.
    pub fn lock(out: &Path, name: &str, process: &str) -> Result<Self, Error> {
        let work = work_dir(out, name);
        let job_lock = Held::try_take(&work.join("job.lock"), Mode::Shared)?.ok_or_else(|| {
            JobError::InUse {
                what: "start".into(),
                name: name.to_string(),
                dir: out.to_path_buf(),
                holders: "another process is discarding, replacing or merging its work; try again when it is done".into(),
            }
        })?;
        let scope = match process {
            "main" => "the whole run".to_string(),
            "merge" => "merging".to_string(),
            "plan" => "planning".to_string(),
            s => s.replace("shard-", "shard ").replace("-of-", "/"),
        };
        let process_lock = Held::exclusive(
            &work.join(format!("{process}.lock")),
            &format!("{}, name {name}, {scope}", out.display()),
        )?;
        Ok(Self {
            out: out.to_path_buf(),
            name: name.to_string(),
            work,
            process: process.to_string(),
            job_lock: Arc::new(Mutex::new(job_lock)),
            _process_lock: process_lock,
            created_plan: false,
        })
    }

    /// The work folder.
    #[must_use]
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Other processes working on the job (for messages).
    fn others(&self) -> String {
        let mine = format!("{} (", self.process);
        let list: Vec<String> = crate::lock::holders(&self.work)
            .into_iter()
            .filter(|h| !h.starts_with(&mine))
            .collect();
        if list.is_empty() {
            "a process that has not yet taken its own lock".into()
        } else {
            list.join("; ")
        }
    }

    /// Takes the job lock exclusively (no other process works on the job until
    /// [`JobGuard::share`]), or fails naming the other processes.
    pub fn exclusive(&self, what: &str) -> Result<(), Error> {
        if lock_job(&self.job_lock).try_upgrade(true)? {
            return Ok(());
        }
        Err(JobError::InUse {
            what: what.into(),
            name: self.name.clone(),
            dir: self.out.clone(),
            holders: self.others(),
        }
        .into())
    }

    /// Shares the job lock again after [`JobGuard::exclusive`].
    pub fn share(&self) -> Result<(), Error> {
        Ok(lock_job(&self.job_lock).downgrade()?)
    }

    /// Runs `f` with the job lock held exclusively, or fails naming the other processes.
    fn exclusively<R>(&self, what: &str, f: impl FnOnce() -> R) -> Result<R, Error> {
        self.exclusive(what)?;
        let r = f();
        self.share()?;
        Ok(r)
    }

    /// One process at a time settles the plan file (siblings started together over a stale
    /// plan: the first replaces it, the others then find it the same).
    fn settling(&self) -> Result<Held, Error> {
        Ok(Held::wait(&self.work.join("settle.lock"), Mode::Exclusive)?)
    }

    /// `--force`: discards the plan and every finished block of the run (only when no other
    /// process works on it).
    pub fn discard(&mut self) -> Result<(), Error> {
        let _settling = self.settling()?;
        self.exclusively("discard the run's work (--force)", || {
            if self.work.join("parts").exists() || read_state(&self.work).is_ok_and(|s| has_work(&s)) {
                tracing::warn!(dir = %self.work.display(), "--force: discarding the finished work of an earlier run");
            }
            clear_work(&self.work);
            let _ = std::fs::remove_file(plan_path(&self.out, &self.name));
        })
    }

    /// Makes `<out>/<name>.plan.json` hold `job`: writes it when there is none, keeps it
    /// when it is the same plan, replaces it when the run it describes finished no block
    /// (and no other process works on it), and otherwise refuses, naming the input files
    /// that changed or the plan fields that differ.
    pub fn settle_plan(&mut self, job: &JobPlan) -> Result<(), Error> {
        let _settling = self.settling()?;
        match read_plan_doc(&self.out, &self.name) {
            None => {
                write_plan_file(&self.out, job)?;
                self.created_plan = true;
            }
            Some(doc) if doc["plan_hash"].as_str() == Some(job.plan_hash.as_str()) => {}
            Some(doc) => {
                // With locks off, other processes cannot be seen: never replace by itself.
                if !crate::lock::enabled() || has_work(&read_state(&self.work)?) {
                    return Err(self.refusal(job, &doc));
                }
                // The plan of a run that failed or was stopped before its first block:
                // nothing of it is worth keeping (checked again with the job to ourselves).
                let replaced =
                    self.exclusively("replace the plan of an earlier run of this name", || {
                        if read_state(&self.work).is_ok_and(|s| has_work(&s)) {
                            return Ok(false);
                        }
                        clear_work(&self.work);
                        write_plan_file(&self.out, job).map(|_| true)
                    })??;
                if !replaced {
                    return Err(self.refusal(job, &doc));
                }
                self.created_plan = true;
                tracing::info!(
                    plan = %plan_path(&self.out, &self.name).display(),
                    "replaced the plan of an earlier run of this name that finished no block"
                );
            }
        }
        let state = read_state(&self.work)?;
        if let Some(other) = state.hashes.iter().find(|h| **h != job.plan_hash) {
            return Err(JobError::PlanMismatch {
                dir: self.out.clone(),
                name: self.name.clone(),
                journal: other.clone(),
                plan: job.plan_hash.clone(),
                differs: "unknown (the plan file no longer matches the journal)".into(),
            }
            .into());
        }
        Ok(())
    }

    /// The error for a plan that differs from the one of a run with finished work.
    fn refusal(&self, job: &JobPlan, doc: &serde_json::Value) -> Error {
        if let Some(old) = doc.get("input_files").and_then(|v| {
            serde_json::from_value::<Vec<crate::fingerprint::InputFile>>(v.clone()).ok()
        }) {
            let changes = crate::fingerprint::changes(&old, &job.input_files);
            if !changes.is_empty() {
                return JobError::InputChanged {
                    dir: self.out.clone(),
                    name: self.name.clone(),
                    changes: changes.join("; "),
                }
                .into();
            }
        }
        JobError::PlanMismatch {
            dir: self.out.clone(),
            name: self.name.clone(),
            journal: doc["plan_hash"]
                .as_str()
                .unwrap_or("unreadable")
                .to_string(),
            plan: job.plan_hash.clone(),
            differs: job.differences(doc),
        }
        .into()
    }

    /// What this run leaves if it fails before finishing a block.
    #[must_use]
    pub fn debris(&self) -> Debris {
        Debris {
            out: self.out.clone(),
            name: self.name.clone(),
            work: self.work.clone(),
            created_plan: self.created_plan,
            job_lock: Arc::clone(&self.job_lock),
        }
    }
}

/// Bytes free for this user on the file system of `dir`.
#[must_use]
pub fn free_space(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    // Root may also write into the blocks reserved for it.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Some(blocks.saturating_mul(st.f_frsize))
}

/// The disk space the rest of a run needs: the parts of its unfinished blocks (the mean of
/// the finished blocks' parts, or their uncompressed size when none is finished) and the
/// final outputs (about 1.4 x all parts: the COGs with their overviews, while the parts
/// still exist).
#[must_use]
pub fn space_needed(job: &JobPlan, done_parts: &[u64]) -> u64 {
    let blocks = job.blocks.len().max(1) as u64;
    // The class band, and a band per class with probabilities.
    let bands = 1 + if job.probabilities {
        job.model.classes.len()
    } else {
        0
    };
    let per_block = if done_parts.is_empty() {
        let rows = job.grid.height as u64 / blocks + 1;
        rows * job.grid.width as u64 * bands as u64
    } else {
        done_parts.iter().sum::<u64>() / done_parts.len() as u64
    };
    let left = blocks.saturating_sub(done_parts.len() as u64);
    let all_parts = per_block.saturating_mul(blocks);
    per_block
        .saturating_mul(left)
        .saturating_add(all_parts.saturating_mul(14) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_known_for_a_real_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_space(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_space(Path::new("/no/such/folder")), None);
    }
}
