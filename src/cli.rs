//! The command line (clap derive) and the dispatch of each command to the library.

use crate::error::Error;
use crate::plan::{PredictArgs, PredictPlan, TilingChoice};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Earth-observation inference: GDAL rasters in, ONNX models through ONNX Runtime,
/// Cloud-Optimized GeoTIFF and GeoParquet out. Nothing is fetched from the network.
#[derive(Debug, Parser)]
#[command(name = "eoinfer", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// eoinfer's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a model over a scene: class map COG, tiles GeoParquet, run summary.
    Predict(PredictCli),
    /// Write the tile plan of a run (grid, AOI, scenes, parameters, blocks, shard shares and
    /// the hash of it all) to `<out>/<name>.plan.json`, without running the model. Shards
    /// started with the same arguments check their plan against it.
    Plan(PlanCli),
    /// Join the finished blocks of a sharded run in a folder into the final outputs: one
    /// class map COG (and probabilities), one tiles GeoParquet, polygons, one STAC Item.
    Merge(MergeCli),
    /// Time ONNX Runtime alone on exactly the tiles `predict` would run (read into memory
    /// first, same batch size, threads and options): the limit end-to-end runs are measured
    /// against. Prints JSON; writes nothing.
    BenchModel(PredictCli),
    /// Turn a class map into polygons (class id, class name, area in m²), dissolved across
    /// tile boundaries: GeoPackage, GeoParquet or FlatGeobuf.
    Polygonize(PolygonizeCli),
    /// Zonal statistics of a raster (class map, probabilities, embeddings) over region
    /// polygons: per region class counts, fractions and areas, or per band mean/std/min/max.
    Zonal(ZonalCli),
    /// Write the model-ready reflectance stack of a scene (float32 GeoTIFF).
    Prepare(PrepareCli),
    /// Model manifests.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Scheduled monitoring: find new acquisitions, run the models over regions, keep
    /// per-region time series, raise alerts (`monitor init` writes an example config).
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// List the model manifests in a folder: task, inputs, sizes, whether the ONNX file is there.
    Models {
        /// Folder with the manifests (searched two levels deep).
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `eoinfer monitor ...`.
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Write a commented example configuration.
    Init {
        /// Where to write it.
        #[arg(long, default_value = "monitor.toml")]
        config: PathBuf,
    },
    /// Run one cycle: new acquisitions -> models -> time series -> alerts. Exit 0 when done
    /// (also when nothing was new, or another cycle is running and on_overlap is skip), 1 when
    /// some acquisitions failed (retried next cycle), 2 on a bad config.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print the cycle's report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the state: acquisitions done and failed, dates, alerts, undelivered alerts (JSON).
    Status {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// A parser of whole numbers from `min` to `max` whose errors state the allowed range and
/// explain negative numbers (which clap would otherwise take for flags).
fn whole<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Default,
{
    move |s| {
        let range = format!("pass a whole number from {min} to {max}");
        let t = s.trim();
        if t.starts_with('-') {
            return Err(format!("{t} is negative; {range}"));
        }
        let v: T = t
            .parse()
            .map_err(|_| format!("{t} is not a whole number; {range}"))?;
        if v < min || v > max {
            let why = if v == T::default() {
                " (0 means nothing here)"
            } else {
                ""
            };
            return Err(format!("{v} is out of range{why}; {range}"));
        }
        Ok(v)
    }
}

/// `--threads`: 0 (all CPUs) up to [`crate::limits::max_threads`].
fn threads(s: &str) -> Result<usize, String> {
    let range = crate::limits::threads_range();
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{t} is negative; {range}"));
    }
    let v: usize = t
        .parse()
        .map_err(|_| format!("{t} is not a whole number; {range}"))?;
    crate::limits::check_threads(v)
        .map(|_| v)
        .map_err(|_| format!("{v} is more threads than this process can use; {range}"))
}

/// A finite number above 0 (a pixel size).
fn positive_number(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t.parse().map_err(|_| {
        format!(
            "{t} is not a number; pass a pixel size above 0 in the CRS's units (e.g. 10 for 10 m)"
        )
    })?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!(
            "{t} is not above 0; pass a pixel size above 0 in the CRS's units (e.g. 10 for 10 m)"
        ));
    }
    Ok(v)
}

/// Any finite number.
fn finite_number(s: &str) -> Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!(
            "{t} is not a finite number; pass a number such as -0.2 or 0"
        )),
    }
}

/// A finite number other than 0.
fn nonzero_number(s: &str) -> Result<f64, String> {
    let v = finite_number(s)?;
    if v == 0.0 {
        return Err(
            "0 would make every value 0; pass a finite number other than 0 (e.g. 0.0001)".into(),
        );
    }
    Ok(v)
}

/// A Sentinel-2 DN offset: -10000 to 10000.
fn s2_offset(s: &str) -> Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && (-10_000.0..=10_000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{t} is out of range; pass a number from -10000 to 10000 (-1000 for processing baseline 04.00 and later, 0 before)"
        )),
    }
}

/// A finite number of at least 0.
fn non_negative_number(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{t} is not a number; pass a number of at least 0"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{t} is out of range; pass a number of at least 0"));
    }
    Ok(v)
}

/// Tiling schemes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TilingArg {
    /// Overlapping tiles, edge tiles shifted inward, sine-window blending (default).
    Blended,
    /// The model authors' own tiling (ukis-csmask): mirror padding, 20 % overlap, Tukey window.
    Reference,
}

/// Data types of the embeddings and values COGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingDtype {
    /// 32-bit floats (default).
    Float32,
    /// 8-bit, linearly quantised per band.
    Uint8,
}

/// Options shared by commands that read a scene.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct SceneArgs {
    /// Model manifest (STAC MLM JSON), e.g. models/ukis-csmask-6b-l1c.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Scene: a raster file (GeoTIFF/COG, JP2, VRT, NETCDF:file.nc:var) or a folder of per-band
    /// files. Embedding models take a time series: repeat --scene, or pass a folder of dated
    /// files, a .txt list of scenes or a STAC ItemCollection (.json) of local files.
    #[arg(long, required = true)]
    pub scene: Vec<String>,
    /// Map model bands to scene bands by name or 1-based index: blue=B2,green=B3,nir=5.
    #[arg(long)]
    pub bands: Option<String>,
    /// Output pixel size in CRS units (default: the model's recommended GSD); above 0.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_number)]
    pub resolution: Option<f64>,
    /// Sentinel-2 DN offset, -10000 to 10000 (-1000 for processing baseline 04.00 and later,
    /// 0 before); declares integer bands without other metadata to be Sentinel-2 DN
    /// (reflectance = (DN + offset) / 10000). Default: from the product's metadata.
    #[arg(long, allow_hyphen_values = true, value_parser = s2_offset)]
    pub s2_offset: Option<f64>,
    /// Reflectance = stored value x scale + offset, for every band, overriding the metadata
    /// (a finite number other than 0; e.g. 0.0001 for Sentinel-2 DN, 2.75e-5 for Landsat
    /// Collection 2 Level-2).
    #[arg(long, allow_hyphen_values = true, value_parser = nonzero_number)]
    pub scale: Option<f64>,
    /// Added after --scale (a finite number; e.g. -0.2 for Landsat Collection 2 Level-2).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_number)]
    pub offset: Option<f64>,
    /// Resample a scene whose pixels are more than 2x coarser than the model's resolution
    /// to that resolution (without it such a run needs --resolution).
    #[arg(long)]
    pub allow_upsample: bool,
    /// Run a model on a sensor or product level its manifest does not list (e.g. an L1C
    /// model on L2A data), with a warning in the summary.
    #[arg(long)]
    pub accept_product_mismatch: bool,
    /// Read `/vsis3/` (s3://) assets from the public cloud when AWS_S3_ENDPOINT names no
    /// object storage of your own (by default refused: data stays on your servers).
    #[arg(long)]
    pub allow_public_cloud: bool,
    /// Read a raster georeferenced only by ground control points (Sentinel-1 GRD) through a
    /// VRT warped by them (thin plate spline) to the UTM zone of their centre, with a warning;
    /// without it such a raster is refused with the gdalwarp command to project it.
    #[arg(long)]
    pub warp_gcps: bool,
    /// Run although a band's values lie far outside what the model was trained on (its
    /// median beyond 5 standard deviations of the training mean, or reflectance beyond
    /// -0.5..2), with a warning in the summary.
    #[arg(long)]
    pub accept_out_of_range: bool,
    /// Input nodata value, overriding the files' own (a finite number).
    #[arg(long, allow_hyphen_values = true, value_parser = finite_number)]
    pub nodata: Option<f64>,
}

impl SceneArgs {
    /// The input contract's flags.
    fn read_flags(&self) -> crate::scene::ReadFlags {
        crate::scene::ReadFlags {
            scale: self.scale,
            offset: self.offset,
            allow_upsample: self.allow_upsample,
            accept_product_mismatch: self.accept_product_mismatch,
            allow_public_cloud: self.allow_public_cloud,
            warp_gcps: self.warp_gcps,
        }
    }
}

/// `eoinfer predict`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct PredictCli {
    #[command(flatten)]
    pub scene: SceneArgs,
    /// Output folder (created if missing).
    #[arg(long, default_value = "outputs")]
    pub out: PathBuf,
    /// Base name of the outputs (default: from the scene).
    #[arg(long)]
    pub name: Option<String>,
    /// Tiling scheme.
    #[arg(long, value_enum, default_value_t = TilingArg::Blended)]
    pub tiling: TilingArg,
    /// Overlap between tiles in pixels for the blended scheme (default: the manifest's).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(0_usize, 1 << 20))]
    pub overlap: Option<usize>,
    /// Tile edge in pixels (default: the manifest's). Embedding models: a multiple of the
    /// patch size. Segmentation models: needs an ONNX input with dynamic height and width
    /// (scripts/onnx_dynamic_hw.py); larger tiles give the model more context.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1_usize, 1 << 16))]
    pub tile_size: Option<usize>,
    /// Test-time augmentation for segmentation models: average the class probabilities over
    /// flips (4 runs per tile) or all 8 flips and rotations (d4). Costs 4x / 8x the inference.
    #[arg(long, value_enum, default_value_t = crate::tta::Tta::None)]
    pub tta: crate::tta::Tta,
    /// Data type of the embeddings COG: float32, or uint8 (per-band linear quantisation with
    /// scale/offset metadata; 0 = no data). The GeoParquet always holds float32.
    #[arg(long, value_enum, default_value_t = EmbeddingDtype::Float32)]
    pub embedding_dtype: EmbeddingDtype,
    /// Data type of a regression head's values COG: float32, or uint8 (1 to 255 linear over
    /// the manifest's expected range, values outside it clamped, scale/offset metadata;
    /// 0 = no data). The tiles GeoParquet's statistics are always of the float values.
    #[arg(long, value_enum, default_value_t = EmbeddingDtype::Float32)]
    pub value_dtype: EmbeddingDtype,
    /// Tiles per inference batch: 1 to 65536, and the batch must fit in --memory-limit.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = whole(1_usize, 1 << 16))]
    pub batch_size: usize,
    /// ONNX Runtime threads: 0 (all CPUs this process may use) up to 4x those CPUs.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = threads)]
    pub threads: usize,
    /// The memory the run may use (e.g. 8G, 512M; default: the cgroup v2 memory.max of the
    /// process where set, as under Kubernetes and Slurm, else the machine's RAM). A run whose
    /// buffers and batches would not fit is refused before it starts.
    #[arg(long, allow_hyphen_values = true, value_parser = crate::limits::parse_size)]
    pub memory_limit: Option<u64>,
    /// The largest output grid in pixels (default 10000000000, e.g. 100,000 x 100,000 px).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1_u64, u64::MAX))]
    pub max_pixels: Option<u64>,
    /// Where the model runs: cpu, or cuda:N (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: crate::model::Device,
    /// Run the model through ONNX Runtime's IO binding: input and output buffers allocated
    /// once per batch shape and bound, the output read back once per batch (pinned host memory
    /// on a GPU). Always on with cuda/tensorrt; on the CPU it gives the same bytes.
    #[arg(long)]
    pub io_binding: bool,
    /// Also write per-class probabilities (<name>.probs.tif).
    #[arg(long)]
    pub probabilities: bool,
    /// Also write how sure the model was: <name>.confidence.tif, the winning class's blended
    /// probability x 255 (uint8, 0 = no class), with a QGIS style; the tiles GeoParquet gains
    /// each tile's mean confidence.
    #[arg(long)]
    pub confidence: bool,
    /// Also write the class map as polygons (<name>.polygons.gpkg; see --vector-format).
    #[arg(long)]
    pub vectors: bool,
    /// Also write a QGIS project (<name>.qgs) with the run's layers, styled and grouped.
    #[arg(long)]
    pub qgis_project: bool,
    /// Run a series that breaks a task model's temporal contract (the spacing of its steps,
    /// an event's image windows) anyway; the summary records each break. The number of time
    /// steps is never relaxed.
    #[arg(long)]
    pub relax_temporal_contract: bool,
    /// Classification models: label these events (polygons in a GeoPackage, GeoJSON, ...)
    /// instead of tiling the grid: one window centred on each polygon, written to
    /// <name>.events.parquet. An event model (pre/post image groups) takes each event's date
    /// from its `event_date` attribute (YYYY-MM-DD) or --event-date.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// The date of events that have no `event_date` attribute (YYYY-MM-DD).
    #[arg(long, requires = "events")]
    pub event_date: Option<String>,
    #[command(flatten)]
    pub vector_args: VectorArgs,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// ONNX Runtime shared library (default: ORT_DYLIB_PATH, the project's copy, next to the executable).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Acquisition dates (YYYY-MM-DD,...) of time steps whose date is not in their metadata or name.
    #[arg(long)]
    pub dates: Option<String>,
    /// Area of interest: a vector file (GeoJSON, GeoPackage, ...: the union of its polygons),
    /// a WKT polygon or minx,miny,maxx,maxy. It defines the output grid; every --scene
    /// overlapping it is warped onto that grid; pixels outside the polygon are nodata.
    #[arg(long)]
    pub aoi: Option<String>,
    /// CRS of a bounding-box or WKT --aoi (default EPSG:4326, longitude/latitude).
    #[arg(long)]
    pub aoi_crs: Option<String>,
    /// CRS of the AOI grid (default: the UTM zone of the AOI's centroid).
    #[arg(long)]
    pub crs: Option<String>,
    /// Run shard i of N (0-based): `0/8`, or `auto/8` to take i from JOB_COMPLETION_INDEX
    /// (Kubernetes Indexed Job), SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX. Shards
    /// write parts; `eoinfer merge <out>` joins them.
    #[arg(long)]
    pub shard: Option<String>,
    /// Tile rows per block, the unit of sharding and resuming (default 2).
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1_usize, 1 << 20))]
    pub block_rows: Option<usize>,
    /// Width of a column panel in pixels (default 4096 for one scene, 2048 for a time series
    /// of several dates): blocks span one panel, so memory follows the panel's width, never
    /// the scene's. Whole tile columns; one panel when the scene is narrower.
    #[arg(long, allow_negative_numbers = true, value_parser = whole(1_usize, 1 << 24))]
    pub panel_width: Option<usize>,
    /// Discard the finished work of an earlier run of this name in --out (another plan, or
    /// a finished run) and start over.
    #[arg(long)]
    pub force: bool,
}

/// `eoinfer plan`.
#[derive(Debug, clap::Args)]
pub struct PlanCli {
    #[command(flatten)]
    pub predict: PredictCli,
    /// Record the shares of this many shards in the plan (`predict --shard i/N`).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole(1_usize, 1 << 20))]
    pub shards: usize,
}

/// `eoinfer merge`.
#[derive(Debug, clap::Args)]
pub struct MergeCli {
    /// The output folder the shards wrote to.
    pub dir: PathBuf,
    /// The run's name (default: the only `<name>.plan.json` in the folder).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Options of the polygon output.
#[derive(Debug, clap::Args, Clone)]
pub struct VectorArgs {
    /// Vector format of the polygons.
    #[arg(long, value_enum, default_value_t = crate::output::vectors::VectorFormat::Gpkg)]
    pub vector_format: crate::output::vectors::VectorFormat,
    /// Drop polygons smaller than this many m².
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = non_negative_number)]
    pub min_area: f64,
    /// Simplify polygons with this tolerance in CRS units (0 = exact pixel edges).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = non_negative_number)]
    pub simplify: f64,
}

impl VectorArgs {
    fn options(&self) -> Result<crate::output::vectors::PolygonizeOptions, Error> {
        for (flag, v) in [("--min-area", self.min_area), ("--simplify", self.simplify)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(crate::error::SceneError::Series {
                    what: format!("{flag} {v} must be a number >= 0"),
                }
                .into());
            }
        }
        Ok(crate::output::vectors::PolygonizeOptions {
            format: self.vector_format,
            min_area: self.min_area,
            simplify: self.simplify,
        })
    }
}

/// `eoinfer polygonize`.
#[derive(Debug, clap::Args)]
pub struct PolygonizeCli {
    /// A class map (uint8, e.g. <name>.classes.tif); its nodata pixels are left out.
    pub classes: PathBuf,
    /// Output file (default: <classes stem>.polygons.<ext> beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub vectors: VectorArgs,
}

/// `eoinfer zonal`.
#[derive(Debug, clap::Args)]
pub struct ZonalCli {
    /// The raster: a class map, a probabilities or embeddings COG, any GDAL raster.
    #[arg(long)]
    pub raster: PathBuf,
    /// Region polygons (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet, ...);
    /// reprojected to the raster's CRS; their attributes are kept.
    #[arg(long)]
    pub regions: PathBuf,
    /// Output table: .parquet (GeoParquet, with the region geometry) or .csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Count every pixel a region touches, not only those whose centre is inside.
    #[arg(long)]
    pub all_touched: bool,
}

/// `eoinfer prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareCli {
    #[command(flatten)]
    pub scene: SceneArgs,
    /// Output GeoTIFF.
    #[arg(long)]
    pub out: PathBuf,
}

/// `eoinfer model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Generate STAC MLM manifests from ukis-csmask's JSON sidecars.
    ImportUkis {
        /// The unpacked `ukis_csmask` package folder (holds model_*.onnx and model_*.json).
        #[arg(long, default_value = "models/ukis-csmask")]
        package: PathBuf,
        /// Folder to write the manifests to.
        #[arg(long, default_value = "models")]
        out: PathBuf,
    },
    /// Write a manifest for an ONNX segmentation model from its custom metadata (the QGIS
    /// Deepness / GeoDeep keys: model_type, class_names, resolution in cm/px, tiles_size,
    /// tiles_overlap in %, standardization_parameters); prints what it could not learn.
    ImportOnnx {
        /// The ONNX file.
        onnx: PathBuf,
        /// Names of the input channels in order, as STAC common names (default for 3
        /// channels: red,green,blue).
        #[arg(long)]
        bands: Option<String>,
        /// Pixel size in metres the model was trained at, when its metadata has no resolution.
        #[arg(long, allow_negative_numbers = true, value_parser = positive_number)]
        gsd: Option<f64>,
        /// The manifest to write (default: beside the ONNX file, <name>.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// ONNX Runtime shared library.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Load a manifest and its ONNX model and check they match; prints a JSON report.
    Check {
        /// Model manifest.
        #[arg(long)]
        model: PathBuf,
        /// Golden data folder (golden.json + arrays) of an embedding model: run the model on
        /// its inputs and compare with PyTorch's output.
        #[arg(long)]
        golden: Option<PathBuf>,
        /// ONNX Runtime shared library.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Record the ONNX file's sha256 in the manifest (`file:checksum` of its model asset)
        /// when it records none, so that a damaged or replaced file is refused from then on.
        #[arg(long)]
        write_checksum: bool,
    },
}

fn one_scene(a: &SceneArgs) -> Result<String, Error> {
    match a.scene.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(crate::error::SceneError::Series {
            what: format!(
                "{} takes one scene, {} were given; time series are for embedding models",
                a.model.display(),
                a.scene.len()
            ),
        }
        .into()),
    }
}

fn predict_args(c: &PredictCli) -> Result<PredictArgs, Error> {
    Ok(PredictArgs {
        model: c.scene.model.clone(),
        scenes: c.scene.scene.clone(),
        aoi: c.aoi.clone(),
        aoi_crs: c.aoi_crs.clone(),
        crs: c.crs.clone(),
        shard: c
            .shard
            .as_deref()
            .map(|s| crate::plan::Shard::parse(s, |k| std::env::var(k).ok()))
            .transpose()?,
        block_rows: c.block_rows,
        panel_width: c.panel_width,
        force: c.force,
        out: c.out.clone(),
        name: c.name.clone(),
        bands: c.scene.bands.clone(),
        resolution: c.scene.resolution,
        s2_offset: c.scene.s2_offset,
        nodata: c.scene.nodata,
        read: c.scene.read_flags(),
        accept_out_of_range: c.scene.accept_out_of_range,
        tiling: match c.tiling {
            TilingArg::Blended => TilingChoice::Blended,
            TilingArg::Reference => TilingChoice::Reference,
        },
        overlap: c.overlap,
        batch_size: c.batch_size,
        threads: c.threads,
        probabilities: c.probabilities,
        confidence: c.confidence,
        ort_lib: c.ort_lib.clone(),
        device: c.device,
        io_binding: c.io_binding,
        tile_size: c.tile_size,
        tta: c.tta,
        vectors: if c.vectors {
            Some(c.vector_args.options()?)
        } else {
            None
        },
        qgis_project: c.qgis_project,
        memory_limit: c.memory_limit,
        max_pixels: c.max_pixels,
        dates: c
            .dates
            .as_deref()
            .map(crate::scene::timeseries::parse_dates)
            .transpose()?
            .unwrap_or_default(),
        embedding_uint8: c.embedding_dtype == EmbeddingDtype::Uint8,
        value_uint8: c.value_dtype == EmbeddingDtype::Uint8,
        relax_temporal_contract: c.relax_temporal_contract,
        events: c.events.clone(),
        event_date: c
            .event_date
            .as_deref()
            .map(|d| {
                crate::scene::timeseries::parse_date(d).ok_or_else(|| {
                    crate::error::SceneError::Series {
                        what: format!("--event-date {d}: not a date (YYYY-MM-DD)"),
                    }
                })
            })
            .transpose()?,
    })
}

fn load_plan(c: &PredictCli) -> Result<(PredictPlan, crate::model::Model), Error> {
    let plan = PredictPlan::build(&predict_args(c)?)?;
    let env = crate::model::runtime::init_runtime(&plan.ort_lib)?;
    let model = plan.open_model(&env)?;
    plan.check_checksum()?;
    Ok((plan, model))
}

fn bench_model(c: &PredictCli) -> Result<(), Error> {
    let (plan, model) = load_plan(c)?;
    let report = crate::pipeline::model_only(&plan, model)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

fn predict(c: &PredictCli) -> Result<(), Error> {
    if c.events.is_some() {
        let summary = crate::events::run(&predict_args(c)?)?;
        tracing::info!(
            output = %summary.output.display(),
            events = summary.labelled.len(),
            seconds = summary.total_seconds,
            "done"
        );
        if c.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
        }
        return Ok(());
    }
    let (plan, model) = load_plan(c)?;
    tracing::info!(
        scene = %plan.stack.scene,
        width = plan.stack.width,
        height = plan.stack.height,
        resolution = plan.stack.resolution,
        model = %plan.model.id,
        "predicting"
    );
    report(crate::pipeline::predict(&plan, model)?, c.json)
}

/// Logs what a run did and prints its summary with `--json`.
fn report(outcome: crate::pipeline::Outcome, json: bool) -> Result<(), Error> {
    use crate::pipeline::Outcome;
    let text = match outcome {
        Outcome::Finished(summary) => {
            tracing::info!(
                output = %summary
                    .outputs
                    .classes
                    .as_ref()
                    .or(summary.outputs.embeddings.as_ref())
                    .or(summary.outputs.values.as_ref())
                    .map_or_else(String::new, |p| p.display().to_string()),
                tiles = summary.counts.tiles,
                blocks_run = summary.job.counts.blocks_run,
                blocks_resumed = summary.job.counts.blocks_already_done,
                seconds = summary.timings_s.total,
                "done"
            );
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        }
        Outcome::AlreadyFinished { summary, plan_hash } => {
            tracing::info!(
                summary = %summary.display(),
                plan = %plan_hash,
                "nothing to do: this run finished before (same plan); pass --force to run it again"
            );
            std::fs::read_to_string(&summary)
                .map_err(|source| crate::error::OutputError::Io {
                    path: summary.clone(),
                    source,
                })?
                .trim_end()
                .to_string()
        }
        Outcome::Shard(r) => {
            tracing::info!(
                shard = %r.shard,
                blocks = ?r.block_range,
                blocks_run = r.job.blocks_run,
                blocks_resumed = r.job.blocks_already_done,
                tiles_run = r.job.tiles_run,
                "shard done; run `eoinfer merge <out>` once every shard has finished"
            );
            serde_json::to_string_pretty(&r).unwrap_or_default()
        }
    };
    if json {
        println!("{text}");
    }
    Ok(())
}

fn plan_command(c: &PlanCli) -> Result<(), Error> {
    let p = &c.predict;
    if c.shards == 0 {
        return Err(crate::error::JobError::BadShard("0 shards".into()).into());
    }
    // The plan allocates nothing here; each shard checks its own memory limit.
    let args = PredictArgs {
        memory_limit: Some(u64::MAX),
        ..predict_args(p)?
    };
    let plan = PredictPlan::build(&args)?;
    let mut job = plan.job.clone();
    job.shards = Some(
        (0..c.shards)
            .map(|i| crate::grid::shard_blocks(job.blocks.len(), i, c.shards))
            .collect(),
    );
    let mut guard = crate::job::JobGuard::lock(&plan.out_dir, &plan.name, "plan")?;
    if p.force {
        guard.discard()?;
    }
    guard.settle_plan(&job)?;
    let text = crate::job::write_plan_file(&plan.out_dir, &job)?;
    let path = crate::job::plan_path(&plan.out_dir, &plan.name);
    if c.shards > job.blocks.len() {
        tracing::warn!(
            shards = c.shards,
            blocks = job.blocks.len(),
            "more shards than blocks: some shards get no work; pass a smaller --block-rows or fewer shards"
        );
    }
    tracing::info!(
        plan = %path.display(),
        hash = %job.plan_hash,
        width = job.grid.width,
        height = job.grid.height,
        tiles = job.tiles,
        blocks = job.blocks.len(),
        shards = c.shards,
        "plan written"
    );
    if p.json {
        println!("{}", text.trim_end());
    }
    Ok(())
}

fn merge_command(c: &MergeCli) -> Result<(), Error> {
    report(
        crate::pipeline::merge_dir(&c.dir, c.name.as_deref())?,
        c.json,
    )
}

fn polygonize(c: &PolygonizeCli) -> Result<(), Error> {
    let opts = c.vectors.options()?;
    if !c.classes.is_file() {
        return Err(crate::error::SceneError::Missing {
            path: c.classes.clone(),
        }
        .into());
    }
    let out = c.out.clone().unwrap_or_else(|| {
        let stem = c
            .classes
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = stem
            .strip_suffix(".classes.tif")
            .or_else(|| stem.strip_suffix(".tif"))
            .unwrap_or(&stem)
            .to_string();
        c.classes
            .with_file_name(format!("{base}.polygons.{}", opts.format.extension()))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::plan::check_writable(dir)?;
    }
    let layer = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let stats = crate::output::vectors::polygonize(&c.classes, &out, &layer, &opts)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"out": out, "stats": stats}))
            .unwrap_or_default()
    );
    Ok(())
}

fn zonal(c: &ZonalCli) -> Result<(), Error> {
    for p in [&c.raster, &c.regions] {
        if !p.exists() {
            return Err(crate::error::SceneError::Missing { path: p.clone() }.into());
        }
    }
    let ext = c
        .out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext != "csv" && ext != "parquet" {
        return Err(crate::error::SceneError::Series {
            what: format!(
                "--out {} must end in .parquet (GeoParquet) or .csv",
                c.out.display()
            ),
        }
        .into());
    }
    if let Some(dir) = c.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::plan::check_writable(dir)?;
    }
    let table = crate::output::zonal::zonal(&c.raster, &c.regions, c.all_touched)?;
    if ext == "csv" {
        table.write_csv(&c.out)?;
    } else {
        table.write_parquet(&c.out)?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "out": c.out, "regions": table.attrs.len(),
            "kind": match &table.kind { crate::output::zonal::Kind::Classes(_) => "classes", crate::output::zonal::Kind::Continuous(_) => "continuous" },
        }))
        .unwrap_or_default()
    );
    Ok(())
}

fn prepare(c: &PrepareCli) -> Result<(), Error> {
    let model = crate::model::ModelSpec::load(&c.scene.model)?;
    let mut opts = crate::plan::scene_options(
        c.scene.bands.as_deref(),
        c.scene.resolution,
        c.scene.s2_offset,
        c.scene.nodata,
    )?;
    opts.read = c.scene.read_flags();
    let stack = crate::scene::open_stack(&one_scene(&c.scene)?, &model, &opts)?;
    if let Some(dir) = c.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::plan::check_writable(dir)?;
    }
    crate::output::stack::write_stack(&stack, &c.out)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&stack).unwrap_or_default()
    );
    Ok(())
}

fn model_command(c: &ModelCommand) -> Result<(), Error> {
    match c {
        ModelCommand::ImportUkis { package, out } => {
            crate::plan::check_writable(out)?;
            for p in crate::model::ukis::import(package, out)? {
                println!("{}", p.display());
            }
            Ok(())
        }
        ModelCommand::ImportOnnx {
            onnx,
            bands,
            gsd,
            out,
            ort_lib,
        } => {
            let done = crate::model::import_onnx::import(
                onnx,
                bands.as_deref(),
                *gsd,
                out.as_deref(),
                ort_lib.as_deref(),
            )?;
            for n in &done.notes {
                tracing::warn!("{n}");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            );
            Ok(())
        }
        ModelCommand::Check {
            model,
            golden,
            ort_lib,
            write_checksum,
        } => {
            if *write_checksum {
                crate::model::manifest::write_checksum(model)?;
            }
            if let Some(doc) = std::fs::read_to_string(model)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter(crate::model::golden::is_embedding_manifest)
            {
                return check_embedding(model, &doc, golden.as_deref(), ort_lib.as_deref());
            }
            if golden.is_some() {
                return Err(crate::error::ModelError::ManifestInvalid {
                    path: model.clone(),
                    what: "--golden applies to embedding models (eoinfer:kind = embedding)".into(),
                }
                .into());
            }
            let spec = crate::model::ModelSpec::load(model)?;
            let lib = crate::model::runtime::find_runtime(ort_lib.as_deref())?;
            let env = crate::model::runtime::init_runtime(&lib)?;
            crate::model::Segmenter::load(&env, &spec, 1, crate::model::Device::Cpu)?;
            let sha = crate::util::sha256_file(&spec.onnx).map_err(|source| {
                crate::error::ModelError::ManifestRead {
                    path: spec.onnx.clone(),
                    source,
                }
            })?;
            if let Some(expected) = spec.onnx_sha256.as_ref().filter(|e| **e != sha) {
                return Err(crate::error::ModelError::ShapeMismatch {
                    manifest: spec.manifest.clone(),
                    onnx: spec.onnx.clone(),
                    what: format!(
                        "the ONNX file's sha256 is {sha}, the manifest records {expected}"
                    ),
                }
                .into());
            }
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"ok": true, "model": spec, "sha256": sha})
                )
                .unwrap_or_default()
            );
            Ok(())
        }
    }
}

fn check_embedding(
    model: &std::path::Path,
    doc: &serde_json::Value,
    golden: Option<&std::path::Path>,
    ort_lib: Option<&std::path::Path>,
) -> Result<(), Error> {
    let lib = crate::model::runtime::find_runtime(ort_lib)?;
    let env = crate::model::runtime::init_runtime(&lib)?;
    let (mut session, onnx) =
        crate::model::golden::open_embedding_model(&env, model, doc, 1, crate::model::Device::Cpu)?;
    let sha = crate::util::sha256_file(&onnx).map_err(|source| {
        crate::error::ModelError::ManifestRead {
            path: onnx.clone(),
            source,
        }
    })?;
    if let Some(expected) = doc
        .pointer("/assets/model/file:checksum")
        .and_then(serde_json::Value::as_str)
        .and_then(|c| c.strip_prefix("1220"))
    {
        if expected != sha {
            return Err(crate::error::ModelError::ShapeMismatch {
                manifest: model.to_path_buf(),
                onnx,
                what: format!("the ONNX file's sha256 is {sha}, the manifest records {expected}"),
            }
            .into());
        }
    }
    let report = golden
        .map(|g| crate::model::golden::check_golden(&mut session, &onnx, g))
        .transpose()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"ok": true, "model": model, "onnx": onnx, "sha256": sha, "golden": report})).unwrap_or_default()
    );
    if let (Some(r), Some(dir)) = (report, golden) {
        // float32 models: 0.99999 and 1e-4; reduced-precision exports: their measured bounds.
        let (min_cosine, max_abs) = crate::model::golden::tolerance(doc, dir);
        if r.min_cosine < min_cosine || r.max_abs > max_abs {
            return Err(crate::error::ModelError::Inference {
                path: onnx,
                message: format!(
                    "golden check failed: min cosine {:.7} (needs >= {min_cosine}), max abs {:.2e} (needs <= {max_abs:e}; {} model)",
                    r.min_cosine,
                    r.max_abs,
                    crate::model::golden::compute_dtype(doc)
                ),
            }
            .into());
        }
    }
    Ok(())
}

fn list_models(dir: &std::path::Path, json: bool) {
    let mut files = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 1 {
                dirs.push((p, depth + 1));
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        let Some(doc) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        let Some(props) = doc
            .get("properties")
            .filter(|p| p.get("mlm:input").is_some())
        else {
            continue;
        };
        let str_of = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let tasks = props
            .get("mlm:tasks")
            .and_then(serde_json::Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let inputs: Vec<String> = props
            .get("mlm:input")
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|i| {
                        let bands = i
                            .get("bands")
                            .and_then(serde_json::Value::as_array)
                            .map_or(0, Vec::len);
                        format!(
                            "{}[{bands}]",
                            str_of(i.get("name"))
                                .split(',')
                                .next()
                                .unwrap_or_default()
                                .split_whitespace()
                                .next()
                                .unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let onnx = f
            .parent()
            .unwrap_or(dir)
            .join(str_of(doc.pointer("/assets/model/href")));
        let present = onnx.is_file();
        let size = std::fs::metadata(&onnx).map_or(0, |m| m.len());
        let how = if present {
            String::new()
        } else if str_of(doc.get("id")).starts_with("ukis-csmask") {
            "run `make demo` or scripts/fetch-assets.sh".into()
        } else {
            "run `make olmoearth-models` or models/olmoearth/export.py".into()
        };
        rows.push(serde_json::json!({
            "manifest": f, "id": str_of(doc.get("id")), "tasks": tasks, "inputs": inputs.join(" "),
            "tile_size": props.get("eoinfer:tile_size"), "gsd": props.get("eoinfer:gsd"),
            "random_weights": props.get("eoinfer:random_weights").and_then(serde_json::Value::as_bool).unwrap_or(false),
            "onnx": onnx, "onnx_present": present, "onnx_bytes": size, "how_to_get": how,
            "license": props.get("license"), "attribution": props.get("eoinfer:attribution"),
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return;
    }
    println!(
        "{:<30} {:<22} {:<24} {:>5} {:>4} {:>10}  {:<38} onnx",
        "id", "task", "inputs", "tile", "gsd", "MB", "license"
    );
    for r in &rows {
        let mb = r["onnx_bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
        let state = if r["onnx_present"] == true {
            if r["random_weights"] == true {
                "present (random weights)".to_string()
            } else {
                "present".to_string()
            }
        } else {
            format!("MISSING: {}", r["how_to_get"].as_str().unwrap_or(""))
        };
        println!(
            "{:<30} {:<22} {:<24} {:>5} {:>4} {:>10.1}  {:<38} {state}",
            r["id"].as_str().unwrap_or(""),
            r["tasks"].as_str().unwrap_or(""),
            r["inputs"].as_str().unwrap_or(""),
            r["tile_size"],
            r["gsd"],
            mb,
            r["license"].as_str().unwrap_or("(not stated)")
        );
    }
}

/// Runs one parsed command line.
fn monitor_command(c: &MonitorCommand) -> Result<(), Error> {
    match c {
        MonitorCommand::Init { config } => {
            crate::monitor::init(config)?;
            tracing::info!(config = %config.display(), "example configuration written; edit it, then `eoinfer monitor run --config {}`", config.display());
            Ok(())
        }
        MonitorCommand::Status { config } => {
            let v = crate::monitor::status(config)?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
        MonitorCommand::Run { config, json } => {
            let r = crate::monitor::run(config)?;
            if r.already_running {
                eprintln!(
                    "eoinfer monitor: {}: already running (another cycle holds the lock); nothing done",
                    r.name
                );
            } else {
                tracing::info!(
                    monitor = %r.name,
                    listed = r.listed,
                    processed = r.processed.len(),
                    failed = r.failed.len(),
                    alerts_new = r.alerts_new,
                    delivered = r.delivered,
                    backlog = r.backlog,
                    seconds = r.seconds,
                    "cycle done"
                );
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            }
            if r.failed.is_empty() {
                Ok(())
            } else {
                Err(crate::error::MonitorError::ItemsFailed {
                    failed: r.failed.len(),
                    processed: r.processed.len(),
                }
                .into())
            }
        }
    }
}

pub fn run(cli: &Cli) -> Result<(), Error> {
    crate::configure_gdal();
    match &cli.command {
        Command::Predict(c) => predict(c),
        Command::BenchModel(c) => bench_model(c),
        Command::Plan(c) => plan_command(c),
        Command::Merge(c) => merge_command(c),
        Command::Polygonize(c) => polygonize(c),
        Command::Zonal(c) => zonal(c),
        Command::Prepare(c) => prepare(c),
        Command::Model(c) => model_command(c),
        Command::Monitor(c) => monitor_command(c),
        Command::Models { dir, json } => {
            list_models(dir, *json);
            Ok(())
        }
    }
}
