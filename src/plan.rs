//! Command-line values -> one validated plan. Everything is checked here, before any output
//! is written; nothing below this module sees clap types.

use crate::error::JobError;
use crate::error::{Error, LimitError, ModelError, OutputError};
use crate::grid::Tiling;
use crate::model::ModelSpec;
use crate::model::embedding::EncoderHead;
use crate::scene::{SceneOptions, Stack, StackRequest, open_stack_request, parse_band_map};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which tiling scheme to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TilingChoice {
    /// eoinfer's blended scheme (default).
    #[default]
    Blended,
    /// The model authors' own scheme.
    Reference,
}

/// Raw predict arguments (as given, not yet checked).
#[allow(clippy::struct_excessive_bools)] // the command line's flags, one field each
#[derive(Debug, Clone, Default)]
pub struct PredictArgs {
    /// Manifest path.
    pub model: PathBuf,
    /// Scenes: one path or GDAL dataset name, or with `aoi` any number of scenes, folders of
    /// dated files, `.txt` lists and STAC ItemCollections.
    pub scenes: Vec<String>,
    /// `--aoi`: the area of interest, which defines the output grid.
    pub aoi: Option<String>,
    /// `--aoi-crs`: CRS of a bounding-box or WKT AOI.
    pub aoi_crs: Option<String>,
    /// `--crs`: CRS of the AOI grid (default: UTM of the AOI's centroid).
    pub crs: Option<String>,
    /// `--shard`.
    pub shard: Option<Shard>,
    /// `--block-rows`: tile rows per block.
    pub block_rows: Option<usize>,
    /// `--panel-width`: width of a column panel in pixels.
    pub panel_width: Option<usize>,
    /// `--force`: discard an earlier run's finished work.
    pub force: bool,
    /// Output folder.
    pub out: PathBuf,
    /// Output name (default: from the scene).
    pub name: Option<String>,
    /// `--bands` mapping.
    pub bands: Option<String>,
    /// `--resolution`.
    pub resolution: Option<f64>,
    /// `--s2-offset`.
    pub s2_offset: Option<f64>,
    /// `--nodata`.
    pub nodata: Option<f64>,
    /// The input contract's flags (`--scale`, `--offset`, `--allow-upsample`, ...).
    pub read: crate::scene::ReadFlags,
    /// `--accept-out-of-range`.
    pub accept_out_of_range: bool,
    /// `--tiling`.
    pub tiling: TilingChoice,
    /// `--overlap` in pixels.
    pub overlap: Option<usize>,
    /// `--batch-size`.
    pub batch_size: usize,
    /// `--threads` (0 = all cores).
    pub threads: usize,
    /// `--probabilities`.
    pub probabilities: bool,
    /// `--confidence`.
    pub confidence: bool,
    /// `--ort-lib`.
    pub ort_lib: Option<PathBuf>,
    /// `--device`.
    pub device: crate::model::Device,
    /// `--io-binding`: run through ONNX Runtime's IO binding also on the CPU (always on a GPU).
    pub io_binding: bool,
    /// `--tile-size` (models with dynamic input height and width).
    pub tile_size: Option<usize>,
    /// `--tta`.
    pub tta: crate::tta::Tta,
    /// `--vectors` with its options.
    pub vectors: Option<crate::output::vectors::PolygonizeOptions>,
    /// `--qgis-project`.
    pub qgis_project: bool,
    /// `--memory-limit` in bytes (default: the process's cgroup limit, else the machine's RAM).
    pub memory_limit: Option<u64>,
    /// `--max-pixels`: the largest grid.
    pub max_pixels: Option<u64>,
    /// `--dates`: dates of time-series scenes that carry none, in the order given.
    pub dates: Vec<crate::scene::timeseries::Date>,
    /// `--embedding-dtype uint8`: quantise the embeddings COG.
    pub embedding_uint8: bool,
    /// `--value-dtype uint8`: quantise a regression head's values COG over the manifest's
    /// expected range.
    pub value_uint8: bool,
    /// `--relax-temporal-contract`: run a series whose spacing (or an event's image dates)
    /// breaks a task model's temporal contract, with a warning in the summary.
    pub relax_temporal_contract: bool,
    /// `--events`: label windows centred on these polygons instead of tiling the grid.
    pub events: Option<PathBuf>,
    /// `--event-date`: the date of events without an `event_date` attribute.
    pub event_date: Option<crate::scene::timeseries::Date>,
}

/// What a run writes: the head chosen from the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadPlan {
    /// A class map (segmentation, or an encoder's segmentation head): classes COG,
    /// probabilities, tiles GeoParquet, polygons, styles.
    #[default]
    Classes,
    /// Per-patch embeddings: a COG with one pixel per patch and a GeoParquet row per patch.
    Embeddings {
        /// Embedding size D.
        dim: usize,
        /// Whether the COG is quantised to uint8 (scale and offset per band from the whole
        /// run, so shards merge to the same bytes).
        uint8: bool,
    },
    /// One value per pixel (a regression head): a float32 COG with the value's name, unit
    /// and nodata, a QGIS colour ramp, per-tile statistics in the tiles GeoParquet.
    Regression {
        /// The value (name, unit, nodata, expected range) from the manifest.
        value: crate::model::embedding::RegressionSpec,
        /// Whether the COG is quantised to uint8 over the manifest's range (the same scale
        /// for every shard).
        uint8: bool,
    },
    /// One label per window of the tile-grid unit (a classification head): a class COG at
    /// window resolution and a GeoParquet row per window with its class scores.
    Classification,
}

/// A checked predict run.
#[allow(clippy::struct_excessive_bools)] // one per output or run option
#[derive(Debug, Clone)]
pub struct PredictPlan {
    /// The model.
    pub model: ModelSpec,
    /// The scene on the model's grid.
    pub stack: Stack,
    /// Output folder (exists, writable).
    pub out_dir: PathBuf,
    /// Output base name.
    pub name: String,
    /// Tiling scheme.
    pub tiling: Tiling,
    /// Tiles per inference batch.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Whether to write probabilities.
    pub probabilities: bool,
    /// Whether to write the confidence COG (the winning class's probability).
    pub confidence: bool,
    /// ONNX Runtime library.
    pub ort_lib: PathBuf,
    /// Where the model runs.
    pub device: crate::model::Device,
    /// Whether the model runs through ONNX Runtime's IO binding.
    pub io_binding: bool,
    /// Test-time augmentation.
    pub tta: crate::tta::Tta,
    /// Polygons of the class map.
    pub vectors: Option<crate::output::vectors::PolygonizeOptions>,
    /// Write `<name>.qgs`.
    pub qgis_project: bool,
    /// sha256 of the ONNX file.
    pub onnx_sha256: String,
    /// Warnings found while planning.
    pub warnings: Vec<String>,
    /// The area of interest.
    pub aoi: Option<crate::aoi::Aoi>,
    /// The scenes of an AOI mosaic, highest priority first.
    pub mosaic: Vec<crate::scene::mosaic::MosaicScene>,
    /// The tiles to run (touching the scene, and the AOI if there is one), row-major.
    pub tiles: Vec<crate::grid::Tile>,
    /// The blocks of tile rows: the unit of sharding and resuming.
    pub blocks: Vec<crate::grid::Block>,
    /// This process's shard, if sharded.
    pub shard: Option<Shard>,
    /// Discard an earlier run's finished work.
    pub force: bool,
    /// The plan document (everything that decides the outputs) with its hash.
    pub job: JobPlan,
    /// The memory limit the run was checked against.
    pub memory: crate::limits::MemoryLimit,
    /// A time-series model's steps in date order (empty for a single-date model; the first
    /// step's stack is `stack`).
    pub series: Vec<crate::scene::series::SeriesStep>,
}

/// A shard: share `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

/// Environment variables that carry an array job's index, in the order they are tried.
pub const SHARD_INDEX_VARS: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

impl Shard {
    /// Parses `i/N`, or `auto/N` with `i` from the first of [`SHARD_INDEX_VARS`] that `env`
    /// has.
    ///
    /// ```
    /// use eoinfer::plan::Shard;
    /// let env = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "2".to_string());
    /// assert_eq!(Shard::parse("auto/4", env).unwrap(), Shard { index: 2, count: 4 });
    /// assert_eq!(Shard::parse("1/3", |_| None).unwrap(), Shard { index: 1, count: 3 });
    /// assert!(Shard::parse("3/3", |_| None).is_err());
    /// ```
    pub fn parse(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, JobError> {
        let bad = || JobError::BadShard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        let index = if i.trim() == "auto" {
            let found = SHARD_INDEX_VARS
                .iter()
                .find_map(|k| env(k).map(|v| (*k, v)));
            match found {
                Some((k, v)) => v.trim().parse().map_err(|_| {
                    JobError::BadShard(format!("{s} ({k}={v} is not a whole number)"))
                })?,
                None => {
                    return Err(JobError::NoShardIndex {
                        count,
                        found: String::new(),
                    });
                }
            }
        } else {
            i.trim().parse().map_err(|_| bad())?
        };
        if index >= count {
            return Err(JobError::BadShard(format!(
                "{s} (index {index} is not below {count}; Slurm arrays should run --array=0-{})",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// Name of the shard's journal and log lines: `shard-2-of-8`.
    #[must_use]
    pub fn tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// The grid of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanGrid {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// GDAL geotransform.
    pub geo_transform: [f64; 6],
    /// CRS as WKT.
    pub srs_wkt: String,
    /// CRS as PROJJSON.
    pub projjson: String,
    /// EPSG code, when the CRS has one.
    pub epsg: Option<i32>,
}

/// The model of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanModel {
    /// Manifest path.
    pub manifest: PathBuf,
    /// Model id.
    pub id: String,
    /// ONNX file.
    pub onnx: PathBuf,
    /// sha256 of the ONNX file.
    pub onnx_sha256: String,
    /// Classes.
    pub classes: Vec<crate::model::ClassInfo>,
    /// Probabilities are written as float32 (a per-pixel model's), not as 0..=255.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub float_probabilities: bool,
    /// A per-pixel model's probability mask (threshold and radii decide the class map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<crate::postprocess::MaskSpec>,
    /// The model's licence and attribution, for the summary and the STAC Item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// See `license`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// A task model's temporal contract, in words (`eoinfer:temporal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_contract: Option<String>,
}

/// The plan document `<out>/<name>.plan.json`: everything that decides a run's outputs (grid,
/// AOI, scenes, model, parameters, tiles and blocks) and the sha256 of all of it. Processes
/// with the same plan hash produce the same pixels; a journal of another hash is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobPlan {
    /// sha256 of the document with this field empty and without `shards`.
    pub plan_hash: String,
    /// eoinfer's version (part of the hash: blocks of two versions are not mixed).
    pub eoinfer_version: String,
    /// Output base name.
    pub name: String,
    /// The output grid.
    pub grid: PlanGrid,
    /// `--aoi` as given and its polygon in the grid CRS (WKT).
    pub aoi: Option<(String, String)>,
    /// The scenes (for an AOI: with priority rank, date, cloud cover, CRS).
    pub scenes: serde_json::Value,
    /// The model-ready stack (bands, sources, rescaling).
    pub stack: serde_json::Value,
    /// Scenes and dates for the STAC Item.
    pub inputs: Vec<(String, Option<String>)>,
    /// Fingerprints of every file read (band files and their sidecars, the model manifest):
    /// a resumed run whose inputs changed is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_files: Vec<crate::fingerprint::InputFile>,
    /// The model.
    pub model: PlanModel,
    /// Tiling scheme.
    pub tiling: crate::grid::Tiling,
    /// Tile edge in pixels.
    pub tile_size: usize,
    /// Test-time augmentation.
    pub tta: crate::tta::Tta,
    /// Input options (band map, resolution, offsets, nodata).
    pub inputs_options: serde_json::Value,
    /// Write probabilities.
    pub probabilities: bool,
    /// Write the confidence COG and the tiles' mean confidence (`--confidence`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confidence: bool,
    /// Polygons.
    pub vectors: Option<crate::output::vectors::PolygonizeOptions>,
    /// Write a QGIS project.
    pub qgis_project: bool,
    /// Number of tiles run.
    pub tiles: usize,
    /// Tile rows per block.
    pub block_rows: usize,
    /// Width of a column panel in pixels (blocks span whole tile columns of one panel).
    #[serde(default)]
    pub panel_width: usize,
    /// The blocks.
    pub blocks: Vec<crate::grid::Block>,
    /// Tiles run per block (its own tile rows; a shard's first block also runs its halo).
    pub block_tiles: Vec<usize>,
    /// Shard shares for the count `eoinfer plan --shards` was given: blocks per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<std::ops::Range<usize>>>,
    /// Pixels per tile-grid unit (an encoder's patch size; 1 for other models): tiles, the
    /// overlap and the blocks are counted in units.
    #[serde(default = "one")]
    pub unit: usize,
    /// What the run writes.
    #[serde(default)]
    pub head: HeadPlan,
    /// A time-series model's steps (scene, date, its source, bands), in date order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_steps: Vec<serde_json::Value>,
}

fn one() -> usize {
    1
}

impl JobPlan {
    /// The tile grid of the plan (in units of [`Self::unit`]).
    pub fn tile_grid(&self) -> Result<crate::grid::TileGrid, crate::error::GridError> {
        crate::grid::TileGrid::in_units(
            self.grid.width,
            self.grid.height,
            self.tile_size,
            self.tiling,
            self.unit,
        )
    }

    /// Width and height of the output raster and its geotransform: the pixel grid, or the
    /// patch grid for embeddings.
    #[must_use]
    pub fn out_grid(&self) -> (usize, usize, [f64; 6]) {
        let g = &self.grid;
        match self.head {
            HeadPlan::Classes | HeadPlan::Regression { .. } => (g.width, g.height, g.geo_transform),
            HeadPlan::Embeddings { .. } | HeadPlan::Classification => {
                let u = self.unit.max(1);
                let gt = g.geo_transform;
                (
                    g.width.div_ceil(u),
                    g.height.div_ceil(u),
                    [gt[0], gt[1] * u as f64, 0.0, gt[3], 0.0, gt[5] * u as f64],
                )
            }
        }
    }

    /// The widest strip a reader holds: a column panel with the tiles reaching out of it,
    /// or the scene's width when narrower.
    #[must_use]
    pub fn read_width(&self) -> usize {
        let panel = if self.panel_width == 0 {
            usize::MAX
        } else {
            self.panel_width
        };
        self.grid
            .width
            .min(panel.saturating_add(2 * self.tile_size))
    }

    /// Output pixels per tile-grid unit: 1 for embeddings (one value per patch), else the
    /// unit (one value per pixel).
    #[must_use]
    pub fn out_factor(&self) -> usize {
        match self.head {
            HeadPlan::Classes | HeadPlan::Regression { .. } => self.unit.max(1),
            HeadPlan::Embeddings { .. } | HeadPlan::Classification => 1,
        }
    }
}

impl JobPlan {
    /// sha256 of the document without its hash and shard table.
    #[must_use]
    pub fn compute_hash(&self) -> String {
        let mut bare = self.clone();
        bare.plan_hash = String::new();
        bare.shards = None;
        let v = serde_json::to_value(&bare).unwrap_or_default();
        crate::util::sha256_hex(v.to_string().as_bytes())
    }

    /// The fields whose values differ from `other`'s (for the mismatch error).
    #[must_use]
    pub fn differences(&self, other: &serde_json::Value) -> String {
        let me = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (me.as_object(), other.as_object()) {
            for (k, v) in a {
                if k == "plan_hash" || k == "shards" {
                    continue;
                }
                if b.get(k) != Some(v) {
                    out.push(k.clone());
                }
            }
        }
        if out.is_empty() {
            "unknown fields".into()
        } else {
            out.join(", ")
        }
    }
}

/// The plan document of a run.
fn job_plan(
    args: &PredictArgs,
    model: &ModelSpec,
    inputs: &Inputs,
    tiles: &[crate::grid::Tile],
    blocks: &[crate::grid::Block],
    tiling: Tiling,
    onnx_sha256: String,
) -> JobPlan {
    let stack = &inputs.stack;
    let mosaic = &inputs.mosaic;
    let mut names = vec![model.manifest.display().to_string()];
    if inputs.series.is_empty() {
        names.push(stack.vrt.clone());
        names.extend(stack.bands.iter().map(|b| b.source.clone()));
    }
    for m in mosaic {
        names.extend(m.files.iter().cloned());
    }
    for step in &inputs.series {
        names.extend(step.files());
    }
    let input_files = crate::fingerprint::fingerprints(&names);
    let scene_date = crate::scene::timeseries::parse_date(&stack.name)
        .or_else(|| crate::scene::timeseries::parse_date(&stack.scene))
        .map(|d| d.to_string());
    let scenes = if !inputs.series.is_empty() {
        serde_json::Value::Array(
            inputs
                .series
                .iter()
                .map(|s| serde_json::json!({ "scene": s.label, "date": s.date.to_string() }))
                .collect(),
        )
    } else if mosaic.is_empty() {
        serde_json::json!([{ "scene": stack.scene }])
    } else {
        serde_json::to_value(mosaic).unwrap_or_default()
    };
    let inputs_list = if !inputs.series.is_empty() {
        inputs
            .series
            .iter()
            .map(|s| (s.label.clone(), Some(s.date.to_string())))
            .collect()
    } else if mosaic.is_empty() {
        vec![(stack.scene.clone(), scene_date)]
    } else {
        mosaic
            .iter()
            .map(|m| (m.scene.clone(), m.date.clone()))
            .collect()
    };
    let mut job = JobPlan {
        plan_hash: String::new(),
        eoinfer_version: env!("CARGO_PKG_VERSION").to_string(),
        name: inputs.name.clone(),
        grid: PlanGrid {
            width: stack.width,
            height: stack.height,
            geo_transform: stack.geo_transform,
            srs_wkt: stack.srs_wkt.clone(),
            projjson: stack.projjson.clone(),
            epsg: stack.epsg,
        },
        aoi: inputs
            .aoi
            .as_ref()
            .map(|a| (a.source.clone(), a.wkt.clone())),
        scenes,
        stack: serde_json::to_value(stack).unwrap_or_default(),
        inputs: inputs_list,
        input_files,
        model: PlanModel {
            manifest: model.manifest.clone(),
            id: model.id.clone(),
            onnx: model.onnx.clone(),
            onnx_sha256,
            classes: model.classes.clone(),
            float_probabilities: model.pixel.is_some(),
            mask: model.pixel,
            license: model.license.clone(),
            attribution: model.attribution.clone(),
            temporal_contract: model
                .encoder
                .as_ref()
                .and_then(|e| e.temporal.as_ref())
                .map(crate::model::temporal::TemporalContract::describe),
        },
        tiling,
        tile_size: model.tile_size,
        tta: args.tta,
        inputs_options: serde_json::json!({
            "bands": args.bands,
            "resolution": args.resolution,
            "s2_offset": args.s2_offset,
            "nodata": args.nodata,
            "read": args.read,
            "accept_out_of_range": args.accept_out_of_range,
            "crs": args.crs,
            "aoi_crs": args.aoi_crs,
        }),
        probabilities: args.probabilities,
        confidence: args.confidence,
        vectors: args.vectors,
        qgis_project: args.qgis_project,
        tiles: tiles.len(),
        block_rows: args.block_rows.unwrap_or(DEFAULT_BLOCK_ROWS),
        panel_width: panel_width(args, inputs.series.len()),
        block_tiles: blocks
            .iter()
            .map(|b| {
                tiles
                    .iter()
                    .filter(|t| {
                        (b.tile_rows.0..b.tile_rows.1).contains(&t.row)
                            && (b.tile_cols.0..b.tile_cols.1).contains(&t.col)
                    })
                    .count()
            })
            .collect(),
        blocks: blocks.to_vec(),
        shards: None,
        unit: model.unit(),
        head: match &model.encoder {
            Some(e) => match e.head_kind {
                EncoderHead::Embeddings => HeadPlan::Embeddings {
                    dim: e.embedding_dim,
                    uint8: args.embedding_uint8,
                },
                EncoderHead::Segmentation => HeadPlan::Classes,
                EncoderHead::Regression => HeadPlan::Regression {
                    value: e.regression.clone().unwrap_or_else(|| {
                        crate::model::embedding::RegressionSpec {
                            name: "value".into(),
                            unit: String::new(),
                            nodata: -9999.0,
                            range: [0.0, 1.0],
                        }
                    }),
                    uint8: args.value_uint8,
                },
                EncoderHead::Classification => HeadPlan::Classification,
            },
            None => HeadPlan::Classes,
        },
        time_steps: inputs
            .series
            .iter()
            .map(crate::scene::series::SeriesStep::describe)
            .collect(),
    };
    job.plan_hash = job.compute_hash();
    job
}

/// Refuses a time-series run whose readers, batches and blending would not fit in the
/// memory limit, before anything is allocated.
fn check_memory_series(
    series: &[crate::scene::series::SeriesStep],
    model: &ModelSpec,
    args: &PredictArgs,
    batch: usize,
    limit: &crate::limits::MemoryLimit,
) -> Result<(), LimitError> {
    let Some(enc) = &model.encoder else {
        return Ok(());
    };
    let tile = model.tile_size as u64;
    let steps = series.len() as u64;
    let width = read_width(series[0].stack.width, args, model, series.len()) as u64;
    let bands = (enc.bands.len() + enc.sentinel1.as_ref().map_or(0, |s| s.bands.len())) as u64;
    let out = match &enc.head {
        Some(c) => c.len() as u64 * tile * tile,
        None => enc.embedding_dim as u64 * (tile / enc.patch_size as u64).pow(2),
    };
    // Each tile's input and output, in the batch and queued between the stages.
    let per_tile = (tile * tile * steps * bands + out).saturating_mul(4 * 5);
    // The strip readers: a band of rows of every band of every step.
    let read_bands: u64 = series
        .iter()
        .map(|s| (s.stack.vrt_bands + s.s1.as_ref().map_or(0, |x| x.vrt_bands)) as u64)
        .sum();
    let rows = width
        .saturating_mul(tile + 1 + crate::scene::StripReader::CHUNK as u64)
        .saturating_mul(read_bands)
        .saturating_mul(4);
    let cache = crate::source::series_cache_bytes(series, width as usize, limit.bytes);
    let fixed = crate::limits::BASE_BYTES + rows + cache;
    let need = fixed.saturating_add(per_tile.saturating_mul(batch as u64));
    if need <= limit.bytes {
        return Ok(());
    }
    let max = limit.bytes.saturating_sub(fixed) / per_tile.max(1);
    Err(LimitError::Memory {
        need: crate::limits::human(need),
        breakdown: format!(
            "the batch's tensors and queued tiles {}, the time steps' rows {}, GDAL's block cache {}",
            crate::limits::human(per_tile.saturating_mul(batch as u64)),
            crate::limits::human(rows),
            crate::limits::human(cache)
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

/// Default tile rows per block.
pub const DEFAULT_BLOCK_ROWS: usize = 2;

/// Default width of a column panel in pixels for a time series of several steps (whose
/// strips hold every band of every step) and for one scene.
pub const DEFAULT_PANEL_WIDTH: (usize, usize) = (2048, 4096);

/// `--panel-width`, else the default for a run of `steps` time steps. One scene gets wider
/// panels: its strips are small (6 to 13 bands), and each panel boundary costs reading
/// (measured on the 3660 px grid of a Sentinel-2 tile at 30 m: 2 panels of 2048 px 49.6 s,
/// one panel 46.4 s, medians of 3 alternating runs).
fn panel_width(args: &PredictArgs, steps: usize) -> usize {
    args.panel_width.unwrap_or(if steps > 1 {
        DEFAULT_PANEL_WIDTH.0
    } else {
        DEFAULT_PANEL_WIDTH.1
    })
}

/// The widest strip a reader holds: a column panel with the tiles reaching out of it, or
/// the scene's width when narrower.
fn read_width(width: usize, args: &PredictArgs, model: &ModelSpec, steps: usize) -> usize {
    width.min(panel_width(args, steps).saturating_add(2 * model.tile_size))
}

/// What `predict --events` runs on: a classification model and the series on its grid.
#[derive(Debug)]
pub struct EventInputs {
    /// The model.
    pub model: ModelSpec,
    /// Every time step (each event picks its own).
    pub series: Vec<crate::scene::series::SeriesStep>,
    /// The series' grid.
    pub stack: Stack,
    /// The outputs' base name.
    pub name: String,
    /// Warnings so far.
    pub warnings: Vec<String>,
    /// The ONNX Runtime library.
    pub ort_lib: PathBuf,
    /// ONNX Runtime threads.
    pub threads: usize,
}

/// Opens the inputs of `predict --events`: refuses options that only apply to a tiled grid.
pub fn open_events(args: &PredictArgs) -> Result<EventInputs, Error> {
    let refuse = |what: String| -> Error { crate::error::SceneError::Series { what }.into() };
    check_counts(args)?;
    let threads = crate::limits::check_threads(args.threads)?;
    let model = ModelSpec::load(&args.model)?;
    if model.head_kind() != Some(EncoderHead::Classification) {
        return Err(refuse(format!(
            "--events labels one window per event and needs a classification model (`eoinfer:head` = classification); {} is not one",
            model.manifest.display()
        )));
    }
    if !model.onnx.is_file() {
        return Err(ModelError::OnnxMissing {
            path: model.onnx.clone(),
            manifest: model.manifest.clone(),
        }
        .into());
    }
    let given = [
        ("--aoi", args.aoi.is_some()),
        ("--shard", args.shard.is_some()),
        ("--tile-size", args.tile_size.is_some()),
        ("--overlap", args.overlap.is_some()),
        ("--probabilities", args.probabilities),
        ("--confidence", args.confidence),
        ("--vectors", args.vectors.is_some()),
        ("--qgis-project", args.qgis_project),
        ("--tta", args.tta != crate::tta::Tta::None),
        (
            "--embedding-dtype/--value-dtype",
            args.embedding_uint8 || args.value_uint8,
        ),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
        return Err(refuse(format!(
            "{flag} does not apply with --events (one window around each event, on the scenes' own grid)"
        )));
    }
    let opts = read_options(args)?;
    let inputs = open_inputs(args, &model, &opts)?;
    let mut warnings = inputs.warnings.clone();
    crate::util::push_new(
        &mut warnings,
        check_values(&inputs, &model, args.accept_out_of_range)?,
    );
    check_writable(&args.out)?;
    let ort_lib = crate::model::runtime::find_runtime(args.ort_lib.as_deref())?;
    Ok(EventInputs {
        model,
        series: inputs.series,
        stack: inputs.stack,
        name: inputs.name,
        warnings,
        ort_lib,
        threads,
    })
}

/// The scene options of a predict run: bands, resolution, offsets, limits, read flags.
fn read_options(args: &PredictArgs) -> Result<SceneOptions, Error> {
    let mut opts = scene_options(
        args.bands.as_deref(),
        args.resolution,
        args.s2_offset,
        args.nodata,
    )?;
    opts.max_pixels = args.max_pixels;
    opts.read = args.read;
    Ok(opts)
}

/// Scene options from raw arguments.
pub fn scene_options(
    bands: Option<&str>,
    resolution: Option<f64>,
    s2_offset: Option<f64>,
    nodata: Option<f64>,
) -> Result<SceneOptions, Error> {
    Ok(SceneOptions {
        band_map: bands.map(parse_band_map).transpose()?.unwrap_or_default(),
        resolution,
        s2_offset,
        nodata,
        ..SceneOptions::default()
    })
}

/// Makes sure `dir` exists and a file can be created in it.
pub fn check_writable(dir: &Path) -> Result<(), OutputError> {
    let fail = |source| OutputError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".eoinfer-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Output name of an AOI run: the AOI file's stem, else `aoi`.
fn aoi_name(aoi: &str) -> String {
    let p = Path::new(aoi);
    if p.is_file() {
        if let Some(stem) = p.file_stem() {
            return stem.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "_",
            );
        }
    }
    "aoi".into()
}

/// Counts that must not be 0 (the command line refuses them already; other callers too).
fn check_counts(args: &PredictArgs) -> Result<(), LimitError> {
    crate::limits::check_nonzero("--batch-size", Some(args.batch_size))?;
    crate::limits::check_nonzero("--block-rows", args.block_rows)?;
    crate::limits::check_nonzero("--panel-width", args.panel_width)?;
    crate::limits::check_nonzero("--tile-size", args.tile_size)
}

/// Refuses a run whose buffers and batches would not fit in the memory limit, before
/// anything is allocated.
fn check_memory(
    stack: &Stack,
    model: &ModelSpec,
    args: &PredictArgs,
    batch: usize,
    limit: &crate::limits::MemoryLimit,
) -> Result<(), LimitError> {
    let shape = crate::limits::RunShape {
        width: read_width(stack.width, args, model, 1) as u64,
        tile: model.tile_size as u64,
        read_bands: stack.vrt_bands as u64,
        bands: model.bands.len() as u64,
        classes: model.blend_channels() as u64,
        batch: batch as u64,
        runs_per_tile: args.tta.variants().len() as u64,
        gdal_cache: crate::block_cache_bytes(stack, read_width(stack.width, args, model, 1)),
        // On a GPU the model's working memory is the device's, not the process's.
        device_model: args.device != crate::model::Device::Cpu,
        model_bytes: std::fs::metadata(&model.onnx).map_or(0, |m| m.len()),
    };
    let need = shape.need();
    if need.total() <= limit.bytes {
        return Ok(());
    }
    let max_batch = shape.max_batch(limit.bytes);
    let fix = if max_batch >= 1 {
        format!(
            "--batch-size {} is too large: the allowed range here is 1 to {max_batch}; or raise --memory-limit",
            args.batch_size
        )
    } else {
        let one = crate::limits::RunShape { batch: 1, ..shape }.need();
        if one.reader + one.blend > one.total() / 2 {
            format!(
                "even one tile per batch does not fit: the readers and the blending hold strips {} px wide (a column panel) and memory follows that width; pass a smaller --panel-width or a coarser --resolution, or raise --memory-limit",
                shape.width
            )
        } else {
            format!(
                "even one tile per batch does not fit (that needs about {}); raise --memory-limit",
                crate::limits::human(one.total())
            )
        }
    };
    Err(LimitError::Memory {
        need: crate::limits::human(need.total()),
        breakdown: need.breakdown(),
        limit: limit.to_string(),
        fix,
    })
}

/// The scenes of a run as opened.
struct Inputs {
    /// The stack that defines the grid (a time series: the first step's).
    stack: Stack,
    aoi: Option<crate::aoi::Aoi>,
    mosaic: Vec<crate::scene::mosaic::MosaicScene>,
    series: Vec<crate::scene::series::SeriesStep>,
    warnings: Vec<String>,
    name: String,
}

/// Samples every stack of the run (each time step of a series) and checks its values against
/// the model's training range ([`crate::scene::values::check_stack`]); returns the warnings.
fn check_values(inputs: &Inputs, model: &ModelSpec, accept: bool) -> Result<Vec<String>, Error> {
    let float_scale = StackRequest::for_model(model).float_scale;
    let stacks: Vec<&Stack> = if inputs.series.is_empty() {
        vec![&inputs.stack]
    } else {
        inputs.series.iter().map(|s| &s.stack).collect()
    };
    let mut warnings: Vec<String> = Vec::new();
    for stack in stacks {
        let found = crate::scene::values::check_stack(stack, &model.scaling, float_scale, accept)?;
        crate::util::push_new(&mut warnings, found);
    }
    if let Some(s1) = model.encoder.as_ref().and_then(|e| e.sentinel1.as_ref()) {
        for step in &inputs.series {
            if let Some(stack) = &step.s1 {
                crate::scene::values::check_s1(stack, &s1.scaling)?;
            }
        }
    }
    Ok(warnings)
}

/// The AOI of `--aoi` on the model's grid (`--resolution`, else the model's).
fn build_aoi(
    args: &PredictArgs,
    a: &str,
    model: &ModelSpec,
    opts: &SceneOptions,
) -> Result<crate::aoi::Aoi, Error> {
    let resolution = opts.resolution.unwrap_or(model.gsd);
    if !(resolution.is_finite() && resolution > 0.0) {
        return Err(crate::error::SceneError::EmptyGrid {
            resolution,
            unit: "m".into(),
            width: 0,
            height: 0,
        }
        .into());
    }
    let aoi = crate::aoi::Aoi::build(a, args.aoi_crs.as_deref(), args.crs.as_deref(), resolution)?;
    crate::limits::check_grid(
        aoi.grid.width as f64,
        aoi.grid.height as f64,
        resolution,
        args.max_pixels,
    )?;
    Ok(aoi)
}

/// Opens the scenes: one scene, a mosaic on the AOI grid, or a time-series model's steps.
fn open_inputs(
    args: &PredictArgs,
    model: &ModelSpec,
    opts: &SceneOptions,
) -> Result<Inputs, Error> {
    // Before anything opens them (a series looks for dates in the files' metadata).
    for s in &args.scenes {
        crate::scene::check_public_cloud_path(s, opts.read.allow_public_cloud)?;
    }
    let aoi = args
        .aoi
        .as_deref()
        .map(|a| build_aoi(args, a, model, opts))
        .transpose()?;
    if aoi.is_none() && (args.crs.is_some() || args.aoi_crs.is_some()) {
        return Err(crate::error::SceneError::Series {
            what: "--crs and --aoi-crs apply with --aoi; without it the output is on the scene's own grid".into(),
        }
        .into());
    }
    if model.encoder.is_some() {
        let hint = args
            .name
            .clone()
            .or_else(|| args.aoi.as_deref().map(aoi_name))
            .unwrap_or_else(|| "series".into());
        let (series, mut warnings) = crate::scene::series::open_series(
            &args.scenes,
            &args.dates,
            model,
            opts,
            aoi.as_ref(),
            &hint,
        )?;
        // Events are checked event by event (crate::events).
        if let Some(c) = model
            .encoder
            .as_ref()
            .and_then(|e| e.temporal.as_ref())
            .filter(|_| args.events.is_none())
        {
            let dates: Vec<_> = series.iter().map(|s| s.date).collect();
            let relaxed = c
                .check_series(&dates, args.relax_temporal_contract)
                .map_err(|what| crate::error::SceneError::TemporalContract {
                    model: model.manifest.clone(),
                    what,
                })?;
            for w in &relaxed {
                tracing::warn!("{w}");
            }
            warnings.extend(relaxed);
        }
        let stack = series[0].stack.clone();
        // A series from one folder is named after the folder; otherwise after its first scene.
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| match (&args.aoi, args.scenes.as_slice()) {
                (Some(a), _) => aoi_name(a),
                (None, [one]) if Path::new(one).is_dir() && series.len() > 1 => {
                    let dir = std::path::absolute(one).unwrap_or_else(|_| PathBuf::from(one));
                    dir.file_name()
                        .map_or_else(|| stack.name.clone(), |n| n.to_string_lossy().into_owned())
                }
                _ => stack.name.clone(),
            });
        return Ok(Inputs {
            stack,
            aoi,
            mosaic: Vec::new(),
            series,
            warnings,
            name,
        });
    }
    let (stack, mosaic) = if let Some(aoi) = &aoi {
        let name = args.name.clone().unwrap_or_else(|| aoi_name(&aoi.source));
        crate::scene::mosaic::open_mosaic(
            &args.scenes,
            &StackRequest::for_model(model),
            opts,
            aoi,
            &name,
        )?
    } else {
        let [scene] = args.scenes.as_slice() else {
            return Err(crate::error::SceneError::Series {
                what: format!(
                    "{} scenes were given without --aoi; pass one scene, or an --aoi to mosaic several on one grid (time series are for time-series models such as OlmoEarth)",
                    args.scenes.len()
                ),
            }
            .into());
        };
        let stack = open_stack_request(
            &crate::scene::source_of(scene)?,
            &StackRequest::for_model(model),
            opts,
        )?;
        (stack, Vec::new())
    };
    let name = args.name.clone().unwrap_or_else(|| stack.name.clone());
    Ok(Inputs {
        warnings: stack.warnings.clone(),
        stack,
        aoi,
        mosaic,
        series: Vec::new(),
        name,
    })
}

/// The tiling of the run, checked against the model: an encoder's tiles and overlap are
/// whole patches, and blended.
fn tiling_for(args: &PredictArgs, model: &ModelSpec) -> Result<Tiling, Error> {
    if model.head_kind() == Some(EncoderHead::Classification) {
        // One label per window: the windows tile the grid without overlap.
        let window = model.unit();
        if model.tile_size != window || args.overlap.is_some_and(|o| o != 0) {
            return Err(crate::error::SceneError::Series {
                what: format!(
                    "a classification head labels windows of {window} px that do not overlap; leave out --tile-size and --overlap"
                ),
            }
            .into());
        }
        if args.tiling == TilingChoice::Reference {
            return Err(crate::error::SceneError::Series {
                what: "--tiling reference does not apply to a classification head".into(),
            }
            .into());
        }
        return Ok(Tiling::Blended { overlap: 0 });
    }
    let p = model.unit();
    let tiling = match args.tiling {
        TilingChoice::Blended => Tiling::Blended {
            // A per-pixel mask needs twice its reach, also with a smaller --tile-size.
            overlap: args.overlap.unwrap_or_else(|| {
                model
                    .overlap
                    .min(model.tile_size / 8)
                    .max(model.pixel.map_or(model.overlap, |m| 2 * m.reach()))
            }),
        },
        TilingChoice::Reference if p > 1 => {
            return Err(crate::error::SceneError::Series {
                what: "--tiling reference is the ukis-csmask authors' scheme; time-series models use the blended tiling".into(),
            }
            .into());
        }
        TilingChoice::Reference => Tiling::Reference {
            fraction: model.reference_fraction.unwrap_or(0.2),
        },
    };
    if let Some(mask) = model.pixel {
        let need = 2 * mask.reach();
        let ok = match tiling {
            Tiling::Blended { overlap } => overlap >= need && overlap < model.tile_size,
            Tiling::Reference { .. } => false,
        };
        if !ok {
            return Err(crate::error::SceneError::Series {
                what: format!(
                    "{}'s mask averages over {} px and dilates by {} px, so its tiles must overlap by at least {need} px (blended tiling, smaller than the tile size {}); this run asks for {}. Leave out --overlap / --tiling, or pass --overlap {need} or more",
                    model.id,
                    mask.average_over,
                    mask.dilation_size,
                    model.tile_size,
                    match tiling {
                        Tiling::Blended { overlap } => format!("--overlap {overlap}"),
                        Tiling::Reference { .. } => "--tiling reference".to_string(),
                    }
                ),
            }
            .into());
        }
    }
    if p > 1 {
        let tile = model.tile_size;
        // One patch per tile only without overlap (a model that labels one-token windows).
        let one_ok = matches!(tiling, Tiling::Blended { overlap: 0 });
        if tile % p != 0 || (tile / p < 2 && !one_ok) {
            return Err(crate::error::SceneError::Series {
                what: format!(
                    "--tile-size {tile} must be a multiple of the patch size {p}, at least two patches (one without overlap)"
                ),
            }
            .into());
        }
        if let Tiling::Blended { overlap } = tiling {
            if overlap % p != 0 || overlap >= tile {
                return Err(crate::error::SceneError::Series {
                    what: format!("--overlap {overlap} must be a multiple of the patch size {p} and smaller than the tile size {tile}"),
                }
                .into());
            }
        }
    }
    Ok(tiling)
}

/// Refuses options that do not apply to the model's output.
fn check_options(args: &PredictArgs, model: &ModelSpec) -> Result<(), Error> {
    let refuse = |what: &str| -> Result<(), Error> {
        Err(crate::error::SceneError::Series { what: what.into() }.into())
    };
    if args.tta != crate::tta::Tta::None
        && matches!(
            model.head_kind(),
            Some(EncoderHead::Embeddings | EncoderHead::Classification)
        )
    {
        return refuse(
            "--tta applies to outputs per pixel (class maps and values); embeddings and window labels are not averaged over flips",
        );
    }
    if args.tta != crate::tta::Tta::None && model.pixel.is_some() {
        return refuse(
            "--tta does not apply to a per-pixel model: its output does not change when a tile is flipped or rotated",
        );
    }
    let per_pixel_classes = matches!(model.head_kind(), None | Some(EncoderHead::Segmentation));
    if !per_pixel_classes
        && (args.vectors.is_some() || args.qgis_project || args.probabilities || args.confidence)
    {
        return refuse(
            "--vectors, --qgis-project, --probabilities and --confidence apply to class maps (segmentation models and heads); this model writes embeddings, values or window labels",
        );
    }
    if args.embedding_uint8 && !model.embeds() {
        return refuse("--embedding-dtype applies to encoders without a head (embedding models)");
    }
    if args.value_uint8 && model.head_kind() != Some(EncoderHead::Regression) {
        return refuse("--value-dtype applies to regression heads");
    }
    if model.encoder.is_none() && !args.dates.is_empty() {
        return refuse("--dates applies to time-series models");
    }
    Ok(())
}

impl PredictPlan {
    /// Checks every argument: the model manifest, the scene and its bands, the output
    /// folder and the ONNX Runtime library.
    pub fn build(args: &PredictArgs) -> Result<Self, Error> {
        if args.force && args.shard.is_some() {
            return Err(JobError::ForceWithShard.into());
        }
        if args.events.is_some() {
            return Err(crate::error::SceneError::Series {
                what: "--events runs in one process with `eoinfer predict`; plans, shards and benchmarks tile a grid".into(),
            }
            .into());
        }
        check_counts(args)?;
        let threads = crate::limits::check_threads(args.threads)?;
        let mut model = ModelSpec::load(&args.model)?;
        if let Some(t) = args.tile_size {
            if t < 16 {
                return Err(crate::error::GridError::TileTooSmall(t).into());
            }
            // The ONNX input must be dynamic; Segmenter::load says so if it is not.
            model.tile_size = t;
        }
        if !model.onnx.is_file() {
            return Err(ModelError::OnnxMissing {
                path: model.onnx.clone(),
                manifest: model.manifest.clone(),
            }
            .into());
        }
        check_options(args, &model)?;
        let opts = read_options(args)?;
        let tiling = tiling_for(args, &model)?;
        let inputs = open_inputs(args, &model, &opts)?;
        let value_warnings = check_values(&inputs, &model, args.accept_out_of_range)?;
        let stack = &inputs.stack;
        let unit = model.unit();
        // Validate the geometry now so a bad --overlap fails before anything is written.
        let grid = crate::grid::TileGrid::in_units(
            stack.width,
            stack.height,
            model.tile_size,
            tiling,
            unit,
        )?;
        let polygon = inputs
            .aoi
            .as_ref()
            .map(crate::aoi::Aoi::geometry)
            .transpose()?;
        let tiles: Vec<crate::grid::Tile> = grid
            .tiles()
            .filter(|t| {
                let px = t.window.scaled(unit);
                px.clip(stack.width, stack.height)
                    .is_some_and(|w| match (&inputs.aoi, &polygon) {
                        (Some(a), Some(p)) => a.touches(p, w),
                        _ => true,
                    })
            })
            .collect();
        let block_rows = args.block_rows.unwrap_or(DEFAULT_BLOCK_ROWS);
        let panel = panel_width(args, inputs.series.len()) / unit.max(1);
        let blocks = grid.blocks(block_rows, grid.cols_for_width(panel));
        check_writable(&args.out)?;
        let ort_lib = crate::model::runtime::find_runtime(args.ort_lib.as_deref())?;
        let onnx_sha256 =
            crate::util::sha256_file(&model.onnx).map_err(|source| ModelError::ManifestRead {
                path: model.onnx.clone(),
                source,
            })?;
        let mut warnings = inputs.warnings.clone();
        crate::util::push_new(&mut warnings, value_warnings);
        if model.onnx_sha256.is_none() {
            let w = format!(
                "the manifest {} records no sha256 of its ONNX file, so a damaged or replaced model would go unnoticed; add it with `eoinfer model check --model {} --write-checksum`",
                model.manifest.display(),
                model.manifest.display()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        if stack.width < model.tile_size || stack.height < model.tile_size {
            warnings.push(format!(
                "the scene grid ({} x {} px) is smaller than one {} px tile; it is padded by reflection",
                stack.width, stack.height, model.tile_size
            ));
        }
        let memory = crate::limits::memory_limit(args.memory_limit);
        // A batch never holds more tiles than the run has.
        let batch_size = args.batch_size.min(tiles.len().max(1));
        if inputs.series.is_empty() {
            check_memory(stack, &model, args, batch_size, &memory)?;
        } else {
            check_memory_series(&inputs.series, &model, args, batch_size, &memory)?;
        }
        let job = job_plan(
            args,
            &model,
            &inputs,
            &tiles,
            &blocks,
            tiling,
            onnx_sha256.clone(),
        );
        let Inputs {
            stack,
            aoi,
            mosaic,
            series,
            name,
            ..
        } = inputs;
        Ok(Self {
            name,
            stack,
            out_dir: args.out.clone(),
            tiling,
            batch_size,
            threads,
            probabilities: args.probabilities,
            confidence: args.confidence,
            ort_lib,
            device: args.device,
            io_binding: args.io_binding || args.device != crate::model::Device::Cpu,
            tta: args.tta,
            vectors: args.vectors,
            qgis_project: args.qgis_project,
            onnx_sha256,
            warnings,
            model,
            aoi,
            mosaic,
            tiles,
            blocks,
            shard: args.shard,
            force: args.force,
            job,
            memory,
            series,
        })
    }

    /// Opens the plan's model in ONNX Runtime: a segmentation model with its `--tta`, or an
    /// encoder with the run's time steps.
    pub fn open_model(
        &self,
        env: &ort::environment::Environment,
    ) -> Result<crate::model::Model, ModelError> {
        if self.model.encoder.is_some() {
            let mut steps: Vec<_> = self.series.iter().collect();
            // In the order TileSource feeds them.
            if self
                .model
                .encoder
                .as_ref()
                .is_some_and(crate::model::embedding::EmbeddingSpec::newest_first)
            {
                steps.reverse();
            }
            let timestamps = steps
                .iter()
                .flat_map(|s| [s.date.day as i32, s.date.month as i32 - 1, s.date.year])
                .collect();
            return Ok(crate::model::Model::Encoder(
                crate::model::Encoder::load(
                    env,
                    &self.model,
                    self.threads,
                    self.device,
                    timestamps,
                )?
                .with_tta(self.tta)
                .with_io_binding(self.device, self.io_binding)?,
            ));
        }
        Ok(crate::model::Model::Segmenter(
            crate::model::Segmenter::load(env, &self.model, self.threads, self.device)?
                .with_tta(self.tta)
                .with_io_binding(self.device, self.io_binding)?,
        ))
    }

    /// Checks the ONNX file's checksum against the manifest, once the file has loaded.
    pub fn check_checksum(&self) -> Result<(), ModelError> {
        match &self.model.onnx_sha256 {
            Some(expected) if *expected != self.onnx_sha256 => Err(ModelError::ShapeMismatch {
                manifest: self.model.manifest.clone(),
                onnx: self.model.onnx.clone(),
                what: format!(
                    "the ONNX file's sha256 is {}, the manifest records {expected}",
                    self.onnx_sha256
                ),
            }),
            _ => Ok(()),
        }
    }
}
