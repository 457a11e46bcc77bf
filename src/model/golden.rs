//! Embedding models (OlmoEarth): the manifest's model asset loaded into ONNX Runtime, its
//! inputs and output checked against the manifest, and a golden check: the ONNX model run on
//! the real input window `models/olmoearth/export.py` saved, compared with PyTorch's output.

use crate::error::ModelError;
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorRef, ValueType};
use serde_json::Value;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Figures of a golden check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GoldenReport {
    /// The ONNX model.
    pub onnx: PathBuf,
    /// Largest absolute difference to PyTorch's output.
    pub max_abs: f64,
    /// Smallest cosine similarity between eoinfer's and PyTorch's embedding of one patch.
    pub min_cosine: f64,
    /// Number of patches compared.
    pub patches: usize,
    /// Output shape.
    pub shape: Vec<usize>,
}

fn invalid(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::ManifestInvalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Whether a manifest describes an embedding model (`eoinfer:kind` = `embedding`).
#[must_use]
pub fn is_embedding_manifest(doc: &Value) -> bool {
    doc.pointer("/properties/eoinfer:kind")
        .and_then(Value::as_str)
        == Some("embedding")
}

/// Opens the embedding model a manifest names and checks that its inputs and output are the
/// manifest's (names, ranks, band counts, embedding size).
pub fn open_embedding_model(
    env: &ort::environment::Environment,
    manifest: &Path,
    doc: &Value,
    threads: usize,
    device: crate::model::Device,
) -> Result<(Session, PathBuf), ModelError> {
    let href = doc
        .pointer("/assets/model/href")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(manifest, "the model asset has no href"))?;
    let onnx = manifest
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(href);
    if !onnx.is_file() {
        return Err(ModelError::OnnxMissing {
            path: onnx,
            manifest: manifest.to_path_buf(),
        });
    }
    if compute_dtype(doc) == "bfloat16" && device == crate::model::Device::Cpu {
        return Err(ModelError::Unsupported {
            manifest: manifest.to_path_buf(),
            device: device.to_string(),
            what: "it computes in bfloat16, which ONNX Runtime's CPU provider cannot run (it has no bfloat16 kernels for its Add, MatMul, attention, ...); run it with --device cuda:N, or use the float32 or float16 export on the CPU".into(),
        });
    }
    let session = crate::model::runtime::open_session(env, &onnx, threads, device)?;
    let mismatch = |what: String| ModelError::ShapeMismatch {
        manifest: manifest.to_path_buf(),
        onnx: onnx.clone(),
        what,
    };
    let inputs = doc
        .pointer("/properties/mlm:input")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(manifest, "no `mlm:input`"))?;
    for spec in inputs {
        let name = spec
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(manifest, "an input has no name"))?;
        let shape: Vec<i64> = spec
            .pointer("/input/shape")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .ok_or_else(|| invalid(manifest, format!("input {name} has no shape")))?;
        let outlet = session
            .inputs()
            .iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| mismatch(format!("the ONNX model has no input `{name}`")))?;
        let ValueType::Tensor { shape: got, .. } = outlet.dtype() else {
            return Err(mismatch(format!("input `{name}` is not a tensor")));
        };
        let ok = got.len() == shape.len()
            && got
                .iter()
                .zip(&shape)
                .all(|(&a, &b)| a < 0 || b < 0 || a == b);
        if !ok {
            return Err(mismatch(format!(
                "input `{name}`: manifest {shape:?}, ONNX {:?}",
                &got[..]
            )));
        }
    }
    // A model with a head outputs one channel per class (a classification head: one row
    // per window) or one value (regression), else the embedding.
    let head = doc
        .pointer("/properties/eoinfer:head")
        .and_then(Value::as_str);
    let dim = if head == Some("regression") {
        Some(1)
    } else {
        doc.pointer("/properties/mlm:output/0/classification:classes")
            .and_then(Value::as_array)
            .map(|c| c.len() as i64)
            .or_else(|| {
                doc.pointer("/properties/eoinfer:embedding_dim")
                    .and_then(Value::as_i64)
            })
    };
    let rank = if head == Some("classification") { 2 } else { 4 };
    let out = session
        .outputs()
        .first()
        .ok_or_else(|| mismatch("the ONNX model has no output".into()))?;
    if let (ValueType::Tensor { shape, .. }, Some(dim)) = (out.dtype(), dim) {
        if shape.len() != rank || (shape[1] >= 0 && shape[1] != dim) {
            return Err(mismatch(format!(
                "output: ONNX {:?}, manifest: rank {rank} with {dim} channels",
                &shape[..]
            )));
        }
    }
    Ok((session, onnx))
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    Ok(std::fs::read(path)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_i32(path: &Path) -> std::io::Result<Vec<i32>> {
    Ok(std::fs::read(path)?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The precision a model computes in (`eoinfer:compute_dtype`, default float32).
#[must_use]
pub fn compute_dtype(doc: &Value) -> &str {
    doc.pointer("/properties/eoinfer:compute_dtype")
        .and_then(Value::as_str)
        .unwrap_or("float32")
}

/// The golden tolerance of a model: (min cosine per patch, max abs). float32 models are held
/// to 0.99999 and 1e-4; a reduced-precision export (float16, bfloat16) to the `tolerance` its
/// golden data records, which its export measured and justified.
#[must_use]
pub fn tolerance(doc: &Value, dir: &Path) -> (f64, f64) {
    const FLOAT32: (f64, f64) = (0.99999, 1e-4);
    if compute_dtype(doc) == "float32" {
        return FLOAT32;
    }
    let meta: Option<Value> = std::fs::read_to_string(dir.join("golden.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let get = |k: &str| {
        meta.as_ref()
            .and_then(|m| m.pointer(&format!("/tolerance/{k}")))
            .and_then(Value::as_f64)
    };
    (
        get("min_cosine").unwrap_or(FLOAT32.0),
        get("max_abs").unwrap_or(FLOAT32.1),
    )
}

/// Runs the model on the golden inputs in `dir` (`golden.json` + raw little-endian arrays)
/// and compares its output with the saved PyTorch output `features`.
pub fn check_golden(
    session: &mut Session,
    onnx: &Path,
    dir: &Path,
) -> Result<GoldenReport, ModelError> {
    let meta_path = dir.join("golden.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|source| ModelError::ManifestRead {
        path: meta_path.clone(),
        source,
    })?;
    let meta: Value = serde_json::from_str(&text).map_err(|source| ModelError::ManifestJson {
        path: meta_path.clone(),
        source,
    })?;
    let arrays = meta
        .get("arrays")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(&meta_path, "no `arrays`"))?;
    let array = |name: &str| -> Result<(Vec<usize>, String, PathBuf), ModelError> {
        let a = arrays
            .get(name)
            .ok_or_else(|| invalid(&meta_path, format!("no array `{name}`")))?;
        let shape = a
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as usize)
                    .collect()
            })
            .ok_or_else(|| invalid(&meta_path, format!("array `{name}` has no shape")))?;
        let dtype = a
            .get("dtype")
            .and_then(Value::as_str)
            .unwrap_or("float32")
            .to_string();
        let file = dir.join(a.get("file").and_then(Value::as_str).unwrap_or_default());
        Ok((shape, dtype, file))
    };
    let io = |path: &Path, source| ModelError::ManifestRead {
        path: path.to_path_buf(),
        source,
    };
    let names: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let mut floats: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut ints: Vec<(String, Vec<usize>, Vec<i32>)> = Vec::new();
    for name in &names {
        let (shape, dtype, file) = array(name)?;
        match dtype.as_str() {
            "float32" => floats.push((
                name.clone(),
                shape,
                read_f32(&file).map_err(|e| io(&file, e))?,
            )),
            "int32" => ints.push((
                name.clone(),
                shape,
                read_i32(&file).map_err(|e| io(&file, e))?,
            )),
            other => {
                return Err(invalid(
                    &meta_path,
                    format!("array `{name}` has dtype {other}; expected float32 or int32"),
                ));
            }
        }
    }
    let run_err = |m: String| ModelError::Inference {
        path: onnx.to_path_buf(),
        message: m,
    };
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for (name, shape, data) in &floats {
        let t = TensorRef::from_array_view((shape.clone(), data.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        inputs.push((Cow::Owned(name.clone()), t.into()));
    }
    for (name, shape, data) in &ints {
        let t = TensorRef::from_array_view((shape.clone(), data.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        inputs.push((Cow::Owned(name.clone()), t.into()));
    }
    let outputs = session.run(inputs).map_err(|e| run_err(e.to_string()))?;
    let (shape, got) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| run_err(e.to_string()))?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let (ref_shape, _, ref_file) = array("features")?;
    if ref_shape != shape {
        return Err(run_err(format!(
            "output shape {shape:?}, PyTorch's {ref_shape:?}"
        )));
    }
    let reference = read_f32(&ref_file).map_err(|e| io(&ref_file, e))?;
    // Per patch cosine over the channels; a class-score row [B, K] is one patch of K
    // channels, a one-channel map is compared as one vector per sample.
    let (b, d, h, w) = match shape[..] {
        [b, k] => (b, k, 1, 1),
        [b, 1, h, w] => (b, h * w, 1, 1),
        [b, d, h, w] => (b, d, h, w),
        _ => {
            return Err(run_err(format!(
                "output shape {shape:?} is not [B, K] or [B, C, H, W]"
            )));
        }
    };
    let mut max_abs = 0.0_f64;
    let mut min_cosine = f64::INFINITY;
    for bi in 0..b {
        for p in 0..h * w {
            let (mut dot, mut na, mut nb) = (0.0_f64, 0.0_f64, 0.0_f64);
            for k in 0..d {
                let i = (bi * d + k) * h * w + p;
                let (x, y) = (f64::from(got[i]), f64::from(reference[i]));
                max_abs = max_abs.max((x - y).abs());
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            min_cosine = min_cosine.min(dot / (na.sqrt() * nb.sqrt()).max(1e-30));
        }
    }
    Ok(GoldenReport {
        onnx: onnx.to_path_buf(),
        max_abs,
        min_cosine,
        patches: b * h * w,
        shape,
    })
}
