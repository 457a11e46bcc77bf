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
        "the scene grid at {resolution} m is empty ({width} x {height} px); pass a finer --resolution"
    )]
    EmptyGrid {
        resolution: f64,
        width: usize,
        height: usize,
    },
    #[error(
        "--bands entry `{entry}` is not of the form model_band=scene_band (e.g. blue=B2,nir=5)"
    )]
    BadBandMap { entry: String },
    #[error("GDAL failed on {path}: {message}")]
    Gdal { path: PathBuf, message: String },
    #[error(
        "cannot find the acquisition date of {path} (no STAC datetime, no date in its metadata or file name); pass --dates YYYY-MM-DD,... in the order of the scenes without a date"
    )]
    NoDate { path: PathBuf },
    #[error("{count} time steps, but the model takes at most {max}; pass fewer scenes")]
    TooManySteps { count: usize, max: usize },
    #[error("{what}")]
    Series { what: String },
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
    #[error("a pipeline stage stopped unexpectedly: {0}")]
    Pipeline(&'static str),
}

impl Error {
    /// Process exit code for this error: 2 for bad input and fatal errors.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        2
    }
}
