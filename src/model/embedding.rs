//! Embedding models (OlmoEarth): the manifest read into an [`EmbeddingSpec`] (bands and
//! their wavelengths, normalisation, patch size, embedding size, time steps, missing-band rule).

use crate::error::ModelError;
use crate::model::ModelBand;
use crate::normalize::ValueScaling;
use crate::scene::MissingBands;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A second modality's input (Sentinel-1 vv, vh).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SecondInput {
    /// ONNX input name.
    pub name: String,
    /// Bands in model order.
    pub bands: Vec<ModelBand>,
    /// Normalisation per band.
    pub scaling: Vec<ValueScaling>,
}

/// What an encoder's ONNX model outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderHead {
    /// No head: embeddings per patch `[B, D, H/p, W/p]`.
    Embeddings,
    /// Class scores per pixel `[B, K, H, W]`.
    Segmentation,
    /// One value per pixel `[B, 1, H, W]`.
    Regression,
    /// Class scores per window `[B, K]`.
    Classification,
}

/// The value a regression head predicts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegressionSpec {
    /// What the value is (`canopy_height`).
    pub name: String,
    /// Its unit (`m`).
    pub unit: String,
    /// The value written where there is no prediction.
    pub nodata: f64,
    /// The expected range: the colour ramp's ends.
    pub range: [f64; 2],
}

/// Everything eoinfer needs to run an embedding model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddingSpec {
    /// The manifest file.
    pub manifest: PathBuf,
    /// STAC Item id.
    pub id: String,
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Expected sha256 of the ONNX file.
    pub onnx_sha256: Option<String>,
    /// Sentinel-2 input bands in model order.
    pub bands: Vec<ModelBand>,
    /// Centre wavelength of each band (µm).
    pub wavelengths: Vec<Option<f64>>,
    /// Normalisation per band.
    pub scaling: Vec<ValueScaling>,
    /// The Sentinel-1 input (vv, vh in dB), when the model takes one.
    pub sentinel1: Option<SecondInput>,
    /// Patch size in pixels.
    pub patch_size: usize,
    /// Embedding size D.
    pub embedding_dim: usize,
    /// Most time steps the model takes.
    pub max_time_steps: usize,
    /// Default tile edge in pixels (a multiple of the patch size).
    pub tile_size: usize,
    /// Input ground sample distance in metres.
    pub gsd: f64,
    /// Integer DN -> model units.
    pub dn_scale: f64,
    /// Floating-point reflectance -> model units.
    pub reflectance_scale: f64,
    /// DN meaning no data.
    pub dn_nodata: Option<f64>,
    /// The version's rule for bands the scene lacks.
    pub missing: MissingBands,
    /// Model version (v1, v1.1, v1.2).
    pub version: String,
    /// Whether the weights are random (a test model).
    pub random_weights: bool,
    /// Classes of a segmentation head exported with the encoder (output: class logits per
    /// pixel); `None` for a plain encoder (output: embeddings per patch).
    pub head: Option<Vec<crate::model::ClassInfo>>,
    /// Whether the head's output needs a softmax.
    pub head_softmax: bool,
    /// What the ONNX model outputs.
    pub head_kind: EncoderHead,
    /// A regression head's value.
    pub regression: Option<RegressionSpec>,
    /// A classification head's window edge in pixels (one label per window).
    pub window_size: Option<usize>,
    /// Whether the model takes the acquisition dates (`timestamps [B, T, 3]`); a model
    /// without that input numbers its steps itself (rslearn's legacy timestamps).
    pub timestamps_input: bool,
    /// The temporal contract of a task model (`eoinfer:temporal`).
    pub temporal: Option<crate::model::temporal::TemporalContract>,
}

fn invalid(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::ManifestInvalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The model bands of the `s2` input with their common names and centre wavelengths.
fn s2_bands(
    path: &Path,
    doc: &Value,
    s2: &Value,
) -> Result<(Vec<ModelBand>, Vec<Option<f64>>), ModelError> {
    let defs = crate::model::manifest::band_definitions(doc);
    let mut bands = Vec::new();
    let mut wavelengths = Vec::new();
    for b in s2
        .get("bands")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "the s2 input has no bands"))?
    {
        let name = b
            .as_str()
            .ok_or_else(|| invalid(path, "a band name is not a string"))?;
        let def = defs
            .iter()
            .find(|d| d.get("name").and_then(Value::as_str) == Some(name));
        bands.push(ModelBand {
            name: name.to_string(),
            common_name: def
                .and_then(|d| d.get("eo:common_name"))
                .and_then(Value::as_str)
                .map(str::to_string),
        });
        wavelengths.push(
            def.and_then(|d| d.get("eo:center_wavelength"))
                .and_then(Value::as_f64),
        );
    }
    Ok((bands, wavelengths))
}

/// The head a manifest declares (`eoinfer:head`; none: embeddings).
fn head_kind_of(path: &Path, props: &Value) -> Result<EncoderHead, ModelError> {
    Ok(match props.get("eoinfer:head").and_then(Value::as_str) {
        None => EncoderHead::Embeddings,
        Some("segmentation") => EncoderHead::Segmentation,
        Some("regression") => EncoderHead::Regression,
        Some("classification") => EncoderHead::Classification,
        Some(other) => {
            return Err(invalid(
                path,
                format!(
                    "`eoinfer:head` `{other}` is not segmentation, regression or classification"
                ),
            ));
        }
    })
}

/// A task model's temporal contract (`eoinfer:temporal`), checked.
fn temporal_of(
    path: &Path,
    props: &Value,
) -> Result<Option<crate::model::temporal::TemporalContract>, ModelError> {
    let Some(t) = props.get("eoinfer:temporal") else {
        return Ok(None);
    };
    let t: crate::model::temporal::TemporalContract = serde_json::from_value(t.clone())
        .map_err(|e| invalid(path, format!("`eoinfer:temporal`: {e}")))?;
    let groups: usize = t.groups.iter().map(|g| g.time_steps).sum();
    if t.time_steps == 0 || (!t.groups.is_empty() && groups != t.time_steps) {
        return Err(invalid(
            path,
            "`eoinfer:temporal`: time_steps must be positive and equal the groups' steps",
        ));
    }
    Ok(Some(t))
}

/// The `s1` input: its bands and their scaling.
fn sentinel1_input(path: &Path, i: &Value) -> Result<SecondInput, ModelError> {
    let bands: Vec<ModelBand> = i
        .get("bands")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|n| ModelBand {
                    name: n.to_string(),
                    common_name: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let scaling = crate::model::manifest::value_scaling(path, i)?;
    if bands.is_empty() || scaling.len() != bands.len() {
        return Err(invalid(
            path,
            "the s1 input needs bands and one value_scaling entry per band",
        ));
    }
    Ok(SecondInput {
        name: "s1".into(),
        bands,
        scaling,
    })
}

/// The classes of a head (`mlm:output[0]` `classification:classes`) with their colours.
fn head_classes(path: &Path, props: &Value) -> Result<Vec<crate::model::ClassInfo>, ModelError> {
    let classes = props
        .pointer("/mlm:output/0/classification:classes")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(path, "the head has no classification:classes"))?;
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let hex = c
                .get("color_hint")
                .and_then(Value::as_str)
                .unwrap_or("808080");
            let byte =
                |k: usize| u8::from_str_radix(hex.get(k..k + 2).unwrap_or("80"), 16).unwrap_or(128);
            Ok(crate::model::ClassInfo {
                value: u8::try_from(i).map_err(|_| invalid(path, "more than 255 classes"))?,
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("class")
                    .to_string(),
                color: [byte(0), byte(2), byte(4)],
            })
        })
        .collect()
}

impl EmbeddingSpec {
    /// Whether the model's time axis runs newest first (its temporal contract says so).
    #[must_use]
    pub fn newest_first(&self) -> bool {
        self.temporal
            .as_ref()
            .is_some_and(crate::model::temporal::TemporalContract::newest_first)
    }

    /// Reads an embedding manifest (`eoinfer:kind` = `embedding`).
    pub fn from_json(path: &Path, doc: &Value) -> Result<Self, ModelError> {
        let props = doc
            .get("properties")
            .ok_or_else(|| invalid(path, "no `properties`"))?;
        let inputs = props
            .get("mlm:input")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(path, "no `mlm:input`"))?;
        let s2 = inputs
            .iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some("s2"))
            .ok_or_else(|| invalid(path, "no `s2` input"))?;
        let (bands, wavelengths) = s2_bands(path, doc, s2)?;
        let scaling = crate::model::manifest::value_scaling(path, s2)?;
        if scaling.len() != bands.len() || bands.is_empty() {
            return Err(invalid(
                path,
                "the s2 input needs one value_scaling entry per band",
            ));
        }
        let href = doc
            .pointer("/assets/model/href")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(path, "the model asset has no href"))?;
        let int = |k: &str| props.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let patch_size =
            int("eoinfer:patch_size").ok_or_else(|| invalid(path, "no `eoinfer:patch_size`"))?;
        let tile_size = int("eoinfer:tile_size").unwrap_or(8 * patch_size);
        if patch_size == 0 || tile_size % patch_size != 0 {
            return Err(invalid(
                path,
                "`eoinfer:tile_size` must be a multiple of `eoinfer:patch_size`",
            ));
        }
        let head_kind = head_kind_of(path, props)?;
        let regression = (head_kind == EncoderHead::Regression)
            .then(|| {
                props
                    .get("eoinfer:regression")
                    .cloned()
                    .and_then(|v| serde_json::from_value::<RegressionSpec>(v).ok())
                    .filter(|r| r.nodata.is_finite() && r.range[0] < r.range[1])
                    .ok_or_else(|| {
                        invalid(
                            path,
                            "a regression head needs `eoinfer:regression` {name, unit, nodata, range: [low, high]}",
                        )
                    })
            })
            .transpose()?;
        let window_size = (head_kind == EncoderHead::Classification)
            .then(|| {
                int("eoinfer:window_size")
                    .filter(|&w| w > 0 && w % patch_size == 0)
                    .ok_or_else(|| {
                        invalid(
                            path,
                            "a classification head needs `eoinfer:window_size`, a multiple of the patch size",
                        )
                    })
            })
            .transpose()?;
        let dn_scale = props
            .get("eoinfer:dn_scale")
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        Ok(Self {
            manifest: path.to_path_buf(),
            id: doc
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            onnx: path.parent().unwrap_or_else(|| Path::new(".")).join(href),
            onnx_sha256: doc
                .pointer("/assets/model/file:checksum")
                .and_then(Value::as_str)
                .and_then(|c| c.strip_prefix("1220"))
                .map(str::to_string),
            bands,
            wavelengths,
            scaling,
            sentinel1: inputs
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some("s1"))
                .map(|i| sentinel1_input(path, i))
                .transpose()?,
            patch_size,
            embedding_dim: int("eoinfer:embedding_dim")
                .ok_or_else(|| invalid(path, "no `eoinfer:embedding_dim`"))?,
            max_time_steps: int("eoinfer:max_time_steps").unwrap_or(12),
            tile_size,
            gsd: props
                .get("eoinfer:gsd")
                .and_then(Value::as_f64)
                .unwrap_or(10.0),
            dn_scale,
            // Models that take DN (dn_scale 1) get reflectance inputs multiplied by 10000.
            reflectance_scale: props
                .get("eoinfer:reflectance_scale")
                .and_then(Value::as_f64)
                .unwrap_or(if (dn_scale - 1.0).abs() < f64::EPSILON {
                    10_000.0
                } else {
                    1.0
                }),
            dn_nodata: props.get("eoinfer:dn_nodata").and_then(Value::as_f64),
            missing: match props.get("eoinfer:missing_bands").and_then(Value::as_str) {
                Some("nearest-wavelength") => MissingBands::NearestWavelength,
                Some("zero-after-normalisation") => MissingBands::ZeroAfterNormalisation,
                _ => MissingBands::Error,
            },
            version: props
                .get("eoinfer:model_version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            random_weights: props
                .get("eoinfer:random_weights")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            head: props
                .get("eoinfer:head")
                .and_then(Value::as_str)
                .filter(|_| head_kind != EncoderHead::Regression)
                .map(|_| head_classes(path, props))
                .transpose()?,
            head_softmax: props
                .pointer("/mlm:output/0/post_processing_function/expression")
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains("softmax")),
            head_kind,
            regression,
            window_size,
            timestamps_input: inputs
                .iter()
                .any(|i| i.get("name").and_then(Value::as_str) == Some("timestamps")),
            temporal: temporal_of(path, props)?,
        })
    }

    /// The stack request of the Sentinel-1 input: vv, vh in dB, every band required.
    #[must_use]
    pub fn stack_request_s1(&self) -> Option<crate::scene::StackRequest> {
        self.sentinel1
            .as_ref()
            .map(|s1| crate::scene::StackRequest {
                bands: s1.bands.clone(),
                wavelengths: vec![None; s1.bands.len()],
                gsd: self.gsd,
                dn_scale: 1.0,
                float_scale: 1.0,
                dn_nodata: None,
                missing: MissingBands::Error,
                grid: None,
                expect: crate::scene::Expectation::default(),
                integer_input: None,
                quantity: "Sentinel-1 backscatter in dB",
            })
    }

    /// The stack request of this model's Sentinel-2 input.
    #[must_use]
    pub fn stack_request(&self) -> crate::scene::StackRequest {
        crate::scene::StackRequest {
            bands: self.bands.clone(),
            wavelengths: self.wavelengths.clone(),
            gsd: self.gsd,
            dn_scale: self.dn_scale,
            float_scale: self.reflectance_scale,
            dn_nodata: self.dn_nodata,
            missing: self.missing,
            grid: None,
            expect: crate::scene::Expectation::default(),
            integer_input: None,
            quantity: crate::scene::REFLECTANCE,
        }
    }
}
