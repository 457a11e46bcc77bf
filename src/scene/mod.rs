//! Where pixels come from: a GDAL raster or a folder of per-band files, matched band by band
//! to the model's inputs and put on one grid (a VRT that resamples every band to the
//! model's resolution), plus the per-band conversion of stored values to reflectance.

pub mod mosaic;
mod reader;
mod sensor;
mod sentinel2;
pub mod series;
pub mod timeseries;
pub mod values;

pub use reader::{StackReader, StripReader};
pub use sensor::{Level, Product, SENTINEL2};

use crate::error::SceneError;
use crate::model::ModelSpec;
use crate::normalize::Rescale;
use gdal::Dataset;
use gdal::Metadata;
use gdal::raster::GdalDataType;
use gdal::spatial_ref::SpatialRef;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How to read a scene, from the command line.
#[derive(Debug, Clone, Default)]
pub struct SceneOptions {
    /// `model band = scene band` pairs from `--bands`.
    pub band_map: Vec<(String, String)>,
    /// Output pixel size in CRS units (default: the model's recommended GSD).
    pub resolution: Option<f64>,
    /// Sentinel-2 DN offset override (`--s2-offset`, e.g. -1000).
    pub s2_offset: Option<f64>,
    /// Nodata value of the input (`--nodata`), overriding the files' own.
    pub nodata: Option<f64>,
    /// The largest grid in pixels (`--max-pixels`; default
    /// [`crate::limits::DEFAULT_MAX_PIXELS`]).
    pub max_pixels: Option<u64>,
    /// The flags of the input contract.
    pub read: ReadFlags,
}

/// The flags that state what metadata does not, or accept what the contract refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[allow(clippy::struct_excessive_bools)]
pub struct ReadFlags {
    /// `--scale`: stored value to reflectance multiplier for every band, overriding metadata.
    pub scale: Option<f64>,
    /// `--offset`: added after `--scale`.
    pub offset: Option<f64>,
    /// `--allow-upsample`: resample a scene more than 2x finer than its pixels without
    /// `--resolution`.
    pub allow_upsample: bool,
    /// `--accept-product-mismatch`: run a model on a sensor or product level it was not made
    /// for, with a warning.
    pub accept_product_mismatch: bool,
    /// `--allow-public-cloud`: read `/vsis3/` without a user-set `AWS_S3_ENDPOINT`.
    pub allow_public_cloud: bool,
    /// `--warp-gcps`: read a raster georeferenced by GCPs only through a VRT warped by them.
    pub warp_gcps: bool,
}

/// GDAL's object-storage file systems and the variable that points each at the user's own
/// storage (without it GDAL goes to the public cloud).
const CLOUD_SYSTEMS: [(&str, &str); 6] = [
    ("/vsis3", "AWS_S3_ENDPOINT"),
    ("/vsigs", "CPL_GS_ENDPOINT"),
    ("/vsioss", "OSS_ENDPOINT"),
    ("/vsiaz", "AZURE_STORAGE_CONNECTION_STRING"),
    ("/vsiadls", "AZURE_STORAGE_CONNECTION_STRING"),
    ("/vsiswift", "SWIFT_STORAGE_URL"),
];

/// Whether a path is read from object storage (also inside `/vsizip/`, `/vsis3_streaming/`).
fn is_cloud_path(p: &str) -> bool {
    CLOUD_SYSTEMS.iter().any(|(prefix, _)| p.contains(prefix))
}

/// Refuses a path that would reach the public cloud: an object-storage file system whose
/// endpoint variable is not set (`AWS_S3_ENDPOINT` for `/vsis3/`; for Azure a connection
/// string with a `BlobEndpoint`), unless `--allow-public-cloud`.
pub fn check_public_cloud_path(p: &str, allow: bool) -> Result<(), SceneError> {
    if allow {
        return Ok(());
    }
    for (prefix, var) in CLOUD_SYSTEMS {
        if !p.contains(prefix) {
            continue;
        }
        let value = std::env::var(var).unwrap_or_default();
        let own = if var.starts_with("AZURE") {
            value.contains("BlobEndpoint=")
        } else {
            !value.trim().is_empty()
        };
        if !own {
            return Err(SceneError::PublicCloud {
                path: p.to_string(),
                variable: var.to_string(),
            });
        }
    }
    Ok(())
}

/// The source of one `--scene` value: a STAC Item (`.json`) gives its assets, anything else
/// is a path GDAL opens.
pub fn source_of(scene: &str) -> Result<SceneSource, SceneError> {
    let p = Path::new(scene);
    if p.is_file()
        && p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let mut entries = timeseries::scene_entries(&[scene.to_string()])?;
        if entries.len() != 1 {
            return Err(SceneError::Series {
                what: format!(
                    "{scene} holds {} STAC Items; pass one Item, or an --aoi to mosaic them on one grid",
                    entries.len()
                ),
            });
        }
        return Ok(entries.remove(0).source);
    }
    Ok(SceneSource::Path(scene.to_string()))
}

/// What to do with a model band the scene lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingBands {
    /// It is an error (the message names the band and lists the scene's).
    #[default]
    Error,
    /// Read the present band nearest in wavelength instead (OlmoEarth v1).
    NearestWavelength,
    /// Leave it out; the model input gets 0 after normalisation (OlmoEarth v1.1 and later).
    ZeroAfterNormalisation,
}

/// A fixed output grid (all time steps of a series share the first one's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridSpec {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// GDAL geotransform.
    pub geo_transform: [f64; 6],
    /// CRS as WKT.
    pub srs_wkt: String,
}

/// Everything a stack needs to know about the model's inputs.
#[derive(Debug, Clone)]
pub struct StackRequest {
    /// Input bands in model order.
    pub bands: Vec<crate::model::ModelBand>,
    /// Centre wavelength per band (µm), for [`MissingBands::NearestWavelength`].
    pub wavelengths: Vec<Option<f64>>,
    /// Recommended ground sample distance.
    pub gsd: f64,
    /// Integer (DN) value -> model units.
    pub dn_scale: f64,
    /// Floating-point (reflectance) value -> model units.
    pub float_scale: f64,
    /// DN meaning "no data" for integer inputs.
    pub dn_nodata: Option<f64>,
    /// What to do with bands the scene lacks.
    pub missing: MissingBands,
    /// A grid to put the bands on instead of the scene's own.
    pub grid: Option<GridSpec>,
    /// The sensors and product level the model was made for (empty: not checked).
    pub expect: Expectation,
    /// The model's statement of how integer pixels of one GDAL data type become its input
    /// (data type name, scale, source), used when no metadata of the scene says more.
    pub integer_input: Option<(String, f64, String)>,
    /// What the values are, in the summary's words: [`REFLECTANCE`], or Sentinel-1
    /// backscatter in dB (read as stored; the value check judges its units).
    pub quantity: &'static str,
}

/// [`StackRequest::quantity`] of optical inputs.
pub const REFLECTANCE: &str = "reflectance";

/// The sensors and product level a model was made for, from its manifest.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// The manifest, for messages.
    pub model: String,
    /// Sensor ids (`sentinel-2`, `landsat-8`); empty: any.
    pub sensors: Vec<String>,
    /// `eoinfer:product_level` as the manifest writes it (L1C, L2A, TOA, SR).
    pub level: Option<String>,
}

impl StackRequest {
    /// The request of a model's optical input: reflectance in; a segmentation model needs
    /// every band.
    #[must_use]
    pub fn for_model(spec: &ModelSpec) -> Self {
        let mut req = if let Some(enc) = &spec.encoder {
            enc.stack_request()
        } else {
            Self {
                bands: spec.bands.clone(),
                wavelengths: vec![None; spec.bands.len()],
                gsd: spec.gsd,
                dn_scale: spec.dn_scale,
                float_scale: 1.0,
                dn_nodata: spec.dn_nodata,
                missing: MissingBands::Error,
                grid: None,
                expect: Expectation::default(),
                integer_input: None,
                quantity: REFLECTANCE,
            }
        };
        req.integer_input.clone_from(&spec.integer_input);
        req.expect = Expectation {
            model: spec.manifest.display().to_string(),
            sensors: spec.sensors.clone(),
            level: spec.product_level.clone(),
        };
        req
    }
}

/// A scene: a path GDAL opens (file, folder of per-band files, connection string) or an
/// explicit list of per-band files (one time step of a series, a STAC Item's assets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SceneSource {
    /// A raster file, a folder of per-band files or a GDAL dataset name.
    Path(String),
    /// Per-band files, named by `label` in messages.
    Files {
        /// How the scene is named in messages and outputs.
        label: String,
        /// The files (local paths, or GDAL virtual file system paths such as `/vsicurl/...`).
        files: Vec<PathBuf>,
        /// The STAC Item the files are the assets of (its file and JSON), whose metadata wins
        /// over the files' names.
        item: Option<std::sync::Arc<(PathBuf, serde_json::Value)>>,
    },
}

impl SceneSource {
    /// How the scene is named in messages.
    #[must_use]
    pub fn label(&self) -> &str {
        match self {
            SceneSource::Path(p) => p,
            SceneSource::Files { label, .. } => label,
        }
    }
}

/// One model input band and where it is read from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StackBand {
    /// The model band (common name where there is one).
    pub model_band: String,
    /// File (or GDAL dataset name) the band comes from.
    pub source: String,
    /// 1-based band index in that file.
    pub source_band: usize,
    /// Native pixel size of the source.
    pub source_resolution: f64,
    /// Stored value to the model's units (reflectance, or reflectance x 10000 for a model
    /// that takes DN).
    pub rescale: Rescale,
    /// The conversion in words and where it came from.
    pub scaling: String,
    /// Source nodata value, if any.
    pub nodata: Option<f64>,
    /// 1-based band of the stack's VRT holding it; `None` when the scene lacks the band and
    /// the model takes 0 after normalisation.
    pub vrt_band: Option<usize>,
    /// How a band the scene lacks was filled, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filled: Option<String>,
}

/// The scene as the model sees it: every input band on one north-up grid.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stack {
    /// The scene as given.
    pub scene: String,
    /// Name used for the outputs.
    pub name: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel size in CRS units.
    pub resolution: f64,
    /// GDAL geotransform of the grid.
    pub geo_transform: [f64; 6],
    /// CRS as WKT.
    #[serde(skip)]
    pub srs_wkt: String,
    /// CRS as PROJJSON.
    #[serde(skip)]
    pub projjson: String,
    /// EPSG code of the CRS, when it has one.
    pub epsg: Option<i32>,
    /// Input bands in model order.
    pub bands: Vec<StackBand>,
    /// Where the Sentinel-2 DN offset came from.
    pub s2_offset_source: String,
    /// The sensor and product recognised from names and metadata.
    pub sensor: Option<Product>,
    /// Warnings about how the scene was read (inferred baseline, resolution, product).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The VRT (XML) that puts the bands on the grid.
    #[serde(skip)]
    pub vrt: String,
    /// Number of bands in the VRT.
    #[serde(skip)]
    pub vrt_bands: usize,
}

impl Stack {
    /// The grid of this stack, for the other time steps of a series.
    #[must_use]
    pub fn grid(&self) -> GridSpec {
        GridSpec {
            width: self.width,
            height: self.height,
            geo_transform: self.geo_transform,
            srs_wkt: self.srs_wkt.clone(),
        }
    }
}

/// A raster band the scene offers.
#[derive(Debug, Clone)]
struct Candidate {
    path: String,
    band: usize,
    /// Names the model's bands are matched to without --bands.
    names: Vec<String>,
    /// Further names --bands may use.
    aliases: Vec<String>,
    label: String,
    /// What the product's metadata says of the file.
    meta: sensor::FileMeta,
}

/// Canonical form of a band name for matching: lower case, `B2`/`B02` alike.
fn canon(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    if let Some(rest) = n.strip_prefix('b') {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        if !digits.is_empty() && (tail.is_empty() || tail == "a") {
            let num: u32 = digits.parse().unwrap_or(0);
            return format!("b{num}{tail}");
        }
    }
    n
}

/// Names a per-band file answers to: its stem and the stem's `_`-separated tokens
/// (`T33UUU_20170216T102101_B02` -> `B02`; `T29RKH_..._B02_10m` -> `B02`).
fn file_band_names(path: &Path) -> Vec<String> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = vec![stem.clone()];
    let tokens: Vec<&str> = stem.split(['_', '-', '.']).collect();
    names.extend(tokens.iter().map(|t| (*t).to_string()));
    names
}

const RASTER_EXTENSIONS: [&str; 7] = ["tif", "tiff", "jp2", "vrt", "nc", "img", "j2k"];

pub(crate) fn list_rasters(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if depth > 0 {
                list_rasters(&p, depth - 1, out);
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| RASTER_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

fn open_raster(path: &str) -> Result<Dataset, SceneError> {
    // Only this open's own messages explain its failure.
    let _ = crate::take_gdal_errors();
    let ds = Dataset::open(path).map_err(|e| {
        let said = crate::take_gdal_errors();
        SceneError::NotRaster {
            path: PathBuf::from(path),
            message: if said.is_empty() { e.to_string() } else { said },
        }
    })?;
    if ds.raster_count() == 0 {
        return Err(SceneError::NotRaster {
            path: PathBuf::from(path),
            message: "it has no raster bands".into(),
        });
    }
    Ok(ds)
}

fn is_gdal_connection(s: &str) -> bool {
    s.starts_with("/vsi")
        || (s.contains(':')
            && s.split(':').next().is_some_and(|p| {
                p.len() > 1
                    && p.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            }))
}

/// The candidate of a one-band file or STAC asset, named by its file name and common name;
/// a Landsat `B5` is nir, not Sentinel-2's `B05`: such a file's own names are only --bands
/// aliases, its common name is what it matches by.
fn one_band_candidate(f: &Path, meta: sensor::FileMeta, out: &mut Vec<Candidate>) {
    let all = file_band_names(f);
    let mut names = if meta.foreign_band_numbers {
        Vec::new()
    } else {
        all.clone()
    };
    names.extend(meta.common_name.iter().cloned());
    let mut aliases = meta.aliases.clone();
    if meta.foreign_band_numbers {
        aliases.extend(all.iter().cloned());
    }
    out.push(Candidate {
        path: f.to_string_lossy().into_owned(),
        band: 1,
        label: match &meta.common_name {
            Some(c) => format!("{} ({c})", all[0]),
            None => all[0].clone(),
        },
        names,
        aliases,
        meta,
    });
}

/// The candidates of a multi-band STAC asset, one per band its Item lists, named by the
/// Item (`name`, common name), with each band's own scale, offset and fill value.
fn asset_band_candidates(f: &Path, meta: &sensor::FileMeta, out: &mut Vec<Candidate>) {
    let stem = names_stem(f);
    for (i, b) in meta.asset_bands.iter().enumerate() {
        let mut names: Vec<String> = Vec::new();
        if !meta.foreign_band_numbers {
            names.extend(b.name.iter().cloned());
        }
        names.extend(b.common_name.iter().cloned());
        let mut aliases: Vec<String> = meta
            .aliases
            .iter()
            .map(|a| format!("{a}:{}", i + 1))
            .collect();
        if meta.foreign_band_numbers {
            aliases.extend(b.name.iter().cloned());
        }
        let own = b.name.clone().unwrap_or_else(|| format!("band {}", i + 1));
        out.push(Candidate {
            path: f.to_string_lossy().into_owned(),
            band: i + 1,
            label: match &b.common_name {
                Some(c) => format!("{own} ({c}, {stem} band {})", i + 1),
                None => format!("{own} ({stem} band {})", i + 1),
            },
            names,
            aliases,
            meta: sensor::FileMeta {
                common_name: b.common_name.clone(),
                linear: b.linear.clone(),
                nodata: b.nodata,
                foreign_band_numbers: meta.foreign_band_numbers,
                ..sensor::FileMeta::default()
            },
        });
    }
}

/// The STAC Item a source was given as.
fn source_item(source: &SceneSource) -> Option<(&Path, &serde_json::Value)> {
    match source {
        SceneSource::Files { item, .. } => item.as_deref().map(|(p, v)| (p.as_path(), v)),
        SceneSource::Path(_) => None,
    }
}

/// The candidates of one per-band file (a file of several bands: those with a description).
/// A file GDAL cannot open is an error that names it and carries GDAL's reason.
fn file_candidates(
    f: &Path,
    meta: &sensor::FileMeta,
    out: &mut Vec<Candidate>,
) -> Result<(), SceneError> {
    let fs = f.to_string_lossy().into_owned();
    let ds = open_raster(&fs)?;
    if ds.raster_count() == 1 {
        one_band_candidate(f, meta.clone(), out);
    } else {
        for i in 1..=ds.raster_count() {
            let desc = ds
                .rasterband(i)
                .ok()
                .and_then(|b| b.description().ok())
                .unwrap_or_default();
            if !desc.is_empty() {
                // A Landsat stack's `B5` is not Sentinel-2's `B05`: --bands only.
                let (names, aliases) = if meta.foreign_band_numbers {
                    (Vec::new(), vec![desc.clone()])
                } else {
                    (vec![desc.clone()], Vec::new())
                };
                out.push(Candidate {
                    path: fs.clone(),
                    band: i,
                    label: format!("{desc} ({} band {i})", names_stem(f)),
                    names,
                    aliases,
                    meta: sensor::FileMeta {
                        foreign_band_numbers: meta.foreign_band_numbers,
                        ..sensor::FileMeta::default()
                    },
                });
            }
        }
    }
    Ok(())
}

/// The bands a scene offers, whether it is a folder (or list) of files, and what the metadata
/// beside its files says.
fn candidates(
    source: &SceneSource,
) -> Result<(Vec<Candidate>, bool, sensor::Described), SceneError> {
    let (scene, listed) = match source {
        SceneSource::Path(p) => (p.as_str(), None),
        SceneSource::Files { label, files, .. } => (label.as_str(), Some(files)),
    };
    let item = match source {
        SceneSource::Files { item, .. } => item.as_deref().map(|(p, v)| (p.as_path(), v)),
        SceneSource::Path(_) => None,
    };
    let path = Path::new(scene);
    if listed.is_none() && !is_gdal_connection(scene) && !path.exists() {
        return Err(SceneError::Missing {
            path: path.to_path_buf(),
        });
    }
    if listed.is_some() || path.is_dir() {
        let mut files = Vec::new();
        match listed {
            Some(l) => {
                for f in l {
                    if !f.exists() && !is_gdal_connection(&f.to_string_lossy()) {
                        return Err(SceneError::Missing { path: f.clone() });
                    }
                }
                files.clone_from(l);
            }
            None => list_rasters(path, 3, &mut files),
        }
        let names: Vec<String> = files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        let described = sensor::describe(&names, item);
        let mut out = Vec::new();
        for (f, name) in files.iter().zip(&names) {
            let meta = described.files.get(name).cloned().unwrap_or_default();
            if item.is_some() && is_gdal_connection(name) {
                // A remote STAC asset is taken as the bands its Item lists (one, or one per
                // `eo:bands` entry) and opened only if a model band is matched to it (each
                // open costs requests).
                if meta.asset_bands.len() > 1 {
                    asset_band_candidates(f, &meta, &mut out);
                } else {
                    one_band_candidate(f, meta, &mut out);
                }
            } else {
                file_candidates(f, &meta, &mut out)?;
            }
        }
        if out.is_empty() {
            return Err(SceneError::EmptyFolder {
                path: path.to_path_buf(),
            });
        }
        return Ok((out, true, described));
    }
    let ds = open_raster(scene)?;
    let described = if is_gdal_connection(scene) {
        sensor::Described::default()
    } else {
        sensor::describe(&[scene.to_string()], None)
    };
    let mut out = Vec::new();
    for i in 1..=ds.raster_count() {
        let band = ds.rasterband(i).map_err(|e| SceneError::Gdal {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut names = Vec::new();
        let desc = band.description().unwrap_or_default();
        if !desc.is_empty() {
            names.push(desc.clone());
        }
        for key in [
            "BANDNAME",
            "BAND_NAME",
            "NETCDF_VARNAME",
            "eo:common_name",
            "common_name",
        ] {
            if let Some(v) = band.metadata_item(key, "") {
                names.push(v);
            }
        }
        // An RGB(A) image's colour interpretation names its bands.
        match band.color_interpretation() {
            gdal::raster::ColorInterpretation::RedBand => names.push("red".into()),
            gdal::raster::ColorInterpretation::GreenBand => names.push("green".into()),
            gdal::raster::ColorInterpretation::BlueBand => names.push("blue".into()),
            _ => {}
        }
        let label = if desc.is_empty() {
            format!("{i}")
        } else {
            format!("{i} ({desc})")
        };
        // The bands of a Landsat stack (`B5` is nir, not Sentinel-2's `B05`) are matched
        // through --bands only.
        let foreign = described
            .files
            .get(scene)
            .is_some_and(|m| m.foreign_band_numbers);
        let (names, aliases) = if foreign {
            (Vec::new(), names)
        } else {
            (names, Vec::new())
        };
        out.push(Candidate {
            path: scene.to_string(),
            band: i,
            names,
            aliases,
            label,
            meta: sensor::FileMeta {
                foreign_band_numbers: foreign,
                ..sensor::FileMeta::default()
            },
        });
    }
    Ok((out, false, described))
}

fn names_stem(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct SourceInfo {
    srs: SpatialRef,
    gt: [f64; 6],
    size: (usize, usize),
    int_type: bool,
    /// GDAL's name of the band's data type (`Byte`, `UInt16`).
    type_name: String,
    nodata: Option<f64>,
    scale_offset: Option<(f64, f64)>,
}

fn source_info(path: &str, band: usize) -> Result<SourceInfo, SceneError> {
    let p = PathBuf::from(path);
    let ds = open_raster(path)?;
    let gt = ds.geo_transform().ok();
    if gt.is_none_or(|g| g == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]) {
        if let Some(command) = gcp_warp_command(&ds, path) {
            return Err(SceneError::GcpOnly { path: p, command });
        }
        return Err(SceneError::NoGeoTransform { path: p });
    }
    let gt = gt.unwrap_or_default();
    if gt[2] != 0.0 || gt[4] != 0.0 {
        return Err(SceneError::Rotated { path: p });
    }
    let srs = ds
        .spatial_ref()
        .map_err(|_| SceneError::NoCrs { path: p.clone() })?;
    if srs.to_wkt().map_or(true, |w| w.is_empty()) {
        return Err(SceneError::NoCrs { path: p });
    }
    let b = ds.rasterband(band).map_err(|e| SceneError::Gdal {
        path: p.clone(),
        message: e.to_string(),
    })?;
    let int_type = matches!(
        b.band_type(),
        GdalDataType::UInt8
            | GdalDataType::UInt16
            | GdalDataType::Int16
            | GdalDataType::UInt32
            | GdalDataType::Int32
    );
    let scale = unsafe { gdal_sys::GDALGetRasterScale(b.c_rasterband(), std::ptr::null_mut()) };
    let offset = unsafe { gdal_sys::GDALGetRasterOffset(b.c_rasterband(), std::ptr::null_mut()) };
    Ok(SourceInfo {
        srs,
        gt,
        size: ds.raster_size(),
        int_type,
        type_name: b.band_type().name(),
        nodata: b.no_data_value(),
        scale_offset: (scale != 1.0 || offset != 0.0).then_some((scale, offset)),
    })
}

/// For a raster georeferenced by ground control points only (Sentinel-1 GRD in its
/// acquisition geometry), the `gdalwarp` command that projects it.
fn gcp_warp_command(ds: &Dataset, path: &str) -> Option<String> {
    let (target, _) = gcp_target(ds)?;
    let stem = Path::new(path)
        .file_stem()
        .map_or_else(|| "scene".into(), |s| s.to_string_lossy().into_owned());
    let dir = Path::new(path).parent().unwrap_or(Path::new(""));
    let out = dir.join(format!("{stem}_projected.tif"));
    Some(format!(
        "gdalwarp -t_srs {target} -tps -r bilinear -co COMPRESS=DEFLATE {path} {}",
        out.display()
    ))
}

/// The CRS a GCP-only raster is projected to (the UTM zone of its GCPs' centre when they are
/// in longitude/latitude, else the GCPs' own CRS) and its number of GCPs; `None` without GCPs.
fn gcp_target(ds: &Dataset) -> Option<(String, usize)> {
    // SAFETY: the dataset handle is valid; GDAL owns the returned GCP array and WKT.
    let (count, gcps, wkt) = unsafe {
        let h = ds.c_dataset();
        let wkt = gdal_sys::GDALGetGCPProjection(h);
        let wkt = if wkt.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(wkt).to_string_lossy().into_owned()
        };
        (gdal_sys::GDALGetGCPCount(h), gdal_sys::GDALGetGCPs(h), wkt)
    };
    if count <= 0 || gcps.is_null() {
        return None;
    }
    // SAFETY: GDAL returns `count` GCPs at `gcps`.
    let points = unsafe { std::slice::from_raw_parts(gcps, usize::try_from(count).ok()?) };
    let n = points.len() as f64;
    let (x, y) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), g| (x + g.dfGCPX / n, y + g.dfGCPY / n));
    let srs = SpatialRef::from_wkt(&wkt).ok();
    let target = match srs {
        Some(s) if s.is_geographic() && (-180.0..=180.0).contains(&x) && y.abs() <= 84.0 => {
            let zone = (((x + 180.0) / 6.0).floor() as i32).clamp(0, 59) + 1;
            format!(
                "EPSG:{}",
                if y >= 0.0 { 32600 + zone } else { 32700 + zone }
            )
        }
        Some(s) => s
            .auth_code()
            .map_or_else(|_| "EPSG:<your CRS>".into(), |c| format!("EPSG:{c}")),
        None => "EPSG:<your CRS>".into(),
    };
    Some((target, points.len()))
}

/// With `--warp-gcps`, every candidate file georeferenced by GCPs only is read through a VRT
/// warped by its GCPs (thin plate spline, bilinear) to [`gcp_target`]'s CRS, with a warning.
fn warp_gcp_candidates(
    cands: &mut [Candidate],
    warnings: &mut Vec<String>,
) -> Result<(), SceneError> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(String, String)> = Vec::new();
    for c in cands.iter_mut() {
        if let Some((_, warped)) = done.iter().find(|(p, _)| *p == c.path) {
            c.path.clone_from(warped);
            continue;
        }
        let Ok(ds) = Dataset::open(&c.path) else {
            continue;
        };
        if ds
            .geo_transform()
            .is_ok_and(|g| g != [0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        {
            continue;
        }
        let Some((target, n)) = gcp_target(&ds) else {
            continue;
        };
        if target.contains('<') {
            continue;
        }
        let stem = Path::new(&c.path)
            .file_stem()
            .map_or_else(|| "scene".into(), |s| s.to_string_lossy().into_owned());
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dst = format!(
            "/vsimem/eoinfer-gcp-{}-{seq}/{stem}.vrt",
            std::process::id()
        );
        let args: Vec<String> = ["-of", "VRT", "-t_srs", &target, "-tps", "-r", "bilinear"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        mosaic::gdalwarp(&c.path, &dst, &args).map_err(|message| SceneError::Gdal {
            path: PathBuf::from(&c.path),
            message: format!("warping by its GCPs failed: {message}"),
        })?;
        warnings.push(format!(
            "--warp-gcps: {} has no geotransform; it was warped by its {n} ground control points (thin plate spline, bilinear) to {target}; for results you can repeat elsewhere, project it once with `gdalwarp -t_srs {target} -tps -r bilinear`",
            c.path
        ));
        done.push((c.path.clone(), dst.clone()));
        c.path = dst;
    }
    Ok(())
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Parses `--bands blue=B2,green=B3` into pairs; a model band named twice is an error.
pub fn parse_band_map(s: &str) -> Result<Vec<(String, String)>, SceneError> {
    let pairs = parse_pairs(s)?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(x, _)| canon(x) == canon(k)) {
            return Err(SceneError::DuplicateBandKey { key: k.clone() });
        }
    }
    Ok(pairs)
}

fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, SceneError> {
    s.split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (k, v) = e.split_once('=').ok_or_else(|| SceneError::BadBandMap {
                entry: e.to_string(),
            })?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(SceneError::BadBandMap {
                    entry: e.to_string(),
                });
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Opens a scene and builds the model-ready stack for a segmentation model.
pub fn open_stack(scene: &str, spec: &ModelSpec, opts: &SceneOptions) -> Result<Stack, SceneError> {
    open_stack_request(&source_of(scene)?, &StackRequest::for_model(spec), opts)
}

/// Refuses `--bands` keys that name no band of the model.
fn check_band_map(req: &StackRequest, opts: &SceneOptions) -> Result<(), SceneError> {
    for (k, _) in &opts.band_map {
        let ck = canon(k);
        if !req.bands.iter().any(|b| {
            canon(&b.name) == ck || b.common_name.as_deref().map(canon) == Some(ck.clone())
        }) {
            return Err(SceneError::UnknownModelBand {
                key: k.clone(),
                model_bands: req
                    .bands
                    .iter()
                    .map(|b| b.label().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// A model band matched to a scene band and what GDAL says of it.
type Chosen = Option<(Candidate, SourceInfo)>;

/// Matches every model band to a scene band (`--bands` first, else by name), the finest
/// of several; a band the scene lacks is `None` unless the request refuses it.
fn match_bands(
    req: &StackRequest,
    opts: &SceneOptions,
    (cands, is_folder): (&[Candidate], bool),
    scene_path: &Path,
    available: &str,
) -> Result<Vec<Chosen>, SceneError> {
    let mut chosen: Vec<Chosen> = Vec::new();
    for mb in &req.bands {
        let keys: Vec<String> = std::iter::once(canon(&mb.name))
            .chain(mb.common_name.as_deref().map(canon))
            .collect();
        let mapped = opts.band_map.iter().find(|(k, _)| keys.contains(&canon(k)));
        let matches: Vec<&Candidate> = if let Some((k, target)) = mapped {
            let by_index = target.parse::<usize>().ok().filter(|_| !is_folder);
            let m: Vec<&Candidate> = cands
                .iter()
                .filter(|c| match by_index {
                    Some(i) => c.band == i,
                    None => c
                        .names
                        .iter()
                        .chain(&c.aliases)
                        .any(|n| canon(n) == canon(target)),
                })
                .collect();
            if m.is_empty() {
                return Err(SceneError::MappedBandMissing {
                    path: scene_path.to_path_buf(),
                    key: k.clone(),
                    target: target.clone(),
                    available: available.to_string(),
                });
            }
            m
        } else {
            let by_name: Vec<&Candidate> = cands
                .iter()
                .filter(|c| c.names.iter().any(|n| keys.contains(&canon(n))))
                .collect();
            // STAC 1.1 calls Landsat's 0.86 µm band `nir08`; it serves a model's `nir` when the
            // scene has no band called `nir` (Sentinel-2's `nir08` is B8A beside B08 `nir`).
            if by_name.is_empty() && mb.common_name.as_deref() == Some("nir") {
                cands
                    .iter()
                    .filter(|c| c.names.iter().any(|n| canon(n) == "nir08"))
                    .collect()
            } else {
                by_name
            }
        };
        // Object-storage copies (a STAC Item's `s3://` JP2 beside its https COG) only when
        // nothing else holds the band.
        let in_cloud = |c: &&Candidate| is_cloud_path(&c.path);
        let matches: Vec<&Candidate> = if matches.iter().all(in_cloud) {
            matches
        } else {
            matches.into_iter().filter(|c| !in_cloud(c)).collect()
        };
        let mut best: Chosen = None;
        for c in matches {
            let info = source_info(&c.path, c.band)?;
            if best
                .as_ref()
                .is_none_or(|(_, b)| info.gt[1].abs() < b.gt[1].abs())
            {
                best = Some((c.clone(), info));
            }
        }
        if best.is_none() && req.missing == MissingBands::Error {
            let needed = match &mb.common_name {
                Some(c) => format!("{c} ({})", mb.name),
                None => mb.name.clone(),
            };
            return Err(SceneError::BandMissing {
                path: scene_path.to_path_buf(),
                needed,
                key: mb.label().to_string(),
                available: available.to_string(),
            });
        }
        chosen.push(best);
    }
    Ok(chosen)
}

/// Fills the bands the scene lacks as the request says (the present band nearest in
/// wavelength, or none: zero) and says how each was filled.
fn fill_missing(
    req: &StackRequest,
    chosen: &mut [Chosen],
) -> Result<Vec<Option<String>>, SceneError> {
    let mut filled: Vec<Option<String>> = vec![None; chosen.len()];
    if req.missing == MissingBands::NearestWavelength {
        for i in 0..chosen.len() {
            if chosen[i].is_some() {
                continue;
            }
            let Some(wl) = req.wavelengths[i] else {
                continue;
            };
            let nearest = (0..chosen.len())
                .filter(|&j| chosen[j].is_some())
                .filter_map(|j| req.wavelengths[j].map(|w| (j, (w - wl).abs(), w)))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)));
            if let Some((j, _, _)) = nearest {
                filled[i] = Some(format!("copied from {}", req.bands[j].name));
                chosen[i] = chosen[j]
                    .as_ref()
                    .map(|(c, _)| (c.clone(), source_info(&c.path, c.band)))
                    .map(|(c, r)| r.map(|info| (c, info)))
                    .transpose()?;
            }
        }
    }
    for i in 0..chosen.len() {
        if chosen[i].is_none() && filled[i].is_none() {
            filled[i] = Some("absent: 0 after normalisation".into());
        }
    }
    Ok(filled)
}

/// The stack's grid: the request's (a time series' first step), else the first band's
/// extent at `--resolution` or the model's.
fn stack_grid(
    req: &StackRequest,
    opts: &SceneOptions,
    present: &[&(Candidate, SourceInfo)],
    scene_path: &Path,
    warnings: &mut Vec<String>,
) -> Result<(usize, usize, [f64; 6]), SceneError> {
    let (first, first_info) = present[0];
    let srs = &first_info.srs;
    if let Some(grid) = &req.grid {
        let grid_srs = SpatialRef::from_wkt(&grid.srs_wkt).map_err(|e| SceneError::Gdal {
            path: scene_path.to_path_buf(),
            message: e.to_string(),
        })?;
        if grid_srs != *srs {
            return Err(SceneError::CrsDiffers {
                path: PathBuf::from(&first.path),
                first: PathBuf::from("the first time step"),
            });
        }
        return Ok((grid.width, grid.height, grid.geo_transform));
    }
    let metric = srs.is_projected() && srs.linear_units() == 1.0;
    let finest = present
        .iter()
        .map(|(_, i)| i.gt[1].abs())
        .fold(f64::INFINITY, f64::min);
    let resolution = opts
        .resolution
        .unwrap_or(if metric { req.gsd } else { finest });
    let unit = crs_unit(srs);
    if metric && opts.resolution.is_none() && finest > 2.0 * resolution && !opts.read.allow_upsample
    {
        return Err(SceneError::Upsample {
            path: PathBuf::from(&first.path),
            native: finest,
            resolution,
            unit,
        });
    }
    if metric && (resolution > 2.0 * req.gsd || resolution < req.gsd / 2.0) {
        warnings.push(format!(
            "the model was trained at about {} m, but this run is at {resolution} m (more than 2x away); results may be poor (e.g. small clouds vanish at coarse resolutions)",
            req.gsd
        ));
    }
    let gt = first_info.gt;
    let ext_x = gt[1] * first_info.size.0 as f64;
    let ext_y = -gt[5] * first_info.size.1 as f64;
    crate::limits::check_grid(
        (ext_x / resolution).round(),
        (ext_y / resolution).round(),
        resolution,
        opts.max_pixels,
    )?;
    let width = (ext_x / resolution).round() as usize;
    let height = (ext_y / resolution).round() as usize;
    if width == 0 || height == 0 {
        return Err(SceneError::EmptyGrid {
            resolution,
            unit,
            width,
            height,
        });
    }
    Ok((
        width,
        height,
        [gt[0], resolution, 0.0, gt[3], 0.0, -resolution],
    ))
}

/// The stack's VRT (one Float32 band per present model band, resampled onto the grid) and
/// its bands with their conversions; returns the VRT, the bands and the VRT's band count.
fn stack_vrt(
    req: &StackRequest,
    opts: &SceneOptions,
    (chosen, filled): (&[Chosen], Vec<Option<String>>),
    (width, height, geo_transform): (usize, usize, [f64; 6]),
    srs_wkt: &str,
    conversions: Vec<Conversion>,
) -> (String, Vec<StackBand>, usize) {
    let resolution = geo_transform[1];
    let (minx, maxy) = (geo_transform[0], geo_transform[3]);
    let mut vrt = String::new();
    let _ = write!(
        vrt,
        "<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\">\n  <SRS>{}</SRS>\n  <GeoTransform>{}</GeoTransform>\n",
        xml_escape(srs_wkt),
        geo_transform
            .iter()
            .map(|v| format!("{v:.17e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut bands = Vec::new();
    let mut vrt_bands = 0;
    for (((entry, mb), fill), conversion) in
        chosen.iter().zip(&req.bands).zip(filled).zip(conversions)
    {
        let Some((c, info)) = entry else {
            bands.push(StackBand {
                model_band: mb.label().to_string(),
                source: String::new(),
                source_band: 0,
                source_resolution: 0.0,
                rescale: Rescale::IDENTITY,
                scaling: String::new(),
                nodata: None,
                vrt_band: None,
                filled: fill,
            });
            continue;
        };
        vrt_bands += 1;
        let src_res = info.gt[1].abs();
        let resampling = if src_res < resolution * 0.999 {
            "average"
        } else if src_res > resolution * 1.001 {
            "bilinear"
        } else {
            "nearest"
        };
        let nodata = opts.nodata.or(info.nodata).or(c.meta.nodata).or(
            if info.int_type && !c.meta.foreign_band_numbers {
                req.dn_nodata
            } else {
                None
            },
        );
        let (rescale, scaling) = conversion.unwrap_or((Rescale::IDENTITY, String::new()));
        let dst_x = (info.gt[0] - minx) / resolution;
        let dst_y = (maxy - info.gt[3]) / resolution;
        let dst_w = info.size.0 as f64 * info.gt[1] / resolution;
        let dst_h = info.size.1 as f64 * -info.gt[5] / resolution;
        let _ = write!(
            vrt,
            "  <VRTRasterBand dataType=\"Float32\" band=\"{}\">\n    <Description>{}</Description>\n    <NoDataValue>nan</NoDataValue>\n    <ComplexSource resampling=\"{resampling}\">\n      <SourceFilename relativeToVRT=\"0\">{}</SourceFilename>\n      <SourceBand>{}</SourceBand>\n      <SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{}\" ySize=\"{}\"/>\n      <DstRect xOff=\"{dst_x:.17e}\" yOff=\"{dst_y:.17e}\" xSize=\"{dst_w:.17e}\" ySize=\"{dst_h:.17e}\"/>\n{}    </ComplexSource>\n  </VRTRasterBand>\n",
            vrt_bands,
            xml_escape(mb.label()),
            xml_escape(&absolute(&c.path)),
            c.band,
            info.size.0,
            info.size.1,
            nodata
                .map(|n| format!("      <NODATA>{n}</NODATA>\n"))
                .unwrap_or_default()
        );
        bands.push(StackBand {
            model_band: mb.label().to_string(),
            source: c.path.clone(),
            source_band: c.band,
            source_resolution: src_res,
            rescale,
            scaling,
            nodata,
            vrt_band: Some(vrt_bands),
            filled: fill,
        });
    }
    vrt.push_str("</VRTDataset>\n");
    (vrt, bands, vrt_bands)
}

/// A band's conversion to the model's units and where it came from; `None` for a band the
/// scene lacks.
type Conversion = Option<(Rescale, String)>;

/// Whether the model's manifest says how integers of this band's data type become its input.
fn model_reads_integers(req: &StackRequest, info: &SourceInfo) -> bool {
    req.integer_input.as_ref().is_some_and(|(t, _, _)| {
        let t = t.to_ascii_lowercase();
        let have = info.type_name.to_ascii_lowercase();
        t == have || (t == "uint8" && have == "byte")
    })
}

/// The conversion of one band's stored values to the model's units, and where it came from:
/// `--scale`/`--offset`, the product's metadata (STAC `raster:bands`, MTL), the file's GDAL
/// scale/offset, the model's own integer encoding, or floating-point reflectance as stored.
/// `None`: integers nothing converts, to be read as Sentinel-2 DN ([`s2_dn_offset`] decides).
fn band_rescale(
    req: &StackRequest,
    opts: &SceneOptions,
    (c, info): (&Candidate, &SourceInfo),
    band: &str,
) -> Result<Option<(Rescale, String)>, SceneError> {
    let fs = req.float_scale;
    let units = if (fs - 1.0).abs() > f64::EPSILON {
        format!(", times {fs} as the model takes it")
    } else {
        String::new()
    };
    let linear = |scale: f64, offset: f64, source: &str| {
        let r = Rescale::linear(scale, offset);
        Some((
            Rescale::linear(scale * fs, offset * fs),
            format!("{} = {}{units} [{source}]", req.quantity, r.formula()),
        ))
    };
    if opts.read.scale.is_some() || opts.read.offset.is_some() {
        return Ok(linear(
            opts.read.scale.unwrap_or(1.0),
            opts.read.offset.unwrap_or(0.0),
            "--scale/--offset",
        ));
    }
    if let Some(l) = &c.meta.linear {
        return Ok(linear(l.scale, l.offset, &l.source));
    }
    if let Some((scale, offset)) = info.scale_offset {
        return Ok(linear(scale, offset, "the file's own scale/offset (GDAL)"));
    }
    if info.int_type {
        if let Some(why) = &c.meta.linear_missing {
            return Err(SceneError::NoScaling {
                path: PathBuf::from(&c.path),
                band: band.to_string(),
                why: why.clone(),
            });
        }
        if let Some((_, scale, source)) = req
            .integer_input
            .as_ref()
            .filter(|_| model_reads_integers(req, info))
        {
            return Ok(linear(*scale, 0.0, source));
        }
        return Ok(None);
    }
    Ok(Some((
        Rescale::linear(fs, 0.0),
        format!(
            "floating-point values taken as {}{units} [no scale metadata; values far outside the model's range are refused]",
            req.quantity
        ),
    )))
}

/// Each present band's conversion ([`band_rescale`]); bands nothing converts are Sentinel-2 DN
/// with the offset of [`s2_dn_offset`], asked for once. Returns the conversions (`None` for a
/// band the scene lacks) and where the Sentinel-2 offset came from.
fn conversions(
    (scene, source): (&str, &SceneSource),
    req: &StackRequest,
    opts: &SceneOptions,
    chosen: &[Chosen],
    product: Option<&Product>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Conversion>, String), SceneError> {
    let mut out = Vec::with_capacity(chosen.len());
    let mut s2: Option<(f64, String)> = None;
    let files: Vec<&str> = chosen
        .iter()
        .flatten()
        .map(|(c, _)| c.path.as_str())
        .collect();
    for (entry, mb) in chosen.iter().zip(&req.bands) {
        let Some((c, info)) = entry else {
            out.push(None);
            continue;
        };
        let conversion = if let Some(known) = band_rescale(req, opts, (c, info), mb.label())? {
            known
        } else if req.quantity != REFLECTANCE {
            (
                Rescale::IDENTITY,
                format!(
                    "integers taken as {} as stored [no scale metadata; values outside the model's range are refused]",
                    req.quantity
                ),
            )
        } else {
            if s2.is_none() {
                s2 = Some(s2_dn_offset(
                    scene,
                    (&files, mb.label(), source_item(source)),
                    opts,
                    product,
                    warnings,
                )?);
            }
            let (offset, from) = s2.clone().unwrap_or_default();
            let r = Rescale {
                scale: req.dn_scale,
                offset_dn: offset,
                add: 0.0,
            };
            (r, format!("Sentinel-2 DN: {} [{from}]", r.formula()))
        };
        out.push(Some(conversion));
    }
    let from = s2.map_or_else(
        || "not used: no band is read as Sentinel-2 DN".to_string(),
        |(_, from)| from,
    );
    Ok((out, from))
}

/// The Sentinel-2 DN offset of a scene whose integer bands carry no conversion: `--s2-offset`,
/// the processing baseline in its metadata, or, for a scene recognised as Sentinel-2 whose
/// metadata does not state the baseline, its acquisition date (before 2022-01-25: no offset,
/// with a warning; later: refused).
fn s2_dn_offset(
    scene: &str,
    (files, band, item): (&[&str], &str, Option<(&Path, &serde_json::Value)>),
    opts: &SceneOptions,
    product: Option<&Product>,
    warnings: &mut Vec<String>,
) -> Result<(f64, String), SceneError> {
    if let Some(o) = opts.s2_offset {
        return Ok((o, "--s2-offset".into()));
    }
    if let Some(found) = item.and_then(|(p, v)| sentinel2::from_item(p, v)) {
        return Ok(found);
    }
    if let Some(found) = sentinel2::detect_offset(scene, files.iter().copied()) {
        return Ok(found);
    }
    let path = PathBuf::from(files.first().copied().unwrap_or(scene));
    match product {
        None => {
            return Err(SceneError::NoScaling {
                path,
                band: band.to_string(),
                why: "no sensor was recognised from the file names or metadata, and the files have no scale/offset".into(),
            });
        }
        Some(p) if p.sensor != SENTINEL2 => {
            return Err(SceneError::NoScaling {
                path,
                band: band.to_string(),
                why: format!(
                    "the scene is {} (recognised from {}), but no metadata gives this band's conversion",
                    p.description, p.recognised_from
                ),
            });
        }
        Some(_) => {}
    }
    let date = files.iter().chain(std::iter::once(&scene)).find_map(|f| {
        Path::new(f)
            .file_name()
            .and_then(|n| timeseries::parse_date(&n.to_string_lossy()))
    });
    let (y, m, d) = sentinel2::BASELINE_04_START;
    match date {
        Some(date) if (date.year, date.month, date.day) < (y, m, d) => {
            warnings.push(format!(
                "{scene}: no metadata states the Sentinel-2 processing baseline; the acquisition date {date} is before baseline 04.00 began (2022-01-25), so the DN are read without offset (reflectance = DN / 10000); pass --s2-offset to override"
            ));
            Ok((
                0.0,
                format!(
                    "inferred from the acquisition date {date} (before 2022-01-25: baseline < 04.00, no offset)"
                ),
            ))
        }
        other => Err(SceneError::S2Baseline {
            path,
            date: other.map_or_else(|| "an unknown date".into(), |d| d.to_string()),
        }),
    }
}

/// Checks the recognised sensor and product level against the model's.
fn check_product(
    req: &StackRequest,
    opts: &SceneOptions,
    product: Option<&Product>,
    scene: &str,
    warnings: &mut Vec<String>,
) -> Result<(), SceneError> {
    let expect = &req.expect;
    let want = expect.level.as_deref().and_then(Level::parse);
    if expect.sensors.is_empty() && want.is_none() {
        return Ok(());
    }
    let Some(p) = product else {
        warnings.push(format!(
            "the sensor and product level of {scene} are not known from its file names or metadata, so they were not checked against the model ({}{}{})",
            expect.sensors.join(", "),
            if expect.sensors.is_empty() { "" } else { " " },
            expect.level.as_deref().unwrap_or("")
        ));
        return Ok(());
    };
    let mut problems = Vec::new();
    if !expect.sensors.is_empty() && !expect.sensors.contains(&p.sensor) {
        problems.push(format!(
            "the model was made for {}, but the scene is {} (recognised from {})",
            expect.sensors.join(", "),
            p.description,
            p.recognised_from
        ));
    }
    match (want, p.level) {
        (Some(w), Some(h)) if w != h => problems.push(format!(
            "the model takes {}, but the scene holds {} ({}, recognised from {})",
            w.describe(),
            h.describe(),
            p.description,
            p.recognised_from
        )),
        (Some(w), None) => warnings.push(format!(
            "the product level of {scene} is not known from its metadata; the model takes {}",
            w.describe()
        )),
        _ => {}
    }
    if problems.is_empty() {
        return Ok(());
    }
    let what = problems.join("; ");
    if opts.read.accept_product_mismatch {
        warnings.push(format!(
            "--accept-product-mismatch: {what}; the results may be wrong"
        ));
        return Ok(());
    }
    Err(SceneError::ProductMismatch {
        path: PathBuf::from(scene),
        model: expect.model.clone(),
        what,
    })
}

/// Opens a scene and builds the stack `req` asks for.
pub fn open_stack_request(
    source: &SceneSource,
    req: &StackRequest,
    opts: &SceneOptions,
) -> Result<Stack, SceneError> {
    let scene = source.label();
    if let SceneSource::Path(p) = source {
        check_public_cloud_path(p, opts.read.allow_public_cloud)?;
    }
    let (cands, is_folder, described) = candidates(source)?;
    let scene_path = PathBuf::from(scene);
    let available = cands
        .iter()
        .map(|c| c.label.clone())
        .collect::<Vec<_>>()
        .join(", ");
    check_band_map(req, opts)?;
    let mut warnings = described.notes.clone();
    let mut cands = cands;
    if opts.read.warp_gcps {
        warp_gcp_candidates(&mut cands, &mut warnings)?;
    }
    check_product(req, opts, described.product.as_ref(), scene, &mut warnings)?;
    let mut chosen = match_bands(req, opts, (&cands, is_folder), &scene_path, &available)?;
    let filled = fill_missing(req, &mut chosen)?;
    let present: Vec<&(Candidate, SourceInfo)> = chosen.iter().flatten().collect();
    if present.is_empty() {
        let mb = &req.bands[0];
        return Err(SceneError::BandMissing {
            path: scene_path.clone(),
            needed: mb
                .common_name
                .as_ref()
                .map_or_else(|| mb.name.clone(), |c| format!("{c} ({})", mb.name)),
            key: mb.label().to_string(),
            available,
        });
    }

    for (c, _) in &present {
        check_public_cloud_path(&c.path, opts.read.allow_public_cloud)?;
    }
    let (first, first_info) = present[0];
    for (c, info) in &present[1..] {
        if info.srs != first_info.srs {
            return Err(SceneError::CrsDiffers {
                path: PathBuf::from(&c.path),
                first: PathBuf::from(&first.path),
            });
        }
    }
    let srs = &first_info.srs;
    let (width, height, geo_transform) =
        stack_grid(req, opts, &present, &scene_path, &mut warnings)?;
    let resolution = geo_transform[1];

    let (conversions, s2_offset_source) = conversions(
        (scene, source),
        req,
        opts,
        &chosen,
        described.product.as_ref(),
        &mut warnings,
    )?;

    let srs_wkt = srs.to_wkt().map_err(|e| SceneError::Gdal {
        path: scene_path.clone(),
        message: e.to_string(),
    })?;
    let (vrt, bands, vrt_bands) = stack_vrt(
        req,
        opts,
        (&chosen, filled),
        (width, height, geo_transform),
        &srs_wkt,
        conversions,
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let epsg = srs.auth_code().ok();
    let projjson = srs.to_projjson().unwrap_or_default();
    Ok(Stack {
        scene: scene.to_string(),
        name: output_name(
            scene,
            is_folder,
            &present
                .iter()
                .map(|(c, _)| c.path.clone())
                .collect::<Vec<_>>(),
        ),
        width,
        height,
        resolution,
        geo_transform,
        srs_wkt,
        projjson,
        epsg,
        bands,
        s2_offset_source,
        sensor: described.product,
        warnings,
        vrt,
        vrt_bands,
    })
}

/// The unit of a CRS's coordinates, for messages (`m`, `degrees`, `US survey foot`).
pub(crate) fn crs_unit(srs: &SpatialRef) -> String {
    if srs.is_geographic() {
        return "degrees".into();
    }
    match srs.linear_units_name() {
        Some(n) if n.eq_ignore_ascii_case("metre") || n.eq_ignore_ascii_case("meter") => "m".into(),
        Some(n) if !n.is_empty() => n,
        _ => "CRS units".into(),
    }
}

fn absolute(p: &str) -> String {
    if is_gdal_connection(p) {
        return p.to_string();
    }
    std::path::absolute(p).map_or_else(|_| p.to_string(), |a| a.to_string_lossy().into_owned())
}

/// Output name: the file stem, or for a folder the common prefix of its band files
/// (`T33UUU_20170216T102101`), else the folder's name.
fn output_name(scene: &str, is_folder: bool, files: &[String]) -> String {
    let clean = |s: &str| {
        s.trim_matches(|c: char| c == '_' || c == '-' || c == '.')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let p = Path::new(scene);
    if is_folder {
        let stems: Vec<String> = files
            .iter()
            .map(|f| {
                Path::new(f)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        if let Some(first) = stems.first() {
            let mut n = first.len();
            for s in &stems[1..] {
                n = n.min(
                    first
                        .bytes()
                        .zip(s.bytes())
                        .take_while(|(a, b)| a == b)
                        .count(),
                );
            }
            // Cut back to a whole token: `T33UUU_20170216T102101_B02`, `..._B11` -> `T33UUU_20170216T102101`.
            if stems.len() > 1 && stems.iter().any(|s| s.len() > n) {
                n = first[..n].rfind(['_', '-', '.']).unwrap_or(0);
            }
            let prefix = clean(&first[..n]);
            if prefix.len() >= 3 {
                return prefix;
            }
        }
        let dir = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        return clean(
            &dir.file_name()
                .map_or_else(|| "scene".into(), |s| s.to_string_lossy().into_owned()),
        );
    }
    let last = scene.rsplit([':', '/']).next().unwrap_or(scene);
    let stem = Path::new(last)
        .file_stem()
        .map_or_else(|| last.to_string(), |s| s.to_string_lossy().into_owned());
    let c = clean(&stem);
    if c.is_empty() { "scene".into() } else { c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_names_match_across_spellings() {
        assert_eq!(canon("B02"), canon("b2"));
        assert_eq!(canon("B8A"), "b8a");
        assert_ne!(canon("B08"), canon("B8A"));
        assert_eq!(canon("Blue"), "blue");
    }

    #[test]
    fn sentinel2_file_names_yield_their_band_id() {
        let n = file_band_names(Path::new("/x/T33UUU_20170216T102101_B02.jp2"));
        assert!(n.iter().any(|s| canon(s) == "b2"));
        let n = file_band_names(Path::new("/x/T29RKH_20200219T111031_B11_20m.jp2"));
        assert!(n.iter().any(|s| canon(s) == "b11"));
    }

    #[test]
    fn band_maps_parse_and_reject_garbage() {
        assert_eq!(
            parse_band_map("blue=B2, nir=5").expect("valid"),
            vec![("blue".into(), "B2".into()), ("nir".into(), "5".into())]
        );
        assert!(parse_band_map("blue").is_err());
        assert!(matches!(
            parse_band_map("nir=B5,NIR=B8"),
            Err(SceneError::DuplicateBandKey { .. })
        ));
        assert!(parse_band_map("=B2").is_err());
    }

    #[test]
    fn folder_outputs_are_named_after_the_common_file_prefix() {
        let files = vec![
            "/d/T33UUU_20170216T102101_B02.jp2".to_string(),
            "/d/T33UUU_20170216T102101_B11.jp2".to_string(),
        ];
        assert_eq!(output_name("/d", true, &files), "T33UUU_20170216T102101");
        assert_eq!(output_name("NETCDF:/a/b.nc:B02", false, &[]), "B02");
        assert_eq!(output_name("/a/scene.tif", false, &[]), "scene");
    }
}
