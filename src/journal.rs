//! The journal of a resumable run: an append-only, fsync'd record of finished blocks, one
//! JSON line each, in `<out>/.eoinfer/<name>/journal-<process>-<token>.jsonl` beside the
//! blocks' parts. Every process (a whole run, each shard, each retry, each merge) appends to
//! a file of its own (the token names the host, the process and its start), so processes on
//! other machines never write the same file; readers take the union of all.

use crate::error::JobError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One tile's pixel counts over the rows of one block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TileCount {
    /// Tile id (row-major in the grid).
    pub id: usize,
    /// Whether the model ran on it.
    pub inferred: bool,
    /// Pixels per class inside the block's rows.
    pub counts: Vec<u64>,
    /// Valid pixels inside the block's rows.
    pub valid: u64,
    /// A value map's sum, smallest and largest value inside the block's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<[f64; 3]>,
}

/// A file a block wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartFile {
    /// File name inside the parts folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 of the file.
    pub sha256: String,
}

/// A finished block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockRecord {
    /// Block index.
    pub block: usize,
    /// The plan it belongs to.
    pub plan_hash: String,
    /// Scene rows `[first, end)` it wrote.
    pub rows: (usize, usize),
    /// Scene columns `[first, end)` it wrote (its column panel).
    #[serde(default)]
    pub cols: (usize, usize),
    /// Model runs it took (its tiles and its halo's), counting each tile once.
    pub tiles_run: usize,
    /// Pixels per class.
    pub class_pixels: Vec<u64>,
    /// Counts of every tile touching its rows.
    pub tiles: Vec<TileCount>,
    /// Its raster parts.
    pub parts: Vec<PartFile>,
    /// The partial sums its tiles leave in the rows below it (for resuming at the next
    /// block without running its tiles again).
    #[serde(default)]
    pub carry: Option<PartFile>,
    /// Which process wrote it (`main`, `shard-2-of-8`).
    pub process: String,
    /// When it finished (RFC 3339).
    pub at: String,
}

/// A journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A process started on the plan.
    Start {
        /// Plan hash.
        plan_hash: String,
        /// Which process.
        process: String,
        /// Process id.
        pid: u32,
        /// When.
        at: String,
    },
    /// A block is finished and its parts are on disk.
    Block(BlockRecord),
    /// The final outputs were written.
    Merged {
        /// Plan hash.
        plan_hash: String,
        /// When.
        at: String,
    },
}

/// What all journals of a run say.
#[derive(Debug, Default)]
pub struct State {
    /// Records of finished blocks by index, in the order read (a block run twice, by a
    /// retried shard, has two).
    pub blocks: BTreeMap<usize, Vec<BlockRecord>>,
    /// Plan hashes seen.
    pub hashes: Vec<String>,
    /// Whether a merge finished.
    pub merged: bool,
    /// Journal files read.
    pub files: Vec<PathBuf>,
}

/// The work folder of run `name` in `out`.
#[must_use]
pub fn work_dir(out: &Path, name: &str) -> PathBuf {
    out.join(".eoinfer").join(name)
}

/// The parts folder inside a work folder.
#[must_use]
pub fn parts_dir(work: &Path) -> PathBuf {
    work.join("parts")
}

impl State {
    /// Per block, the latest record whose parts are in `parts` with the sizes and sha256
    /// the journal recorded: the blocks that are really done. A block whose parts are
    /// missing or damaged is not in the map (it runs again).
    #[must_use]
    /// Only blocks `which` accepts are looked at (a shard verifies its own).
    pub fn verified(
        &self,
        parts: &Path,
        which: impl Fn(usize) -> bool,
    ) -> BTreeMap<usize, BlockRecord> {
        let mut out = BTreeMap::new();
        for (b, records) in self.blocks.iter().filter(|(b, _)| which(**b)) {
            let good = records.iter().rev().find(|r| {
                r.parts.iter().all(|p| {
                    let path = parts.join(&p.file);
                    std::fs::metadata(&path).is_ok_and(|m| m.len() == p.bytes)
                        && crate::util::sha256_file(&path).is_ok_and(|s| s == p.sha256)
                })
            });
            if let Some(r) = good {
                out.insert(*b, r.clone());
            } else {
                tracing::warn!(
                    block = b,
                    "the journal records block {b}, but its parts are missing or damaged; it runs again"
                );
            }
        }
        out
    }

    /// Process tags (`shard-2-of-8`) of the journals read.
    #[must_use]
    pub fn processes(&self) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|f| {
                let name = f.file_stem()?.to_string_lossy().into_owned();
                let rest = name.strip_prefix("journal-")?;
                Some(rest.rsplit_once('-').map_or(rest, |(p, _)| p).to_string())
            })
            .collect()
    }
}

/// Reads every journal in `work`. A line that cannot be read (the torn last line of a
/// process killed while appending) is skipped with a warning: its block is run again.
pub fn read_state(work: &Path) -> Result<State, JobError> {
    let mut state = State::default();
    let Ok(dir) = std::fs::read_dir(work) else {
        return Ok(state);
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-"))
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
        })
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| JobError::Journal {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(journal = %path.display(), line = i + 1, "unreadable journal line skipped ({e}); its block runs again");
                    continue;
                }
            };
            let hash = match &entry {
                Entry::Start { plan_hash, .. } | Entry::Merged { plan_hash, .. } => plan_hash,
                Entry::Block(b) => &b.plan_hash,
            };
            if !state.hashes.contains(hash) {
                state.hashes.push(hash.clone());
            }
            match entry {
                Entry::Block(b) => {
                    state.blocks.entry(b.block).or_default().push(b);
                }
                Entry::Merged { .. } => state.merged = true,
                Entry::Start { .. } => {}
            }
        }
        state.files.push(path);
    }
    Ok(state)
}

/// One process's journal file, created with its first entry (a process that finishes no
/// block leaves no journal).
#[derive(Debug)]
pub struct Journal {
    file: Option<std::fs::File>,
    work: PathBuf,
    path: PathBuf,
}

fn werr(path: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
    move |source| JobError::JournalWrite {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// This process's journal `journal-<process>-<token>.jsonl` in `work` (created on the
    /// first [`Journal::append`]).
    #[must_use]
    pub fn open(work: &Path, process: &str) -> Self {
        let path = work.join(format!(
            "journal-{process}-{}.jsonl",
            crate::util::process_token()
        ));
        Self {
            file: None,
            work: work.to_path_buf(),
            path,
        }
    }

    fn file(&mut self) -> Result<&mut std::fs::File, JobError> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.work).map_err(werr(&self.work))?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(werr(&self.path))?;
            // A torn last line must not swallow the next entry.
            let torn = std::fs::read(&self.path)
                .map_err(werr(&self.path))?
                .last()
                .is_some_and(|&b| b != b'\n');
            if torn {
                file.write_all(b"\n").map_err(werr(&self.path))?;
            }
            // Make the new file's name durable too.
            if let Ok(d) = std::fs::File::open(&self.work) {
                let _ = d.sync_all();
            }
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Appends one entry as one line with a single write, then fsyncs it.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JobError> {
        let mut line = serde_json::to_string(entry).map_err(|e| JobError::JournalWrite {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push('\n');
        let path = self.path.clone();
        let file = self.file()?;
        file.write_all(line.as_bytes()).map_err(werr(&path))?;
        file.sync_data().map_err(werr(&path))
    }
}

/// fsyncs a finished file.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// fsyncs a folder (after renames into it), so that a journal line never names a file the
/// disk does not hold.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(block: usize) -> BlockRecord {
        BlockRecord {
            block,
            plan_hash: "h".into(),
            rows: (block * 10, block * 10 + 10),
            cols: (0, 10),
            tiles_run: 2,
            class_pixels: vec![1, 2],
            tiles: vec![TileCount {
                id: 0,
                inferred: true,
                counts: vec![1, 2],
                valid: 3,
                stats: None,
            }],
            parts: Vec::new(),
            carry: None,
            process: "main".into(),
            at: String::new(),
        }
    }

    #[test]
    fn journals_of_several_processes_are_read_together_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Journal::open(dir.path(), "shard-0-of-2");
        a.append(&Entry::Block(record(0))).expect("append");
        let mut b = Journal::open(dir.path(), "shard-1-of-2");
        b.append(&Entry::Block(record(1))).expect("append");
        // A kill in the middle of an append leaves half a line.
        let path = b.path.clone();
        drop((a, b));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"kind\":\"block\",\"blo");
        std::fs::write(&path, text).expect("write");
        // Appending after a torn line (here: the same process, the same file) starts a new line.
        let mut c = Journal::open(dir.path(), "shard-1-of-2");
        c.append(&Entry::Block(record(1))).expect("append");
        let state = read_state(dir.path()).expect("state");
        assert_eq!(state.blocks.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(state.blocks[&1], [record(1), record(1)]);
        assert_eq!(
            state.verified(dir.path(), |_| true).get(&1),
            Some(&record(1))
        );
        assert_eq!(state.hashes, ["h"]);
        assert!(!state.merged);
        let mut processes = state.processes();
        processes.sort();
        assert_eq!(processes, ["shard-0-of-2", "shard-1-of-2"]);
    }
}
