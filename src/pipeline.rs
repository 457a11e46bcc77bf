//! The predict pipeline: reader -> inference -> blend + writers, three threads joined by
//! bounded channels (the bounds are the back-pressure and the memory limit).

use crate::blend::{BandAccumulator, FinishedRows};
use crate::error::{Error, JobError, OutputError};
use crate::grid::{Tile, TileGrid};
use crate::job::JobGuard;
use crate::journal::{
    BlockRecord, Entry, Journal, PartFile, TileCount, parts_dir, read_state, work_dir,
};
use crate::model::Model;
use crate::output::parquet::{TileRecord, write_tiles};
use crate::output::raster::{Part, RasterKind, RasterSink, aux_path, cog_from_parts};
use crate::plan::HeadPlan;
use crate::plan::JobPlan;
use crate::plan::PredictPlan;
use crate::source::TileSource;
use crate::util::{TempFiles, partial_name};
use crossbeam_channel::bounded;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One tile travelling through the pipeline.
struct TileMsg {
    tile: Tile,
    /// Not read nor run: the blend stage takes the output an earlier segment of this run
    /// kept (a column panel's halo tile).
    cached: bool,
    /// Model input, then (after inference) the model's output; empty when skipped.
    data: Vec<f32>,
    /// A time series' Sentinel-1 input (empty without one, and after inference).
    s1: Vec<f32>,
    /// Validity per output value (pixel, or patch for embeddings).
    valid: Vec<bool>,
    inferred: bool,
}

/// Counts of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Counts {
    /// Tiles in the grid that touch the scene.
    pub tiles: usize,
    /// Tiles the model ran on.
    pub tiles_inferred: usize,
    /// Tiles without one valid pixel, not run.
    pub tiles_skipped: usize,
    /// Pixels in the scene grid.
    pub pixels: u64,
    /// Pixels with valid input.
    pub pixels_valid: u64,
    /// Pixels per class name.
    pub class_pixels: BTreeMap<String, u64>,
    /// Polygons per class (with `--vectors`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polygons: Option<crate::output::vectors::PolygonStats>,
    /// Time steps of a time-series model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_steps: Option<usize>,
    /// Patches of the embedding grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patches: Option<u64>,
    /// Patches with valid input (the embeddings written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patches_valid: Option<u64>,
    /// Rows of the embeddings GeoParquet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parquet_rows: Option<usize>,
}

/// Seconds spent per stage (summed within each stage's thread) and in all.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timings {
    /// Reading and normalising tiles.
    pub read: f64,
    /// ONNX Runtime.
    pub inference: f64,
    /// Blending and writing the staging rasters.
    pub blend_write: f64,
    /// COG conversion, Parquet and summary.
    pub finalize: f64,
    /// Wall time of the whole run.
    pub total: f64,
}

/// Paths of a run's outputs.
#[derive(Debug, Clone, Serialize)]
pub struct Outputs {
    /// Class map COG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<PathBuf>,
    /// Probabilities COG, with `--probabilities`.
    pub probabilities: Option<PathBuf>,
    /// Confidence COG, with `--confidence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<PathBuf>,
    /// Tiles GeoParquet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiles: Option<PathBuf>,
    /// Embeddings COG (one pixel per patch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<PathBuf>,
    /// Embeddings GeoParquet (one row per patch) or a classification head's windows
    /// GeoParquet (one row per window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<PathBuf>,
    /// A regression head's value COG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<PathBuf>,
    /// This summary.
    pub summary: PathBuf,
    /// The run's STAC Item (also linked from `catalog.json` in the output folder).
    pub stac_item: PathBuf,
    /// Polygons, with `--vectors`.
    pub vectors: Option<PathBuf>,
    /// The preview PNG (the Item's thumbnail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<PathBuf>,
}

/// The job part of the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// This process's counts (blocks run, found done, model runs).
    #[serde(flatten)]
    pub counts: JobCounts,
    /// Model runs over all processes that wrote the blocks (halos counted per block).
    pub tiles_run_all_processes: usize,
    /// The processes that wrote the blocks (`main`, `shard-0-of-3`, ...).
    pub processes: Vec<String>,
}

/// The run summary: printed with `--json` and saved beside the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// eoinfer's version.
    pub eoinfer_version: String,
    /// GDAL's version.
    pub gdal_version: String,
    /// ONNX Runtime library and build.
    pub onnxruntime: BTreeMap<String, String>,
    /// The model.
    pub model: BTreeMap<String, String>,
    /// The scene grid and its bands.
    pub scene: serde_json::Value,
    /// The scenes (for an AOI mosaic: priority rank, date, cloud cover, CRS).
    pub scenes: serde_json::Value,
    /// A time-series model's steps in date order (scene, date, where the date came from,
    /// bands).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub time_steps: Vec<serde_json::Value>,
    /// The pixel grid (and the patch or window grid of the outputs, where they differ).
    pub grid: serde_json::Value,
    /// Parameters of the run.
    pub parameters: serde_json::Value,
    /// Counts.
    pub counts: Counts,
    /// The resumable job: plan hash, blocks, work done by this process and by all.
    pub job: JobSummary,
    /// Timings in seconds.
    pub timings_s: Timings,
    /// Output files.
    pub outputs: Outputs,
    /// Warnings raised during the run.
    pub warnings: Vec<String>,
}

fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, Error>>,
    stage: &'static str,
) -> Result<T, Error> {
    h.join().map_err(|_| Error::Pipeline(stage))?
}

/// What `predict` did.
#[derive(Debug)]
pub enum Outcome {
    /// The run finished and wrote its outputs.
    Finished(Box<RunSummary>),
    /// The run had finished before: nothing was done.
    AlreadyFinished {
        /// The run's summary.
        summary: PathBuf,
        /// Its plan hash.
        plan_hash: String,
    },
    /// A shard finished its blocks (the outputs come from `eoinfer merge`).
    Shard(ShardReport),
}

/// What one shard (or one resumed process) did, from the journal's point of view.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JobCounts {
    /// The plan hash.
    pub plan_hash: String,
    /// Blocks in the plan.
    pub blocks: usize,
    /// Blocks this process was to run (its shard, or all).
    pub blocks_assigned: usize,
    /// Blocks it found finished in the journal and did not recompute.
    pub blocks_already_done: usize,
    /// Blocks it ran.
    pub blocks_run: usize,
    /// Model runs it took (tiles of its blocks and their halos).
    pub tiles_run: usize,
}

/// The report of a shard run, printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    /// `i/N`.
    pub shard: String,
    /// Block indices of the shard.
    pub block_range: std::ops::Range<usize>,
    /// Journal counts.
    pub job: JobCounts,
    /// Seconds per stage.
    pub timings_s: Timings,
}

/// Outcome of running blocks in this process.
struct BlocksRun {
    run: usize,
    tiles_run: usize,
    read: Duration,
    inference: Duration,
    blend_write: Duration,
}

/// The output raster of the run's head: its size and grid, and how tile-grid units map to
/// its rows (one value per pixel, or per patch for embeddings).
#[derive(Debug, Clone, Copy)]
struct OutShape {
    width: usize,
    height: usize,
    gt: [f64; 6],
    /// Output rows per tile-grid unit.
    factor: usize,
    /// Tile edge in output values.
    tile: usize,
    /// Output channels (classes, the embedding size, one value).
    channels: usize,
    /// Float32 means are written (embeddings, values, window scores) rather than a class map.
    means: bool,
    /// Pixels per output value (for the AOI mask).
    scale: usize,
}

impl OutShape {
    fn of(plan: &PredictPlan) -> Self {
        let (width, height, gt) = plan.job.out_grid();
        let factor = plan.job.out_factor();
        let (channels, means) = match plan.job.head {
            HeadPlan::Classes => (plan.model.blend_channels(), false),
            HeadPlan::Embeddings { dim, .. } => (dim, true),
            HeadPlan::Regression { .. } => (1, true),
            HeadPlan::Classification => (plan.model.classes.len(), true),
        };
        let unit = plan.job.unit.max(1);
        Self {
            width,
            height,
            gt,
            factor,
            tile: plan.model.tile_size / unit * factor,
            channels,
            means,
            scale: unit / factor,
        }
    }

    /// Output row of a tile-grid row (clamped to the raster).
    fn row(&self, units: usize) -> usize {
        (units * self.factor).min(self.height)
    }

    /// Output column of a tile-grid column (clamped to the raster).
    fn col(&self, units: usize) -> usize {
        (units * self.factor).min(self.width)
    }

    /// A block with its rows and columns in output rows and columns.
    fn block(&self, b: crate::grid::Block) -> crate::grid::Block {
        crate::grid::Block {
            rows: (self.row(b.rows.0), self.row(b.rows.1)),
            cols: (self.col(b.cols.0), self.col(b.cols.1)),
            ..b
        }
    }

    /// The blending weights of one tile.
    fn weights(&self, grid: &TileGrid) -> Vec<f32> {
        if self.factor == 1 {
            grid.weights()
        } else {
            crate::grid::sine_weights(self.tile)
        }
    }
}

/// A block being written.
struct OpenBlock {
    block: crate::grid::Block,
    out: BlockOut,
    /// Final names of its part files, in the order of [`BlockOut::finish`].
    paths: Vec<PathBuf>,
    written: usize,
    /// Pixels per class (embeddings: one count, the valid patches).
    class_pixels: Vec<u64>,
    records: Vec<TileRecord>,
    tiles_run: usize,
    /// The AOI mask of the block's rows (1 inside), rasterised once with the block's top
    /// as origin so every process masks the same pixels.
    mask: Option<Vec<u8>>,
    /// Its files until the journal records them: removed if the run fails or is stopped.
    temps: TempFiles,
}

/// The part rasters of a block, per head.
#[allow(clippy::large_enum_variant)] // a few blocks are open at a time
enum BlockOut {
    Classes {
        classes: RasterSink,
        probs: Option<RasterSink>,
        conf: Option<RasterSink>,
    },
    Embeddings(RasterSink),
}

impl BlockOut {
    /// Closes, fsyncs and verifies every part.
    fn finish(self) -> Result<(), Error> {
        match self {
            BlockOut::Classes {
                classes,
                probs,
                conf,
            } => {
                classes.finish_part()?;
                if let Some(p) = probs {
                    p.finish_part()?;
                }
                if let Some(c) = conf {
                    c.finish_part()?;
                }
            }
            BlockOut::Embeddings(sink) => sink.finish_part()?,
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::job::{plan_path, write_plan_file};

/// Runs `predict` as planned with an opened model: runs the blocks of the plan (or of this
/// process's shard) that the journal does not hold yet, journals each one, then (unless
/// sharded) merges every block's parts into the final outputs. The job is locked for this
/// process; a failure leaves no unfinished part, and no plan or work folder when no block
/// of the run is finished.
pub fn predict(plan: &PredictPlan, model: Model) -> Result<Outcome, Error> {
    let t0 = Instant::now();
    let process = plan.shard.map_or_else(|| "main".to_string(), |s| s.tag());
    let mut guard = JobGuard::lock(&plan.out_dir, &plan.name, &process)?;
    if plan.force {
        guard.discard()?;
    }
    guard.settle_plan(&plan.job)?;
    crate::interrupt::set_debris(Some(guard.debris()));
    let result = run_job(plan, model, &guard, &process, t0);
    crate::interrupt::set_job(None);
    crate::interrupt::set_debris(None);
    result.map_err(|e| {
        let e = disk_full(e, &plan.job, &plan.out_dir, guard.work());
        if guard.debris().remove() {
            tracing::debug!(
                "no block of the run is finished: its plan and work folder are removed"
            );
        }
        e
    })
}
/// The I/O error behind `e` that says the disk (or a quota) is full, if there is one.
fn no_space(e: &Error) -> Option<(PathBuf, String)> {
    match e {
        Error::Output(
            OutputError::Io { path, source } | OutputError::NotWritable { path, source },
        )
        | Error::Job(JobError::JournalWrite { path, source })
            if crate::util::is_no_space(source) =>
        {
            Some((path.clone(), source.to_string()))
        }
        _ => None,
    }
}

/// Turns an error caused by a full disk into [`JobError::DiskFull`], with what is done and
/// an estimate of the space the rest of the run needs. A write error counts as a full disk
/// when it says so (`ENOSPC`, a quota), or when the disk now has less free space than the
/// rest of the run needs (GDAL removes its own temporary files before it reports, and its
/// messages do not always name the cause: `TIFFRewriteDirectory: Error fetching directory
/// count`).
fn disk_full(e: Error, job: &JobPlan, out: &Path, work: &Path) -> Error {
    let write_error = match &e {
        Error::Output(OutputError::Gdal { path, message }) => Some((path.clone(), message.clone())),
        Error::Output(OutputError::Io { path, source }) => Some((path.clone(), source.to_string())),
        Error::Output(OutputError::Parquet { path, message }) => {
            Some((path.clone(), message.clone()))
        }
        _ => None,
    };
    let explicit = no_space(&e);
    if explicit.is_none() && write_error.is_none() {
        return e;
    }
    let state = read_state(work).unwrap_or_default();
    let done = state.verified(&parts_dir(work), |_| true);
    let sizes: Vec<u64> = done
        .values()
        .map(|r| r.parts.iter().chain(&r.carry).map(|p| p.bytes).sum())
        .collect();
    let needed = crate::job::space_needed(job, &sizes);
    let free = crate::job::free_space(out);
    let Some((path, message)) =
        explicit.or_else(|| write_error.filter(|_| free.is_some_and(|f| f < needed)))
    else {
        return e;
    };
    JobError::DiskFull {
        dir: out.to_path_buf(),
        path,
        message,
        state: format!(
            "{} of {} blocks are finished and kept; the rest of the run needs about {} more ({} free now, after removing this run's unfinished files)",
            done.len(),
            job.blocks.len(),
            crate::limits::human(needed),
            free.map_or_else(|| "unknown".into(), crate::limits::human)
        ),
    }
    .into()
}

/// The body of [`predict`] once the job is locked and its plan settled.
fn run_job(
    plan: &PredictPlan,
    model: Model,
    guard: &JobGuard,
    process: &str,
    t0: Instant,
) -> Result<Outcome, Error> {
    let out = &plan.out_dir;
    let work = guard.work().to_path_buf();
    let state = read_state(&work)?;
    let range = plan.shard.map_or(0..plan.blocks.len(), |s| {
        crate::grid::shard_blocks(plan.blocks.len(), s.index, s.count)
    });
    let final_summary = out.join(format!("{}.summary.json", plan.name));
    let mut counts = JobCounts {
        plan_hash: plan.job.plan_hash.clone(),
        blocks: plan.blocks.len(),
        blocks_assigned: range.len(),
        ..JobCounts::default()
    };
    if state.merged && plan.shard.is_none() {
        let main_output = out.join(match plan.job.head {
            HeadPlan::Classes | HeadPlan::Classification => format!("{}.classes.tif", plan.name),
            HeadPlan::Embeddings { .. } => format!("{}.embeddings.tif", plan.name),
            HeadPlan::Regression { .. } => format!("{}.values.tif", plan.name),
        });
        for f in [&main_output, &final_summary] {
            if !f.exists() {
                return Err(JobError::FinishedButMissing {
                    dir: out.clone(),
                    name: plan.name.clone(),
                    missing: f.clone(),
                }
                .into());
            }
        }
        return Ok(Outcome::AlreadyFinished {
            summary: final_summary,
            plan_hash: plan.job.plan_hash.clone(),
        });
    }
    let parts = parts_dir(&work);
    // Only this process's blocks (and the block above them, for its carry) are verified.
    let done = if state.merged {
        BTreeMap::new()
    } else {
        state.verified(&parts, |b| b + 1 >= range.start && b < range.end)
    };
    let todo: Vec<crate::grid::Block> = plan.blocks[range.clone()]
        .iter()
        .filter(|b| !done.contains_key(&b.index))
        .copied()
        .collect();
    counts.blocks_already_done = range.len() - todo.len();
    crate::interrupt::set_job(Some(crate::interrupt::JobStatus {
        blocks: range.len(),
        done: counts.blocks_already_done,
        scope: plan
            .shard
            .map(|s| format!(" of shard {}/{}", s.index, s.count))
            .unwrap_or_default(),
    }));
    let mut journal = Journal::open(&work, process);
    if counts.blocks_already_done > 0 {
        tracing::info!(
            done = counts.blocks_already_done,
            left = todo.len(),
            "resuming: blocks finished before are not recomputed"
        );
    }
    if !todo.is_empty() {
        std::fs::create_dir_all(&parts).map_err(io_err(&parts))?;
    }
    let run = run_blocks(plan, model, &todo, &done, &parts, &mut journal, process)?;
    counts.blocks_run = run.run;
    counts.tiles_run = run.tiles_run;
    let timings = Timings {
        read: run.read.as_secs_f64(),
        inference: run.inference.as_secs_f64(),
        blend_write: run.blend_write.as_secs_f64(),
        finalize: 0.0,
        total: t0.elapsed().as_secs_f64(),
    };
    if let Some(s) = plan.shard {
        return Ok(Outcome::Shard(ShardReport {
            shard: format!("{}/{}", s.index, s.count),
            block_range: range,
            job: counts,
            timings_s: timings,
        }));
    }
    let runtime = BTreeMap::from([
        ("library".to_string(), plan.ort_lib.display().to_string()),
        ("build".to_string(), crate::model::runtime::runtime_info()),
    ]);
    let parameters = serde_json::json!({
        "batch_size": plan.batch_size,
        "threads": plan.threads,
        "device": plan.device.to_string(),
        "memory_limit": plan.memory.to_string(),
    });
    // The merge removes the parts: no other process may work on the job meanwhile.
    guard.exclusive("merge the run's blocks")?;
    let summary = merge(
        &plan.job,
        out,
        MergeContext {
            runtime,
            parameters,
            job: counts,
            timings,
            warnings: plan.warnings.clone(),
            t0,
        },
    )?;
    Ok(Outcome::Finished(Box::new(summary)))
}

/// Runs `blocks` (in order) through reader -> inference -> blend, writing each block's parts
/// and journalling it once they are on disk. Runs of consecutive blocks share their
/// accumulator; the first block of each run also runs its halo.
fn run_blocks(
    plan: &PredictPlan,
    model: Model,
    blocks: &[crate::grid::Block],
    done: &BTreeMap<usize, BlockRecord>,
    parts: &Path,
    journal: &mut Journal,
    process: &str,
) -> Result<BlocksRun, Error> {
    if blocks.is_empty() {
        return Ok(BlocksRun {
            run: 0,
            tiles_run: 0,
            read: Duration::ZERO,
            inference: Duration::ZERO,
            blend_write: Duration::ZERO,
        });
    }
    let grid = plan.job.tile_grid()?;
    let segments = segments_of(blocks, done, parts);
    let sequence = sequence_of(plan, &grid, &segments);
    let progress = progress_bar(sequence.steps.len());
    crate::source::size_cache(plan);
    let batch = plan.batch_size.max(1);
    let (tx_read, rx_read) = bounded::<(usize, TileMsg)>(batch * 2);
    let (tx_inf, rx_inf) = bounded::<(usize, TileMsg)>(batch * 2);
    let sampler = input_sampler(plan).map(std::sync::Mutex::new);
    let mut sink = BlockSink {
        journal,
        process,
        preview: sampler.as_ref().map(|m| {
            let work = parts.parent().unwrap_or(parts);
            (
                m,
                crate::output::preview::input_dir(work, &plan.job.plan_hash),
            )
        }),
        blocks: 0,
        tiles: 0,
    };
    let (read, inference, blend_write) =
        std::thread::scope(|s| -> Result<(Duration, Duration, Duration), Error> {
            let (seq_ref, segs_ref) = (&sequence, &segments);
            let sampler = sampler.as_ref();
            let reader = s.spawn(move || read_stage(plan, seq_ref, segs_ref, sampler, &tx_read));
            let pixel = plan
                .model
                .pixel
                .map(|m| (m, (plan.job.grid.width, plan.job.grid.height)));
            let infer = s.spawn(move || infer_stage(model, batch, pixel, &rx_read, &tx_inf));
            let blend = blend_stage(
                plan, &grid, &segments, &sequence, parts, &rx_inf, &mut sink, &progress,
            );
            // On a blend error, dropping the receiver stops the upstream stages.
            drop(rx_inf);
            let infer_time = join(infer, "inference");
            let read_time = join(reader, "reader");
            Ok((read_time?, infer_time?, blend?))
        })?;
    progress.finish_and_clear();
    Ok(BlocksRun {
        run: sink.blocks,
        tiles_run: sink.tiles,
        read,
        inference,
        blend_write,
    })
}

/// A run of consecutive blocks, with the carry the block above left in the journal.
type SegmentPlan = (Vec<crate::grid::Block>, Option<Vec<u8>>);

/// Splits `blocks` into runs of consecutive blocks of one column panel; each starts from
/// the carry of the block above when the journal holds a verified one, else from its halo.
fn segments_of(
    blocks: &[crate::grid::Block],
    done: &BTreeMap<usize, BlockRecord>,
    parts: &Path,
) -> Vec<SegmentPlan> {
    let mut runs: Vec<Vec<crate::grid::Block>> = Vec::new();
    for b in blocks {
        match runs.last_mut() {
            Some(seg)
                if seg
                    .last()
                    .is_some_and(|l| l.index + 1 == b.index && l.panel == b.panel) =>
            {
                seg.push(*b);
            }
            _ => runs.push(vec![*b]),
        }
    }
    runs.into_iter()
        .map(|seg| {
            // Blocks are numbered panel by panel: the one before a block that is not at
            // the top of its panel is the block above it.
            let carry = (seg[0].rows.0 > 0)
                .then(|| seg[0].index - 1)
                .and_then(|above| done.get(&above))
                .and_then(|r| r.carry.as_ref())
                .and_then(|c| {
                    let bytes = std::fs::read(parts.join(&c.file)).ok()?;
                    (crate::util::sha256_hex(&bytes) == c.sha256).then_some(bytes)
                });
            (seg, carry)
        })
        .collect()
}

/// One tile of the processing sequence.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Its segment.
    seg: usize,
    tile: Tile,
    /// Taken from the output an earlier segment of this run kept, not read nor run again.
    cached: bool,
}

/// The tiles of a run's segments in processing order.
struct Sequence {
    steps: Vec<Step>,
    /// Tiles per segment.
    expected: Vec<usize>,
    /// Tiles whose output later segments take (a column panel's halo, run with the panel to
    /// its left): the output columns they take, and how many segments take them.
    keep: HashMap<usize, ((usize, usize), usize)>,
}

/// The tiles of every segment in processing order: each segment's tile rows (from its halo
/// unless it starts from a carry) and tile columns (from its panel's halo). A halo tile an
/// earlier segment of this run already ran is taken from the output that segment kept, so
/// one process runs every tile once; a shard or resumed run starting at the panel runs it.
/// Either way the same values are blended in the same order.
fn sequence_of(plan: &PredictPlan, grid: &TileGrid, segments: &[SegmentPlan]) -> Sequence {
    let shape = OutShape::of(plan);
    let mut steps: Vec<Step> = Vec::new();
    let mut expected = vec![0_usize; segments.len()];
    let mut keep: HashMap<usize, ((usize, usize), usize)> = HashMap::new();
    // Tiles run so far that a panel to the right may take as its halo.
    let mut ran: HashSet<usize> = HashSet::new();
    for (k, (seg, carry)) in segments.iter().enumerate() {
        let first_row = if carry.is_some() {
            seg[0].tile_rows.0
        } else {
            grid.halo_start(seg[0].tile_rows.0)
        };
        let end_row = seg[seg.len() - 1].tile_rows.1;
        let (c0, c1) = seg[0].tile_cols;
        let first_col = grid.halo_col_start(c0);
        let edge_col = grid.halo_col_start(c1);
        let own = (shape.col(seg[0].cols.0), shape.col(seg[0].cols.1));
        let before = steps.len();
        for t in plan
            .tiles
            .iter()
            .filter(|t| (first_row..end_row).contains(&t.row) && (first_col..c1).contains(&t.col))
        {
            let cached = t.col < c0 && ran.contains(&t.id);
            if cached {
                let e = keep.entry(t.id).or_insert((own, 0));
                e.0 = (e.0.0.min(own.0), e.0.1.max(own.1));
                e.1 += 1;
            } else if t.col >= edge_col {
                ran.insert(t.id);
            }
            steps.push(Step {
                seg: k,
                tile: *t,
                cached,
            });
        }
        expected[k] = steps.len() - before;
    }
    Sequence {
        steps,
        expected,
        keep,
    }
}

/// The scene columns (pixels) the tiles of `steps` read, reflected into the scene.
fn read_span(steps: &[Step], unit: usize, width: usize) -> Option<(usize, usize)> {
    let mut span: Option<(usize, usize)> = None;
    for s in steps.iter().filter(|s| !s.cached) {
        let w = s.tile.window.scaled(unit);
        let (lo, hi) = if w.x >= 0 && w.x as usize + w.width <= width {
            (w.x as usize, w.x as usize + w.width)
        } else {
            (0..w.width)
                .map(|i| crate::grid::reflect(w.x + i as i64, width))
                .fold((usize::MAX, 0), |(a, b), x| (a.min(x), b.max(x + 1)))
        };
        span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    span
}

fn progress_bar(len: usize) -> indicatif::ProgressBar {
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} tiles {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

/// The reader stage: every tile of `sequence`, read and normalised, in order. Each segment
/// reads only the columns of its panel; GDAL's cached blocks of a finished panel are
/// dropped.
fn read_stage(
    plan: &PredictPlan,
    sequence: &Sequence,
    segments: &[SegmentPlan],
    sampler: Option<&std::sync::Mutex<crate::output::preview::InputSampler>>,
    tx: &crossbeam_channel::Sender<(usize, TileMsg)>,
) -> Result<Duration, Error> {
    let mut source = TileSource::open(plan)?;
    let mut busy = Duration::ZERO;
    let steps = &sequence.steps;
    let mut panel = None;
    for (
        i,
        &Step {
            seg,
            tile: t,
            cached,
        },
    ) in steps.iter().enumerate()
    {
        let start = Instant::now();
        if i == 0 || steps[i - 1].seg != seg {
            let n = steps[i..].iter().take_while(|s| s.seg == seg).count();
            let this = segments[seg].0[0].panel;
            if panel.is_some_and(|p| p != this) {
                crate::source::drop_cached_blocks();
            }
            panel = Some(this);
            if let Some((lo, hi)) = read_span(&steps[i..i + n], plan.job.unit, plan.stack.width) {
                source.set_columns(lo, hi);
            }
        }
        let input = if cached {
            crate::source::TileInput::default()
        } else {
            source.read(t, sampler)?
        };
        busy += start.elapsed();
        let msg = TileMsg {
            tile: t,
            cached,
            data: input.data,
            s1: input.s1,
            valid: input.valid,
            inferred: input.inferred,
        };
        if tx.send((seg, msg)).is_err() {
            break;
        }
    }
    Ok(busy)
}

/// The error for a tile whose model output is not a number: never a class.
fn non_finite(model: &Model, tile: &crate::grid::Tile, value: f32) -> crate::error::ModelError {
    let w = &tile.window;
    crate::error::ModelError::NonFinite {
        path: model.onnx().to_path_buf(),
        tile: format!(
            "tile {} (row {}, column {}; pixels x {}..{}, y {}..{})",
            tile.id,
            tile.row,
            tile.col,
            w.x,
            w.x + w.width as i64,
            w.y,
            w.y + w.height as i64
        ),
        value: value.to_string(),
    }
}

/// The inference stage: batches of tiles with valid pixels through the model; the model's
/// output replaces each tile's input (a per-pixel model's probabilities: with the mask that
/// `pixel`, its post-processing and the scene's size, makes of them, and only the pixels
/// whose mask the tile knows exactly stay valid). Tiles pass on in order.
fn infer_stage(
    mut model: Model,
    batch: usize,
    pixel: Option<(crate::postprocess::MaskSpec, (usize, usize))>,
    rx: &crossbeam_channel::Receiver<(usize, TileMsg)>,
    tx: &crossbeam_channel::Sender<(usize, TileMsg)>,
) -> Result<Duration, Error> {
    let mut busy = Duration::ZERO;
    let mut pending: Vec<(usize, TileMsg)> = Vec::with_capacity(batch * 2);
    let mut input = Vec::new();
    let mut input_s1 = Vec::new();
    let mut run = |pending: &mut Vec<(usize, TileMsg)>| -> Result<bool, Error> {
        let start = Instant::now();
        input.clear();
        input_s1.clear();
        let idx: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].1.inferred)
            .collect();
        if !idx.is_empty() {
            for &i in &idx {
                input.extend_from_slice(&pending[i].1.data);
                input_s1.extend_from_slice(&pending[i].1.s1);
            }
            let out = model.run(&input, &input_s1, idx.len())?;
            let per = out.len() / idx.len();
            for (k, &i) in idx.iter().enumerate() {
                let values = &out[k * per..(k + 1) * per];
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    return Err(non_finite(&model, &pending[i].1.tile, *bad).into());
                }
                if let Some((spec, scene)) = &pixel {
                    let msg = &mut pending[i].1;
                    let (channels, known) = crate::postprocess::pixel_tile(
                        values,
                        &msg.valid,
                        msg.tile.window,
                        *scene,
                        spec,
                    );
                    msg.data = channels;
                    msg.valid = known;
                    msg.s1 = Vec::new();
                    continue;
                }
                pending[i].1.data = values.to_vec();
                pending[i].1.s1 = Vec::new();
            }
        }
        busy += start.elapsed();
        for m in pending.drain(..) {
            if tx.send(m).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    };
    for msg in rx {
        pending.push(msg);
        if pending.iter().filter(|m| m.1.inferred).count() == batch && !run(&mut pending)? {
            return Ok(busy);
        }
    }
    run(&mut pending)?;
    Ok(busy)
}

/// The blend stage (this thread): tiles into their segment's accumulator, finished rows to
/// the blocks that own them, blocks closed and journalled.
#[allow(clippy::too_many_arguments)]
fn blend_stage(
    plan: &PredictPlan,
    grid: &TileGrid,
    segments: &[SegmentPlan],
    sequence: &Sequence,
    parts: &Path,
    rx: &crossbeam_channel::Receiver<(usize, TileMsg)>,
    sink: &mut BlockSink<'_>,
    progress: &indicatif::ProgressBar,
) -> Result<Duration, Error> {
    let shape = OutShape::of(plan);
    let weights = shape.weights(grid);
    let polygon = plan
        .aoi
        .as_ref()
        .map(crate::aoi::Aoi::geometry)
        .transpose()?;
    let poly = polygon.as_ref();
    let mut busy = Duration::ZERO;
    let mut current: Option<Segment> = None;
    let open = |k: usize| {
        Segment::new(
            plan,
            shape,
            grid,
            k,
            &segments[k].0,
            segments[k].1.as_deref(),
            parts,
        )
    };
    // A segment is finished (and its blocks journalled) only once every tile it expects has
    // arrived: when the reader or the model fails, the channel closes early and nothing
    // incomplete may pass for done.
    let incomplete = || Error::Pipeline("reader or inference (a block was left unfinished)");
    let expected = &sequence.expected;
    let mut kept = Kept::default();
    let mut next = 0;
    let mut received = 0;
    for (k, msg) in rx {
        let start = Instant::now();
        if current.as_ref().is_none_or(|c| c.index != k) {
            if let Some(c) = current.take() {
                if received != expected[c.index] {
                    return Err(incomplete());
                }
                c.finish(plan, poly, sink)?;
            }
            // Segments without a single tile (an AOI gap) are nodata.
            for j in next..k {
                open(j)?.finish(plan, poly, sink)?;
            }
            current = Some(open(k)?);
            next = k + 1;
            received = 0;
        }
        received += 1;
        let seg = current.as_mut().expect("a segment is open");
        if msg.cached {
            let out = kept.take(msg.tile.id)?;
            seg.add(plan, grid, poly, msg.tile, &out.contribution(false), sink)?;
        } else {
            let window = msg.tile.window.scaled(shape.factor);
            let out = Contribution {
                window,
                data: &msg.data,
                weights: &weights,
                valid: &msg.valid,
                inferred: msg.inferred,
                ran: msg.inferred,
            };
            seg.add(plan, grid, poly, msg.tile, &out, sink)?;
            if let Some(&(cols, takers)) = sequence.keep.get(&msg.tile.id) {
                kept.put(msg.tile.id, &out, cols, shape.channels, takers);
            }
        }
        progress.inc(1);
        busy += start.elapsed();
    }
    let start = Instant::now();
    if let Some(c) = current.take() {
        if received != expected[c.index] {
            return Err(incomplete());
        }
        c.finish(plan, poly, sink)?;
    }
    for (j, &want) in expected.iter().enumerate().skip(next) {
        if want > 0 {
            return Err(incomplete());
        }
        open(j)?.finish(plan, poly, sink)?;
    }
    Ok(busy + start.elapsed())
}

/// Where finished blocks go: the journal, and what was done.
struct BlockSink<'a> {
    journal: &'a mut Journal,
    process: &'a str,
    /// The input's samples for the preview and the folder each block's are saved in.
    preview: Option<(
        &'a std::sync::Mutex<crate::output::preview::InputSampler>,
        PathBuf,
    )>,
    blocks: usize,
    tiles: usize,
}

/// What one tile adds to the accumulator: its output on `window` (output raster
/// coordinates), channel-major, with its blending weights and validity.
struct Contribution<'a> {
    window: crate::grid::Window,
    data: &'a [f32],
    weights: &'a [f32],
    valid: &'a [bool],
    /// The model ran on it (else it adds nothing).
    inferred: bool,
    /// It was run by this process for this segment (a model run to count).
    ran: bool,
}

/// A tile's output kept for the column panels to its right: the columns they take.
struct KeptTile {
    window: crate::grid::Window,
    data: Vec<f32>,
    weights: Vec<f32>,
    valid: Vec<bool>,
    inferred: bool,
    /// Segments still to take it.
    takers: usize,
}

impl KeptTile {
    fn contribution(&self, ran: bool) -> Contribution<'_> {
        Contribution {
            window: self.window,
            data: &self.data,
            weights: &self.weights,
            valid: &self.valid,
            inferred: self.inferred,
            ran,
        }
    }
}

/// Tile outputs kept for later segments, by tile id.
#[derive(Default)]
struct Kept(HashMap<usize, KeptTile>);

impl Kept {
    /// Keeps output columns `cols` of `c` for `takers` later segments.
    fn put(
        &mut self,
        id: usize,
        c: &Contribution<'_>,
        cols: (usize, usize),
        channels: usize,
        takers: usize,
    ) {
        let w = c.window;
        let x0 = (cols.0 as i64).max(w.x);
        let x1 = (cols.1 as i64).min(w.x + w.width as i64).max(x0);
        let (a, n) = ((x0 - w.x) as usize, (x1 - x0) as usize);
        let crop = |v: &[f32], planes: usize| -> Vec<f32> {
            if v.is_empty() {
                return Vec::new();
            }
            let plane = w.width * w.height;
            (0..planes)
                .flat_map(|p| (0..w.height).map(move |y| p * plane + y * w.width + a))
                .flat_map(|s| v[s..s + n].iter().copied())
                .collect()
        };
        let valid = if c.valid.is_empty() {
            Vec::new()
        } else {
            (0..w.height)
                .flat_map(|y| {
                    c.valid[y * w.width + a..y * w.width + a + n]
                        .iter()
                        .copied()
                })
                .collect()
        };
        self.0.insert(
            id,
            KeptTile {
                window: crate::grid::Window {
                    x: x0,
                    width: n,
                    ..w
                },
                data: if c.inferred {
                    crop(c.data, channels)
                } else {
                    Vec::new()
                },
                weights: crop(c.weights, 1),
                valid,
                inferred: c.inferred,
                takers,
            },
        );
    }

    /// The kept output of tile `id` (dropped once its last taker has it).
    fn take(&mut self, id: usize) -> Result<KeptTile, Error> {
        let missing = || Error::Pipeline("a column panel's halo tile was not kept");
        let t = self.0.get_mut(&id).ok_or_else(missing)?;
        t.takers -= 1;
        if t.takers > 0 {
            return Ok(KeptTile {
                data: t.data.clone(),
                weights: t.weights.clone(),
                valid: t.valid.clone(),
                ..*t
            });
        }
        self.0.remove(&id).ok_or_else(missing)
    }
}

/// Finished rows of the accumulator, per head.
enum Flushed {
    Classes(FinishedRows),
    Means(crate::blend::FinishedMeans),
}

impl Flushed {
    fn y(&self) -> usize {
        match self {
            Flushed::Classes(f) => f.y,
            Flushed::Means(f) => f.y,
        }
    }

    fn rows(&self) -> usize {
        match self {
            Flushed::Classes(f) => f.rows,
            Flushed::Means(f) => f.rows,
        }
    }
}

/// A run of consecutive blocks of one column panel being blended: one accumulator over the
/// panel's columns, the rows above the first block (the halo's) are dropped, finished rows
/// go to the block that owns them, and each block is closed and journalled as soon as its
/// last row is written. Rows and columns here are the output raster's.
struct Segment {
    index: usize,
    shape: OutShape,
    /// Output columns `[first, end)` of the panel: the accumulator's and the parts'.
    cols: (usize, usize),
    acc: BandAccumulator,
    /// The blocks, their rows in output rows.
    blocks: Vec<crate::grid::Block>,
    open: Vec<Option<OpenBlock>>,
    finished: Vec<bool>,
    row: Option<usize>,
    /// Rows above this are the halo's: blended, then dropped.
    keep_from: usize,
    parts: PathBuf,
}

impl Segment {
    fn new(
        plan: &PredictPlan,
        shape: OutShape,
        grid: &TileGrid,
        index: usize,
        blocks: &[crate::grid::Block],
        carry: Option<&[u8]>,
        parts: &Path,
    ) -> Result<Self, Error> {
        let blocks: Vec<crate::grid::Block> = blocks.iter().map(|b| shape.block(*b)).collect();
        let cols = blocks[0].cols;
        let mut acc = BandAccumulator::new(
            cols.1 - cols.0,
            shape.height,
            shape.channels,
            shape.tile,
            plan.probabilities && !shape.means,
        )
        .with_decisions(plan.model.classes.len(), plan.model.pixel.is_some())
        .with_confidence(plan.confidence && !shape.means);
        let restored = carry.is_some_and(|c| acc.restore(c)) && acc.base() == blocks[0].rows.0;
        if !restored {
            if carry.is_some() {
                return Err(Error::Pipeline("restoring the carry of the block above"));
            }
            acc = acc.starting_at(shape.row(grid.row_top(grid.halo_start(blocks[0].tile_rows.0))));
        }
        Ok(Self {
            index,
            shape,
            cols,
            acc,
            keep_from: blocks[0].rows.0,
            open: blocks.iter().map(|_| None).collect(),
            finished: vec![false; blocks.len()],
            blocks,
            row: None,
            parts: parts.to_path_buf(),
        })
    }

    /// Flushes every row above `target`, in steps the accumulator holds that never cross
    /// a block's end (so a block's carry is taken exactly at its last row).
    fn flush_to(
        &mut self,
        plan: &PredictPlan,
        target: usize,
        polygon: Option<&gdal::vector::Geometry>,
        sink: &mut BlockSink<'_>,
    ) -> Result<(), Error> {
        let cap = self.shape.tile.max(1);
        let target = target.min(self.shape.height);
        while self.acc.base() < target {
            let base = self.acc.base();
            let block_end = self
                .blocks
                .iter()
                .map(|b| b.rows.1)
                .find(|&e| e > base)
                .unwrap_or(target);
            let to = target.min(base + cap).min(block_end);
            let f = if self.shape.means {
                self.acc.flush_means_until(to).map(Flushed::Means)
            } else {
                self.acc.flush_until(to).map(Flushed::Classes)
            };
            if let Some(f) = f {
                self.route(plan, &f, polygon, sink)?;
            }
        }
        Ok(())
    }

    /// Blends tile `tile`'s contribution `c` (flushing the rows above its tile row first).
    fn add(
        &mut self,
        plan: &PredictPlan,
        grid: &TileGrid,
        polygon: Option<&gdal::vector::Geometry>,
        tile: Tile,
        c: &Contribution<'_>,
        sink: &mut BlockSink<'_>,
    ) -> Result<(), Error> {
        if self.row != Some(tile.row) {
            // Rows above this tile row's top are final.
            self.flush_to(plan, self.shape.row(grid.row_top(tile.row)), polygon, sink)?;
            self.row = Some(tile.row);
        }
        let w = c.window;
        if c.inferred {
            let local = crate::grid::Window {
                x: w.x - self.cols.0 as i64,
                ..w
            };
            self.acc.add(local, c.data, c.weights, c.valid);
        }
        // Count the model run against the block that owns the tile row (halo: the first).
        let owner = self
            .blocks
            .iter()
            .position(|b| tile.row < b.tile_rows.1)
            .unwrap_or(0);
        let ob = self.open_block(plan, owner, polygon)?;
        if c.ran {
            ob.tiles_run += 1;
        }
        for i in 0..self.blocks.len() {
            let b = self.blocks[i];
            if !self.finished[i] && w.y < b.rows.1 as i64 && w.y + w.height as i64 > b.rows.0 as i64
            {
                let ob = self.open_block(plan, i, polygon)?;
                if let Some(r) = ob.records.iter_mut().find(|r| r.id == tile.id) {
                    r.inferred = c.inferred;
                }
            }
        }
        Ok(())
    }

    /// The part rasters of block `b` and their final names.
    fn create_parts(
        &self,
        plan: &PredictPlan,
        b: crate::grid::Block,
        temps: &mut TempFiles,
    ) -> Result<(BlockOut, Vec<PathBuf>), Error> {
        let shape = &self.shape;
        let gt = shape.gt;
        let part_gt = [
            gt[0] + b.cols.0 as f64 * gt[1],
            gt[1],
            gt[2],
            gt[3] + b.rows.0 as f64 * gt[5],
            gt[4],
            gt[5],
        ];
        let size = (b.cols.1 - b.cols.0, b.rows.1 - b.rows.0);
        // Names of this process's own (a retried or duplicate process never renames over
        // another's journalled part).
        let token = crate::util::process_token();
        let name = |kind: &str| {
            self.parts
                .join(format!("b{:06}-{token}.{kind}.tif", b.index))
        };
        let mut kinds: Vec<&str> = if shape.means {
            vec!["means"]
        } else {
            vec!["classes"]
        };
        if !shape.means && plan.probabilities {
            kinds.push("probs");
        }
        if !shape.means && plan.confidence {
            kinds.push("conf");
        }
        let paths: Vec<PathBuf> = kinds.iter().map(|k| name(k)).collect();
        for p in &paths {
            let part = temps.track(crate::util::process_partial_name(p));
            temps.track(aux_path(&part));
        }
        let partial = |i: usize| crate::util::process_partial_name(&paths[i]);
        let srs = &plan.stack.srs_wkt;
        let out = if shape.means {
            BlockOut::Embeddings(RasterSink::create_embeddings_part(
                &partial(0),
                size,
                &part_gt,
                srs,
                shape.channels,
            )?)
        } else {
            let part = |i: usize, kind: RasterKind| {
                RasterSink::create_part(&partial(i), size, &part_gt, srs, kind, &plan.model.classes)
            };
            BlockOut::Classes {
                classes: part(0, RasterKind::Classes)?,
                probs: if plan.probabilities {
                    Some(part(
                        1,
                        RasterKind::probabilities(plan.model.pixel.is_some()),
                    )?)
                } else {
                    None
                },
                conf: if plan.confidence {
                    Some(part(paths.len() - 1, RasterKind::Confidence)?)
                } else {
                    None
                },
            }
        };
        Ok((out, paths))
    }

    fn open_block(
        &mut self,
        plan: &PredictPlan,
        i: usize,
        polygon: Option<&gdal::vector::Geometry>,
    ) -> Result<&mut OpenBlock, Error> {
        if self.open[i].is_none() {
            let b = self.blocks[i];
            let shape = self.shape;
            let rows = b.rows.1 - b.rows.0;
            let mut temps = TempFiles::new();
            let (out, paths) = self.create_parts(plan, b, &mut temps)?;
            let n_classes = if shape.means {
                1
            } else {
                plan.model.classes.len()
            };
            let records = {
                plan.tiles
                    .iter()
                    .filter_map(|t| {
                        // The tile's part of the block, its columns counted from the
                        // block's left edge.
                        let w = t.window.scaled(shape.factor);
                        let x = w.x - b.cols.0 as i64;
                        let w = crate::grid::Window { x, ..w }
                            .clip(b.cols.1 - b.cols.0, shape.height)?;
                        (w.y < b.rows.1 as i64 && w.y + w.height as i64 > b.rows.0 as i64)
                            .then_some(TileRecord {
                                id: t.id,
                                row: t.row,
                                col: t.col,
                                window: w,
                                inferred: false,
                                counts: vec![0; n_classes],
                                valid: 0,
                                stats: None,
                            })
                    })
                    .collect()
            };
            let scale = shape.scale;
            self.open[i] = Some(OpenBlock {
                block: b,
                out,
                paths,
                written: b.rows.0,
                class_pixels: vec![0; n_classes],
                records,
                tiles_run: 0,
                mask: match (&plan.aoi, polygon) {
                    (Some(aoi), Some(poly)) => Some(aoi.mask_scaled(
                        poly,
                        (b.cols.0, b.rows.0),
                        (b.cols.1 - b.cols.0, rows),
                        scale,
                    )?),
                    _ => None,
                },
                temps,
            });
        }
        Ok(self.open[i].as_mut().expect("opened above"))
    }

    /// Hands finished rows to the blocks that own them (dropping the halo's rows), masking
    /// pixels outside the AOI; closes every block whose last row this was.
    fn route(
        &mut self,
        plan: &PredictPlan,
        f: &Flushed,
        polygon: Option<&gdal::vector::Geometry>,
        sink: &mut BlockSink<'_>,
    ) -> Result<(), Error> {
        for i in 0..self.blocks.len() {
            let b = self.blocks[i];
            let lo = f.y().max(b.rows.0).max(self.keep_from);
            let hi = (f.y() + f.rows()).min(b.rows.1);
            if lo >= hi {
                continue;
            }
            let ob = self.open_block(plan, i, polygon)?;
            match f {
                Flushed::Classes(f) => route_classes(plan, ob, f, lo, hi)?,
                Flushed::Means(f) => route_means(ob, f, lo, hi)?,
            }
            ob.written = hi;
            if hi == b.rows.1 {
                self.finish_block(plan, i, sink)?;
            }
        }
        Ok(())
    }
    /// Closes block `i`: parts to disk (fsync, rename), its carry for a later resume, then
    /// the journal line.
    fn finish_block(
        &mut self,
        plan: &PredictPlan,
        i: usize,
        sink: &mut BlockSink<'_>,
    ) -> Result<(), Error> {
        let mut ob = self.open[i].take().expect("a block being written");
        self.finished[i] = true;
        let mut files = Vec::new();
        // Each part is closed, fsynced and read back (its pixels must be the ones written)
        // before it is renamed and journalled.
        ob.out.finish()?;
        let finals = std::mem::take(&mut ob.paths);
        let describe = |fin: &Path| -> Result<PartFile, Error> {
            Ok(PartFile {
                file: fin
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: std::fs::metadata(fin).map_err(io_err(fin))?.len(),
                sha256: crate::util::sha256_file(fin).map_err(io_err(fin))?,
            })
        };
        for fin in finals {
            let part = crate::util::process_partial_name(&fin);
            // Until journalled, the renamed part is this run's unfinished work.
            ob.temps.track(fin.clone());
            std::fs::rename(&part, &fin).map_err(io_err(&fin))?;
            let _ = std::fs::remove_file(aux_path(&part));
            files.push(describe(&fin)?);
        }
        // The input's samples of the block's pixels, for the preview.
        if let Some((sampler, dir)) = &sink.preview {
            let (b, s) = (ob.block, self.shape.scale.max(1));
            let (w, h) = (plan.job.grid.width, plan.job.grid.height);
            let px = |v: usize, of: usize| (v * s).min(of);
            let guard = sampler
                .lock()
                .map_err(|_| Error::Pipeline("the preview sampler"))?;
            guard.save_block(
                dir,
                b.index,
                (px(b.rows.0, h), px(b.rows.1, h)),
                (px(b.cols.0, w), px(b.cols.1, w)),
            )?;
        }
        // What this block's tiles add to the rows below it: a resume from the next block
        // restores it instead of running this block's last tile row again.
        // The renames are durable before the journal names the files.
        crate::journal::sync_dir(&self.parts).map_err(io_err(&self.parts))?;
        let below = ob.block.rows.1 < self.shape.height;
        let carry = if below && self.acc.base() == ob.block.rows.1 {
            let fin = self.parts.join(format!(
                "b{:06}-{}.carry",
                ob.block.index,
                crate::util::process_token()
            ));
            let part = ob.temps.track(crate::util::process_partial_name(&fin));
            std::fs::write(&part, self.acc.carry()).map_err(io_err(&part))?;
            crate::journal::sync_file(&part).map_err(io_err(&part))?;
            ob.temps.track(fin.clone());
            std::fs::rename(&part, &fin).map_err(io_err(&fin))?;
            crate::journal::sync_dir(&self.parts).map_err(io_err(&self.parts))?;
            Some(describe(&fin)?)
        } else {
            None
        };
        let record = Entry::Block(BlockRecord {
            block: ob.block.index,
            plan_hash: plan.job.plan_hash.clone(),
            rows: ob.block.rows,
            cols: ob.block.cols,
            tiles_run: ob.tiles_run,
            class_pixels: ob.class_pixels.clone(),
            tiles: ob
                .records
                .iter()
                .map(|r| TileCount {
                    id: r.id,
                    inferred: r.inferred,
                    counts: r.counts.clone(),
                    valid: r.valid,
                    stats: r.stats,
                })
                .collect(),
            parts: files,
            carry,
            process: sink.process.to_string(),
            at: crate::util::now_rfc3339(),
        });
        // Journalled and no longer temporary in one step a signal cannot split.
        crate::interrupt::critical(|reg| -> Result<(), Error> {
            sink.journal.append(&record)?;
            ob.temps.disarm_with(reg);
            if let Some(j) = reg.job_mut() {
                j.done += 1;
            }
            Ok(())
        })?;
        tracing::debug!(block = ob.block.index, "block finished");
        sink.blocks += 1;
        sink.tiles += ob.tiles_run;
        Ok(())
    }

    /// Flushes the rest of the segment, closing its last blocks.
    fn finish(
        mut self,
        plan: &PredictPlan,
        polygon: Option<&gdal::vector::Geometry>,
        sink: &mut BlockSink<'_>,
    ) -> Result<(), Error> {
        let end = self.blocks[self.blocks.len() - 1].rows.1;
        self.flush_to(plan, end, polygon, sink)?;
        // Blocks without a single tile (outside the AOI) still get their (nodata) parts.
        for i in 0..self.blocks.len() {
            if !self.finished[i] {
                let b = self.blocks[i];
                let shape = self.shape;
                let ob = self.open_block(plan, i, polygon)?;
                if ob.written < b.rows.1 {
                    let rows = b.rows.1 - ob.written;
                    let y_in = ob.written - b.rows.0;
                    let n = rows * (b.cols.1 - b.cols.0);
                    match &mut ob.out {
                        BlockOut::Classes {
                            classes,
                            probs,
                            conf,
                        } => {
                            classes.write_rows(y_in, rows, &vec![crate::blend::CLASS_NODATA; n])?;
                            if let Some(c) = conf.as_mut() {
                                c.write_rows(y_in, rows, &vec![0_u8; n])?;
                            }
                            if let Some(p) = probs.as_mut() {
                                let k = plan.model.classes.len();
                                if plan.model.pixel.is_some() {
                                    p.write_rows(y_in, rows, &vec![f32::NAN; n * k])?;
                                } else {
                                    p.write_rows(y_in, rows, &vec![0_u8; n * k])?;
                                }
                            }
                        }
                        BlockOut::Embeddings(sink) => {
                            sink.write_rows(y_in, rows, &vec![f32::NAN; n * shape.channels])?;
                        }
                    }
                    ob.written = b.rows.1;
                }
                self.finish_block(plan, i, sink)?;
            }
        }
        Ok(())
    }
}

/// Rows `off..off + n` of each of the `k` probability bands of `f` (empty stays empty).
fn rows_of<T: Copy>(
    all: &[T],
    k: usize,
    f: &FinishedRows,
    off: usize,
    n: usize,
    width: usize,
) -> Vec<T> {
    if all.is_empty() {
        return Vec::new();
    }
    (0..k)
        .flat_map(|c| {
            let band = &all[c * f.rows * width..(c + 1) * f.rows * width];
            band[off * width..(off + n) * width].iter().copied()
        })
        .collect()
}

/// Writes the rows `lo..hi` of finished class rows into block `ob` (masked by its AOI mask)
/// and counts its classes.
fn route_classes(
    plan: &PredictPlan,
    ob: &mut OpenBlock,
    f: &FinishedRows,
    lo: usize,
    hi: usize,
) -> Result<(), Error> {
    let k = plan.model.classes.len();
    let width = f.classes.len() / f.rows.max(1);
    let b = ob.block;
    let n = hi - lo;
    let off = lo - f.y;
    let mut classes = f.classes[off * width..(off + n) * width].to_vec();
    let mut confidence = if f.confidence.is_empty() {
        Vec::new()
    } else {
        f.confidence[off * width..(off + n) * width].to_vec()
    };
    let (mut probs, mut probs_f32) = if plan.probabilities {
        (
            rows_of(&f.probs, k, f, off, n, width),
            rows_of(&f.probs_f32, k, f, off, n, width),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    if let Some(mask) = &ob.mask {
        let from = (lo - b.rows.0) * width;
        for (p, &m) in mask[from..from + n * width].iter().enumerate() {
            if m == 0 {
                classes[p] = crate::blend::CLASS_NODATA;
                if let Some(v) = confidence.get_mut(p) {
                    *v = 0;
                }
                for c in 0..k {
                    if let Some(v) = probs.get_mut(c * n * width + p) {
                        *v = 0;
                    }
                    if let Some(v) = probs_f32.get_mut(c * n * width + p) {
                        *v = f32::NAN;
                    }
                }
            }
        }
    }
    let y_in = lo - b.rows.0;
    let BlockOut::Classes {
        classes: sink,
        probs: probs_sink,
        conf: conf_sink,
    } = &mut ob.out
    else {
        return Err(Error::Pipeline(
            "class rows for a block without a class map",
        ));
    };
    sink.write_rows(y_in, n, &classes)?;
    if let Some(p) = probs_sink.as_mut() {
        if plan.model.pixel.is_some() {
            p.write_rows(y_in, n, &probs_f32)?;
        } else {
            p.write_rows(y_in, n, &probs)?;
        }
    }
    if let Some(c) = conf_sink.as_mut() {
        c.write_rows(y_in, n, &confidence)?;
    }
    for &c in &classes {
        if usize::from(c) < k {
            ob.class_pixels[usize::from(c)] += 1;
        }
    }
    let rows = FinishedRows {
        y: lo,
        rows: n,
        classes,
        probs: Vec::new(),
        probs_f32: Vec::new(),
        confidence,
    };
    crate::output::parquet::count_rows(&mut ob.records, &rows, width);
    Ok(())
}

/// Writes the rows `lo..hi` of finished embedding rows into block `ob` (NaN outside its AOI
/// mask) and counts its valid patches.
fn route_means(
    ob: &mut OpenBlock,
    f: &crate::blend::FinishedMeans,
    lo: usize,
    hi: usize,
) -> Result<(), Error> {
    let width = f.valid.len() / f.rows.max(1);
    let channels = f.values.len() / f.valid.len().max(1);
    let b = ob.block;
    let n = hi - lo;
    let off = lo - f.y;
    let plane = f.rows * width;
    let mut values = Vec::with_capacity(channels * n * width);
    for c in 0..channels {
        values.extend_from_slice(&f.values[c * plane + off * width..c * plane + (off + n) * width]);
    }
    let mut valid = f.valid[off * width..(off + n) * width].to_vec();
    if let Some(mask) = &ob.mask {
        let from = (lo - b.rows.0) * width;
        for (p, &m) in mask[from..from + n * width].iter().enumerate() {
            if m == 0 && valid[p] {
                valid[p] = false;
                for c in 0..channels {
                    values[c * n * width + p] = f32::NAN;
                }
            }
        }
    }
    let BlockOut::Embeddings(sink) = &mut ob.out else {
        return Err(Error::Pipeline(
            "embedding rows for a block without embeddings",
        ));
    };
    sink.write_rows(lo - b.rows.0, n, &values)?;
    ob.class_pixels[0] += valid.iter().filter(|&&v| v).count() as u64;
    if channels == 1 {
        // One value per pixel: each tile's count, sum, smallest and largest value.
        for r in &mut ob.records {
            let w = r.window;
            let (a, z) = (w.y.max(lo as i64), (w.y + w.height as i64).min(hi as i64));
            for yy in a..z {
                let row = (yy as usize - lo) * width;
                for x in w.x as usize..w.x as usize + w.width {
                    if valid[row + x] {
                        let v = f64::from(values[row + x]);
                        r.valid += 1;
                        let st = r
                            .stats
                            .get_or_insert([0.0, f64::INFINITY, f64::NEG_INFINITY]);
                        *st = [st[0] + v, st[1].min(v), st[2].max(v)];
                    }
                }
            }
        }
    }
    Ok(())
}

/// What the process that merges adds to the summary.
#[derive(Debug)]
pub struct MergeContext {
    /// ONNX Runtime library and build (empty for `eoinfer merge`).
    pub runtime: BTreeMap<String, String>,
    /// Parameters of this process (batch size, threads, device).
    pub parameters: serde_json::Value,
    /// Journal counts of this process.
    pub job: JobCounts,
    /// Timings of this process.
    pub timings: Timings,
    /// Warnings.
    pub warnings: Vec<String>,
    /// When this process started.
    pub t0: Instant,
}

/// The tiles of the run from every block's counts (a tile crossing blocks is summed),
/// the pixels per class over the run, and the model runs of all processes.
pub(crate) fn sum_tiles(
    job: &JobPlan,
    records: &[&BlockRecord],
    n_classes: usize,
) -> Result<(Vec<TileRecord>, Vec<u64>, usize), Error> {
    let tile_grid = job.tile_grid()?;
    let (w, h, _) = job.out_grid();
    let factor = job.out_factor();
    let windows: BTreeMap<usize, Tile> = tile_grid.tiles().map(|t| (t.id, t)).collect();
    let mut sums: BTreeMap<usize, TileRecord> = BTreeMap::new();
    let mut class_totals = vec![0_u64; n_classes];
    let mut tiles_run_total = 0;
    for r in records {
        tiles_run_total += r.tiles_run;
        for (c, v) in r.class_pixels.iter().enumerate() {
            if c < n_classes {
                class_totals[c] += v;
            }
        }
        for t in &r.tiles {
            let Some(tile) = windows.get(&t.id) else {
                continue;
            };
            let window = tile.window.scaled(factor);
            let e = sums.entry(t.id).or_insert_with(|| TileRecord {
                id: t.id,
                row: tile.row,
                col: tile.col,
                window: window.clip(w, h).unwrap_or(window),
                inferred: false,
                counts: vec![0; n_classes],
                valid: 0,
                stats: None,
            });
            e.inferred |= t.inferred;
            for (c, v) in t.counts.iter().enumerate() {
                if c < n_classes {
                    e.counts[c] += v;
                }
            }
            e.valid += t.valid;
            if let Some(st) = t.stats {
                e.stats = Some(match e.stats {
                    None => st,
                    Some(a) => [a[0] + st[0], a[1].min(st[1]), a[2].max(st[2])],
                });
            }
        }
    }
    Ok((sums.into_values().collect(), class_totals, tiles_run_total))
}

/// The parameters of a run for its summary: the plan's, and those of the process that
/// merged (batch size, threads, device).
fn run_parameters(job: &JobPlan, extra: &serde_json::Value) -> serde_json::Value {
    let mut parameters = serde_json::json!({
        "tiling": job.tiling,
        "tile_size": job.tile_size,
        "tta": job.tta,
        "probabilities": job.probabilities,
        "resolution": job.grid.geo_transform[1],
        "vectors": job.vectors,
        "aoi": job.aoi.as_ref().map(|a| &a.0),
        "block_rows": job.block_rows,
        "panel_width": job.panel_width,
        "panels": job.blocks.last().map_or(1, |b| b.panel + 1),
    });
    if let HeadPlan::Embeddings { uint8, .. } = job.head {
        parameters["embedding_dtype"] = if uint8 { "uint8" } else { "float32" }.into();
        parameters["patch_size"] = job.unit.into();
    }
    if let (Some(p), Some(extra)) = (parameters.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    parameters
}

impl RunSummary {
    /// The summary of an embeddings run from its finished blocks: `valid` patches with an
    /// embedding and `rows` GeoParquet rows.
    pub(crate) fn for_embeddings(
        job: &JobPlan,
        ctx: MergeContext,
        records: &[&BlockRecord],
        outputs: Outputs,
        (valid, rows): (u64, usize),
        t_final: Instant,
    ) -> Self {
        let (w, h, _) = job.out_grid();
        let counts = Counts {
            pixels_valid: valid,
            patches: Some((w * h) as u64),
            patches_valid: Some(valid),
            parquet_rows: Some(rows),
            ..Counts::default()
        };
        Self::assemble(job, ctx, records, outputs, counts, t_final)
    }

    /// The summary of a run from its finished blocks and the head's `counts` (the tile
    /// counts and pixels are filled in here).
    pub(crate) fn assemble(
        job: &JobPlan,
        ctx: MergeContext,
        records: &[&BlockRecord],
        outputs: Outputs,
        mut counts: Counts,
        t_final: Instant,
    ) -> Self {
        let inferred: std::collections::BTreeSet<usize> = records
            .iter()
            .flat_map(|r| r.tiles.iter().filter(|t| t.inferred).map(|t| t.id))
            .collect();
        let mut warnings = ctx.warnings;
        if counts.pixels_valid == 0 {
            let w = format!(
                "{} has no valid pixel (all nodata; a pixel is valid only where every band is: see the warnings naming bands without valid values); the outputs are all nodata",
                job.name
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        counts.tiles = job.tiles;
        counts.tiles_inferred = inferred.len();
        counts.tiles_skipped = job.tiles.saturating_sub(inferred.len());
        if counts.pixels == 0 {
            counts.pixels = (job.grid.width * job.grid.height) as u64;
        }
        counts.time_steps = (!job.time_steps.is_empty()).then_some(job.time_steps.len());
        let mut timings = ctx.timings;
        timings.finalize = t_final.elapsed().as_secs_f64();
        timings.total = ctx.t0.elapsed().as_secs_f64();
        RunSummary {
            eoinfer_version: env!("CARGO_PKG_VERSION").to_string(),
            gdal_version: gdal::version::version_info("RELEASE_NAME"),
            onnxruntime: ctx.runtime,
            model: model_info(job),
            scene: job.stack.clone(),
            scenes: job.scenes.clone(),
            time_steps: job.time_steps.clone(),
            grid: grid_info(job),
            parameters: run_parameters(job, &ctx.parameters),
            counts,
            job: JobSummary {
                counts: ctx.job,
                tiles_run_all_processes: records.iter().map(|r| r.tiles_run).sum(),
                processes: records
                    .iter()
                    .map(|r| r.process.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            },
            timings_s: timings,
            outputs,
            warnings,
        }
    }
}

/// The grid of a run for its summary: the pixel grid, and the patch (embeddings) or window
/// (classification) grid of its outputs.
fn grid_info(job: &JobPlan) -> serde_json::Value {
    let g = &job.grid;
    let mut v = serde_json::json!({
        "width": g.width, "height": g.height, "geo_transform": g.geo_transform, "epsg": g.epsg,
    });
    let (w, h, gt) = job.out_grid();
    let prefix = match job.head {
        HeadPlan::Embeddings { .. } => Some("patch"),
        HeadPlan::Classification => Some("window"),
        _ => None,
    };
    if let Some(p) = prefix {
        v[format!("{p}_width")] = w.into();
        v[format!("{p}_height")] = h.into();
        v[format!("{p}_geo_transform")] = serde_json::json!(gt);
    }
    v
}

/// The model as the summary names it.
fn model_info(job: &JobPlan) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "manifest".to_string(),
            job.model.manifest.display().to_string(),
        ),
        ("id".to_string(), job.model.id.clone()),
        ("onnx".to_string(), job.model.onnx.display().to_string()),
        ("sha256".to_string(), job.model.onnx_sha256.clone()),
    ])
    .into_iter()
    .chain(job.model.mask.map(|m| {
        (
            "post_processing".to_string(),
            format!(
                "probability mask: disk average over {} px, above {}, dilated by {} px",
                m.average_over, m.threshold, m.dilation_size
            ),
        )
    }))
    .chain(
        [
            ("license", &job.model.license),
            ("attribution", &job.model.attribution),
            ("temporal_contract", &job.model.temporal_contract),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))),
    )
    .collect()
}

/// Reads `<dir>/<name>.plan.json` (name: the only plan in the folder when not given).
pub fn read_job(dir: &Path, name: Option<&str>) -> Result<JobPlan, Error> {
    let path = if let Some(n) = name {
        plan_path(dir, n)
    } else {
        let mut plans: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".plan.json"))
            .collect();
        plans.sort();
        match plans.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(JobError::NoPlan {
                    dir: dir.to_path_buf(),
                    name: if plans.is_empty() {
                        "(any)".into()
                    } else {
                        format!(
                            "(several: {}; pass --name)",
                            plans
                                .iter()
                                .filter_map(|p| p.file_name())
                                .map(|n| n
                                    .to_string_lossy()
                                    .trim_end_matches(".plan.json")
                                    .to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                }
                .into());
            }
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|_| JobError::NoPlan {
        dir: dir.to_path_buf(),
        name: name.unwrap_or("(any)").to_string(),
    })?;
    let job: JobPlan = serde_json::from_str(&text).map_err(|e| JobError::Journal {
        path: path.clone(),
        message: format!("not an eoinfer plan: {e}"),
    })?;
    if job.compute_hash() != job.plan_hash {
        return Err(JobError::Journal {
            path,
            message:
                "its content does not match its plan_hash (edited by hand?); rerun `eoinfer plan`"
                    .into(),
        }
        .into());
    }
    Ok(job)
}

/// `eoinfer merge`: joins the finished blocks of the run in `dir` into its final outputs.
pub fn merge_dir(dir: &Path, name: Option<&str>) -> Result<Outcome, Error> {
    let t0 = Instant::now();
    let job = read_job(dir, name)?;
    let guard = JobGuard::lock(dir, &job.name, "merge")?;
    let state = read_state(&work_dir(dir, &job.name))?;
    let final_summary = dir.join(format!("{}.summary.json", job.name));
    if state.merged && final_summary.exists() {
        return Ok(Outcome::AlreadyFinished {
            summary: final_summary,
            plan_hash: job.plan_hash,
        });
    }
    let counts = JobCounts {
        plan_hash: job.plan_hash.clone(),
        blocks: job.blocks.len(),
        ..JobCounts::default()
    };
    // The merge removes the parts: no shard may still work on the job.
    guard.exclusive("merge the run's blocks")?;
    crate::interrupt::set_job(Some(crate::interrupt::JobStatus {
        blocks: job.blocks.len(),
        done: job.blocks.len(),
        scope: String::new(),
    }));
    let summary = merge(
        &job,
        dir,
        MergeContext {
            runtime: BTreeMap::new(),
            parameters: serde_json::json!({}),
            job: counts,
            timings: Timings::default(),
            warnings: Vec::new(),
            t0,
        },
    );
    crate::interrupt::set_job(None);
    let summary = summary.map_err(|e| disk_full(e, &job, dir, guard.work()))?;
    Ok(Outcome::Finished(Box::new(summary)))
}

fn finished_blocks(
    job: &JobPlan,
    out: &Path,
) -> Result<(PathBuf, BTreeMap<usize, BlockRecord>), Error> {
    let work = work_dir(out, &job.name);
    let parts_path = parts_dir(&work);
    let state = read_state(&work)?;
    if let Some(other) = state.hashes.iter().find(|h| **h != job.plan_hash) {
        return Err(JobError::PlanMismatch {
            dir: out.to_path_buf(),
            name: job.name.clone(),
            journal: other.clone(),
            plan: job.plan_hash.clone(),
            differs: "unknown (the journal holds blocks of another plan)".into(),
        }
        .into());
    }
    // An input changed while the blocks ran (or between a shard and the merge): some
    // blocks may come from the old file, some from the new one.
    let changed = crate::fingerprint::recheck(&job.input_files);
    if !changed.is_empty() {
        return Err(JobError::InputChanged {
            dir: out.to_path_buf(),
            name: job.name.clone(),
            changes: changed.join("; "),
        }
        .into());
    }
    // Per block, the latest record whose parts are on disk with the journal's sha256.
    let done = state.verified(&parts_path, |_| true);
    let missing: Vec<usize> = job
        .blocks
        .iter()
        .map(|b| b.index)
        .filter(|b| !done.contains_key(b))
        .collect();
    if !missing.is_empty() {
        // Which shards own them, for the shard counts seen in the journals.
        let mut shards = Vec::new();
        for n in state.processes() {
            if let Some(count) = n
                .strip_prefix("shard-")
                .and_then(|r| r.split_once("-of-"))
                .and_then(|(_, c)| c.parse::<usize>().ok())
            {
                for i in 0..count {
                    let r = crate::grid::shard_blocks(job.blocks.len(), i, count);
                    if missing.iter().any(|m| r.contains(m)) {
                        let s = format!("{i}/{count}");
                        if !shards.contains(&s) {
                            shards.push(s);
                        }
                    }
                }
            }
        }
        return Err(JobError::Unfinished {
            dir: out.to_path_buf(),
            name: job.name.clone(),
            missing: missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            total: job.blocks.len(),
            shards: if shards.is_empty() {
                "unknown".into()
            } else {
                shards.join(", ")
            },
            count: job.blocks.len(),
        }
        .into());
    }
    Ok((parts_path, done))
}

/// Joins the parts of every block into the final outputs of the run's head, all under
/// temporary names renamed at the end (the summary last); then journals the merge and
/// removes the parts.
pub fn merge(job: &JobPlan, out: &Path, ctx: MergeContext) -> Result<RunSummary, Error> {
    let t_final = Instant::now();
    let (parts_path, done) = finished_blocks(job, out)?;
    let records: Vec<&BlockRecord> = job
        .blocks
        .iter()
        .filter_map(|b| done.get(&b.index))
        .collect();
    let summary = match &job.head {
        HeadPlan::Classes => merge_classes(job, out, ctx, &records, &parts_path, t_final)?,
        HeadPlan::Embeddings { dim, uint8 } => crate::output::embeddings::merge(
            job,
            out,
            ctx,
            &records,
            &parts_path,
            (*dim, *uint8),
            t_final,
        )?,
        HeadPlan::Regression { value, uint8 } => crate::output::heads::merge_regression(
            job,
            out,
            ctx,
            &records,
            &parts_path,
            (value, *uint8),
            t_final,
        )?,
        HeadPlan::Classification => crate::output::heads::merge_classification(
            job,
            out,
            ctx,
            &records,
            &parts_path,
            t_final,
        )?,
    };
    let work = work_dir(out, &job.name);
    let mut journal = Journal::open(&work, "merge");
    journal.append(&Entry::Merged {
        plan_hash: job.plan_hash.clone(),
        at: crate::util::now_rfc3339(),
    })?;
    // The parts (and the input's preview) are in the final outputs now.
    let _ = std::fs::remove_dir_all(&parts_path);
    crate::output::preview::remove_input(&work, &job.plan_hash);
    Ok(summary)
}

/// The outputs of a class map head: class map and probabilities COGs through a VRT of the
/// parts, tiles GeoParquet from the journal's counts, polygons, styles, QGIS project, STAC
/// Item and summary.
fn merge_classes(
    job: &JobPlan,
    out: &Path,
    ctx: MergeContext,
    records: &[&BlockRecord],
    parts_path: &Path,
    t_final: Instant,
) -> Result<RunSummary, Error> {
    let (prob_parts, class_parts): (Vec<Part>, Vec<Part>) = Part::of_blocks(records, parts_path)
        .into_iter()
        .partition(|p| p.path.to_string_lossy().ends_with(".probs.tif"));
    let (conf_parts, class_parts): (Vec<Part>, Vec<Part>) = class_parts
        .into_iter()
        .partition(|p| p.path.to_string_lossy().ends_with(".conf.tif"));

    let name = &job.name;
    let grid = &job.grid;
    let classes = &job.model.classes;
    let n_classes = classes.len();
    let final_classes = out.join(format!("{name}.classes.tif"));
    let final_probs = out.join(format!("{name}.probs.tif"));
    let final_conf = out.join(format!("{name}.confidence.tif"));
    let final_tiles = out.join(format!("{name}.tiles.parquet"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let final_item = out.join(format!("{name}.item.json"));
    let final_vectors = job
        .vectors
        .map(|v| out.join(format!("{name}.polygons.{}", v.format.extension())));
    let mut temps = TempFiles::new();
    let part_classes = temps.track(partial_name(&final_classes));
    temps.track(aux_path(&part_classes));
    let part_probs = temps.track(partial_name(&final_probs));
    temps.track(aux_path(&part_probs));
    let part_conf = temps.track(partial_name(&final_conf));
    temps.track(aux_path(&part_conf));
    let part_tiles = temps.track(partial_name(&final_tiles));

    let rasters = [
        (true, &class_parts, RasterKind::Classes, &part_classes),
        (
            job.probabilities,
            &prob_parts,
            RasterKind::probabilities(job.model.float_probabilities),
            &part_probs,
        ),
        (
            job.confidence,
            &conf_parts,
            RasterKind::Confidence,
            &part_conf,
        ),
    ];
    for (keep, parts, kind, part) in rasters {
        if keep {
            let (size, gt) = ((grid.width, grid.height), &grid.geo_transform);
            cog_from_parts(parts, size, gt, &grid.srs_wkt, kind, classes, part)?;
        }
    }
    let mut vector_move = None;
    let mut polygon_stats = None;
    if let (Some(opts), Some(fin)) = (job.vectors, &final_vectors) {
        let staged = temps.track(out.join(format!(
            ".{name}.polygons.staged.{}",
            opts.format.extension()
        )));
        // SQLite's own files beside a GeoPackage being written.
        for suffix in ["-journal", "-wal", "-shm"] {
            temps.track(crate::util::with_suffix(&staged, suffix));
        }
        polygon_stats = Some(crate::output::vectors::polygonize(
            &part_classes,
            &staged,
            name,
            &opts,
        )?);
        vector_move = Some((staged, fin.clone()));
    }

    // Tile records: the sum of every block's counts.
    let (tile_records, class_totals, _) = sum_tiles(job, records, n_classes)?;
    let class_names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    write_tiles(
        &part_tiles,
        &tile_records,
        &class_names,
        job.confidence,
        &grid.geo_transform,
        &grid.projjson,
    )?;

    let counts = Counts {
        pixels: (grid.width * grid.height) as u64,
        pixels_valid: class_totals.iter().sum(),
        class_pixels: classes
            .iter()
            .map(|c| (c.name.clone(), class_totals[usize::from(c.value)]))
            .collect(),
        polygons: polygon_stats,
        ..Counts::default()
    };
    let outputs = Outputs {
        classes: Some(final_classes.clone()),
        probabilities: job.probabilities.then(|| final_probs.clone()),
        confidence: job.confidence.then(|| final_conf.clone()),
        tiles: Some(final_tiles.clone()),
        embeddings: None,
        table: None,
        values: None,
        summary: final_summary.clone(),
        stac_item: final_item.clone(),
        preview: Some(out.join(format!("{name}.preview.png"))),
        vectors: final_vectors.clone(),
    };
    // Everything is written: move it into place.
    let mut moves = vec![
        (part_classes.clone(), final_classes.clone()),
        (part_tiles, final_tiles),
    ];
    let top = if job.model.float_probabilities {
        1.0
    } else {
        255.0
    };
    moves.extend(crate::output::qgis::write_styles(
        &final_classes,
        job.probabilities.then_some((final_probs.as_path(), top)),
        job.confidence.then_some(final_conf.as_path()),
        final_vectors.as_deref(),
        classes,
        &mut temps,
    )?);
    if job.qgis_project {
        use crate::output::qgis::ProjectLayer;
        let mut layers: Vec<ProjectLayer> = final_vectors
            .iter()
            .cloned()
            .map(ProjectLayer::Polygons)
            .collect();
        layers.push(ProjectLayer::Classes(final_classes.clone()));
        layers.extend(
            job.probabilities
                .then(|| ProjectLayer::Probabilities(final_probs.clone(), top)),
        );
        layers.extend(
            job.confidence
                .then(|| ProjectLayer::Confidence(final_conf.clone())),
        );
        let text = crate::output::qgis::project(name, &layers, classes, &grid.srs_wkt, grid.epsg);
        let qgs = out.join(format!("{name}.qgs"));
        moves.push(crate::output::qgis::stage_text(&qgs, &text, &mut temps)?);
    }
    moves.extend(vector_move);
    if aux_path(&part_classes).exists() {
        moves.push((aux_path(&part_classes), aux_path(&final_classes)));
    }
    optional_output(job.probabilities, (&part_probs, &final_probs), &mut moves);
    optional_output(job.confidence, (&part_conf, &final_conf), &mut moves);
    let summary = RunSummary::assemble(job, ctx, records, outputs, counts, t_final);
    commit_outputs(job, out, &summary, moves, temps)?;
    Ok(summary)
}

/// The renames of an optional raster (and its aux file) when the run writes it; otherwise a
/// stale file of an earlier run (with its aux file and style) is removed: it must not pass
/// for this run's.
fn optional_output(keep: bool, (part, fin): (&Path, &Path), moves: &mut Vec<(PathBuf, PathBuf)>) {
    if keep {
        moves.push((part.to_path_buf(), fin.to_path_buf()));
        if aux_path(part).exists() {
            moves.push((aux_path(part), aux_path(fin)));
        }
    } else {
        let _ = std::fs::remove_file(fin);
        let _ = std::fs::remove_file(aux_path(fin));
        let _ = std::fs::remove_file(crate::output::qgis::style_path(fin));
    }
}

/// Writes the run's STAC Item and its summary under temporary names and renames them and
/// `moves` into place, the summary last (its presence says the run is complete; a signal
/// waits until every output is in place), then links the Item from the folder's catalog.
pub(crate) fn commit_outputs(
    job: &JobPlan,
    out: &Path,
    summary: &RunSummary,
    mut moves: Vec<(PathBuf, PathBuf)>,
    mut temps: TempFiles,
) -> Result<(), Error> {
    let name = &job.name;
    let final_item = out.join(format!("{name}.item.json"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let thumbnail = stage_preview(job, out, &mut moves, &mut temps)?;
    moves.push(write_item(
        job,
        out,
        &final_item,
        thumbnail.as_deref(),
        &mut temps,
    )?);
    let part_summary = temps.track(partial_name(&final_summary));
    let mut text = serde_json::to_string_pretty(summary).map_err(|e| OutputError::Io {
        path: final_summary.clone(),
        source: e.into(),
    })?;
    text.push('\n');
    std::fs::write(&part_summary, text).map_err(io_err(&part_summary))?;
    moves.push((part_summary, final_summary));
    temps.commit(moves)?;
    crate::output::stac::update_catalog(
        out,
        &format!("{name}.item.json"),
        &format!("{} on {name}", job.model.id),
    )?;
    Ok(())
}

/// The sampler of the run's input for its preview (a time series: its newest step).
fn input_sampler(plan: &PredictPlan) -> Option<crate::output::preview::InputSampler> {
    let (stack, date) = if let Some(step) = plan.series.last() {
        (&step.stack, Some(step.date.to_string()))
    } else {
        let mut dates: Vec<&String> = plan
            .job
            .inputs
            .iter()
            .filter_map(|(_, d)| d.as_ref())
            .collect();
        dates.sort();
        dates.dedup();
        let date = match dates.as_slice() {
            [] => None,
            [d] => Some((*d).clone()),
            [first, .., last] => Some(format!("{first} to {last}")),
        };
        (&plan.stack, date)
    };
    crate::output::preview::InputSampler::new(
        stack,
        date,
        (plan.job.grid.width, plan.job.grid.height),
    )
}

/// Renders `<name>.preview.png` under a temporary name from the head's raster (its
/// temporary name in `moves`), adds its rename to `moves` and returns what it shows.
fn stage_preview(
    job: &JobPlan,
    out: &Path,
    moves: &mut Vec<(PathBuf, PathBuf)>,
    temps: &mut TempFiles,
) -> Result<Option<String>, Error> {
    use crate::output::preview::{Overlay, render};
    let name = &job.name;
    let raster = match job.head {
        HeadPlan::Classes | HeadPlan::Classification => "classes",
        HeadPlan::Regression { .. } => "values",
        HeadPlan::Embeddings { .. } => "embeddings",
    };
    let fin = out.join(format!("{name}.{raster}.tif"));
    let Some((part, _)) = moves.iter().find(|(_, to)| *to == fin) else {
        return Ok(None);
    };
    let part = part.clone();
    let overlay = match &job.head {
        HeadPlan::Classes | HeadPlan::Classification => Overlay::Classes {
            raster: &part,
            classes: &job.model.classes,
        },
        HeadPlan::Regression { value, .. } => Overlay::Values {
            raster: &part,
            spec: value,
        },
        HeadPlan::Embeddings { .. } => Overlay::Embeddings { raster: &part },
    };
    let final_png = out.join(format!("{name}.preview.png"));
    let part_png = temps.track(partial_name(&final_png));
    let what = render(
        overlay,
        (job.grid.width, job.grid.height),
        &format!("{} on {name}", job.model.id),
        &work_dir(out, name),
        &job.plan_hash,
        &part_png,
    )?;
    moves.push((part_png, final_png));
    Ok(Some(what))
}

/// The STAC assets of the run's head.
fn head_assets(job: &JobPlan, out: &Path) -> Vec<crate::output::stac::Asset> {
    use crate::output::stac::{Asset, COG, PARQUET, QML};
    let name = &job.name;
    match job.head {
        HeadPlan::Classes => vec![
            Asset {
                key: "classes",
                path: out.join(format!("{name}.classes.tif")),
                media_type: COG,
                roles: &["data"],
                title: format!("class map ({})", job.model.id),
            },
            Asset {
                key: "classes_style",
                path: out.join(format!("{name}.classes.qml")),
                media_type: QML,
                roles: &["style"],
                title: "QGIS style of the class map".into(),
            },
            Asset {
                key: "tiles",
                path: out.join(format!("{name}.tiles.parquet")),
                media_type: PARQUET,
                roles: &["data", "metadata"],
                title: "tiles with class counts (GeoParquet)".into(),
            },
        ],
        HeadPlan::Regression { ref value, .. } => vec![
            Asset {
                key: "values",
                path: out.join(format!("{name}.values.tif")),
                media_type: COG,
                roles: &["data"],
                title: format!("{} in {} ({})", value.name, value.unit, job.model.id),
            },
            Asset {
                key: "values_style",
                path: out.join(format!("{name}.values.qml")),
                media_type: QML,
                roles: &["style"],
                title: "QGIS style of the values".into(),
            },
            Asset {
                key: "tiles",
                path: out.join(format!("{name}.tiles.parquet")),
                media_type: PARQUET,
                roles: &["data", "metadata"],
                title: "tiles with value statistics (GeoParquet)".into(),
            },
        ],
        HeadPlan::Classification => vec![
            Asset {
                key: "classes",
                path: out.join(format!("{name}.classes.tif")),
                media_type: COG,
                roles: &["data"],
                title: format!("one label per window ({})", job.model.id),
            },
            Asset {
                key: "classes_style",
                path: out.join(format!("{name}.classes.qml")),
                media_type: QML,
                roles: &["style"],
                title: "QGIS style of the labels".into(),
            },
            Asset {
                key: "windows",
                path: out.join(format!("{name}.windows.parquet")),
                media_type: PARQUET,
                roles: &["data"],
                title: "windows with their label and class scores (GeoParquet)".into(),
            },
        ],
        HeadPlan::Embeddings { .. } => vec![
            Asset {
                key: "embeddings",
                path: out.join(format!("{name}.embeddings.tif")),
                media_type: COG,
                roles: &["data"],
                title: format!("embeddings, one pixel per patch ({})", job.model.id),
            },
            Asset {
                key: "embeddings_table",
                path: out.join(format!("{name}.embeddings.parquet")),
                media_type: PARQUET,
                roles: &["data"],
                title: "embeddings per patch (GeoParquet)".into(),
            },
        ],
    }
}

/// A raster output `<name>.<suffix>.tif` and its QGIS style as STAC assets.
fn styled_raster(
    out: &Path,
    name: &str,
    (key, style_key, suffix): (&'static str, &'static str, &str),
    title: String,
) -> [crate::output::stac::Asset; 2] {
    use crate::output::stac::{Asset, COG, QML};
    let style_title = format!("QGIS style of the {key}");
    [
        Asset {
            key,
            path: out.join(format!("{name}.{suffix}.tif")),
            media_type: COG,
            roles: &["data"],
            title,
        },
        Asset {
            key: style_key,
            path: out.join(format!("{name}.{suffix}.qml")),
            media_type: QML,
            roles: &["style"],
            title: style_title,
        },
    ]
}

/// The run's STAC Item, written under a temporary name; returns the rename.
pub(crate) fn write_item(
    job: &JobPlan,
    out: &Path,
    final_item: &Path,
    thumbnail: Option<&str>,
    temps: &mut TempFiles,
) -> Result<(PathBuf, PathBuf), Error> {
    use crate::output::stac::{Asset, JSON, PARQUET, QML, RunItem, item_json};
    let name = &job.name;
    let mut dates: Vec<String> = job.inputs.iter().filter_map(|(_, d)| d.clone()).collect();
    dates.sort();
    let mut assets = head_assets(job, out);
    if let Some(what) = thumbnail {
        assets.push(Asset {
            key: "thumbnail",
            path: out.join(format!("{name}.preview.png")),
            media_type: "image/png",
            roles: &["thumbnail", "overview"],
            title: format!("preview: {what}"),
        });
    }
    assets.push(Asset {
        key: "summary",
        path: out.join(format!("{name}.summary.json")),
        media_type: JSON,
        roles: &["metadata"],
        title: "run summary".into(),
    });
    assets.push(Asset {
        key: "plan",
        path: plan_path(out, name),
        media_type: JSON,
        roles: &["metadata"],
        title: "tile plan (grid, scenes, parameters, blocks, plan hash)".into(),
    });
    if let Some(v) = job.vectors {
        use crate::output::vectors::VectorFormat;
        assets.push(Asset {
            key: "polygons",
            path: out.join(format!("{name}.polygons.{}", v.format.extension())),
            media_type: match v.format {
                VectorFormat::Gpkg => "application/geopackage+sqlite3",
                VectorFormat::Parquet => PARQUET,
                VectorFormat::Fgb => "application/vnd.flatgeobuf",
            },
            roles: &["data"],
            title: "class polygons (class, class_name, area_m2)".into(),
        });
        assets.push(Asset {
            key: "polygons_style",
            path: out.join(format!("{name}.polygons.qml")),
            media_type: QML,
            roles: &["style"],
            title: "QGIS style of the polygons".into(),
        });
    }
    if job.qgis_project {
        assets.push(Asset {
            key: "qgis_project",
            path: out.join(format!("{name}.qgs")),
            media_type: "application/x-qgis",
            roles: &["metadata", "visual"],
            title: "QGIS project of the run".into(),
        });
    }
    if job.confidence {
        assets.extend(styled_raster(
            out,
            name,
            ("confidence", "confidence_style", "confidence"),
            "confidence: the winning class's probability (uint8, scale 1/255, 0 = no class)".into(),
        ));
    }
    if job.probabilities {
        assets.extend(styled_raster(
            out,
            name,
            ("probabilities", "probabilities_style", "probs"),
            if job.model.float_probabilities {
                "class probabilities (float32, NaN = no data)".into()
            } else {
                "class probabilities (uint8, scale 1/255)".into()
            },
        ));
    }
    let (width, height, geo_transform) = job.out_grid();
    let item = RunItem {
        id: name,
        start: dates.first().cloned(),
        end: dates.last().cloned(),
        width,
        height,
        geo_transform,
        srs_wkt: &job.grid.srs_wkt,
        epsg: job.grid.epsg,
        assets,
        model_manifest: &job.model.manifest,
        model_id: &job.model.id,
        onnx_sha256: &job.model.onnx_sha256,
        license: job.model.license.as_deref(),
        attribution: job.model.attribution.as_deref(),
        inputs: job.inputs.clone(),
        input_reading: serde_json::json!({
            "sensor": job.stack.get("sensor"),
            "s2_offset_source": job.stack.get("s2_offset_source"),
            "bands": job.stack.get("bands").and_then(serde_json::Value::as_array).map(|bands| {
                bands
                    .iter()
                    .map(|b| serde_json::json!({"band": b["model_band"], "source": b["source"], "scaling": b["scaling"]}))
                    .collect::<Vec<_>>()
            }),
        }),
    };
    let part = temps.track(partial_name(final_item));
    let doc = item_json(&item, final_item, &crate::util::now_rfc3339())?;
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    std::fs::write(&part, text).map_err(|source| OutputError::Io {
        path: part.clone(),
        source,
    })?;
    Ok((part, final_item.to_path_buf()))
}

/// What `eoinfer bench-model` measured: ONNX Runtime alone on the tiles `predict` runs.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    /// Tiles in the grid that touch the scene.
    pub tiles: usize,
    /// Tiles with valid pixels (the ones the model runs on).
    pub tiles_inferred: usize,
    /// Model runs per tile (test-time augmentation).
    pub runs_per_tile: usize,
    /// Tiles per batch.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Seconds spent reading and normalising the tiles into memory (not part of the limit).
    pub read_s: f64,
    /// Seconds inside ONNX Runtime's `run` for all batches: the limit.
    pub inference_s: f64,
    /// Tiles per second at the limit.
    pub tiles_per_s: f64,
}

/// Reads every tile `predict` would run into memory, batched exactly as `predict` batches
/// them, then times ONNX Runtime alone over all batches.
pub fn model_only(plan: &PredictPlan, mut model: Model) -> Result<LimitReport, Error> {
    let tiles = &plan.tiles;
    let batch = plan.batch_size.max(1);
    crate::source::size_cache(plan);
    let t_read = Instant::now();
    let mut source = TileSource::open(plan)?;
    // (s2 or single-date input, s1, tiles) per batch.
    let mut batches: Vec<(Vec<f32>, Vec<f32>, usize)> = Vec::new();
    let mut current = (Vec::new(), Vec::new(), 0_usize);
    let mut inferred = 0;
    for t in tiles {
        let input = source.read(*t, None)?;
        if !input.inferred {
            continue;
        }
        inferred += 1;
        current.0.extend_from_slice(&input.data);
        current.1.extend_from_slice(&input.s1);
        current.2 += 1;
        if current.2 == batch {
            batches.push(std::mem::take(&mut current));
        }
    }
    if current.2 > 0 {
        batches.push(current);
    }
    drop(source);
    let read_s = t_read.elapsed().as_secs_f64();

    let runs = plan.tta.variants().len();
    let start = Instant::now();
    for (input, s1, n) in &batches {
        for _ in 0..runs {
            model.run_raw(input, s1, *n)?;
        }
    }
    let inference_s = start.elapsed().as_secs_f64();
    Ok(LimitReport {
        tiles: tiles.len(),
        tiles_inferred: inferred,
        runs_per_tile: runs,
        batch_size: batch,
        threads: plan.threads,
        read_s,
        inference_s,
        tiles_per_s: inferred as f64 / inference_s.max(1e-9),
    })
}
