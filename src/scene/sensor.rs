//! Sensors and products recognised from file names and the product's own metadata, and the
//! per-file facts they state: the band's common name, the linear conversion of stored values
//! to reflectance, the fill value.
//!
//! - Landsat 4-9 (Collection 1 and 2, Level-1 and Level-2): the product id in the file names
//!   (`LC08_L2SP_008059_20191201_20200825_02_T1_SR_B5`), the MTL file beside them (`_MTL.txt`
//!   or `_MTL.json`): Level-2 surface reflectance `REFLECTANCE_MULT/ADD_BAND_n`, Level-1
//!   top-of-atmosphere reflectance `(DN x M + A) / sin(sun elevation)`.
//! - A STAC Item beside the files: each asset's `raster:bands` scale, offset and nodata and its
//!   `eo:bands` / `bands` common name, matched to the files by name.
//! - Sentinel-2: the tile-and-time file names of a SAFE product (`T33UUU_20170216T102101_B02`,
//!   with `_10m` in an L2A product), a SAFE `MTD_MSIL1C.xml` / `MTD_MSIL2A.xml` or a STAC
//!   Item with `platform` sentinel-2 (the DN offset is in [`super::sentinel2`]).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What reflectance a product holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Level {
    /// Top-of-atmosphere reflectance (Sentinel-2 L1C, Landsat Level-1).
    #[serde(rename = "TOA")]
    Toa,
    /// Surface (bottom-of-atmosphere) reflectance (Sentinel-2 L2A, Landsat Level-2).
    #[serde(rename = "SR")]
    Sr,
}

impl Level {
    /// The level a manifest's `eoinfer:product_level` names (L1C, TOA, L1 / L2A, SR, BOA, L2).
    #[must_use]
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_uppercase().as_str() {
            "L1C" | "TOA" | "L1" | "L1TP" => Some(Level::Toa),
            "L2A" | "SR" | "BOA" | "L2" | "L2SP" => Some(Level::Sr),
            _ => None,
        }
    }

    /// How the level is written in messages.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Level::Toa => "top-of-atmosphere reflectance (L1C / Level-1 TOA)",
            Level::Sr => "surface reflectance (L2A / Level-2 SR)",
        }
    }
}

/// The sensor and product a scene was recognised as.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// Sensor id as manifests list them (`sentinel-2`, `landsat-8`).
    pub sensor: String,
    /// The product in words (`Landsat 8 OLI Collection 2 Level-2 surface reflectance`).
    pub description: String,
    /// The reflectance it holds, when known.
    pub level: Option<Level>,
    /// What it was recognised from (file names, an MTL file, a STAC Item).
    pub recognised_from: String,
}

/// Stored value to reflectance: `value x scale + offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// Multiplier.
    pub scale: f64,
    /// Added after the multiplication.
    pub offset: f64,
    /// Where the numbers came from, for the summary.
    pub source: String,
}

/// What the product's metadata says of one file.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    /// Common name of its band (`blue`, `nir`), when the metadata gives one.
    pub common_name: Option<String>,
    /// Further names `--bands` may use (`SR_B5`, `B5`, the STAC asset key).
    pub aliases: Vec<String>,
    /// The conversion to reflectance, when the metadata gives one.
    pub linear: Option<Linear>,
    /// Why the conversion is missing although the product is known (a Level-1 band without
    /// its MTL file).
    pub linear_missing: Option<String>,
    /// The product's fill value.
    pub nodata: Option<f64>,
    /// The file's own band number is not a Sentinel-2 band id (Landsat `B5` is nir, not
    /// Sentinel-2's red edge `B05`): the file-name rules must not match it by number.
    pub foreign_band_numbers: bool,
    /// A STAC asset of several bands: per band (in the file's order) what its `eo:bands` /
    /// `bands` and `raster:bands` entries say (the fields above hold the first band's).
    pub asset_bands: Vec<AssetBand>,
}

/// One band of a multi-band STAC asset.
#[derive(Debug, Clone, Default)]
pub struct AssetBand {
    /// Its common name.
    pub common_name: Option<String>,
    /// Its name (`B04`).
    pub name: Option<String>,
    /// Its conversion to reflectance.
    pub linear: Option<Linear>,
    /// Its fill value.
    pub nodata: Option<f64>,
}

/// What the metadata beside a scene's files says.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// The product, when recognised.
    pub product: Option<Product>,
    /// Per file (as given), what its metadata says.
    pub files: BTreeMap<String, FileMeta>,
    /// Things the summary should say (metadata found but not used, constants applied).
    pub notes: Vec<String>,
}

/// A Landsat product id split into its fields
/// (`LC08_L2SP_008059_20191201_20200825_02_T1` + the file's suffix `SR_B5`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LandsatId {
    mission: u8,
    sensor: char,
    level: String,
    collection: u8,
    product_id: String,
    suffix: String,
}

fn all_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_landsat(stem: &str) -> Option<LandsatId> {
    let t: Vec<&str> = stem.split('_').collect();
    if t.len() < 7 {
        return None;
    }
    let head = t[0].as_bytes();
    if t[0].len() != 4 || head[0] != b'L' || !b"COTEM".contains(&head[1]) {
        return None;
    }
    let mission: u8 = t[0][2..].parse().ok()?;
    if !(4..=9).contains(&mission)
        || !(t[1].starts_with("L1") || t[1].starts_with("L2"))
        || t[1].len() != 4
        || !all_digits(t[2], 6)
        || !all_digits(t[3], 8)
        || !all_digits(t[4], 8)
        || !all_digits(t[5], 2)
        || !["T1", "T2", "RT"].contains(&t[6])
    {
        return None;
    }
    Some(LandsatId {
        mission,
        sensor: char::from(head[1]),
        level: t[1].to_string(),
        collection: t[5].parse().ok()?,
        product_id: t[..7].join("_"),
        suffix: t[7..].join("_"),
    })
}

/// Common name of Landsat band `n` of `mission` (the panchromatic band is `pan`, never nir).
fn landsat_common_name(mission: u8, n: u32) -> Option<&'static str> {
    match (mission, n) {
        (8 | 9, 1) => Some("coastal"),
        (8 | 9, 2) | (4 | 5 | 7, 1) => Some("blue"),
        (8 | 9, 3) | (4 | 5 | 7, 2) => Some("green"),
        (8 | 9, 4) | (4 | 5 | 7, 3) => Some("red"),
        (8 | 9, 5) | (4 | 5 | 7, 4) => Some("nir"),
        (8 | 9, 6) | (4 | 5 | 7, 5) => Some("swir16"),
        (4 | 5 | 7 | 8 | 9, 7) => Some("swir22"),
        (7..=9, 8) => Some("pan"),
        (8 | 9, 9) => Some("cirrus"),
        (8 | 9, 10 | 11) | (4 | 5 | 7, 6) => Some("lwir"),
        _ => None,
    }
}

fn landsat_instrument(id: &LandsatId) -> &'static str {
    match (id.sensor, id.mission) {
        ('M', _) => "MSS",
        ('C' | 'O', 8 | 9) => "OLI",
        (_, 7) => "ETM+",
        (_, 4 | 5) => "TM",
        _ => "",
    }
}

/// The sensor id manifests list: `landsat-8`, or `landsat-5-mss` for the MSS.
fn landsat_sensor_id(id: &LandsatId) -> String {
    if id.sensor == 'M' {
        format!("landsat-{}-mss", id.mission)
    } else {
        format!("landsat-{}", id.mission)
    }
}

/// An MTL metadata file: `GROUP = X ... KEY = value ... END_GROUP = X` text, or the same as
/// nested JSON objects.
#[derive(Debug, Clone, Default)]
pub struct Mtl {
    path: PathBuf,
    values: Vec<(String, String, String)>,
}

impl Mtl {
    /// Reads an MTL `.txt` or `.json` file.
    pub fn read(path: &Path) -> Option<Mtl> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut values = Vec::new();
        if text.trim_start().starts_with('{') {
            let doc: Value = serde_json::from_str(&text).ok()?;
            walk_mtl_json("", &doc, &mut values);
        } else {
            let mut groups: Vec<String> = Vec::new();
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim().trim_matches('"'));
                match k {
                    "GROUP" => groups.push(v.to_string()),
                    "END_GROUP" => {
                        groups.pop();
                    }
                    _ => values.push((
                        groups.last().cloned().unwrap_or_default(),
                        k.to_string(),
                        v.to_string(),
                    )),
                }
            }
        }
        (!values.is_empty()).then(|| Mtl {
            path: path.to_path_buf(),
            values,
        })
    }

    /// The value of `key` in `group`.
    #[must_use]
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(g, k, _)| g == group && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    fn number(&self, group: &str, key: &str) -> Option<f64> {
        self.get(group, key)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }
}

/// The (group, key, value) leaves of an MTL JSON document.
fn walk_mtl_json(group: &str, v: &Value, out: &mut Vec<(String, String, String)>) {
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            match x {
                Value::Object(_) => walk_mtl_json(k, x, out),
                Value::String(s) => out.push((group.into(), k.clone(), s.clone())),
                Value::Number(n) => out.push((group.into(), k.clone(), n.to_string())),
                _ => {}
            }
        }
    }
}

/// The MTL file of a Landsat product in `dir`.
fn find_mtl(dir: &Path, product_id: &str) -> Option<Mtl> {
    ["txt", "json", "TXT", "JSON"]
        .iter()
        .find_map(|ext| Mtl::read(&dir.join(format!("{product_id}_MTL.{ext}"))))
}

/// The conversion of Landsat band `n` to reflectance from the MTL file (or, for Collection 2
/// Level-2 surface reflectance without one, from the product definition).
fn landsat_linear(
    id: &LandsatId,
    n: u32,
    surface: bool,
    mtl: Option<&Mtl>,
) -> Result<Linear, String> {
    if surface {
        let group = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS";
        if let Some(m) = mtl {
            if let (Some(scale), Some(offset)) = (
                m.number(group, &format!("REFLECTANCE_MULT_BAND_{n}")),
                m.number(group, &format!("REFLECTANCE_ADD_BAND_{n}")),
            ) {
                return Ok(Linear {
                    scale,
                    offset,
                    source: format!("{} {group} REFLECTANCE_MULT/ADD_BAND_{n}", m.path.display()),
                });
            }
        }
        if id.collection == 2 {
            return Ok(Linear {
                scale: 2.75e-5,
                offset: -0.2,
                source: "USGS Landsat Collection 2 Level-2 product definition (no MTL file beside the band files)".into(),
            });
        }
        return Err(format!(
            "Landsat Collection {} Level-2 surface reflectance needs its MTL file ({}_MTL.txt) beside the band files",
            id.collection, id.product_id
        ));
    }
    let Some(m) = mtl else {
        return Err(format!(
            "a Landsat Level-1 band is converted to top-of-atmosphere reflectance with the MTL file's REFLECTANCE_MULT/ADD_BAND_n and SUN_ELEVATION; put {}_MTL.txt (or .json) beside the band files",
            id.product_id
        ));
    };
    let group = ["LEVEL1_RADIOMETRIC_RESCALING", "RADIOMETRIC_RESCALING"]
        .into_iter()
        .find(|g| m.get(g, &format!("REFLECTANCE_MULT_BAND_{n}")).is_some())
        .ok_or_else(|| {
            format!(
                "{} has no REFLECTANCE_MULT_BAND_{n} (band {n} has no reflectance calibration)",
                m.path.display()
            )
        })?;
    let mult = m.number(group, &format!("REFLECTANCE_MULT_BAND_{n}"));
    let add = m.number(group, &format!("REFLECTANCE_ADD_BAND_{n}"));
    let elevation = m.number("IMAGE_ATTRIBUTES", "SUN_ELEVATION").or_else(|| {
        m.values
            .iter()
            .find(|(_, k, _)| k == "SUN_ELEVATION")
            .and_then(|(_, _, v)| v.parse().ok())
    });
    match (mult, add, elevation) {
        (Some(mult), Some(add), Some(e)) if e > 0.0 && e <= 90.0 => {
            let s = e.to_radians().sin();
            Ok(Linear {
                scale: mult / s,
                offset: add / s,
                source: format!(
                    "{} {group} REFLECTANCE_MULT_BAND_{n} {mult:e}, REFLECTANCE_ADD_BAND_{n} {add}, divided by sin(SUN_ELEVATION {e})",
                    m.path.display()
                ),
            })
        }
        _ => Err(format!(
            "{} lacks REFLECTANCE_MULT/ADD_BAND_{n} or a SUN_ELEVATION between 0 and 90",
            m.path.display()
        )),
    }
}

/// The Landsat facts of one file, and the product it belongs to.
fn describe_landsat(path: &Path, id: &LandsatId) -> (FileMeta, Product) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mtl = find_mtl(dir, &id.product_id);
    let mut meta = FileMeta {
        foreign_band_numbers: true,
        ..FileMeta::default()
    };
    let (surface, number) = match id.suffix.split_once('_') {
        Some(("SR", b)) => (
            true,
            b.strip_prefix('B').and_then(|n| n.parse::<u32>().ok()),
        ),
        Some((b, _)) => (
            false,
            b.strip_prefix('B').and_then(|n| n.parse::<u32>().ok()),
        ),
        None => (
            false,
            id.suffix
                .strip_prefix('B')
                .and_then(|n| n.parse::<u32>().ok()),
        ),
    };
    let product_level = if id.level.starts_with("L2") {
        Level::Sr
    } else {
        Level::Toa
    };
    // MSS bands (B1 green .. B4 nir) follow another table: such a product is named but its
    // bands are matched only by --bands, and its sensor id (`landsat-5-mss`) fits no model
    // made for TM, ETM+ or OLI.
    let number = number.filter(|_| id.sensor != 'M');
    if let Some(n) = number {
        // A Level-2 product's own `Bn` would be surface reflectance only as SR_Bn.
        let reflective = !matches!(landsat_common_name(id.mission, n), Some("lwir") | None);
        meta.common_name = landsat_common_name(id.mission, n).map(str::to_string);
        meta.aliases = vec![id.suffix.clone(), format!("B{n}")];
        if reflective && (surface || product_level == Level::Toa) {
            match landsat_linear(id, n, surface, mtl.as_ref()) {
                Ok(l) => meta.linear = Some(l),
                Err(why) => meta.linear_missing = Some(why),
            }
            meta.nodata = Some(0.0);
        }
    } else {
        meta.aliases = vec![id.suffix.clone()];
    }
    let product = landsat_product(
        id,
        match &mtl {
            Some(m) => format!("file names ({}) and {}", id.product_id, m.path.display()),
            None => format!("file names ({}), no MTL file", id.product_id),
        },
    );
    (meta, product)
}

/// The product a Landsat product id names.
fn landsat_product(id: &LandsatId, recognised_from: String) -> Product {
    let (level, words) = if id.level.starts_with("L2") {
        (Level::Sr, "Level-2 surface reflectance")
    } else {
        (Level::Toa, "Level-1 top-of-atmosphere reflectance")
    };
    Product {
        sensor: landsat_sensor_id(id),
        description: format!(
            "Landsat {} {} Collection {} {words} ({})",
            id.mission,
            landsat_instrument(id),
            id.collection,
            id.level
        ),
        level: Some(level),
        recognised_from,
    }
}

/// A Sentinel-2 product of `level` (when known).
fn sentinel2_product(level: Option<Level>, recognised_from: String) -> Product {
    Product {
        sensor: SENTINEL2.into(),
        description: format!(
            "Sentinel-2 {}",
            match level {
                Some(Level::Sr) => "L2A surface reflectance",
                Some(Level::Toa) => "L1C top-of-atmosphere reflectance",
                None => "(level not stated)",
            }
        ),
        level,
        recognised_from,
    }
}

/// A Sentinel-2 SAFE band file name: `T33UUU_20170216T102101_B02` (L1C) or
/// `T33UUU_20170216T102101_B02_10m` (L2A). Returns the level.
fn sentinel2_safe_name(stem: &str) -> Option<Level> {
    let t: Vec<&str> = stem.split('_').collect();
    let tile = t.first()?.as_bytes();
    let ok_tile = tile.len() == 6
        && tile[0] == b'T'
        && tile[1..3].iter().all(u8::is_ascii_digit)
        && tile[3..].iter().all(u8::is_ascii_uppercase);
    let time = t.get(1)?.as_bytes();
    let ok_time = time.len() == 15 && time[8] == b'T';
    let band = t.get(2)?;
    if !(ok_tile && ok_time && (band.starts_with('B') || *band == "TCI")) {
        return None;
    }
    match t.get(3) {
        None => Some(Level::Toa),
        Some(r) if ["10m", "20m", "60m"].contains(r) => Some(Level::Sr),
        Some(_) => None,
    }
}

/// What a STAC asset's `raster:bands` entry `rb` says: the conversion to reflectance and the
/// fill value.
fn raster_band_meta(
    rb: &Value,
    key: &str,
    i: usize,
    source: &str,
) -> (Option<Linear>, Option<f64>) {
    let num = |keys: &[&str]| keys.iter().find_map(|k| rb.get(*k).and_then(Value::as_f64));
    let scale = num(&["scale", "raster:scale"]);
    let offset = num(&["offset", "raster:offset"]);
    // A scale to radiance or temperature (a `unit` other than reflectance's) is no
    // reflectance: left to the product's own rules (Landsat Level-1: the MTL).
    let unit = rb
        .get("unit")
        .or_else(|| rb.get("raster:unit"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let not_reflectance = ["watt", "w/", "w m", "radiance", "kelvin", "celsius"]
        .iter()
        .any(|u| unit.contains(u))
        || unit == "k";
    let linear = ((scale.is_some() || offset.is_some()) && !not_reflectance).then(|| Linear {
        scale: scale.unwrap_or(1.0),
        offset: offset.unwrap_or(0.0),
        source: if i == 0 {
            format!("STAC Item {source} asset `{key}` raster:bands scale/offset")
        } else {
            format!("STAC Item {source} asset `{key}` raster:bands[{i}] scale/offset")
        },
    });
    (linear, num(&["nodata"]))
}

/// The `i`-th `eo:bands` / `bands` entry of an asset (an index into the Item's own
/// `eo:bands` resolved): (common name, name).
fn asset_band_names(
    item: &Value,
    asset: &Value,
    i: usize,
) -> Option<(Option<String>, Option<String>)> {
    let band = asset
        .pointer(&format!("/eo:bands/{i}"))
        .or_else(|| asset.pointer(&format!("/bands/{i}")));
    let band = match band {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|k| item.pointer(&format!("/properties/eo:bands/{k}"))),
        other => other,
    }?;
    Some((
        ["common_name", "eo:common_name"]
            .iter()
            .find_map(|k| band.get(*k).and_then(Value::as_str))
            .map(str::to_string),
        band.get("name").and_then(Value::as_str).map(str::to_string),
    ))
}

/// A STAC Item's facts about one asset.
fn stac_asset_meta(item: &Value, key: &str, asset: &Value, source: &str) -> FileMeta {
    let mut meta = FileMeta::default();
    let stem = key.rsplit_once('.').map_or(key, |(s, _)| s);
    meta.aliases.push(stem.to_string());
    let raster = |i: usize| {
        asset
            .pointer(&format!("/raster:bands/{i}"))
            .or_else(|| asset.pointer(&format!("/bands/{i}")))
    };
    if let Some(rb) = raster(0) {
        (meta.linear, meta.nodata) = raster_band_meta(rb, key, 0, source);
    }
    if let Some((common, name)) = asset_band_names(item, asset, 0) {
        meta.common_name = common;
        if let Some(name) = name {
            meta.aliases.push(name);
        }
    }
    let n = ["/eo:bands", "/bands", "/raster:bands"]
        .iter()
        .filter_map(|p| asset.pointer(p).and_then(Value::as_array).map(Vec::len))
        .max()
        .unwrap_or(0);
    if n > 1 {
        for i in 0..n {
            let (common_name, name) = asset_band_names(item, asset, i).unwrap_or_default();
            let (linear, nodata) =
                raster(i).map_or((None, None), |rb| raster_band_meta(rb, key, i, source));
            meta.asset_bands.push(AssetBand {
                common_name,
                name,
                // A band without its own entry takes the first band's.
                linear: linear.or_else(|| meta.linear.clone()),
                nodata: nodata.or(meta.nodata),
            });
        }
    }
    meta
}

/// The product a STAC Item describes.
fn stac_product(item: &Value, source: &str) -> Option<Product> {
    let props = item.get("properties")?;
    let text = |k: &str| props.get(k).and_then(Value::as_str).unwrap_or_default();
    let platform = [text("platform"), text("eo:platform")]
        .join(" ")
        .to_ascii_lowercase();
    let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
    if platform.contains("sentinel-2") || platform.contains("sentinel2") {
        let kind = text("s2:product_type");
        let level = if kind.ends_with("2A") || id.contains("L2A") {
            Some(Level::Sr)
        } else if kind.ends_with("1C") || id.contains("L1C") {
            Some(Level::Toa)
        } else {
            None
        };
        return Some(sentinel2_product(level, format!("STAC Item {source}")));
    }
    parse_landsat(id)
        .or_else(|| parse_landsat(&format!("{id}_X")))
        .map(|l| landsat_product(&l, format!("STAC Item {source}")))
}

/// The MTL file an Item links as an asset (`MTL.txt`, `MTL.json`), when it is local.
fn stac_mtl(item: &Path, assets: &serde_json::Map<String, Value>) -> Option<Mtl> {
    let base = item.parent().unwrap_or(Path::new("."));
    assets.iter().find_map(|(k, a)| {
        let href = a.get("href").and_then(Value::as_str)?;
        let ext = Path::new(k)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let text_or_json = matches!(ext.as_deref(), Some("txt" | "json"));
        if !k.to_ascii_uppercase().contains("MTL") || !text_or_json || href.contains("://") {
            return None;
        }
        Mtl::read(&base.join(href))
    })
}

/// A Landsat Item's asset `key` (`SR_B5.TIF`, `B5`): its band's common name and, without
/// `raster:bands`, its conversion from the Item's MTL asset (or the Collection 2 Level-2
/// product definition).
fn landsat_from_item(meta: &mut FileMeta, id: &LandsatId, key: &str, mtl: Option<&Mtl>) {
    if id.sensor == 'M' {
        return;
    }
    let stem = key
        .rsplit_once('.')
        .map_or(key, |(s, _)| s)
        .to_ascii_uppercase();
    let (surface, n) = match stem.strip_prefix("SR_B") {
        Some(n) => (true, n.parse::<u32>().ok()),
        None => (
            false,
            stem.strip_prefix('B').and_then(|n| n.parse::<u32>().ok()),
        ),
    };
    let Some(n) = n else { return };
    meta.foreign_band_numbers = true;
    if meta.common_name.is_none() {
        meta.common_name = landsat_common_name(id.mission, n).map(str::to_string);
    }
    let reflective = !matches!(landsat_common_name(id.mission, n), Some("lwir") | None);
    let level2 = id.level.starts_with("L2");
    if meta.linear.is_none() && reflective && (surface || !level2) {
        match landsat_linear(id, n, surface, mtl) {
            Ok(l) => {
                meta.linear = Some(l);
                meta.linear_missing = None;
            }
            Err(why) => meta.linear_missing = Some(why),
        }
        meta.nodata = meta.nodata.or(Some(0.0));
    }
}

/// Whether an asset's href is the file `f` (base name `name`): a local href resolved against
/// the Item's folder is the same path; a remote one (the Item of files downloaded beside it)
/// has the same base name.
fn asset_names_file(base: &Path, href: &str, f: &str, name: &str) -> bool {
    if href == f {
        return true;
    }
    if href.contains("://") && !href.starts_with("file://") {
        return href_name(href) == name;
    }
    let local = base.join(href.trim_start_matches("file://"));
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(&local) == canon(Path::new(f))
}

/// The base name of an asset href (`.../B02.tif?x=1` -> `B02.tif`).
fn href_name(href: &str) -> &str {
    let h = href.split(['?', '#']).next().unwrap_or(href);
    h.rsplit('/').next().unwrap_or(h)
}

/// STAC Items (`type` Feature with `assets`) in `dir`.
/// The STAC Items (JSON of `type` Feature with `assets`, under 4 MiB) in `dir`, read once per
/// process: every time step of a series in one folder asks for them.
pub(crate) fn items_in(dir: &Path) -> std::sync::Arc<Vec<(PathBuf, Value)>> {
    type Cache = std::collections::HashMap<PathBuf, std::sync::Arc<Vec<(PathBuf, Value)>>>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(dir).cloned()) {
        return found;
    }
    let items = std::sync::Arc::new(read_items(dir));
    if let Ok(mut c) = cache.lock() {
        c.insert(dir.to_path_buf(), items.clone());
    }
    items
}

fn read_items(dir: &Path) -> Vec<(PathBuf, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                && p.metadata().is_ok_and(|m| m.len() < (4 << 20))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
            (v.get("type").and_then(Value::as_str) == Some("Feature") && v.get("assets").is_some())
                .then_some((p, v))
        })
        .collect()
}

fn merge(into: &mut FileMeta, from: FileMeta) {
    if from.common_name.is_some() {
        into.common_name = from.common_name;
    }
    for a in from.aliases {
        if !into.aliases.contains(&a) {
            into.aliases.push(a);
        }
    }
    if from.linear.is_some() {
        into.linear = from.linear;
        into.linear_missing = None;
    }
    if from.nodata.is_some() {
        into.nodata = from.nodata;
    }
    into.foreign_band_numbers |= from.foreign_band_numbers;
    if !from.asset_bands.is_empty() {
        into.asset_bands = from.asset_bands;
    }
}

/// Describes the files of a scene from their names and the metadata beside them (MTL files,
/// STAC Items). `item` is a STAC Item the scene was given as, which wins over files beside.
#[must_use]
pub fn describe(files: &[String], item: Option<(&Path, &Value)>) -> Described {
    let mut out = Described::default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        let p = Path::new(f);
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut meta = FileMeta::default();
        if let Some(id) = parse_landsat(&stem) {
            let (m, product) = describe_landsat(p, &id);
            meta = m;
            out.product.get_or_insert(product);
        } else if let Some(level) = sentinel2_safe_name(&stem) {
            out.product.get_or_insert(sentinel2_product(
                Some(level),
                format!(
                    "SAFE band file names ({})",
                    p.file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
        }
        out.files.insert(f.clone(), meta);
        if let Some(d) = p.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    let mut items: Vec<(PathBuf, Value)> = Vec::new();
    if let Some((p, v)) = item {
        items.push((p.to_path_buf(), v.clone()));
    }
    for d in &dirs {
        items.extend(items_in(d).iter().cloned());
    }
    // Files an Item has described: the given Item first, then the first Item beside them;
    // a later Item naming the same file does not override it.
    let mut described: Vec<String> = Vec::new();
    for (path, doc) in &items {
        let source = path.display().to_string();
        let Some(assets) = doc.get("assets").and_then(Value::as_object) else {
            continue;
        };
        let item_mtl = stac_mtl(path, assets);
        let item_landsat = doc
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| parse_landsat(&format!("{id}_X")));
        let mut matched = false;
        let base = path.parent().unwrap_or(Path::new("."));
        for (f, meta) in &mut out.files {
            if described.contains(f) {
                continue;
            }
            let name = Path::new(f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some((key, asset)) = assets.iter().find(|(_, a)| {
                a.get("href")
                    .and_then(Value::as_str)
                    .is_some_and(|h| asset_names_file(base, h, f, &name))
            }) {
                described.push(f.clone());
                merge(meta, stac_asset_meta(doc, key, asset, &source));
                if let Some(id) = &item_landsat {
                    landsat_from_item(meta, id, key, item_mtl.as_ref());
                }
                matched = true;
            }
        }
        // An Item describes the scene only when it names its files.
        if matched {
            if let Some(p) = stac_product(doc, &source) {
                let from_files = out.product.as_ref().map(|x| x.sensor.clone());
                if from_files.is_none() || from_files.as_deref() == Some(p.sensor.as_str()) {
                    out.product = Some(Product {
                        recognised_from: match &out.product {
                            Some(x) => format!("{}; {}", x.recognised_from, p.recognised_from),
                            None => p.recognised_from.clone(),
                        },
                        level: p.level.or(out.product.as_ref().and_then(|x| x.level)),
                        ..p
                    });
                } else {
                    out.notes.push(format!(
                        "STAC Item {source} says {}, but the file names say {}; the file names were used",
                        p.sensor,
                        from_files.unwrap_or_default()
                    ));
                }
            }
        }
    }
    out
}

/// The Sentinel-2 sensor id.
pub const SENTINEL2: &str = "sentinel-2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_band_asset_lists_each_band_with_its_own_scale() {
        let item = serde_json::json!({"properties": {}});
        let asset = serde_json::json!({
            "href": "http://x/s.tif",
            "eo:bands": [{"name": "B02", "common_name": "blue"}, {"name": "B03", "common_name": "green"}],
            "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}, {"scale": 0.0002}],
        });
        let m = stac_asset_meta(&item, "data", &asset, "item.json");
        assert_eq!(m.common_name.as_deref(), Some("blue"));
        assert_eq!(m.asset_bands.len(), 2);
        let b = &m.asset_bands[1];
        assert_eq!(
            (b.name.as_deref(), b.common_name.as_deref()),
            (Some("B03"), Some("green"))
        );
        let l = b.linear.as_ref().expect("scale");
        assert_eq!((l.scale, l.offset), (0.0002, 0.0));
        assert!(l.source.contains("raster:bands[1]"));
        // The second band has no nodata of its own: the first band's.
        assert_eq!(b.nodata, Some(0.0));
        // One band: no per-band list.
        let one = serde_json::json!({"eo:bands": [{"name": "B04", "common_name": "red"}]});
        assert!(
            stac_asset_meta(&item, "red", &one, "i")
                .asset_bands
                .is_empty()
        );
    }

    #[test]
    fn landsat_product_ids_split_into_fields() {
        let id = parse_landsat("LC08_L2SP_008059_20191201_20200825_02_T1_SR_B5").expect("id");
        assert_eq!(id.mission, 8);
        assert_eq!(id.level, "L2SP");
        assert_eq!(id.collection, 2);
        assert_eq!(id.suffix, "SR_B5");
        assert_eq!(id.product_id, "LC08_L2SP_008059_20191201_20200825_02_T1");
        let c1 = parse_landsat("LC08_L1TP_042034_20170616_20170629_01_T1_B8").expect("c1");
        assert_eq!((c1.collection, c1.suffix.as_str()), (1, "B8"));
        assert!(parse_landsat("T33UUU_20170216T102101_B02").is_none());
        assert!(parse_landsat("LX08_L2SP_008059_20191201_20200825_02_T1_SR_B5").is_none());
    }

    #[test]
    fn mss_bands_are_not_read_with_the_tm_table() {
        let path = Path::new("/nowhere/LM05_L1GS_001001_19850524_20210918_02_T2_B1.TIF");
        let id = parse_landsat("LM05_L1GS_001001_19850524_20210918_02_T2_B1").expect("id");
        let (meta, product) = describe_landsat(path, &id);
        assert_eq!(meta.common_name, None);
        assert_eq!(product.sensor, "landsat-5-mss");
        assert!(product.description.contains("MSS"));
    }

    #[test]
    fn local_hrefs_name_their_own_file_and_remote_ones_the_base_name() {
        let base = Path::new("/d");
        assert!(asset_names_file(
            base,
            "sub/B02.tif",
            "/d/sub/B02.tif",
            "B02.tif"
        ));
        assert!(!asset_names_file(base, "2.tif", "/d/12.tif", "12.tif"));
        assert!(asset_names_file(
            base,
            "https://x/y/B02.tif?sig=1",
            "/e/B02.tif",
            "B02.tif"
        ));
        assert!(!asset_names_file(
            base,
            "other/B02.tif",
            "/d/B02.tif",
            "B02.tif"
        ));
    }

    #[test]
    fn landsat_band_numbers_have_their_own_common_names() {
        assert_eq!(landsat_common_name(8, 5), Some("nir"));
        assert_eq!(landsat_common_name(8, 8), Some("pan"));
        assert_eq!(landsat_common_name(7, 4), Some("nir"));
        assert_eq!(landsat_common_name(5, 7), Some("swir22"));
        assert_eq!(landsat_common_name(9, 2), Some("blue"));
    }

    #[test]
    fn mtl_text_is_read_by_group() {
        let dir = std::env::temp_dir().join(format!("eoinfer-mtl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("x_MTL.txt");
        std::fs::write(
            &p,
            "GROUP = LANDSAT_METADATA_FILE\n  GROUP = A\n    REFLECTANCE_MULT_BAND_5 = 2.0000E-05\n  END_GROUP = A\n  GROUP = B\n    REFLECTANCE_MULT_BAND_5 = 2.75e-05\n    NAME = \"x\"\n  END_GROUP = B\nEND_GROUP = LANDSAT_METADATA_FILE\nEND\n",
        )
        .expect("write");
        let m = Mtl::read(&p).expect("mtl");
        assert_eq!(m.number("A", "REFLECTANCE_MULT_BAND_5"), Some(2e-5));
        assert_eq!(m.number("B", "REFLECTANCE_MULT_BAND_5"), Some(2.75e-5));
        assert_eq!(m.get("B", "NAME"), Some("x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sentinel2_safe_names_give_the_level() {
        assert_eq!(
            sentinel2_safe_name("T33UUU_20170216T102101_B02"),
            Some(Level::Toa)
        );
        assert_eq!(
            sentinel2_safe_name("T29RKH_20200219T112111_B11_20m"),
            Some(Level::Sr)
        );
        assert_eq!(sentinel2_safe_name("B02"), None);
        assert_eq!(sentinel2_safe_name("worldcereal_20201101"), None);
    }

    #[test]
    fn levels_parse_from_manifest_words() {
        assert_eq!(Level::parse("L1C"), Some(Level::Toa));
        assert_eq!(Level::parse("sr"), Some(Level::Sr));
        assert_eq!(Level::parse("L2A"), Some(Level::Sr));
        assert_eq!(Level::parse("x"), None);
    }
}
