//! `eoinfer model import-onnx`: a manifest for an ONNX segmentation model that carries its
//! contract in ONNX custom metadata, as the QGIS Deepness plugin and GeoDeep expect:
//! `model_type`, `class_names`, `resolution` (cm per pixel), `tiles_size`, `tiles_overlap`
//! (percent), `standardization_parameters` (`mean`, `std` after dividing 8-bit values by 255).
//! What the metadata does not say is listed in the manifest (`eoinfer:import_notes`) and
//! printed; the band order comes from `--bands` (default: red, green, blue for 3 channels).

use crate::error::ModelError;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// What `import-onnx` wrote and could not learn.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The manifest written.
    pub manifest: PathBuf,
    /// What the metadata did not say (and what was assumed instead).
    pub notes: Vec<String>,
}

/// A metadata value: JSON (Deepness writes `json.dumps` of each value) or a plain string.
fn meta_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn numbers(v: Option<&Value>) -> Option<Vec<f64>> {
    v?.as_array()?.iter().map(|x| number(Some(x))).collect()
}

/// Class names from `{"0": "a", "1": "b"}` or `["a", "b"]`.
fn class_names(v: Option<&Value>) -> Option<Vec<(u8, String)>> {
    match v? {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, n)| Some((u8::try_from(i).ok()?, n.as_str()?.to_string())))
            .collect(),
        Value::Object(o) => {
            let mut out: Vec<(u8, String)> = o
                .iter()
                .map(|(k, n)| Some((k.trim().parse().ok()?, n.as_str()?.to_string())))
                .collect::<Option<_>>()?;
            out.sort();
            Some(out)
        }
        _ => None,
    }
}

/// A distinct colour per class (class 0 grey).
fn palette(i: usize) -> &'static str {
    const COLOURS: [&str; 10] = [
        "bdbdbd", "e41a1c", "377eb8", "4daf4a", "984ea3", "ff7f00", "ffff33", "a65628", "f781bf",
        "66c2a5",
    ];
    COLOURS[i % COLOURS.len()]
}

fn err(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::ManifestInvalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// An ONNX file's input and output shapes and custom metadata.
struct OnnxFacts {
    input: Vec<i64>,
    output: Vec<i64>,
    custom: Vec<(String, String)>,
}

/// What the metadata (and the flags) say of the model.
struct Learned {
    names: Vec<String>,
    tile: i64,
    overlap: i64,
    resolution_m: f64,
    classes: Vec<(u8, String)>,
    mean: Vec<f64>,
    std: Vec<f64>,
    notes: Vec<String>,
}

/// Reads the ONNX file's shapes and custom metadata with ONNX Runtime.
fn read_onnx(onnx: &Path, ort_lib: Option<&Path>) -> Result<OnnxFacts, ModelError> {
    let lib = crate::model::runtime::find_runtime(ort_lib)?;
    let env = crate::model::runtime::init_runtime(&lib)?;
    let session = crate::model::runtime::open_session(&env, onnx, 1, crate::model::Device::Cpu)?;
    let shape = |t: &ort::value::ValueType| match t {
        ort::value::ValueType::Tensor { shape, .. } => Some(shape.to_vec()),
        _ => None,
    };
    if session.inputs().len() != 1 || session.outputs().is_empty() {
        return Err(err(
            onnx,
            format!(
                "import-onnx takes models with one input (N, C, H, W) and a class-score output; this one has {} inputs and {} outputs",
                session.inputs().len(),
                session.outputs().len()
            ),
        ));
    }
    let input = shape(session.inputs()[0].dtype()).unwrap_or_default();
    let output = shape(session.outputs()[0].dtype()).unwrap_or_default();
    let meta = session
        .metadata()
        .map_err(|e| err(onnx, format!("cannot read its metadata: {e}")))?;
    let mut custom = Vec::new();
    for k in meta.custom_keys().unwrap_or_default() {
        if let Some(v) = meta.custom(&k) {
            custom.push((k, v));
        }
    }
    custom.sort();
    Ok(OnnxFacts {
        input,
        output,
        custom,
    })
}

/// The `standardization_parameters` (`mean`, `std` per channel); none gives mean 0, std 1
/// with a note, a malformed one is an error.
fn standardisation(
    onnx: &Path,
    std_params: Option<&Value>,
    channels: usize,
    notes: &mut Vec<String>,
) -> Result<(Vec<f64>, Vec<f64>), ModelError> {
    let mean = numbers(std_params.and_then(|v| v.get("mean")));
    let std = numbers(std_params.and_then(|v| v.get("std")));
    match (std_params.is_some(), mean, std) {
        (_, Some(m), Some(s))
            if m.len() == channels
                && s.len() == channels
                && s.iter().all(|v| v.is_finite() && *v > 0.0) =>
        {
            Ok((m, s))
        }
        (false, _, _) => {
            notes.push(
                "no standardization_parameters: values / 255 go in unchanged (mean 0, std 1)"
                    .into(),
            );
            Ok((vec![0.0; channels], vec![1.0; channels]))
        }
        (true, _, _) => Err(err(
            onnx,
            format!(
                "its standardization_parameters need `mean` and `std` with {channels} numbers each (std above 0); fix the metadata"
            ),
        )),
    }
}

/// What the metadata says, checked against the shapes; `bands` and `gsd` fill in.
fn learn(
    onnx: &Path,
    facts: &OnnxFacts,
    bands: Option<&str>,
    gsd: Option<f64>,
) -> Result<Learned, ModelError> {
    let OnnxFacts {
        input,
        output,
        custom,
    } = facts;
    let meta = |k: &str| {
        custom
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| meta_value(v))
    };
    let mut notes = Vec::new();
    if input.len() != 4 || output.len() != 4 {
        return Err(err(
            onnx,
            format!(
                "import-onnx takes segmentation models with input (N, C, H, W) and output (N, classes, H, W); this one has input {input:?} and output {output:?}"
            ),
        ));
    }
    let kind = meta("model_type")
        .and_then(|v| v.as_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if !(kind.is_empty() || kind.starts_with("segment")) {
        return Err(err(
            onnx,
            format!(
                "its model_type is {kind:?}; import-onnx imports segmentation models (Segmentor)"
            ),
        ));
    }
    if kind.is_empty() {
        notes.push("no model_type: taken as a segmentation model".into());
    }
    let channels = usize::try_from(input[1]).map_err(|_| {
        err(
            onnx,
            "its input's channel count is dynamic; a fixed C is needed",
        )
    })?;
    let names: Vec<String> = match bands {
        Some(b) => b
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        None if channels == 3 => {
            notes.push("the metadata does not name the input channels: taken as red, green, blue (the Deepness convention); pass --bands to change".into());
            vec!["red".into(), "green".into(), "blue".into()]
        }
        None => {
            return Err(err(
                onnx,
                format!(
                    "its input has {channels} channels and its metadata does not name them; pass --bands with {channels} names in input order (e.g. red,green,blue,nir)"
                ),
            ));
        }
    };
    if names.len() != channels {
        return Err(err(
            onnx,
            format!(
                "--bands names {} bands, but the input has {channels} channels",
                names.len()
            ),
        ));
    }
    let tile = meta("tiles_size")
        .and_then(|v| number(Some(&v)))
        .map(|v| v as i64)
        .or_else(|| (input[2] > 0).then_some(input[2]))
        .unwrap_or_else(|| {
            notes.push("no tiles_size and a dynamic input size: tiles of 512 px".into());
            512
        });
    if tile <= 0 || (input[2] > 0 && input[2] != tile) || (input[3] > 0 && input[3] != tile) {
        return Err(err(
            onnx,
            format!(
                "its tiles_size {tile} does not fit its input {input:?} (square tiles of at least 1 px, the input's height and width where fixed)"
            ),
        ));
    }
    let overlap_pct = meta("tiles_overlap").and_then(|v| number(Some(&v)));
    if overlap_pct.is_none() {
        notes.push("no tiles_overlap: 10 % overlap".into());
    }
    let overlap = ((tile as f64) * overlap_pct.unwrap_or(10.0) / 100.0).round() as i64;
    let resolution_m = meta("resolution")
        .and_then(|v| number(Some(&v)))
        .map(|cm| cm / 100.0)
        .or(gsd);
    let Some(resolution_m) = resolution_m else {
        return Err(err(
            onnx,
            "its metadata has no resolution (cm per pixel) and --gsd was not given; pass --gsd with the pixel size in metres the model was trained at",
        ));
    };
    let classes_n = usize::try_from(output[1]).map_err(|_| {
        err(
            onnx,
            "its output's class count is dynamic; a fixed count is needed",
        )
    })?;
    let classes = match class_names(meta("class_names").as_ref()) {
        Some(c) if c.len() == classes_n => c,
        other => {
            notes.push(format!(
                "class_names {} for {classes_n} output channels: classes named class_0 ...",
                if other.is_some() {
                    "do not match"
                } else {
                    "missing"
                }
            ));
            (0..classes_n)
                .map(|i| (u8::try_from(i).unwrap_or(u8::MAX), format!("class_{i}")))
                .collect()
        }
    };
    let (mean, std) = standardisation(
        onnx,
        meta("standardization_parameters").as_ref(),
        channels,
        &mut notes,
    )?;
    notes.push("the sensor and product level are not in the metadata: any scene is taken (its bands must carry the names above, e.g. a GeoTIFF's red/green/blue colour interpretation)".into());
    Ok(Learned {
        names,
        tile,
        overlap,
        resolution_m,
        classes,
        mean,
        std,
        notes,
    })
}

/// Writes a manifest for `onnx` from its custom metadata; `bands` names its input channels
/// (STAC common names), `gsd` gives the resolution when the metadata does not.
pub fn import(
    onnx: &Path,
    bands: Option<&str>,
    gsd: Option<f64>,
    out: Option<&Path>,
    ort_lib: Option<&Path>,
) -> Result<Imported, ModelError> {
    if !onnx.is_file() {
        return Err(ModelError::OnnxMissing {
            path: onnx.to_path_buf(),
            manifest: out.map_or_else(|| onnx.with_extension("json"), Path::to_path_buf),
        });
    }
    let facts = read_onnx(onnx, ort_lib)?;
    let learned = learn(onnx, &facts, bands, gsd)?;
    let sha = crate::util::sha256_file(onnx).map_err(|source| ModelError::ManifestRead {
        path: onnx.to_path_buf(),
        source,
    })?;
    let manifest = out.map_or_else(|| onnx.with_extension("json"), Path::to_path_buf);
    let href = crate::util::relative_path(
        &std::path::absolute(onnx).unwrap_or_else(|_| onnx.to_path_buf()),
        std::path::absolute(&manifest)
            .unwrap_or_else(|_| manifest.clone())
            .parent()
            .unwrap_or(Path::new(".")),
    );
    let stem = onnx
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let doc = manifest_doc(&stem, &href, &sha, &learned, &facts.custom);
    crate::model::ukis::write_checked(&manifest, &doc)?;
    Ok(Imported {
        manifest,
        notes: learned.notes,
    })
}

/// The manifest of an imported model.
fn manifest_doc(
    stem: &str,
    href: &str,
    sha: &str,
    l: &Learned,
    custom: &[(String, String)],
) -> Value {
    let Learned {
        names,
        tile,
        overlap,
        resolution_m,
        classes,
        mean,
        std,
        notes,
    } = l;
    let (channels, classes_n) = (names.len(), classes.len());
    let band_defs: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "eo:common_name": n}))
        .collect();
    let doc = json!({
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            crate::model::manifest::MLM_SCHEMA,
            crate::model::validate::EO_SCHEMA,
            crate::model::validate::FILE_SCHEMA,
            crate::model::validate::CLASSIFICATION_SCHEMA
        ],
        "id": stem,
        "geometry": null,
        "properties": {
            "datetime": null,
            "start_datetime": "1970-01-01T00:00:00Z",
            "end_datetime": "2100-01-01T00:00:00Z",
            "description": format!("{stem}: segmentation model imported by `eoinfer model import-onnx` from its ONNX custom metadata (Deepness / GeoDeep keys)."),
            "mlm:name": stem,
            "mlm:architecture": "unknown",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:framework": "ONNX",
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": false,
            "mlm:pretrained": true,
            "mlm:pretrained_source": "ONNX custom metadata",
            "bands": band_defs.clone(),
            "gsd": resolution_m,
            "mlm:input": [{
                "name": "image",
                "bands": names,
                "input": {
                    "shape": [-1, channels, tile, tile],
                    "dim_order": ["batch", "bands", "height", "width"],
                    "data_type": "float32"
                },
                "value_scaling": mean.iter().zip(std.iter()).map(|(m, s)| json!({"type": "z-score", "mean": m, "stddev": s})).collect::<Vec<_>>(),
                "resize_type": null,
                "pre_processing_function": null
            }],
            "mlm:output": [{
                "name": "class scores",
                "tasks": ["semantic-segmentation"],
                "result": {
                    "shape": [-1, classes_n, tile, tile],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32"
                },
                "classification:classes": classes.iter().enumerate().map(|(i, (v, n))| json!({"value": v, "name": n, "description": format!("{n} (class_names of the ONNX metadata)"), "color_hint": palette(i)})).collect::<Vec<_>>(),
                "post_processing_function": null
            }],
            "eoinfer:gsd": resolution_m,
            "eoinfer:tile_size": tile,
            "eoinfer:overlap": overlap,
            "eoinfer:integer_input": {"data_type": "uint8", "scale": 1.0 / 255.0, "source": "Deepness convention: 8-bit values / 255"},
            "eoinfer:import_notes": notes,
            "eoinfer:onnx_metadata": custom.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>()
        },
        "links": [],
        "assets": {
            "model": crate::model::manifest::model_asset_json(href, &format!("{stem}.onnx"), sha, &band_defs)
        }
    });
    doc
}
