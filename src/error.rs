//! The library's error types: every message names the file, band or window at fault and the fix.

use std::path::PathBuf;

/// Errors raised while reading or checking a model manifest or its ONNX file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model manifest {path} does not exist; pass a manifest from models/ (e.g. models/ukis-csmask-6b-l1c.json)"
    )]
    ManifestMissing { path: PathBuf },
    #[error("cannot read model manifest {path}: {source}")]
    ManifestRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "model manifest {path} is not valid STAC MLM JSON: {source}; regenerate it with `eoinfer model import-ukis` or fix the JSON"
    )]
    ManifestJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "model manifest {path} is incomplete: {what}; regenerate it with `eoinfer model import-ukis`"
    )]
    ManifestInvalid { path: PathBuf, what: String },
    #[error(
        "the ONNX model {path} named by manifest {manifest} does not exist; run `make demo` (or `scripts/fetch-assets.sh`) to fetch the models"
    )]
    OnnxMissing { path: PathBuf, manifest: PathBuf },
    #[error(
        "ONNX Runtime cannot load the model {path} (is the file corrupt or truncated? re-fetch it with `scripts/fetch-assets.sh`): {message}"
    )]
    OnnxLoad { path: PathBuf, message: String },
    #[error(
        "the manifest {manifest} does not match the ONNX model {onnx}: {what}; regenerate the manifest with `eoinfer model import-ukis` or pass the matching model"
    )]
    ShapeMismatch {
        manifest: PathBuf,
        onnx: PathBuf,
        what: String,
    },
    #[error("the model {manifest} cannot run on {device}: {what}")]
    Unsupported {
        manifest: PathBuf,
        device: String,
        what: String,
    },
    #[error("{0}")]
    RuntimeNotFound(String),
    #[error(
        "cannot load ONNX Runtime from {path}: {message}; pass a working libonnxruntime.so 1.31 with --ort-lib or ORT_DYLIB_PATH"
    )]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("{0}")]
    Device(String),
    #[error("ONNX Runtime failed while running {path}: {message}")]
    Inference { path: PathBuf, message: String },
    #[error(
        "the model {path} returned {value} for {tile}: nothing is written from it. Likely causes: the input is in the wrong units (values far from the reflectance the model was trained on: check the scaling in the run summary, --scale/--offset/--s2-offset) or the ONNX file is damaged (check it with `eoinfer model check`)"
    )]
    NonFinite {
        path: PathBuf,
        tile: String,
        value: String,
    },
    #[error("cannot read the ukis-csmask sidecar {path}: {message}")]
    Sidecar { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Errors raised while opening a scene and matching its bands to the model.
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error(
        "scene {path} does not exist; pass a raster file (GeoTIFF, JP2, VRT, NETCDF:file.nc:var) or a folder of per-band files"
    )]
    Missing { path: PathBuf },
    #[error(
        "scene {path} is not a raster GDAL can read ({message}); pass a GeoTIFF/COG, JP2, VRT or NetCDF subdataset, or a folder of per-band files"
    )]
    NotRaster { path: PathBuf, message: String },
    #[error(
        "scene folder {path} holds no raster files (.tif, .tiff, .jp2, .vrt, .nc); pass the folder with the per-band files (e.g. IMG_DATA)"
    )]
    EmptyFolder { path: PathBuf },
    #[error(
        "the model needs band {needed} but scene {path} has no band of that name; the scene has: {available}; map it with --bands {key}=<scene band name or 1-based index>"
    )]
    BandMissing {
        path: PathBuf,
        needed: String,
        key: String,
        available: String,
    },
    #[error(
        "--bands maps {key} to {target}, but scene {path} has no such band; the scene has: {available}"
    )]
    MappedBandMissing {
        path: PathBuf,
        key: String,
        target: String,
        available: String,
    },
    #[error(
        "--bands names {key}, which is not an input band of the model; the model's bands are: {model_bands}"
    )]
    UnknownModelBand { key: String, model_bands: String },
    #[error(
        "scene {path} has no coordinate reference system; assign one first, e.g. `gdal_edit.py -a_srs EPSG:32633 {path}`"
    )]
    NoCrs { path: PathBuf },
    #[error(
        "scene {path} has no geotransform (pixel grid is not georeferenced); georeference it first, e.g. with `gdal_translate -a_ullr` or `gdalwarp`"
    )]
    NoGeoTransform { path: PathBuf },
    #[error(
        "scene {path} has a rotated geotransform, which eoinfer does not read; warp it north-up first with `gdalwarp`"
    )]
    Rotated { path: PathBuf },
    #[error(
        "band file {path} is in another coordinate reference system than {first}; warp all bands to one CRS first with `gdalwarp`"
    )]
    CrsDiffers { path: PathBuf, first: PathBuf },
    #[error(
        "the scene grid at {resolution} {unit} is empty ({width} x {height} px); pass a finer --resolution (in {unit}, the unit of the scene's CRS)"
    )]
    EmptyGrid {
        resolution: f64,
        unit: String,
        width: usize,
        height: usize,
    },
    #[error(
        "scene {path} has {native} {unit} pixels, but the model's resolution is {resolution} {unit}: reading it there would invent more than 2x finer pixels; pass --resolution {native} (or another pixel size in {unit}) to run at the scene's resolution, or --allow-upsample to resample it to {resolution} {unit}"
    )]
    Upsample {
        path: PathBuf,
        native: f64,
        resolution: f64,
        unit: String,
    },
    #[error(
        "band {band} of {path} holds integers, but nothing says how they convert to reflectance: {why}; pass --scale and --offset (reflectance = value x scale + offset, e.g. --scale 0.0001 for Sentinel-2 L1C/L2A), --s2-offset 0 or -1000 for Sentinel-2 DN (-1000 from processing baseline 04.00), or put the product's metadata (MTL file, STAC Item with raster:bands) beside the files"
    )]
    NoScaling {
        path: PathBuf,
        band: String,
        why: String,
    },
    #[error(
        "scene {path} is Sentinel-2 acquired on {date}, but no metadata (MTD_MSIL*.xml, STAC s2:processing_baseline) states its processing baseline, and from 2022-01-25 on (baseline 04.00) the DN carry an offset of -1000; pass --s2-offset -1000 (baseline 04.00 and later) or --s2-offset 0 (earlier baselines), or put the product's metadata beside the files"
    )]
    S2Baseline { path: PathBuf, date: String },
    #[error(
        "the model {model} does not fit scene {path}: {what}; pass a model made for this product, or --accept-product-mismatch to run anyway (with a warning in the summary)"
    )]
    ProductMismatch {
        path: PathBuf,
        model: String,
        what: String,
    },
    #[error(
        "{path} would be read from the public cloud: {variable} is not set; point {variable} at your own object storage (e.g. AWS_S3_ENDPOINT=minio.local:9000 AWS_HTTPS=NO AWS_VIRTUAL_HOSTING=FALSE for /vsis3/), or pass --allow-public-cloud to let data come from outside your servers"
    )]
    PublicCloud { path: String, variable: String },
    #[error(
        "the values of scene {path} lie far outside what the model was trained on: {what}; check the units (a stack still in DN needs --scale 0.0001 or its scale metadata; Sentinel-2 from baseline 04.00 needs --s2-offset -1000), or pass --accept-out-of-range to run anyway (with a warning)"
    )]
    OutOfRange { path: PathBuf, what: String },
    #[error("Sentinel-1 input {path}: {what}, then run again")]
    S1Units { path: PathBuf, what: String },
    #[error(
        "scene {path} has ground control points but no geotransform (a Sentinel-1 GRD or another raster in its acquisition geometry); eoinfer reads map-projected rasters: project it first with `{command}`, or pass --warp-gcps to have it warped by its GCPs on the fly (with a warning)"
    )]
    GcpOnly { path: PathBuf, command: String },
    #[error("--bands names model band {key} twice; give each model band one scene band")]
    DuplicateBandKey { key: String },
    #[error(
        "--bands entry `{entry}` is not of the form model_band=scene_band (e.g. blue=B2,nir=5)"
    )]
    BadBandMap { entry: String },
    #[error("GDAL failed on {path}: {message}")]
    Gdal { path: PathBuf, message: String },
    #[error(
        "cannot read {path}: {message}; the file is corrupt or truncated: download it again (and check its checksum)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "cannot find the acquisition date of {path} (no STAC datetime, no date in its metadata or file name); pass --dates YYYY-MM-DD,... in the order of the scenes without a date"
    )]
    NoDate { path: PathBuf },
    #[error("{count} time steps, but the model takes at most {max}; pass fewer scenes")]
    TooManySteps { count: usize, max: usize },
    #[error("{}: {what}", path.display())]
    Events { path: PathBuf, what: String },
    #[error("{model}: the input breaks the model's temporal contract: {what}", model = model.display())]
    TemporalContract { model: PathBuf, what: String },
    #[error("{what}")]
    Series { what: String },
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Errors raised while writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "output folder {path} is not writable ({source}); pass a folder you can write to with --out"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {message}")]
    Gdal { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write Parquet file {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error(
        "refusing to write {path}: it would not be a valid STAC document ({problems}); this is a bug in eoinfer, please report it with the run's summary"
    )]
    InvalidDocument { path: PathBuf, problems: String },
}

/// Geometry errors of the tile grid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GridError {
    #[error(
        "overlap {overlap} px must be smaller than the tile size {tile} px; pass a smaller --overlap"
    )]
    OverlapTooLarge { overlap: usize, tile: usize },
    #[error("tile size must be at least 1 px")]
    ZeroTile,
    #[error(
        "--tile-size {0} is too small; pass at least 16 px (larger tiles give the model more context)"
    )]
    TileTooSmall(usize),
    #[error("reference tiling overlap fraction {0} must be in [0, 0.5]")]
    BadFraction(String),
}

/// Errors of the area of interest and the output grid it defines.
#[derive(Debug, thiserror::Error)]
pub enum AoiError {
    #[error(
        "cannot read the AOI {aoi}: {message}; pass a GeoJSON/GeoPackage/any OGR file, a WKT polygon or minx,miny,maxx,maxy (with --aoi-crs, default EPSG:4326)"
    )]
    Parse { aoi: String, message: String },
    #[error("the AOI {aoi} holds no polygon with an area; pass a polygon or a bounding box")]
    Empty { aoi: String },
    #[error(
        "cannot use the CRS {value} ({flag}): {message}; pass EPSG:<code>, a WKT or a PROJ string"
    )]
    Crs {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "the output CRS {crs} is geographic; an AOI grid needs metres: leave --crs out (UTM of the AOI) or pass a projected CRS"
    )]
    Geographic { crs: String },
    #[error(
        "the AOI {aoi} does not overlap any of the scenes ({scenes}); check the AOI's CRS (--aoi-crs) and the scenes"
    )]
    NoOverlap { aoi: String, scenes: String },
    #[error("GDAL failed on the AOI {aoi}: {message}")]
    Gdal { aoi: String, message: String },
}

/// Errors of resumable, sharded jobs: the plan, the journal, the parts and the merge.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(
        "{dir} already holds a run of {name} with plan {journal} (made with other parameters: {differs}); this run's plan is {plan}. Rerun with the same parameters to resume, pass another --out or --name, or pass --force to discard the finished work and start over"
    )]
    PlanMismatch {
        dir: std::path::PathBuf,
        name: String,
        journal: String,
        plan: String,
        differs: String,
    },
    #[error(
        "--shard {0} is not valid; pass i/N with 0 <= i < N (e.g. 0/8), or auto/N to take i from JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX"
    )]
    BadShard(String),
    #[error(
        "--shard auto/{count}: none of JOB_COMPLETION_INDEX (Kubernetes Indexed Job), SLURM_ARRAY_TASK_ID (Slurm array) or AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch array) is set{found}; pass --shard i/{count}"
    )]
    NoShardIndex { count: usize, found: String },
    #[error(
        "--force cannot be used with --shard: every shard would discard the others' work; run `eoinfer plan ... --force` once before starting the shards"
    )]
    ForceWithShard,
    #[error("cannot read the journal {path}: {message}")]
    Journal {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot write the journal {path}: {source}")]
    JournalWrite {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} holds no plan of a run named {name}; run `eoinfer predict --shard i/N ...` (or `eoinfer plan ...`) with --out {dir} first, or pass the right --name"
    )]
    NoPlan {
        dir: std::path::PathBuf,
        name: String,
    },
    #[error(
        "cannot merge {name} in {dir}: blocks {missing} of {total} are not finished, or their parts are missing or damaged (shards {shards} of {count}); run those shards (or rerun `eoinfer predict` with the same parameters) and merge again"
    )]
    Unfinished {
        dir: std::path::PathBuf,
        name: String,
        missing: String,
        total: usize,
        shards: String,
        count: usize,
    },
    #[error(
        "{holder} is running this job ({job}); wait for it to finish or stop it (lock: {lock})"
    )]
    Busy {
        holder: String,
        job: String,
        lock: std::path::PathBuf,
    },
    #[error(
        "cannot {what}: other eoinfer processes work on {name} in {dir} ({holders}); wait for them to finish or stop them"
    )]
    InUse {
        what: String,
        name: String,
        dir: std::path::PathBuf,
        holders: String,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the file system of {path} does not support file locks (flock: {source}); mount NFS with locking (no `nolock`) or Lustre with `-o flock`, or, if you make sure that only one process runs each job, set EOINFER_LOCKS=off"
    )]
    LocksUnsupported {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the inputs of {name} in {dir} changed since its finished blocks were computed: {changes}; resuming would mix results of the old and the new files. Restore the files, pass another --out or --name, or pass --force to discard the finished work and start over"
    )]
    InputChanged {
        dir: std::path::PathBuf,
        name: String,
        changes: String,
    },
    #[error(
        "the disk of {dir} is full: writing {path} failed ({message}). {state}. Free some space and rerun the same command to resume"
    )]
    DiskFull {
        dir: std::path::PathBuf,
        path: std::path::PathBuf,
        message: String,
        /// `2 of 4 blocks are finished and kept; the rest of the run needs about ...`.
        state: String,
    },
    #[error(
        "the journal in {dir} says {name} is finished, but {missing} is missing; pass --force to run it again"
    )]
    FinishedButMissing {
        dir: std::path::PathBuf,
        name: String,
        missing: std::path::PathBuf,
    },
}

/// Limits of a run: values out of their range, grids and batches that would not fit.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{flag} {value} is out of range; {range}")]
    Value {
        flag: &'static str,
        value: String,
        range: String,
    },
    #[error(
        "the output grid at {resolution} would be {width} x {height} px ({pixels} pixels), more than the limit of {max} pixels; pass a coarser --resolution (in the CRS's units: metres for UTM), a smaller --aoi, or raise the limit with --max-pixels"
    )]
    GridTooLarge {
        resolution: f64,
        width: u64,
        height: u64,
        pixels: u64,
        max: u64,
    },
    #[error(
        "this run needs about {need} of memory ({breakdown}), more than the memory limit of {limit}; {fix}"
    )]
    Memory {
        need: String,
        breakdown: String,
        limit: String,
        fix: String,
    },
}

/// Errors of `eoinfer monitor`.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor configuration {path}: {what}")]
    Config { path: PathBuf, what: String },
    #[error("monitor source: {what}")]
    Source { what: String },
    #[error("change detection on {path}: {what}")]
    Change { path: PathBuf, what: String },
    #[error("monitor state {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{failed} acquisition(s) failed this cycle ({processed} processed); they are retried on the next cycle (see `eoinfer monitor status`)"
    )]
    ItemsFailed { failed: usize, processed: usize },
}

/// Any error of a run, sorted by where it arose.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Scene(#[from] SceneError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error(transparent)]
    Aoi(#[from] AoiError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Pipeline(&'static str),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

impl Error {
    /// Process exit code for this error: 2 for bad input and fatal errors.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Monitor(MonitorError::ItemsFailed { .. }) => 1,
            _ => 2,
        }
    }
}
