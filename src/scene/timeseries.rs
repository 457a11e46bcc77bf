//! Time series: the scenes of a multi-temporal run (repeated `--scene`, a folder of dated
//! files, a list file, or a STAC ItemCollection of local files) with their acquisition dates,
//! sorted by date.

use super::SceneSource;
use crate::error::SceneError;
use gdal::Metadata;
use std::path::{Path, PathBuf};

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Date {
    /// Year.
    pub year: i32,
    /// Month 1-12.
    pub month: u32,
    /// Day 1-31.
    pub day: u32,
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One time step.
#[derive(Debug, Clone)]
pub struct TimeStep {
    /// Where its pixels come from.
    pub source: SceneSource,
    /// Acquisition date.
    pub date: Date,
    /// Where the date came from.
    pub date_source: String,
    /// Cloud cover in percent from the scene's metadata (STAC `eo:cloud_cover`, Sentinel-2
    /// `CLOUD_COVERAGE_ASSESSMENT`), when known.
    pub cloud_cover: Option<f64>,
}

/// A scene as listed (before dates are required): source, date if found, cloud cover.
#[derive(Debug, Clone)]
pub struct SceneEntry {
    /// Where its pixels come from.
    pub source: SceneSource,
    /// Acquisition date and where it came from, when found.
    pub date: Option<(Date, String)>,
    /// Cloud cover in percent, when known.
    pub cloud_cover: Option<f64>,
}

/// The first `YYYY-MM-DD` or `YYYYMMDD` date in `s`.
#[must_use]
pub fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let digits = |i: usize, n: usize| -> Option<u32> {
        let part = s.get(i..i + n)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    for i in 0..b.len() {
        if i > 0 && b[i - 1].is_ascii_digit() {
            continue;
        }
        let (y, m, d, end) = if b.get(i + 4) == Some(&b'-') && b.get(i + 7) == Some(&b'-') {
            (digits(i, 4), digits(i + 5, 2), digits(i + 8, 2), i + 10)
        } else {
            (digits(i, 4), digits(i + 4, 2), digits(i + 6, 2), i + 8)
        };
        if b.get(end).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        if let (Some(y), Some(m), Some(d)) = (y, m, d) {
            if (1950..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d) {
                return Some(Date {
                    year: y as i32,
                    month: m,
                    day: d,
                });
            }
        }
    }
    None
}

fn file_date(path: &Path) -> Option<Date> {
    parse_date(&path.file_name()?.to_string_lossy())
}

fn gdal_date(path: &str) -> Option<(Date, String)> {
    let ds = gdal::Dataset::open(path).ok()?;
    for key in [
        "DATETIME",
        "ACQUISITION_DATE",
        "PRODUCT_START_TIME",
        "SENSING_TIME",
        "DATATAKE_1_DATATAKE_SENSING_START",
        "TIFFTAG_DATETIME",
    ] {
        if let Some(v) = ds.metadata_item(key, "") {
            if let Some(d) = parse_date(&v.replace(':', "-")) {
                return Some((d, format!("{path}: metadata {key}")));
            }
        }
    }
    None
}

/// The path GDAL reads a STAC asset from: a local file (relative to the Item, or `file://`),
/// `/vsicurl/` for http(s) URLs, `/vsis3/` for `s3://` (on the endpoint `AWS_S3_ENDPOINT`
/// names; [`super::check_public_cloud`] refuses the public cloud unless allowed).
pub fn asset_path(base: &Path, href: &str) -> Result<PathBuf, String> {
    if let Some(rest) = href.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if href.starts_with("http://") || href.starts_with("https://") {
        return Ok(PathBuf::from(format!("/vsicurl/{href}")));
    }
    if let Some(rest) = href.strip_prefix("s3://") {
        return Ok(PathBuf::from(format!("/vsis3/{rest}")));
    }
    if href.contains("://") {
        return Err(format!(
            "{href} is a URL eoinfer cannot read (it reads local paths, http(s):// through GDAL's /vsicurl/ and s3:// through /vsis3/)"
        ));
    }
    Ok(base.join(href))
}

/// A STAC ItemCollection (or one Item) -> one time step per Item.
fn stac_steps(path: &Path) -> Result<Vec<TimeStep>, SceneError> {
    let bad = |m: String| SceneError::NotRaster {
        path: path.to_path_buf(),
        message: m,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let items: Vec<&serde_json::Value> =
        match doc.get("features").and_then(serde_json::Value::as_array) {
            Some(f) => f.iter().collect(),
            None => vec![&doc],
        };
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut steps = Vec::new();
    for item in items {
        let id = item
            .get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("item");
        let dt = item
            .pointer("/properties/datetime")
            .and_then(serde_json::Value::as_str)
            .or_else(|| {
                item.pointer("/properties/start_datetime")
                    .and_then(serde_json::Value::as_str)
            })
            .and_then(parse_date)
            .ok_or_else(|| bad(format!("item {id} has no properties.datetime")))?;
        let mut files = Vec::new();
        if let Some(assets) = item.get("assets").and_then(serde_json::Value::as_object) {
            for (key, a) in assets {
                let Some(href) = a.get("href").and_then(serde_json::Value::as_str) else {
                    continue;
                };
                let p = asset_path(base, href)
                    .map_err(|why| bad(format!("asset {key} of item {id}: {why}")))?;
                let is_raster = Path::new(href.split(['?', '#']).next().unwrap_or(href))
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| {
                        matches!(
                            e.to_ascii_lowercase().as_str(),
                            "tif" | "tiff" | "jp2" | "vrt"
                        )
                    });
                let data = a
                    .get("roles")
                    .and_then(serde_json::Value::as_array)
                    .is_none_or(|r| {
                        !r.iter()
                            .any(|x| x == "thumbnail" || x == "overview" || x == "visual")
                    });
                if is_raster && data {
                    files.push(p);
                }
            }
        }
        steps.push(TimeStep {
            source: SceneSource::Files {
                label: format!("{}#{id}", path.display()),
                files,
                item: Some(std::sync::Arc::new((path.to_path_buf(), item.clone()))),
            },
            date: dt,
            date_source: format!("{}: item {id} datetime", path.display()),
            cloud_cover: item
                .pointer("/properties/eo:cloud_cover")
                .and_then(serde_json::Value::as_f64),
        });
    }
    Ok(steps)
}

/// A listed scene: source, date found while listing, cloud cover found while listing.
type RawScene = (SceneSource, Option<(Date, String)>, Option<f64>);

/// Expands the `--scene` values (files, band folders, folders of dated files, `.txt` lists,
/// STAC Items and ItemCollections of local files) into scenes, in the order given, with
/// the date and cloud cover their metadata or names carry.
pub fn scene_entries(scenes: &[String]) -> Result<Vec<SceneEntry>, SceneError> {
    let mut raw: Vec<RawScene> = Vec::new();
    for s in scenes {
        let p = Path::new(s);
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if p.is_file() && ext.as_deref() == Some("json") {
            raw.extend(
                stac_steps(p)?
                    .into_iter()
                    .map(|t| (t.source, Some((t.date, t.date_source)), t.cloud_cover)),
            );
        } else if p.is_file() && ext.as_deref() == Some("txt") {
            let text = std::fs::read_to_string(p).map_err(|e| SceneError::NotRaster {
                path: p.to_path_buf(),
                message: e.to_string(),
            })?;
            let base = p.parent().unwrap_or_else(|| Path::new("."));
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let path = base.join(line);
                if !path.exists() && !line.starts_with("/vsi") && !line.contains(':') {
                    return Err(SceneError::Missing { path });
                }
                raw.push((
                    SceneSource::Path(path.to_string_lossy().into_owned()),
                    None,
                    None,
                ));
            }
        } else if p.is_dir() {
            // A folder of dated files: one time step per date in the file names.
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|_| SceneError::Missing {
                    path: p.to_path_buf(),
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            matches!(
                                e.to_ascii_lowercase().as_str(),
                                "tif" | "tiff" | "jp2" | "vrt"
                            )
                        })
                })
                .collect();
            files.sort();
            let mut by_date: std::collections::BTreeMap<Date, Vec<PathBuf>> =
                std::collections::BTreeMap::new();
            for f in files {
                if let Some(d) = file_date(&f) {
                    by_date.entry(d).or_default().push(f);
                }
            }
            if by_date.len() > 1 {
                for (d, files) in by_date {
                    raw.push((
                        SceneSource::Files {
                            label: format!("{}@{d}", p.display()),
                            files,
                            item: None,
                        },
                        Some((d, format!("{}: file names", p.display()))),
                        None,
                    ));
                }
            } else {
                // One date (or none): the folder is one scene, e.g. a Sentinel-2 IMG_DATA folder.
                let date = by_date
                    .keys()
                    .next()
                    .map(|d| (*d, format!("{}: file names", p.display())));
                raw.push((SceneSource::Path(s.clone()), date, None));
            }
        } else {
            raw.push((SceneSource::Path(s.clone()), None, None));
        }
    }
    Ok(raw
        .into_iter()
        .map(|(source, known, cloud)| {
            let date = known.or_else(|| match &source {
                SceneSource::Path(p) => gdal_date(p)
                    .or_else(|| file_date(Path::new(p)).map(|d| (d, format!("{p}: file name")))),
                SceneSource::Files { files, .. } => {
                    files.iter().find_map(|f| gdal_date(&f.to_string_lossy()))
                }
            });
            let cloud_cover = cloud.or_else(|| match &source {
                SceneSource::Path(p) => gdal_cloud(p),
                SceneSource::Files { files, .. } => {
                    files.iter().find_map(|f| gdal_cloud(&f.to_string_lossy()))
                }
            });
            SceneEntry {
                source,
                date,
                cloud_cover,
            }
        })
        .collect())
}

/// The scene a per-band file belongs to: its stem without a trailing band token
/// (`T33UUU_20170216T102101_B02` and `..._B8A_20m` -> `T33UUU_20170216T102101`); files
/// without one are scenes of their own.
#[must_use]
pub fn scene_key(stem: &str) -> String {
    let parts: Vec<&str> = stem.split(['_', '-']).collect();
    let is_band = |t: &str| {
        let t = t.to_ascii_uppercase();
        t.strip_prefix('B').is_some_and(|r| {
            !r.is_empty()
                && r.len() <= 3
                && r.chars().next().is_some_and(|c| c.is_ascii_digit())
                && r.chars().all(|c| c.is_ascii_digit() || c == 'A')
        }) || matches!(t.as_str(), "SCL" | "AOT" | "WVP" | "TCI")
    };
    let is_res = |t: &str| {
        t.ends_with('m') && t[..t.len() - 1].chars().all(|c| c.is_ascii_digit()) && t.len() > 1
    };
    let mut n = parts.len();
    if n > 1 && is_res(parts[n - 1]) {
        n -= 1;
    }
    if n > 1 && is_band(parts[n - 1]) {
        return stem[..parts[..n - 1].iter().map(|p| p.len() + 1).sum::<usize>() - 1].to_string();
    }
    stem.to_string()
}

/// Expands the `--scene` values of an AOI mosaic: like [`scene_entries`], but a folder holding
/// several scenes (per-band files of several tiles or dates, multi-band files, Sentinel-2
/// products) gives one scene per file-name stem without its band token.
pub fn mosaic_entries(scenes: &[String]) -> Result<Vec<SceneEntry>, SceneError> {
    let mut out = Vec::new();
    for s in scenes {
        let p = Path::new(s);
        if !p.is_dir() {
            out.extend(scene_entries(std::slice::from_ref(s))?);
            continue;
        }
        let mut files = Vec::new();
        super::list_rasters(p, 5, &mut files);
        let mut groups: std::collections::BTreeMap<String, Vec<PathBuf>> =
            std::collections::BTreeMap::new();
        for f in files {
            let stem = f
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            groups.entry(scene_key(&stem)).or_default().push(f);
        }
        if groups.len() <= 1 {
            out.extend(scene_entries(std::slice::from_ref(s))?);
            continue;
        }
        for (key, files) in groups {
            let source = SceneSource::Files {
                label: p.join(&key).to_string_lossy().into_owned(),
                files,
                item: None,
            };
            let date = parse_date(&key).map(|d| (d, format!("{}: file names", p.display())));
            let cloud_cover = match &source {
                SceneSource::Files { files, .. } => {
                    files.iter().find_map(|f| gdal_cloud(&f.to_string_lossy()))
                }
                SceneSource::Path(_) => None,
            };
            out.push(SceneEntry {
                source,
                date,
                cloud_cover,
            });
        }
    }
    Ok(out)
}

/// Cloud cover in percent from GDAL metadata (Sentinel-2 SAFE, Landsat MTL, tags).
fn gdal_cloud(path: &str) -> Option<f64> {
    let ds = gdal::Dataset::open(path).ok()?;
    [
        "CLOUD_COVERAGE_ASSESSMENT",
        "CLOUDY_PIXEL_PERCENTAGE",
        "CLOUD_COVER",
        "eo:cloud_cover",
    ]
    .iter()
    .find_map(|k| ds.metadata_item(k, "")?.trim().parse::<f64>().ok())
    .filter(|c| c.is_finite())
}

/// Parses `--dates 2021-01-05,2021-02-04`.
pub fn parse_dates(s: &str) -> Result<Vec<Date>, SceneError> {
    s.split(',')
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            parse_date(d.trim()).ok_or_else(|| SceneError::Series {
                what: format!("--dates entry `{d}` is not a date (YYYY-MM-DD)"),
            })
        })
        .collect()
}

/// Expands the `--scene` values into dated time steps sorted by date. `dates` (from
/// `--dates`) gives the dates of scenes that carry none, in the order given.
pub fn time_steps(scenes: &[String], dates: &[Date]) -> Result<Vec<TimeStep>, SceneError> {
    let mut given = dates.iter();
    let mut steps = Vec::new();
    for entry in scene_entries(scenes)? {
        let SceneEntry {
            source,
            date: found,
            cloud_cover,
        } = entry;
        let (date, date_source) = match found {
            Some(f) => f,
            None => match given.next() {
                Some(d) => (*d, "--dates".to_string()),
                None => {
                    return Err(SceneError::NoDate {
                        path: PathBuf::from(source.label()),
                    });
                }
            },
        };
        steps.push(TimeStep {
            source,
            date,
            date_source,
            cloud_cover,
        });
    }
    // A date left over was meant for a scene: which one is unknown, so nothing is guessed.
    let left = given.count();
    if left > 0 {
        return Err(SceneError::Series {
            what: format!(
                "--dates gives {} dates, but only {} of the scenes carry no date of their own; pass one date per undated scene, in the order the scenes are given",
                dates.len(),
                dates.len() - left
            ),
        });
    }
    steps.sort_by_key(|t| t.date);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_tokens_are_stripped_from_scene_keys() {
        assert_eq!(
            scene_key("T33UUU_20170216T102101_B02"),
            "T33UUU_20170216T102101"
        );
        assert_eq!(
            scene_key("T33UUU_20170216T102101_B8A_20m"),
            "T33UUU_20170216T102101"
        );
        assert_eq!(scene_key("T29RKH_20200219_SCL_20m"), "T29RKH_20200219");
        assert_eq!(scene_key("s2_stack_2020-02-19"), "s2_stack_2020-02-19");
        assert_eq!(scene_key("B02"), "B02");
    }

    #[test]
    fn dates_are_found_in_names_and_metadata_strings() {
        assert_eq!(
            parse_date("S2_L1C_20150711_13band.tif"),
            Some(Date {
                year: 2015,
                month: 7,
                day: 11
            })
        );
        assert_eq!(
            parse_date("2015-07-31T10:00:09"),
            Some(Date {
                year: 2015,
                month: 7,
                day: 31
            })
        );
        assert_eq!(
            parse_date("T33UUU_20170216T102101_B02"),
            Some(Date {
                year: 2017,
                month: 2,
                day: 16
            })
        );
        assert_eq!(parse_date("CLM_68dates"), None);
        assert_eq!(parse_date("B12345678901"), None);
    }
}
