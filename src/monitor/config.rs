//! The monitor's configuration file (TOML): regions, source, models, rules and alert sinks,
//! read once and checked before anything runs (a bad config is exit code 2, naming the key).

use crate::error::MonitorError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a second cycle started while one runs does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Exit 0 at once, saying a cycle is already running (friendly to cron).
    #[default]
    Skip,
    /// Wait for the running cycle to finish, then run.
    Wait,
}

/// The regions watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regions {
    /// A vector file GDAL opens (GeoPackage, GeoJSON, GeoParquet through GDAL, Shapefile).
    pub path: PathBuf,
    /// The attribute that names each region.
    pub id_column: String,
}

/// Where new acquisitions come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    /// A folder of scene files: one file (or one STAC Item JSON) per acquisition.
    Folder {
        /// The folder.
        path: PathBuf,
        /// File-name pattern (`*` and `?`), default `*.tif`.
        #[serde(default = "default_pattern")]
        pattern: String,
        /// A file counts as complete when its size and modification time are the same in two
        /// looks this many seconds apart (default 2), or when `<file>.done` exists.
        #[serde(default = "default_settle")]
        settle_seconds: f64,
    },
    /// A STAC API (`/search`).
    StacApi {
        /// The API's root URL, e.g. `http://stac.internal:8080`.
        url: String,
        /// Collections searched.
        collections: Vec<String>,
        /// Only acquisitions from this date on (`YYYY-MM-DD`).
        #[serde(default)]
        start: Option<String>,
        /// Items whose acquisition is older than this many days before the newest processed
        /// one are not asked for again (late arrivals within it are caught); default 30.
        #[serde(default = "default_lookback")]
        lookback_days: u32,
        /// A STAC API `query` object, e.g. `{ "eo:cloud_cover" = { lt = 80 } }`.
        #[serde(default)]
        query: Option<toml::Table>,
        /// Environment variable holding a bearer token for the API (never logged).
        #[serde(default)]
        token_env: Option<String>,
        /// Or a file holding it, readable by its owner only (mode 600 or 400).
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// A static STAC catalog: a root `catalog.json` (or collection) whose `child` and `item`
    /// links are followed, on disk or over http(s).
    StacCatalog {
        /// The root document: a path (relative to this file) or an http(s) URL.
        url: String,
        /// Only Items of these collections (default: all).
        #[serde(default)]
        collections: Vec<String>,
        /// Only acquisitions from this date on (`YYYY-MM-DD`).
        #[serde(default)]
        start: Option<String>,
        /// Environment variable holding a bearer token for an http(s) catalog (never logged).
        #[serde(default)]
        token_env: Option<String>,
        /// Or a file holding it, readable by its owner only (mode 600 or 400).
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
}

fn default_pattern() -> String {
    "*.tif".into()
}
fn default_settle() -> f64 {
    2.0
}
fn default_lookback() -> u32 {
    30
}
fn default_max_items() -> usize {
    50
}
fn default_attempts() -> u32 {
    3
}
fn default_change_lookback() -> usize {
    10
}

/// One model run on every new acquisition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// A short name: columns of the time series are prefixed with it.
    pub name: String,
    /// The model's manifest.
    pub manifest: PathBuf,
    /// Output pixel size (default: the model's).
    #[serde(default)]
    pub resolution: Option<f64>,
    /// `--bands` mapping.
    #[serde(default)]
    pub bands: Option<String>,
    /// `--s2-offset`: the offset of Sentinel-2 L1C/L2A digital numbers when the scenes'
    /// metadata does not say (e.g. -1000 from processing baseline 04.00).
    #[serde(default)]
    pub s2_offset: Option<f64>,
    /// `--scale` and `--offset`: stored value to reflectance, overriding metadata.
    #[serde(default)]
    pub scale: Option<f64>,
    /// See `scale`.
    #[serde(default)]
    pub offset: Option<f64>,
    /// `--nodata`: the scenes' nodata value when their metadata does not say.
    #[serde(default)]
    pub nodata: Option<f64>,
    /// `--device`: `cpu` (default) or `cuda:N`.
    #[serde(default)]
    pub device: Option<String>,
    /// `--batch-size` (default 4).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Another model (a cloud mask, listed before this one, or this model itself) whose
    /// `mask_classes` pixels are not used for change of this model's map.
    #[serde(default)]
    pub mask: Option<String>,
    /// The mask model's classes that mask a pixel (default: those of `cloud`, `cloud_shadow`
    /// it has).
    #[serde(default)]
    pub mask_classes: Option<Vec<String>>,
}

/// A rule that raises alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Rule {
    /// The share of a region that is valid and not in `classes` (default cloud and cloud
    /// shadow) of `model`'s class map is below `threshold` (0..1).
    CloudFreeShareBelow {
        /// The cloud model's name.
        model: String,
        /// Alert below this share (0..1).
        threshold: f64,
        /// Classes that are not clear.
        #[serde(default = "default_cloud_classes")]
        classes: Vec<String>,
    },
    /// Pixels of a region whose class changed (against each pixel's previous valid
    /// observation) from one of `from` to one of `to` (empty: any) cover at least
    /// `min_area_m2`.
    ClassTransition {
        /// The model whose class map is compared.
        model: String,
        /// Classes changed from (empty: any).
        #[serde(default)]
        from: Vec<String>,
        /// Classes changed to (empty: any).
        #[serde(default)]
        to: Vec<String>,
        /// Alert when the changed area is at least this (m²; default 0: any changed pixel).
        #[serde(default)]
        min_area_m2: f64,
        /// Judge only when at least this share of the region was compared (0..1, default 0).
        #[serde(default)]
        min_compared_share: f64,
    },
    /// The share of `class` among a region's compared pixels changed (against each pixel's
    /// previous valid observation) by at least `threshold` (0..1, either direction).
    ClassFractionChange {
        /// The model whose class map is compared.
        model: String,
        /// The class.
        class: String,
        /// Alert when |now - before| is at least this (0..1).
        threshold: f64,
        /// Judge only when at least this share of the region was compared (0..1, default 0).
        #[serde(default)]
        min_compared_share: f64,
    },
    /// For an embedding model: patches of a region whose embedding moved by more than
    /// `threshold` in `1 - cosine` (against each patch's previous valid observation) cover at
    /// least `min_area_m2`.
    EmbeddingChange {
        /// The embedding model.
        model: String,
        /// `1 - cosine` above this is a change (0..2).
        threshold: f64,
        /// Alert when the changed area is at least this (m²; default 0: any changed patch).
        #[serde(default)]
        min_area_m2: f64,
        /// Judge only when at least this share of the region was compared (0..1, default 0).
        #[serde(default)]
        min_compared_share: f64,
    },
}

impl Rule {
    /// The model the rule reads.
    #[must_use]
    pub fn model(&self) -> &str {
        match self {
            Self::CloudFreeShareBelow { model, .. }
            | Self::ClassTransition { model, .. }
            | Self::ClassFractionChange { model, .. }
            | Self::EmbeddingChange { model, .. } => model,
        }
    }

    /// Whether the rule needs per-pixel change of its model.
    #[must_use]
    pub fn needs_change(&self) -> bool {
        !matches!(self, Self::CloudFreeShareBelow { .. })
    }

    /// The rule's name in alerts.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::CloudFreeShareBelow { .. } => "cloud-free-share-below",
            Self::ClassTransition { .. } => "class-transition",
            Self::ClassFractionChange { .. } => "class-fraction-change",
            Self::EmbeddingChange { .. } => "embedding-change",
        }
    }
}

fn default_cloud_classes() -> Vec<String> {
    vec!["cloud".into(), "cloud_shadow".into()]
}

/// Alert sinks besides the files.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// POST each alert's JSON here (no default: alerts leave the machine only when asked).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Environment variable holding a bearer token for the webhook (never logged).
    #[serde(default)]
    pub webhook_token_env: Option<String>,
    /// Or a file holding it, readable by its owner only (mode 600 or 400).
    #[serde(default)]
    pub webhook_token_file: Option<PathBuf>,
}

/// A baseline period for change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// First day.
    pub start: String,
    /// Last day.
    pub end: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The monitor's name (the state and outputs are in `out`).
    pub name: String,
    /// Output folder: `state.sqlite`, `timeseries.parquet`, `alerts.*`, `runs/`.
    pub out: PathBuf,
    /// A second cycle while one runs: `skip` (exit 0) or `wait`.
    #[serde(default)]
    pub on_overlap: Overlap,
    /// At most this many new acquisitions per cycle (a long backlog is worked off over cycles).
    #[serde(default = "default_max_items")]
    pub max_items_per_cycle: usize,
    /// A failed acquisition is retried on later cycles up to this many attempts in all.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Threads per model run (0 = all cores).
    #[serde(default)]
    pub threads: usize,
    /// For change, each pixel's previous valid observation is looked for in at most this many
    /// earlier dates (default 10).
    #[serde(default = "default_change_lookback")]
    pub change_lookback_dates: usize,
    /// Judge change against a fixed baseline period instead: each pixel's newest valid
    /// observation between `start` and `end` (inclusive, `YYYY-MM-DD`).
    #[serde(default)]
    pub change_baseline: Option<Baseline>,
    /// The regions.
    pub regions: Regions,
    /// The source.
    pub source: Source,
    /// The models (at least one).
    pub models: Vec<Model>,
    /// Alert rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Alert sinks.
    #[serde(default)]
    pub alerts: Alerts,
}

impl Config {
    /// Reads `path`; relative paths in it are taken from its folder.
    pub fn load(path: &Path) -> Result<Self, MonitorError> {
        let bad = |what: String| MonitorError::Config {
            path: path.to_path_buf(),
            what,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut c.out);
        rel(&mut c.regions.path);
        if let Some(f) = &mut c.alerts.webhook_token_file {
            rel(f);
        }
        match &mut c.source {
            Source::Folder { path, .. } => rel(path),
            Source::StacApi {
                token_file: Some(f),
                ..
            } => rel(f),
            Source::StacCatalog {
                url, token_file, ..
            } => {
                if let Some(f) = token_file {
                    rel(f);
                }
                if !crate::monitor::source::is_http(url) {
                    let mut p = PathBuf::from(&*url);
                    rel(&mut p);
                    *url = p.display().to_string();
                }
            }
            Source::StacApi { .. } => {}
        }
        for m in &mut c.models {
            rel(&mut m.manifest);
        }
        c.check().map_err(bad)?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("`models`: name at least one model ([[models]] name, manifest)".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.models {
            let ok = !m.name.is_empty()
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(format!(
                    "models.name {:?}: letters, digits, '_' and '-' only (it names columns and folders)",
                    m.name
                ));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("models.name {:?} is given twice", m.name));
            }
            if !m.manifest.is_file() {
                return Err(format!(
                    "models.manifest {} (model {:?}) does not exist",
                    m.manifest.display(),
                    m.name
                ));
            }
        }
        if !self.regions.path.exists() {
            return Err(format!(
                "regions.path {} does not exist",
                self.regions.path.display()
            ));
        }
        if self.max_items_per_cycle == 0 || self.max_attempts == 0 {
            return Err("max_items_per_cycle and max_attempts must be at least 1".into());
        }
        self.check_model_options()?;
        for r in &self.rules {
            let model = r.model();
            if !names.contains(model) {
                return Err(format!(
                    "rules: model {model:?} is not one of the [[models]] ({names:?})"
                ));
            }
            let share = |what: &str, v: f64| {
                if (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    Err(format!(
                        "rules ({}): {what} {v} must be a share from 0 to 1",
                        r.name()
                    ))
                }
            };
            match r {
                Rule::CloudFreeShareBelow { threshold, .. } => share("threshold", *threshold)?,
                Rule::ClassTransition {
                    min_area_m2,
                    min_compared_share,
                    ..
                } => {
                    share("min_compared_share", *min_compared_share)?;
                    if !(min_area_m2.is_finite() && *min_area_m2 >= 0.0) {
                        return Err(format!(
                            "rules (class-transition): min_area_m2 {min_area_m2} must be 0 or more"
                        ));
                    }
                }
                Rule::ClassFractionChange {
                    threshold,
                    min_compared_share,
                    ..
                } => {
                    share("threshold", *threshold)?;
                    share("min_compared_share", *min_compared_share)?;
                }
                Rule::EmbeddingChange {
                    threshold,
                    min_area_m2,
                    min_compared_share,
                    ..
                } => {
                    share("min_compared_share", *min_compared_share)?;
                    if !(0.0..=2.0).contains(threshold) {
                        return Err(format!(
                            "rules (embedding-change): threshold {threshold} is 1 - cosine, from 0 to 2"
                        ));
                    }
                    if !(min_area_m2.is_finite() && *min_area_m2 >= 0.0) {
                        return Err(format!(
                            "rules (embedding-change): min_area_m2 {min_area_m2} must be 0 or more"
                        ));
                    }
                }
            }
        }
        if self.change_lookback_dates == 0 {
            return Err("change_lookback_dates must be at least 1".into());
        }
        if let Some(b) = &self.change_baseline {
            let ok = |d: &str| crate::monitor::source::date_in_name(d).as_deref() == Some(d);
            if !ok(&b.start) || !ok(&b.end) || b.start > b.end {
                return Err(format!(
                    "change_baseline: start {:?} and end {:?} must be dates YYYY-MM-DD, start first",
                    b.start, b.end
                ));
            }
        }
        match &self.source {
            Source::Folder {
                path,
                settle_seconds,
                ..
            } => {
                if !path.is_dir() {
                    return Err(format!("source.path {} is not a folder", path.display()));
                }
                if !(0.0..=3600.0).contains(settle_seconds) {
                    return Err("source.settle_seconds must be 0 to 3600".into());
                }
            }
            Source::StacApi {
                url, collections, ..
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("source.url {url:?} is not an http(s) URL"));
                }
                if collections.is_empty() {
                    return Err("source.collections: name at least one collection".into());
                }
            }
            Source::StacCatalog { url, .. } => {
                if !crate::monitor::source::is_http(url) && !Path::new(url).is_file() {
                    return Err(format!(
                        "source.url {url:?}: no such file (a static catalog's root catalog.json, or an http(s) URL)"
                    ));
                }
            }
        }
        if let Some(u) = &self.alerts.webhook_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("alerts.webhook_url {u:?} is not an http(s) URL"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Each model's device, batch size and mask.
    fn check_model_options(&self) -> Result<(), String> {
        for (i, m) in self.models.iter().enumerate() {
            if let Some(d) = &m.device {
                d.parse::<crate::model::Device>()
                    .map_err(|e| format!("models.device of {:?}: {e}", m.name))?;
            }
            if m.batch_size == Some(0) {
                return Err(format!(
                    "models.batch_size of {:?} must be at least 1",
                    m.name
                ));
            }
            if let Some(mask) = &m.mask {
                let before = self.models[..=i].iter().any(|o| &o.name == mask);
                if !before {
                    return Err(format!(
                        "models.mask {mask:?} (model {:?}) must name a model listed before it, or itself",
                        m.name
                    ));
                }
            } else if m.mask_classes.is_some() {
                return Err(format!(
                    "models.mask_classes (model {:?}) needs models.mask",
                    m.name
                ));
            }
        }
        Ok(())
    }
}

/// A secret (a bearer token) from the environment variable `env` or the file `file`; a file
/// others can read is refused. Never logged.
pub fn secret(
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Option<String>, MonitorError> {
    if let Some(v) = env {
        if let Ok(t) = std::env::var(v) {
            return Ok(Some(t));
        }
    }
    let Some(f) = file else { return Ok(None) };
    let bad = |what: String| MonitorError::Config {
        path: f.clone(),
        what,
    };
    let meta =
        std::fs::metadata(f).map_err(|e| bad(format!("the token file cannot be read: {e}")))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "the token file is readable by others (mode {:o}); make it readable by its owner only: chmod 600 {}",
            mode & 0o777,
            f.display()
        )));
    }
    let text = std::fs::read_to_string(f)
        .map_err(|e| bad(format!("the token file cannot be read: {e}")))?;
    Ok(Some(text.trim().to_string()))
}

/// The commented example `monitor init` writes.
pub const EXAMPLE: &str = r#"# eoinfer monitor configuration. Run a cycle with `eoinfer monitor run --config monitor.toml`
# (from cron, a systemd timer or a Kubernetes CronJob); `eoinfer monitor status` shows the state.
# Relative paths are taken from this file's folder.

name = "reservoirs"
# State (state.sqlite), time series (timeseries.parquet), alerts (alerts.geojson,
# alerts.parquet) and each acquisition's model outputs (runs/) go here.
out = "monitor-out"
# A cycle started while another runs: "skip" (exit 0, "already running") or "wait".
on_overlap = "skip"
# At most this many new acquisitions per cycle; a long backlog is worked off over cycles.
max_items_per_cycle = 50
# A failed acquisition is retried on later cycles, up to this many attempts in all.
max_attempts = 3

[regions]
# Polygons with an id attribute (GeoPackage, GeoJSON, Shapefile, ...).
path = "regions.geojson"
id_column = "id"

[source]
# A folder of scenes: one GeoTIFF (or STAC Item .json) per acquisition, its date in the name
# (YYYYMMDD or YYYY-MM-DD). A file counts once its size and time stay the same for
# settle_seconds, or once <file>.done exists.
type = "folder"
path = "incoming"
pattern = "*.tif"
settle_seconds = 2

# Or a static STAC catalog (its child and item links followed), on disk or on your own server:
# [source]
# type = "stac-catalog"
# url = "catalog/catalog.json"    # or "http://files.internal/catalog/catalog.json"
# collections = ["sentinel-2-l2a"]
# start = "2025-01-01"

# Or a STAC API on your own servers (nothing else is contacted):
# [source]
# type = "stac-api"
# url = "http://stac.internal:8080"
# collections = ["sentinel-2-l1c"]
# start = "2025-01-01"
# lookback_days = 30
# query = { "eo:cloud_cover" = { lt = 80 } }
# token_env = "STAC_TOKEN"        # a bearer token from this environment variable
# token_file = "/etc/eoinfer/stac.token"   # or from a file only its owner can read (chmod 600)

[[models]]
name = "clouds"
manifest = "models/s2cloudless.json"
# resolution = 160
# What the scenes' metadata may not say (as `eoinfer predict` takes them): s2_offset = -1000,
# scale = 0.0001, offset = 0, nodata = 0. And where it runs: device = "cuda:0", batch_size = 4.

# A second model's class map, with the clouds model as its mask: pixels it calls cloud (or
# cloud shadow) are not used when that map's change is judged.
# [[models]]
# name = "landcover"
# manifest = "models/my-landcover.json"
# resolution = 160
# mask = "clouds"
# mask_classes = ["cloud"]

[[rules]]
# Alert when less than half of a region is valid and cloud-free on an acquisition.
type = "cloud-free-share-below"
model = "clouds"
threshold = 0.5
# classes = ["cloud", "cloud_shadow"]

# Change is judged per pixel against that pixel's previous valid observation (at most
# change_lookback_dates earlier dates, default 10), or, with
#   change_baseline = { start = "2024-06-01", end = "2024-08-31" }
# (a top-level key), against its newest valid observation in that baseline period. Each change rule writes a change map
# (runs/<date>/.../<model>.change.tif: from * 100 + to, 0 unchanged), the previous valid
# classes (<model>.previous.tif), the polygon of the changed pixels in the alert, and a
# before/after quicklook PNG (quicklooks/).
# [[rules]]
# type = "class-transition"
# model = "landcover"
# from = ["forest"]              # empty or left out: any class
# to = ["bare", "grassland"]
# min_area_m2 = 5000
# min_compared_share = 0.3       # judge only when 30 % of the region could be compared
#
# For an embedding model (e.g. OlmoEarth): patches whose embedding moved by more than
# `threshold` in 1 - cosine against their previous valid observation (the change map holds
# 1 - cosine per patch; the quicklook shows before and after in the first three principal
# components of the region's embeddings).
# [[rules]]
# type = "embedding-change"
# model = "olmoearth"
# threshold = 0.2
# min_area_m2 = 10000
#
# [[rules]]
# type = "class-fraction-change"
# model = "landcover"
# class = "water"
# threshold = 0.1                # the share of water among compared pixels moved 10 points

[alerts]
# POST each alert as JSON (with an Idempotency-Key header) to a receiver you run:
# webhook_url = "http://alerts.internal:9000/eoinfer"
# webhook_token_env = "ALERT_TOKEN"     # or webhook_token_file = "/etc/eoinfer/alert.token"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let c: Config = toml::from_str(EXAMPLE).expect("example config");
        assert_eq!(c.models.len(), 1);
        assert!(matches!(c.source, Source::Folder { .. }));
        assert_eq!(c.on_overlap, Overlap::Skip);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = EXAMPLE.replace("max_attempts = 3", "max_attempt = 3");
        let e = toml::from_str::<Config>(&text).expect_err("typo");
        assert!(e.to_string().contains("max_attempt"), "{e}");
    }
}
