//! Model knowledge as data: the STAC MLM (Machine Learning Model extension v1.5) manifest
//! read into a [`ModelSpec`] (bands, scaling, shapes, classes, tiling defaults).

use crate::error::ModelError;
use crate::normalize::ValueScaling;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The STAC MLM extension schema the manifests declare.
pub const MLM_SCHEMA: &str = "https://stac-extensions.github.io/mlm/v1.5.0/schema.json";

/// One input band of a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelBand {
    /// Band id (Sentinel-2: `B02`).
    pub name: String,
    /// STAC common name (`blue`), when the band has one.
    pub common_name: Option<String>,
}

impl ModelBand {
    /// The name users see: the common name where there is one.
    #[must_use]
    pub fn label(&self) -> &str {
        self.common_name.as_deref().unwrap_or(&self.name)
    }
}

/// One output class.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassInfo {
    /// Class id in the class map.
    pub value: u8,
    /// Short name (`cloud`).
    pub name: String,
    /// Colour as RGB.
    pub color: [u8; 3],
}

/// Everything eoinfer needs to know about a model, read from its manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSpec {
    /// The manifest file.
    pub manifest: PathBuf,
    /// STAC Item id.
    pub id: String,
    /// The ONNX file (resolved relative to the manifest).
    pub onnx: PathBuf,
    /// Expected sha256 of the ONNX file, when the manifest records one.
    pub onnx_sha256: Option<String>,
    /// Input bands in model order.
    pub bands: Vec<ModelBand>,
    /// Normalisation per input band.
    pub scaling: Vec<ValueScaling>,
    /// Input shape (`-1` = dynamic), in `dim_order`.
    pub input_shape: Vec<i64>,
    /// Output shape (`-1` = dynamic).
    pub output_shape: Vec<i64>,
    /// Output classes.
    pub classes: Vec<ClassInfo>,
    /// Whether the output holds logits that need a softmax.
    pub softmax: bool,
    /// Tile edge in pixels.
    pub tile_size: usize,
    /// Default overlap of eoinfer's blended tiling, in pixels.
    pub overlap: usize,
    /// Recommended ground sample distance in metres.
    pub gsd: f64,
    /// Expected product level (`L1C`, `L2A`, `TOA`, `SR`).
    pub product_level: Option<String>,
    /// Sensors the model was made for (`eoinfer:sensors`: `sentinel-2`, `landsat-8`, ...);
    /// a manifest without the list whose level is a Sentinel-2 one (L1C, L2A) takes
    /// Sentinel-2 only.
    pub sensors: Vec<String>,
    /// Multiplier from integer DN to the model's reflectance.
    pub dn_scale: f64,
    /// Stored value meaning "no data" for integer inputs (Sentinel-2: 0).
    pub dn_nodata: Option<f64>,
    /// The model's own statement of how integer pixels of one data type become its input
    /// (`eoinfer:integer_input`: e.g. 8-bit imagery / 255): (GDAL data type name, scale,
    /// source).
    pub integer_input: Option<(String, f64, String)>,
    /// Overlap fraction of the authors' own tiling, when known.
    pub reference_fraction: Option<f64>,
    /// A time-series encoder's own settings (`eoinfer:kind` = `embedding`): patch size,
    /// embedding size, time steps, Sentinel-1 input, head. `None` for a single-date model.
    pub encoder: Option<crate::model::embedding::EmbeddingSpec>,
    /// A per-pixel model (`eoinfer:kind` = `pixel`: input `[pixels, bands]`, output one
    /// probability per pixel) and the mask its `eoinfer:post_processing` makes of the
    /// probabilities (class 1 where masked).
    pub pixel: Option<crate::postprocess::MaskSpec>,
    /// The model's licence (STAC `license`), carried into every run's summary and Item.
    pub license: Option<String>,
    /// The attribution its licence asks for (`eoinfer:attribution`), carried likewise.
    pub attribution: Option<String>,
}

fn invalid(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::ManifestInvalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The `value_scaling` entries of an `mlm:input` object (z-score or min-max).
pub(crate) fn value_scaling(path: &Path, input: &Value) -> Result<Vec<ValueScaling>, ModelError> {
    let entries = input
        .get("value_scaling")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "an `mlm:input` entry has no value_scaling"))?;
    let mut scaling = Vec::new();
    for s in entries {
        let num = |k: &str| {
            s.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| invalid(path, format!("value_scaling entry lacks `{k}`")))
        };
        scaling.push(match s.get("type").and_then(Value::as_str) {
            Some("z-score") => ValueScaling::ZScore {
                mean: num("mean")?,
                stddev: num("stddev")?,
            },
            Some("min-max") => ValueScaling::MinMax {
                minimum: num("minimum")?,
                maximum: num("maximum")?,
            },
            other => {
                return Err(invalid(
                    path,
                    format!("value_scaling type {other:?} is not supported (z-score, min-max)"),
                ));
            }
        });
    }
    Ok(scaling)
}

/// The `model` asset of a generated manifest: the ONNX file, its sha256 (multihash) and
/// bands (STAC 1.1 puts band descriptions on assets).
pub(crate) fn model_asset_json(href: &str, title: &str, sha256: &str, bands: &[Value]) -> Value {
    serde_json::json!({
        "href": href,
        "title": title,
        "type": "application/octet-stream; application=onnx",
        "roles": ["mlm:model", "mlm:weights", "data"],
        "mlm:artifact_type": "onnx",
        "file:checksum": format!("1220{sha256}"),
        "bands": bands
    })
}

/// The asset with the role `mlm:model` (the ONNX file).
pub(crate) fn model_asset(doc: &Value) -> Option<&Value> {
    doc.get("assets")?.as_object()?.values().find(|v| {
        v.get("roles")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x == "mlm:model"))
    })
}

/// The band definitions (name, `eo:common_name`, `eo:center_wavelength`) of a manifest: the
/// `bands` of its `mlm:model` asset (STAC 1.1 puts band descriptions on assets), else the Item
/// properties' `bands` (manifests written before they moved).
pub(crate) fn band_definitions(doc: &Value) -> Vec<&Value> {
    let on_asset = model_asset(doc).and_then(|a| a.get("bands"));
    on_asset
        .or_else(|| doc.pointer("/properties/bands"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Records the sha256 of a manifest's ONNX file as `file:checksum` (multihash `1220...`) of its
/// model asset, when it records none; a different recorded sum is an error. The manifest is
/// rewritten through a temporary file.
pub fn write_checksum(path: &Path) -> Result<(), ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::ManifestRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|source| ModelError::ManifestJson {
            path: path.to_path_buf(),
            source,
        })?;
    let key = doc
        .get("assets")
        .and_then(Value::as_object)
        .and_then(|a| {
            a.iter()
                .find(|(_, v)| {
                    v.get("roles")
                        .and_then(Value::as_array)
                        .is_some_and(|r| r.iter().any(|x| x == "mlm:model"))
                })
                .map(|(k, _)| k.clone())
        })
        .ok_or_else(|| invalid(path, "no asset has the role mlm:model"))?;
    let asset = &mut doc["assets"][&key];
    let href = asset
        .get("href")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(path, format!("asset {key} has no href")))?;
    let onnx = path.parent().unwrap_or(Path::new(".")).join(href);
    let sha = crate::util::sha256_file(&onnx).map_err(|source| ModelError::ManifestRead {
        path: onnx.clone(),
        source,
    })?;
    let want = format!("1220{sha}");
    match asset.get("file:checksum").and_then(Value::as_str) {
        Some(have) if have.eq_ignore_ascii_case(&want) => return Ok(()),
        Some(have) => {
            return Err(invalid(
                path,
                format!(
                    "it records the checksum {have} (multihash), but {} has sha256 {sha}; --write-checksum adds a missing sum and never replaces one: check which file is right, then fix or remove the recorded sum",
                    onnx.display()
                ),
            ));
        }
        None => {}
    }
    asset["file:checksum"] = Value::String(want);
    let out = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    crate::util::write_atomic(path, out.as_bytes()).map_err(|source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(manifest = %path.display(), %sha, "sha256 of the ONNX file recorded");
    Ok(())
}

/// `eoinfer:integer_input`: `{"data_type": "uint8", "scale": 0.0039..., "source": "..."}`.
fn integer_input(props: &Value) -> Option<(String, f64, String)> {
    let i = props.get("eoinfer:integer_input")?;
    let scale = i
        .get("scale")?
        .as_f64()
        .filter(|s| s.is_finite() && *s != 0.0)?;
    Some((
        i.get("data_type")?.as_str()?.to_string(),
        scale,
        i.get("source")
            .and_then(Value::as_str)
            .unwrap_or("the model's manifest (eoinfer:integer_input)")
            .to_string(),
    ))
}

/// `eoinfer:sensors`, else Sentinel-2 for a manifest whose level is a Sentinel-2 product's.
fn sensors_of(props: Option<&Value>) -> Vec<String> {
    if let Some(list) = props
        .and_then(|p| p.get("eoinfer:sensors"))
        .and_then(Value::as_array)
    {
        return list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    let level = props
        .and_then(|p| p.get("eoinfer:product_level"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ["L1C", "L2A"].contains(&level) {
        vec![crate::scene::SENTINEL2.to_string()]
    } else {
        Vec::new()
    }
}

/// The probability mask of a per-pixel model (`eoinfer:kind` = `pixel`, input `[batch,
/// bands]`), `None` for an image model (input `[batch, bands, height, width]`).
fn pixel_kind(
    path: &Path,
    props: &Value,
    dim_order: &[&str],
    rank: usize,
) -> Result<Option<crate::postprocess::MaskSpec>, ModelError> {
    if props.get("eoinfer:kind").and_then(Value::as_str) == Some("pixel") {
        if dim_order != ["batch", "bands"] || rank != 2 {
            return Err(invalid(
                path,
                format!("a per-pixel model's input dim_order {dim_order:?} is not [batch, bands]"),
            ));
        }
        return mask_spec(path, props).map(Some);
    }
    if dim_order != ["batch", "bands", "height", "width"] || rank != 4 {
        return Err(invalid(
            path,
            format!(
                "input dim_order {dim_order:?} is not [batch, bands, height, width] (a per-pixel model, [batch, bands], declares \"eoinfer:kind\": \"pixel\")"
            ),
        ));
    }
    Ok(None)
}

/// The `classification:classes` of an `mlm:output` entry.
fn classes_of(path: &Path, output: &Value) -> Result<Vec<ClassInfo>, ModelError> {
    let classes_json = output
        .get("classification:classes")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "`mlm:output[0].classification:classes` is missing"))?;
    let mut classes = Vec::new();
    for c in classes_json {
        let value = c
            .get("value")
            .and_then(Value::as_u64)
            .filter(|&v| v < 255)
            .ok_or_else(|| invalid(path, "a class has no `value` in 0..=254"))?;
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(path, "a class has no `name`"))?;
        let color = c
            .get("color_hint")
            .and_then(Value::as_str)
            .and_then(parse_hex_color)
            .unwrap_or([128, 128, 128]);
        classes.push(ClassInfo {
            value: value as u8,
            name: name.to_string(),
            color,
        });
    }
    Ok(classes)
}

fn shape_of(v: &Value) -> Option<Vec<i64>> {
    v.as_array()?.iter().map(Value::as_i64).collect()
}

fn parse_hex_color(s: &str) -> Option<[u8; 3]> {
    let s = s.trim_start_matches('#');
    if s.len() != 6 {
        return None;
    }
    let c = |i: usize| u8::from_str_radix(&s[i..i + 2], 16).ok();
    Some([c(0)?, c(2)?, c(4)?])
}

impl ModelSpec {
    /// Reads and checks a manifest. Paths inside it are relative to the manifest's folder.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if !path.exists() {
            return Err(ModelError::ManifestMissing {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|source| ModelError::ManifestJson {
                path: path.to_path_buf(),
                source,
            })?;
        if crate::model::golden::is_embedding_manifest(&doc) {
            let enc = crate::model::embedding::EmbeddingSpec::from_json(path, &doc)?;
            return Ok(Self::from_encoder(&doc, enc));
        }
        Self::from_json(path, &doc)
    }

    /// The spec of an encoder: its S2 bands and scaling are the model's inputs, a head's
    /// classes its classes; blended tiles overlap by two patches unless told otherwise.
    fn from_encoder(doc: &Value, enc: crate::model::embedding::EmbeddingSpec) -> Self {
        let props = doc.get("properties");
        let num = |k: &str| props.and_then(|p| p.get(k)).and_then(Value::as_f64);
        Self {
            manifest: enc.manifest.clone(),
            id: enc.id.clone(),
            onnx: enc.onnx.clone(),
            onnx_sha256: enc.onnx_sha256.clone(),
            bands: enc.bands.clone(),
            scaling: enc.scaling.clone(),
            input_shape: Vec::new(),
            output_shape: Vec::new(),
            classes: enc.head.clone().unwrap_or_default(),
            softmax: enc.head_softmax,
            tile_size: enc.tile_size,
            overlap: num("eoinfer:overlap").map_or(2 * enc.patch_size, |v| v as usize),
            gsd: enc.gsd,
            sensors: sensors_of(props),
            product_level: props
                .and_then(|p| p.get("eoinfer:product_level"))
                .and_then(Value::as_str)
                .map(str::to_string),
            dn_scale: enc.dn_scale,
            dn_nodata: enc.dn_nodata,
            integer_input: props.and_then(integer_input),
            reference_fraction: None,
            encoder: Some(enc),
            pixel: None,
            license: license_of(props),
            attribution: attribution_of(props),
        }
    }

    /// Pixels per tile-grid unit: an encoder's tiles are whole patches (a classification
    /// head's: whole windows), other models' pixels.
    #[must_use]
    pub fn unit(&self) -> usize {
        self.encoder
            .as_ref()
            .map_or(1, |e| e.window_size.unwrap_or(e.patch_size))
    }

    /// What an encoder outputs (`None` for a single-date segmentation model).
    #[must_use]
    pub fn head_kind(&self) -> Option<crate::model::embedding::EncoderHead> {
        self.encoder.as_ref().map(|e| e.head_kind)
    }

    /// Whether the model's output is per-patch embeddings (an encoder without a head).
    #[must_use]
    pub fn embeds(&self) -> bool {
        self.head_kind() == Some(crate::model::embedding::EncoderHead::Embeddings)
    }

    fn from_json(path: &Path, doc: &Value) -> Result<Self, ModelError> {
        let props = doc
            .get("properties")
            .ok_or_else(|| invalid(path, "no `properties` object"))?;
        let id = doc
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(path, "no `id`"))?
            .to_string();
        let input = props
            .get("mlm:input")
            .and_then(|v| v.get(0))
            .ok_or_else(|| invalid(path, "no `mlm:input` entry"))?;
        let output = props
            .get("mlm:output")
            .and_then(|v| v.get(0))
            .ok_or_else(|| invalid(path, "no `mlm:output` entry"))?;

        // Band definitions (STAC 1.1 `bands`) give each input band its common name.
        let defs = band_definitions(doc);
        let band_names = input
            .get("bands")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(path, "`mlm:input[0].bands` is missing"))?;
        let mut bands = Vec::new();
        for b in band_names {
            let name = b
                .as_str()
                .or_else(|| b.get("name").and_then(Value::as_str))
                .ok_or_else(|| invalid(path, "an input band has no name"))?;
            let common_name = defs
                .iter()
                .find(|d| d.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|d| d.get("eo:common_name").and_then(Value::as_str))
                .map(str::to_string);
            bands.push(ModelBand {
                name: name.to_string(),
                common_name,
            });
        }
        if bands.is_empty() {
            return Err(invalid(path, "the model has no input bands"));
        }

        let scaling = value_scaling(path, input)?;
        if scaling.len() != bands.len() {
            return Err(invalid(
                path,
                format!(
                    "{} value_scaling entries for {} bands",
                    scaling.len(),
                    bands.len()
                ),
            ));
        }

        let input_shape = input
            .pointer("/input/shape")
            .and_then(shape_of)
            .ok_or_else(|| invalid(path, "`mlm:input[0].input.shape` is missing"))?;
        let output_shape = output
            .pointer("/result/shape")
            .and_then(shape_of)
            .ok_or_else(|| invalid(path, "`mlm:output[0].result.shape` is missing"))?;
        let dim_order: Vec<&str> = input
            .pointer("/input/dim_order")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let pixel = pixel_kind(path, props, &dim_order, input_shape.len())?;

        let classes = classes_of(path, output)?;
        if classes
            .iter()
            .enumerate()
            .any(|(i, c)| usize::from(c.value) != i)
        {
            return Err(invalid(path, "class values must be 0, 1, 2, ... in order"));
        }
        if pixel.is_some() && (classes.len() != 2 || output_shape.get(1) != Some(&1)) {
            return Err(invalid(
                path,
                "a per-pixel model with a probability mask has two classes (0 not masked, 1 \
                 masked) and one output value per pixel (result shape [-1, 1])",
            ));
        }
        let softmax = output
            .pointer("/post_processing_function/expression")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("softmax"));
        if pixel.is_some() && softmax {
            return Err(invalid(
                path,
                "a per-pixel model gives one probability per pixel; a softmax post-processing function does not apply",
            ));
        }

        let asset =
            model_asset(doc).ok_or_else(|| invalid(path, "no asset with role `mlm:model`"))?;
        let href = asset
            .get("href")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(path, "the model asset has no href"))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let onnx = base.join(href);
        let onnx_sha256 = asset
            .get("file:checksum")
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix("1220"))
            .map(str::to_string);

        let num = |k: &str| props.get(k).and_then(Value::as_f64);
        let tile_size = num("eoinfer:tile_size").map_or(
            if pixel.is_some() {
                256
            } else {
                input_shape[3].max(1) as usize
            },
            |v| v as usize,
        );
        // A per-pixel mask is exact only `reach` px inside a tile: neighbours overlap by
        // twice that at least.
        let min_overlap = pixel.map_or(0, |m| 2 * m.reach());
        Ok(Self {
            manifest: path.to_path_buf(),
            id,
            onnx,
            onnx_sha256,
            bands,
            scaling,
            input_shape,
            output_shape,
            classes,
            softmax,
            tile_size,
            overlap: num("eoinfer:overlap")
                .map_or(tile_size / 8, |v| v as usize)
                .max(min_overlap),
            gsd: num("eoinfer:gsd").or_else(|| num("gsd")).unwrap_or(10.0),
            sensors: sensors_of(Some(props)),
            product_level: props
                .get("eoinfer:product_level")
                .and_then(Value::as_str)
                .map(str::to_string),
            dn_scale: num("eoinfer:dn_scale").unwrap_or(1.0),
            dn_nodata: num("eoinfer:dn_nodata"),
            integer_input: integer_input(props),
            reference_fraction: props
                .pointer("/eoinfer:reference_tiling/overlap_fraction")
                .and_then(Value::as_f64),
            encoder: None,
            pixel,
            license: license_of(Some(props)),
            attribution: attribution_of(Some(props)),
        })
    }

    /// Channels a tile's output adds to the blend: the classes, and for a per-pixel model
    /// with a mask the mask's two decision channels before the two probability channels.
    #[must_use]
    pub fn blend_channels(&self) -> usize {
        if self.pixel.is_some() {
            2 * self.classes.len()
        } else {
            self.classes.len()
        }
    }
}

/// STAC `license` of a manifest's properties.
fn license_of(props: Option<&Value>) -> Option<String> {
    props?.get("license")?.as_str().map(str::to_string)
}

/// `eoinfer:attribution` of a manifest's properties.
fn attribution_of(props: Option<&Value>) -> Option<String> {
    props?
        .get("eoinfer:attribution")?
        .as_str()
        .map(str::to_string)
}

/// `eoinfer:post_processing` of a per-pixel model: `{"type": "probability-mask", "threshold":
/// 0.4, "average_over": 4, "dilation_size": 2}` (s2cloudless's `get_mask_from_prob`).
fn mask_spec(path: &Path, props: &Value) -> Result<crate::postprocess::MaskSpec, ModelError> {
    let pp = props.get("eoinfer:post_processing").ok_or_else(|| {
        invalid(
            path,
            "a per-pixel model (eoinfer:kind \"pixel\") needs `eoinfer:post_processing` \
             ({\"type\": \"probability-mask\", \"threshold\": ..., \"average_over\": ..., \"dilation_size\": ...})",
        )
    })?;
    let kind = pp.get("type").and_then(Value::as_str);
    if kind != Some("probability-mask") {
        return Err(invalid(
            path,
            format!("eoinfer:post_processing type {kind:?} is not supported (probability-mask)"),
        ));
    }
    let threshold = pp
        .get("threshold")
        .and_then(Value::as_f64)
        .filter(|t| (0.0..1.0).contains(t))
        .ok_or_else(|| invalid(path, "eoinfer:post_processing.threshold must be in [0, 1)"))?;
    let radius = |k: &str| -> Result<usize, ModelError> {
        pp.get(k)
            .and_then(Value::as_u64)
            .filter(|&r| r <= 64)
            .map(|r| r as usize)
            .ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "eoinfer:post_processing.{k} must be a whole number of pixels, 0 to 64"
                    ),
                )
            })
    };
    Ok(crate::postprocess::MaskSpec {
        threshold: threshold as f32,
        average_over: radius("average_over")?,
        dilation_size: radius("dilation_size")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_colours_parse() {
        assert_eq!(parse_hex_color("#ff8000"), Some([255, 128, 0]));
        assert_eq!(parse_hex_color("nope"), None);
    }

    #[test]
    fn band_definitions_come_from_the_model_asset_else_the_properties() {
        let band = |common: &str| serde_json::json!([{"name": "B02", "eo:common_name": common}]);
        let doc = serde_json::json!({
            "properties": {"bands": band("from-properties")},
            "assets": {
                "sidecar": {"roles": ["metadata"], "bands": band("from-sidecar")},
                "model": {"roles": ["mlm:model"], "bands": band("from-asset")}
            }
        });
        let common = |doc: &Value| {
            band_definitions(doc)
                .first()
                .and_then(|b| b.get("eo:common_name"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        assert_eq!(common(&doc).as_deref(), Some("from-asset"));
        // Manifests written before the bands moved to the asset.
        let old = serde_json::json!({
            "properties": {"bands": band("from-properties")},
            "assets": {"model": {"roles": ["mlm:model"]}}
        });
        assert_eq!(common(&old).as_deref(), Some("from-properties"));
        assert_eq!(band_definitions(&serde_json::json!({})).len(), 0);
    }

    #[test]
    fn a_manifest_without_input_bands_is_rejected_with_the_reason() {
        let doc =
            serde_json::json!({"id": "x", "properties": {"mlm:input": [{}], "mlm:output": [{}]}});
        let err = ModelSpec::from_json(Path::new("m.json"), &doc).expect_err("invalid");
        assert!(err.to_string().contains("bands"), "{err}");
    }
}
