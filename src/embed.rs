//! The embedding pipeline (OlmoEarth): dated scenes -> one grid -> square tiles aligned to the
//! patch grid -> `[B, H, W, T, C]` + timestamps -> ONNX Runtime -> per-patch embeddings
//! blended over overlapping tiles in a rolling band of patch rows -> embeddings COG (one
//! pixel per patch) and GeoParquet (one row per patch). Reading runs on its own thread,
//! joined to inference and writing by a bounded channel.

use crate::blend::BandAccumulator;
use crate::error::{Error, ModelError, OutputError, SceneError};
use crate::grid::{Tile, TileGrid, Tiling, Window};
use crate::model::Device;
use crate::model::embedding::EmbeddingSpec;
use crate::output::embeddings::EmbeddingTable;
use crate::output::raster::{RasterSink, aux_path};
use crate::scene::timeseries::{Date, TimeStep, time_steps};
use crate::scene::{SceneOptions, Stack, StackReader, open_stack_request};
use crate::util::{TempFiles, partial_name};
use crossbeam_channel::bounded;
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use serde::Serialize;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Raw embedding-run arguments.
#[derive(Debug, Clone)]
pub struct EmbedArgs {
    /// Manifest path.
    pub model: PathBuf,
    /// `--scene` values (time steps, folders of dated files, list files, STAC ItemCollections).
    pub scenes: Vec<String>,
    /// `--dates` for scenes without a date.
    pub dates: Vec<Date>,
    /// Output folder.
    pub out: PathBuf,
    /// Output base name.
    pub name: Option<String>,
    /// Scene options (bands, resolution, offset, nodata).
    pub scene: SceneOptions,
    /// Overlap in pixels (a multiple of the patch size).
    pub overlap: Option<usize>,
    /// Tile edge in pixels (a multiple of the patch size).
    pub tile_size: Option<usize>,
    /// Whether the embeddings COG is quantised to uint8 (with per-band scale/offset).
    pub uint8: bool,
    /// Also write class probabilities (models with a segmentation head).
    pub probabilities: bool,
    /// Tiles per batch.
    pub batch_size: usize,
    /// ONNX Runtime threads.
    pub threads: usize,
    /// ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// Where the model runs.
    pub device: Device,
    /// `--memory-limit` in bytes (default: the process's cgroup limit, else the machine's RAM).
    pub memory_limit: Option<u64>,
}

/// A time step as used in a run.
#[derive(Debug, Clone, Serialize)]
pub struct StepInfo {
    /// The scene.
    pub scene: String,
    /// Acquisition date.
    pub date: Date,
    /// Where the date came from.
    pub date_source: String,
    /// Its bands.
    pub bands: Vec<crate::scene::StackBand>,
}

/// Summary of an embedding run.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    /// eoinfer's version.
    pub eoinfer_version: String,
    /// GDAL's version.
    pub gdal_version: String,
    /// The model.
    pub model: serde_json::Value,
    /// Time steps in date order.
    pub time_steps: Vec<StepInfo>,
    /// The pixel grid.
    pub grid: serde_json::Value,
    /// Parameters.
    pub parameters: serde_json::Value,
    /// Counts.
    pub counts: serde_json::Value,
    /// Seconds per stage.
    pub timings_s: serde_json::Value,
    /// Output files.
    pub outputs: serde_json::Value,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// Where the model's output goes: embeddings (encoder) or a class map (encoder + head).
#[allow(clippy::large_enum_variant)] // one value per run
enum Out {
    Embeddings {
        sink: RasterSink,
        table: EmbeddingTable,
    },
    Classes {
        classes: RasterSink,
        probs: Option<RasterSink>,
        records: Vec<crate::output::parquet::TileRecord>,
        totals: Vec<u64>,
    },
}

struct TileMsg {
    tile: Tile,
    input: Vec<f32>,
    input_s1: Vec<f32>,
    pixel_valid: Vec<bool>,
    valid: Vec<bool>,
    inferred: bool,
}

fn any_valid(stack: &Stack) -> Result<bool, SceneError> {
    let ds = gdal::Dataset::open(&stack.vrt).map_err(|e| SceneError::Gdal {
        path: PathBuf::from(&stack.scene),
        message: e.to_string(),
    })?;
    let (w, h) = (stack.width.min(256), stack.height.min(256));
    let mut buf = vec![0.0_f32; w * h];
    for b in 1..=stack.vrt_bands {
        ds.rasterband(b)
            .and_then(|band| {
                band.read_into_slice::<f32>(
                    (0, 0),
                    (stack.width, stack.height),
                    (w, h),
                    &mut buf,
                    None,
                )
            })
            .map_err(|e| SceneError::Gdal {
                path: PathBuf::from(&stack.scene),
                message: e.to_string(),
            })?;
        if buf.iter().any(|v| v.is_finite()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses a batch whose tensors (input and output, the tiles queued between the stages)
/// would not fit in the memory limit, before anything is allocated.
fn check_batch(
    args: &EmbedArgs,
    batch: usize,
    tile: usize,
    steps: usize,
    bands: usize,
    out_values: u64,
    width: usize,
) -> Result<(), crate::error::LimitError> {
    crate::limits::check_nonzero("--batch-size", Some(args.batch_size))?;
    let limit = crate::limits::memory_limit(args.memory_limit);
    let per_tile = ((tile * tile * steps * bands) as u64 + out_values).saturating_mul(4 * 5);
    // The rolling band of rows of every time step.
    let rows = (width as u64)
        .saturating_mul((tile + 64) as u64)
        .saturating_mul((steps * bands) as u64)
        .saturating_mul(4);
    let fixed = crate::limits::BASE_BYTES + rows;
    let need = fixed.saturating_add(per_tile.saturating_mul(batch as u64));
    if need <= limit.bytes {
        return Ok(());
    }
    let max = limit.bytes.saturating_sub(fixed) / per_tile.max(1);
    Err(crate::error::LimitError::Memory {
        need: crate::limits::human(need),
        breakdown: format!(
            "the batch's tensors and queued tiles {}, the time steps' rows {}",
            crate::limits::human(per_tile.saturating_mul(batch as u64)),
            crate::limits::human(rows)
        ),
        limit: limit.to_string(),
        fix: if max >= 1 {
            format!(
                "--batch-size {} is too large: the allowed range here is 1 to {max}; or raise --memory-limit",
                args.batch_size
            )
        } else {
            "pass fewer time steps or a coarser --resolution, or raise --memory-limit".into()
        },
    })
}

/// Runs an embedding model over a time series (`eoinfer predict` with an embedding manifest).
pub fn run(args: &EmbedArgs, doc: &serde_json::Value) -> Result<EmbedSummary, Error> {
    let t0 = Instant::now();
    let spec = EmbeddingSpec::from_json(&args.model, doc)?;
    if !spec.onnx.is_file() {
        return Err(ModelError::OnnxMissing {
            path: spec.onnx.clone(),
            manifest: args.model.clone(),
        }
        .into());
    }
    let p = spec.patch_size;
    let tile = args.tile_size.unwrap_or(spec.tile_size);
    if tile == 0 || tile % p != 0 || tile / p < 2 {
        return Err(SceneError::Series {
            what: format!(
                "--tile-size {tile} must be a multiple of the patch size {p}, at least two patches"
            ),
        }
        .into());
    }
    let overlap = args.overlap.unwrap_or(2 * p);
    if overlap % p != 0 || overlap >= tile {
        return Err(SceneError::Series {
            what: format!("--overlap {overlap} must be a multiple of the patch size {p} and smaller than the tile size {tile}"),
        }
        .into());
    }

    // Time steps, each on the first one's grid; all-nodata steps are dropped.
    let steps = time_steps(&args.scenes, &args.dates)?;
    let mut warnings = Vec::new();
    let mut req = spec.stack_request();
    let mut req_s1 = spec.stack_request_s1();
    let mut stacks: Vec<(TimeStep, Stack)> = Vec::new();
    let mut s1_stacks: Vec<Stack> = Vec::new();
    for step in steps {
        let stack = open_stack_request(&step.source, &req, &args.scene)?;
        if req.grid.is_none() {
            req.grid = Some(stack.grid());
        }
        if any_valid(&stack)? {
            if let Some(r) = req_s1.as_mut() {
                r.grid.clone_from(&req.grid);
                // Sentinel-1 backscatter is read in dB as it is stored.
                let opts = SceneOptions {
                    s2_offset: Some(0.0),
                    ..args.scene.clone()
                };
                s1_stacks.push(open_stack_request(&step.source, r, &opts)?);
            }
            stacks.push((step, stack));
        } else {
            let w = format!(
                "time step {} ({}) has no valid pixel and is left out",
                step.date,
                step.source.label()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    if stacks.is_empty() {
        return Err(SceneError::Series {
            what: "no time step has a valid pixel; nothing to embed".into(),
        }
        .into());
    }
    if stacks.len() > spec.max_time_steps {
        return Err(SceneError::TooManySteps {
            count: stacks.len(),
            max: spec.max_time_steps,
        }
        .into());
    }
    for w in stacks.windows(2) {
        if w[0].0.date == w[1].0.date {
            warnings.push(format!("two time steps share the date {}", w[0].0.date));
        }
    }
    crate::plan::check_writable(&args.out)?;
    let ort_lib = crate::model::runtime::find_runtime(args.ort_lib.as_deref())?;
    let env = crate::model::runtime::init_runtime(&ort_lib)?;
    let threads = crate::limits::check_threads(args.threads)?;
    let (mut session, onnx) =
        crate::model::golden::open_embedding_model(&env, &args.model, doc, threads, args.device)?;
    let sha = crate::util::sha256_file(&onnx).map_err(|source| ModelError::ManifestRead {
        path: onnx.clone(),
        source,
    })?;
    if let Some(expected) = spec.onnx_sha256.as_ref().filter(|e| **e != sha) {
        return Err(ModelError::ShapeMismatch {
            manifest: args.model.clone(),
            onnx,
            what: format!("the ONNX file's sha256 is {sha}, the manifest records {expected}"),
        }
        .into());
    }

    let first = &stacks[0].1;
    let (width, height) = (first.width, first.height);
    let (pw, ph) = (width.div_ceil(p), height.div_ceil(p));
    let tp = tile / p;
    let grid = TileGrid::new(
        pw,
        ph,
        tp,
        Tiling::Blended {
            overlap: overlap / p,
        },
    )?;
    let tiles: Vec<Tile> = grid.tiles().collect();
    let t_steps = stacks.len();
    let n_bands = spec.bands.len();
    let n_s1 = spec.sentinel1.as_ref().map_or(0, |s| s.bands.len());
    let dim = spec.embedding_dim;
    // A batch never holds more tiles than the run has.
    let batch = args.batch_size.min(tiles.len().max(1));
    check_batch(
        args,
        batch,
        tile,
        t_steps,
        n_bands + n_s1,
        (tp * tp * dim) as u64,
        width,
    )?;
    let gt = first.geo_transform;
    let patch_gt = [gt[0], gt[1] * p as f64, 0.0, gt[3], 0.0, gt[5] * p as f64];
    // A series from one folder is named after the folder; otherwise after its first scene.
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| match args.scenes.as_slice() {
            [one] if Path::new(one).is_dir() && t_steps > 1 => {
                let dir = std::path::absolute(one).unwrap_or_else(|_| PathBuf::from(one));
                dir.file_name()
                    .map_or_else(|| first.name.clone(), |n| n.to_string_lossy().into_owned())
            }
            _ => first.name.clone(),
        });

    let out = &args.out;
    // One process at a time writes this run's outputs.
    let _guard = crate::job::JobGuard::lock(out, &name, "main")?;
    let final_cog = out.join(format!("{name}.embeddings.tif"));
    let final_table = out.join(format!("{name}.embeddings.parquet"));
    let final_summary = out.join(format!("{name}.summary.json"));
    let mut temps = TempFiles::new();
    let staging = temps.track(out.join(format!(".{name}.staging.tif")));
    temps.track(aux_path(&staging));
    let part_cog = temps.track(partial_name(&final_cog));
    temps.track(aux_path(&part_cog));
    let part_table = temps.track(partial_name(&final_table));
    let part_summary = temps.track(partial_name(&final_summary));

    let head = spec.head.clone();
    let final_classes = out.join(format!("{name}.classes.tif"));
    let final_probs = out.join(format!("{name}.probs.tif"));
    let final_tiles = out.join(format!("{name}.tiles.parquet"));
    let part_classes = temps.track(partial_name(&final_classes));
    temps.track(aux_path(&part_classes));
    let part_probs = temps.track(partial_name(&final_probs));
    temps.track(aux_path(&part_probs));
    let part_tiles = temps.track(partial_name(&final_tiles));
    let staging_probs = temps.track(out.join(format!(".{name}.probs.staging.tif")));
    temps.track(aux_path(&staging_probs));
    let mut outputs = if let Some(classes) = &head {
        let tiles_px = tiles
            .iter()
            .map(|t| {
                let w = Window {
                    x: t.window.x * p as i64,
                    y: t.window.y * p as i64,
                    width: tile,
                    height: tile,
                };
                crate::output::parquet::TileRecord {
                    id: t.id,
                    row: t.row,
                    col: t.col,
                    window: w.clip(width, height).unwrap_or(w),
                    inferred: false,
                    counts: vec![0; classes.len()],
                    valid: 0,
                }
            })
            .collect();
        Out::Classes {
            classes: RasterSink::create(
                &staging,
                first,
                crate::output::raster::RasterKind::Classes,
                classes,
            )?,
            probs: if args.probabilities {
                Some(RasterSink::create(
                    &staging_probs,
                    first,
                    crate::output::raster::RasterKind::Probabilities,
                    classes,
                )?)
            } else {
                None
            },
            records: tiles_px,
            totals: vec![0; classes.len()],
        }
    } else {
        let bbox = [
            gt[0],
            gt[3] + gt[5] * (ph * p) as f64,
            gt[0] + gt[1] * (pw * p) as f64,
            gt[3],
        ];
        Out::Embeddings {
            sink: RasterSink::create_embeddings(&staging, pw, ph, &patch_gt, &first.srs_wkt, dim)?,
            table: EmbeddingTable::create(
                &part_table,
                patch_gt,
                &first.srs_wkt,
                &first.projjson,
                bbox,
                dim,
            )?,
        }
    };
    let n_out = head.as_ref().map_or(dim, Vec::len);
    let out_side = if head.is_some() { tile } else { tp };

    let timestamps: Vec<i32> = stacks
        .iter()
        .flat_map(|(s, _)| [s.date.day as i32, s.date.month as i32 - 1, s.date.year])
        .collect();
    let (tx, rx) = bounded::<TileMsg>(batch * 2);
    let mut infer_time = Duration::ZERO;
    let mut write_time = Duration::ZERO;
    let mut inferred = 0_usize;
    let mut patches_valid = 0_u64;
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); dim];
    let read_time = std::thread::scope(|s| -> Result<Duration, Error> {
        let stacks_ref = &stacks;
        let s1_ref = &s1_stacks;
        let head_ref = &spec.head;
        let tiles_ref = &tiles;
        let spec_ref = &spec;
        let reader = s.spawn(move || -> Result<Duration, Error> {
            let mut readers = stacks_ref
                .iter()
                .map(|(_, st)| StackReader::open(st))
                .collect::<Result<Vec<_>, _>>()?;
            let mut s1_readers = s1_ref
                .iter()
                .map(StackReader::open)
                .collect::<Result<Vec<_>, _>>()?;
            let s1_scaling = spec_ref
                .sentinel1
                .as_ref()
                .map(|s| s.scaling.clone())
                .unwrap_or_default();
            let mut busy = Duration::ZERO;
            let mut buf = Vec::new();
            for &t in tiles_ref {
                let start = Instant::now();
                let win = Window {
                    x: t.window.x * p as i64,
                    y: t.window.y * p as i64,
                    width: tile,
                    height: tile,
                };
                let plane = tile * tile;
                let mut input = vec![0.0_f32; plane * t_steps * n_bands];
                let mut input_s1 = vec![0.0_f32; plane * t_steps * n_s1];
                for (ti, (st, reader)) in s1_ref.iter().zip(s1_readers.iter_mut()).enumerate() {
                    buf.resize(st.vrt_bands * plane, 0.0);
                    reader.read(win, &mut buf)?;
                    for i in 0..plane {
                        let base = (i * t_steps + ti) * n_s1;
                        for (c, b) in st.bands.iter().enumerate() {
                            let v = b.vrt_band.map_or(f32::NAN, |k| buf[(k - 1) * plane + i]);
                            input_s1[base + c] = if v.is_finite() {
                                s1_scaling[c].apply(b.rescale.apply(v))
                            } else {
                                0.0
                            };
                        }
                    }
                }
                let mut pixel_valid = vec![false; plane];
                for (ti, ((_, st), reader)) in stacks_ref.iter().zip(readers.iter_mut()).enumerate()
                {
                    buf.resize(st.vrt_bands * plane, 0.0);
                    reader.read(win, &mut buf)?;
                    for i in 0..plane {
                        let ok = st
                            .bands
                            .iter()
                            .filter_map(|b| b.vrt_band)
                            .all(|k| buf[(k - 1) * plane + i].is_finite());
                        if !ok {
                            continue;
                        }
                        pixel_valid[i] = true;
                        let base = (i * t_steps + ti) * n_bands;
                        for (c, b) in st.bands.iter().enumerate() {
                            input[base + c] = match b.vrt_band {
                                Some(k) => spec_ref.scaling[c]
                                    .apply(b.rescale.apply(buf[(k - 1) * plane + i])),
                                None => 0.0,
                            };
                        }
                    }
                }
                // A patch is valid when one of its pixels inside the scene has valid input.
                let mut valid = vec![false; tp * tp];
                for py in 0..tile {
                    for px in 0..tile {
                        let (sx, sy) = (win.x + px as i64, win.y + py as i64);
                        if sx < width as i64 && sy < height as i64 && pixel_valid[py * tile + px] {
                            valid[(py / p) * tp + px / p] = true;
                        }
                    }
                }
                let inferred = valid.iter().any(|&v| v);
                busy += start.elapsed();
                let msg = TileMsg {
                    tile: t,
                    input: if inferred { input } else { Vec::new() },
                    input_s1: if inferred { input_s1 } else { Vec::new() },
                    pixel_valid: if inferred && head_ref.is_some() {
                        pixel_valid
                    } else {
                        Vec::new()
                    },
                    valid,
                    inferred,
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
            Ok(busy)
        });

        let result = (|| -> Result<(), Error> {
            // Embeddings blend per patch; a head's class probabilities per pixel.
            let (weights, mut acc) = if head.is_some() {
                (
                    crate::grid::sine_weights(tile),
                    BandAccumulator::new(width, height, n_out, tile, args.probabilities),
                )
            } else {
                (grid.weights(), BandAccumulator::new(pw, ph, dim, tp, false))
            };
            let mut row: Option<usize> = None;
            let mut pending: Vec<TileMsg> = Vec::new();
            // Hands on every row above patch row `upto`.
            let mut flush =
                |acc: &mut BandAccumulator, upto: usize, outputs: &mut Out| -> Result<(), Error> {
                    let start = Instant::now();
                    match outputs {
                        Out::Embeddings { sink, table } => {
                            if let Some(f) = acc.flush_means_until(upto) {
                                sink.write_rows(f.y, f.rows, &f.values)?;
                                let plane = f.rows * pw;
                                for (b, r) in ranges.iter_mut().enumerate() {
                                    for &v in f.values[b * plane..(b + 1) * plane]
                                        .iter()
                                        .filter(|v| v.is_finite())
                                    {
                                        *r = (r.0.min(v), r.1.max(v));
                                    }
                                }
                                table.write_block(f.y, f.rows, pw, &f.values, &f.valid)?;
                                patches_valid += f.valid.iter().filter(|&&v| v).count() as u64;
                            }
                        }
                        Out::Classes {
                            classes,
                            probs,
                            records,
                            totals,
                        } => {
                            if let Some(f) = acc.flush_until((upto * p).min(height)) {
                                classes.write_rows(f.y, f.rows, &f.classes)?;
                                if let Some(pr) = probs.as_mut() {
                                    pr.write_rows(f.y, f.rows, &f.probs)?;
                                }
                                for &c in &f.classes {
                                    if let Some(t) = totals.get_mut(usize::from(c)) {
                                        *t += 1;
                                    }
                                }
                                crate::output::parquet::count_rows(records, &f, width);
                            }
                        }
                    }
                    write_time += start.elapsed();
                    Ok(())
                };
            let mut run_batch = |pending: &mut Vec<TileMsg>,
                                 acc: &mut BandAccumulator,
                                 row: &mut Option<usize>,
                                 outputs: &mut Out|
             -> Result<(), Error> {
                let start = Instant::now();
                let idx: Vec<usize> = (0..pending.len())
                    .filter(|&i| pending[i].inferred)
                    .collect();
                let mut features = Vec::new();
                if !idx.is_empty() {
                    let mut input = Vec::with_capacity(idx.len() * pending[idx[0]].input.len());
                    let mut input_s1 =
                        Vec::with_capacity(idx.len() * pending[idx[0]].input_s1.len());
                    let mut ts = Vec::with_capacity(idx.len() * timestamps.len());
                    for &i in &idx {
                        input.extend_from_slice(&pending[i].input);
                        input_s1.extend_from_slice(&pending[i].input_s1);
                        ts.extend_from_slice(&timestamps);
                    }
                    let err = |m: String| ModelError::Inference {
                        path: onnx.clone(),
                        message: m,
                    };
                    let s2 = TensorRef::from_array_view((
                        [idx.len(), tile, tile, t_steps, n_bands],
                        input.as_slice(),
                    ))
                    .map_err(|e| err(e.to_string()))?;
                    let tt = TensorRef::from_array_view(([idx.len(), t_steps, 3], ts.as_slice()))
                        .map_err(|e| err(e.to_string()))?;
                    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
                        (Cow::Borrowed("s2"), s2.into()),
                        (Cow::Borrowed("timestamps"), tt.into()),
                    ];
                    if n_s1 > 0 {
                        let s1 = TensorRef::from_array_view((
                            [idx.len(), tile, tile, t_steps, n_s1],
                            input_s1.as_slice(),
                        ))
                        .map_err(|e| err(e.to_string()))?;
                        inputs.push((Cow::Borrowed("s1"), s1.into()));
                    }
                    let outs = session.run(inputs).map_err(|e| err(e.to_string()))?;
                    let (shape, data) = outs[0]
                        .try_extract_tensor::<f32>()
                        .map_err(|e| err(e.to_string()))?;
                    let expected = [
                        idx.len() as i64,
                        n_out as i64,
                        out_side as i64,
                        out_side as i64,
                    ];
                    if shape[..] != expected {
                        return Err(err(format!(
                            "output shape {:?}, expected {expected:?}",
                            &shape[..]
                        ))
                        .into());
                    }
                    features = data.to_vec();
                    if spec.head_softmax {
                        for sample in features.chunks_mut(n_out * out_side * out_side) {
                            crate::blend::softmax_classes(sample, n_out);
                        }
                    }
                    inferred += idx.len();
                }
                infer_time += start.elapsed();
                let per = n_out * out_side * out_side;
                let mut k = 0;
                for m in pending.drain(..) {
                    if let Some(r) = row.filter(|&r| r != m.tile.row) {
                        flush(acc, grid.rows_final_after(r), outputs)?;
                    }
                    *row = Some(m.tile.row);
                    if let Out::Classes { records, .. } = outputs {
                        // Records hold every tile of the grid in id order.
                        if let Some(rec) = records.get_mut(m.tile.id) {
                            rec.inferred = m.inferred;
                        }
                    }
                    if m.inferred {
                        let out_k = &features[k * per..(k + 1) * per];
                        if head.is_some() {
                            let w = Window {
                                x: m.tile.window.x * p as i64,
                                y: m.tile.window.y * p as i64,
                                width: tile,
                                height: tile,
                            };
                            acc.add(w, out_k, &weights, &m.pixel_valid);
                        } else {
                            acc.add(m.tile.window, out_k, &weights, &m.valid);
                        }
                        k += 1;
                    }
                }
                Ok(())
            };
            for msg in &rx {
                pending.push(msg);
                if pending.iter().filter(|m| m.inferred).count() == batch {
                    run_batch(&mut pending, &mut acc, &mut row, &mut outputs)?;
                }
            }
            run_batch(&mut pending, &mut acc, &mut row, &mut outputs)?;
            flush(&mut acc, ph, &mut outputs)?;
            Ok(())
        })();
        drop(rx);
        let read = reader.join().map_err(|_| Error::Pipeline("reader"))?;
        result?;
        read
    })?;

    let t_final = Instant::now();
    let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
    let (rows, class_pixels) = match outputs {
        Out::Embeddings { sink, table } => {
            if args.uint8 {
                sink.finish_cog_uint8(&part_cog, &ranges)?;
            } else {
                sink.finish_cog(&part_cog)?;
            }
            moves.push((part_cog.clone(), final_cog.clone()));
            moves.push((aux_path(&part_cog), aux_path(&final_cog)));
            moves.push((part_table.clone(), final_table.clone()));
            (table.close()?, serde_json::Value::Null)
        }
        Out::Classes {
            classes,
            probs,
            records,
            totals,
        } => {
            classes.finish_cog(&part_classes)?;
            moves.push((part_classes.clone(), final_classes.clone()));
            moves.push((aux_path(&part_classes), aux_path(&final_classes)));
            if let Some(pr) = probs {
                pr.finish_cog(&part_probs)?;
                moves.push((part_probs.clone(), final_probs.clone()));
                moves.push((aux_path(&part_probs), aux_path(&final_probs)));
            }
            if let Some(class_info) = &head {
                moves.extend(crate::output::qgis::write_styles(
                    &final_classes,
                    args.probabilities.then_some(final_probs.as_path()),
                    None,
                    class_info,
                    &mut temps,
                )?);
            }
            let names: Vec<String> = head.iter().flatten().map(|c| c.name.clone()).collect();
            crate::output::parquet::write_tiles(
                &part_tiles,
                &records,
                &names,
                &first.geo_transform,
                &first.projjson,
            )?;
            moves.push((part_tiles.clone(), final_tiles.clone()));
            let counts: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .cloned()
                .zip(totals.iter().map(|&t| t.into()))
                .collect();
            (records.len(), serde_json::Value::Object(counts))
        }
    };
    let summary = EmbedSummary {
        eoinfer_version: env!("CARGO_PKG_VERSION").to_string(),
        gdal_version: gdal::version::version_info("RELEASE_NAME"),
        model: serde_json::json!({
            "manifest": args.model, "id": spec.id, "onnx": onnx, "sha256": sha, "version": spec.version,
            "random_weights": spec.random_weights, "patch_size": p, "embedding_dim": dim,
        }),
        time_steps: stacks
            .iter()
            .map(|(t, s)| StepInfo {
                scene: t.source.label().to_string(),
                date: t.date,
                date_source: t.date_source.clone(),
                bands: s.bands.clone(),
            })
            .collect(),
        grid: serde_json::json!({
            "width": width, "height": height, "geo_transform": gt, "epsg": first.epsg,
            "patch_width": pw, "patch_height": ph, "patch_geo_transform": patch_gt,
        }),
        parameters: serde_json::json!({
            "tile_size": tile, "overlap": overlap, "embedding_dtype": if args.uint8 { "uint8" } else { "float32" }, "batch_size": batch, "threads": threads, "device": args.device.to_string(),
        }),
        counts: serde_json::json!({
            "time_steps": t_steps, "tiles": tiles.len(), "tiles_inferred": inferred, "patches": pw * ph,
            "patches_valid": patches_valid, "parquet_rows": rows, "class_pixels": class_pixels,
        }),
        timings_s: serde_json::json!({
            "read": read_time.as_secs_f64(), "inference": infer_time.as_secs_f64(), "write": write_time.as_secs_f64(),
            "finalize": t_final.elapsed().as_secs_f64(), "total": t0.elapsed().as_secs_f64(),
        }),
        outputs: if head.is_some() {
            serde_json::json!({"classes": final_classes, "probabilities": args.probabilities.then_some(&final_probs), "tiles": final_tiles, "summary": final_summary})
        } else {
            serde_json::json!({"embeddings": final_cog, "table": final_table, "summary": final_summary})
        },
        warnings,
    };
    let mut text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    text.push('\n');
    std::fs::write(&part_summary, text).map_err(|source| OutputError::Io {
        path: part_summary.clone(),
        source,
    })?;
    moves.push((part_summary, final_summary.clone()));
    {
        use crate::output::stac::{Asset, COG, JSON, PARQUET, QML, RunItem, item_json};
        let final_item = out.join(format!("{name}.item.json"));
        let dates: Vec<String> = stacks.iter().map(|(t, _)| t.date.to_string()).collect();
        let mut assets = vec![Asset {
            key: "summary",
            path: final_summary.clone(),
            media_type: JSON,
            roles: &["metadata"],
            title: "run summary".into(),
        }];
        let (w, h, grid_gt) = if head.is_some() {
            assets.push(Asset {
                key: "classes",
                path: final_classes.clone(),
                media_type: COG,
                roles: &["data"],
                title: format!("class map ({})", spec.id),
            });
            assets.push(Asset {
                key: "classes_style",
                path: crate::output::qgis::style_path(&final_classes),
                media_type: QML,
                roles: &["style"],
                title: "QGIS style of the class map".into(),
            });
            assets.push(Asset {
                key: "tiles",
                path: final_tiles.clone(),
                media_type: PARQUET,
                roles: &["data", "metadata"],
                title: "tiles with class counts (GeoParquet)".into(),
            });
            if args.probabilities {
                assets.push(Asset {
                    key: "probabilities",
                    path: final_probs.clone(),
                    media_type: COG,
                    roles: &["data"],
                    title: "class probabilities (uint8, scale 1/255)".into(),
                });
            }
            (width, height, gt)
        } else {
            assets.push(Asset {
                key: "embeddings",
                path: final_cog.clone(),
                media_type: COG,
                roles: &["data"],
                title: format!("embeddings, one pixel per patch ({})", spec.id),
            });
            assets.push(Asset {
                key: "embeddings_table",
                path: final_table.clone(),
                media_type: PARQUET,
                roles: &["data"],
                title: "embeddings per patch (GeoParquet)".into(),
            });
            (pw, ph, patch_gt)
        };
        let item = RunItem {
            id: &name,
            start: dates.first().cloned(),
            end: dates.last().cloned(),
            width: w,
            height: h,
            geo_transform: grid_gt,
            srs_wkt: &first.srs_wkt,
            epsg: first.epsg,
            assets,
            model_manifest: &args.model,
            model_id: &spec.id,
            onnx_sha256: &sha,
            inputs: stacks
                .iter()
                .map(|(t, _)| (t.source.label().to_string(), Some(t.date.to_string())))
                .collect(),
        };
        let doc = item_json(&item, &final_item, &crate::util::now_rfc3339())?;
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        moves.push(crate::output::qgis::stage_text(
            &final_item,
            &text,
            &mut temps,
        )?);
    }
    moves.retain(|(from, _)| from.exists());
    temps.commit(moves)?;
    crate::output::stac::update_catalog(
        out,
        &format!("{name}.item.json"),
        &format!("{} on {name}", spec.id),
    )?;
    Ok(summary)
}

/// Parses `--dates 2021-01-05,2021-02-04`.
pub fn parse_dates(s: &str) -> Result<Vec<Date>, SceneError> {
    s.split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            crate::scene::timeseries::parse_date(d.trim()).ok_or_else(|| SceneError::Series {
                what: format!("--dates entry `{d}` is not a date (YYYY-MM-DD)"),
            })
        })
        .collect()
}

/// Whether the manifest at `path` describes an embedding model, and its JSON.
#[must_use]
pub fn embedding_manifest(path: &Path) -> Option<serde_json::Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(crate::model::golden::is_embedding_manifest)
}
