//! `eoinfer model import-ukis`: STAC MLM manifests generated from the JSON sidecars that
//! ukis-csmask ships beside its ONNX models (DLR, Apache-2.0).

use crate::error::ModelError;
use crate::model::manifest::MLM_SCHEMA;
use crate::model::validate::{CLASSIFICATION_SCHEMA, EO_SCHEMA, FILE_SCHEMA};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Sentinel-2 band id, STAC common name and centre wavelength (µm) of the bands the
/// ukis-csmask sidecars name.
const S2_BANDS: [(&str, &str, f64); 6] = [
    ("blue", "B02", 0.49),
    ("green", "B03", 0.56),
    ("red", "B04", 0.665),
    ("nir", "B08", 0.842),
    ("swir16", "B11", 1.61),
    ("swir22", "B12", 2.19),
];

/// The four models of ukis-csmask 1.0.0.
pub const UKIS_MODELS: [&str; 4] = ["4b_l1c", "4b_l2a", "6b_l1c", "6b_l2a"];

fn sidecar_err(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Sidecar {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The band names and the per-band means and standard deviations of a sidecar's
/// `data.dataset_statistics`.
#[allow(clippy::type_complexity)]
fn statistics<'a>(
    sidecar_path: &Path,
    data: &'a Value,
) -> Result<(Vec<&'a str>, Vec<f64>, Vec<f64>), ModelError> {
    let stats = data
        .get("dataset_statistics")
        .ok_or_else(|| sidecar_err(sidecar_path, "no `data.dataset_statistics`"))?;
    let names: Vec<&str> = stats
        .get("band_names")
        .and_then(Value::as_array)
        .ok_or_else(|| sidecar_err(sidecar_path, "no band_names"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let img = stats
        .get("img")
        .and_then(Value::as_array)
        .ok_or_else(|| sidecar_err(sidecar_path, "no img statistics"))?;
    let col = |i: usize| -> Result<Vec<f64>, ModelError> {
        img.get(i)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .ok_or_else(|| {
                sidecar_err(sidecar_path, "img statistics are not [[mean...], [std...]]")
            })
    };
    let (mean, std) = (col(0)?, col(1)?);
    if mean.len() != names.len() || std.len() != names.len() {
        return Err(sidecar_err(
            sidecar_path,
            "statistics and band_names differ in length",
        ));
    }
    Ok((names, mean, std))
}

/// Builds the manifest of one ukis-csmask model from its sidecar.
/// `onnx_href` is the ONNX path as the manifest will reference it; `sha256` its checksum.
pub fn manifest_from_sidecar(
    variant: &str,
    sidecar_path: &Path,
    sidecar: &Value,
    onnx_href: &str,
    sha256: &str,
) -> Result<Value, ModelError> {
    let data = sidecar
        .get("data")
        .ok_or_else(|| sidecar_err(sidecar_path, "no `data` object"))?;
    let (names, mean, std) = statistics(sidecar_path, data)?;
    let n_classes = data
        .get("classes")
        .and_then(Value::as_u64)
        .ok_or_else(|| sidecar_err(sidecar_path, "no `classes`"))?;
    if n_classes != 3 {
        return Err(sidecar_err(
            sidecar_path,
            format!("expected 3 classes, found {n_classes}"),
        ));
    }
    let size: Vec<i64> = data
        .get("target_size")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .filter(|v: &Vec<i64>| v.len() == 2)
        .ok_or_else(|| sidecar_err(sidecar_path, "no target_size [h, w]"))?;
    let model = sidecar.get("model").cloned().unwrap_or(Value::Null);
    let version = model
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let level = if variant.ends_with("l2a") {
        "L2A"
    } else {
        "L1C"
    };

    let mut band_defs = Vec::new();
    let mut band_ids = Vec::new();
    for n in &names {
        let (_, id, wl) = S2_BANDS
            .iter()
            .find(|(c, _, _)| c == n)
            .ok_or_else(|| sidecar_err(sidecar_path, format!("unknown band name {n}")))?;
        band_ids.push(*id);
        band_defs.push(json!({"name": id, "eo:common_name": n, "eo:center_wavelength": wl}));
    }
    let scaling: Vec<Value> = mean
        .iter()
        .zip(&std)
        .map(|(m, s)| json!({"type": "z-score", "mean": m, "stddev": s}))
        .collect();
    let bands_n = names.len() as i64;
    Ok(json!({
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            MLM_SCHEMA,
            EO_SCHEMA,
            FILE_SCHEMA,
            CLASSIFICATION_SCHEMA
        ],
        "id": format!("ukis-csmask-{}", variant.replace('_', "-")),
        "geometry": null,
        "properties": {
            "datetime": null,
            "start_datetime": "2015-06-23T00:00:00Z",
            "end_datetime": "2025-03-25T00:00:00Z",
            "description": format!(
                "ukis-csmask {version}: cloud and cloud-shadow segmentation of Sentinel-2 {level} ({} bands), \
                 U-Net with EfficientNet-B4 encoder by DLR (Apache-2.0). Generated by `eoinfer model import-ukis` \
                 from the package's sidecar {}.",
                names.len(),
                sidecar_path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
            ),
            "mlm:name": format!("ukis-csmask {variant}"),
            "mlm:architecture": "U-Net",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:framework": "ONNX",
            "mlm:accelerator": "amd64",
            "mlm:accelerator_constrained": false,
            "mlm:pretrained": true,
            "mlm:pretrained_source": "ukis-csmask 1.0.0 (PyPI), DLR",
            "mlm:hyperparameters": model,
            // MLM v1.5 reads the bands its inputs name from the Item properties; STAC 1.1
            // allows them there because the model asset carries them too.
            "bands": band_defs.clone(),
            "gsd": 30.0,
            "mlm:input": [{
                "name": format!("Sentinel-2 {level} top-of-atmosphere/surface reflectance, {} bands", names.len()),
                "bands": band_ids,
                "input": {
                    "shape": [-1, bands_n, size[0], size[1]],
                    "dim_order": ["batch", "bands", "height", "width"],
                    "data_type": "float32"
                },
                "value_scaling": scaling,
                "resize_type": null,
                "pre_processing_function": null
            }],
            "mlm:output": [{
                "name": "cloud and cloud-shadow logits",
                "tasks": ["semantic-segmentation"],
                "result": {
                    "shape": [-1, 3, size[0], size[1]],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32"
                },
                "classification:classes": [
                    {"value": 0, "name": "clear", "description": "clear sky, no cloud or cloud shadow", "color_hint": "a6d96a"},
                    {"value": 1, "name": "cloud", "description": "cloud (thick and thin)", "color_hint": "ffffff"},
                    {"value": 2, "name": "cloud_shadow", "description": "cloud shadow", "color_hint": "5e3c99"}
                ],
                "post_processing_function": {"format": "eoinfer", "expression": "softmax(channel)"}
            }],
            "eoinfer:product_level": level,
            "eoinfer:sensors": ["sentinel-2", "landsat-5", "landsat-7", "landsat-8", "landsat-9"],
            "eoinfer:sensors_note": "ukis-csmask masks \"Sentinel-2, Landsat-9, Landsat-8, Landsat-7 and Landsat-5 images\" (its README); L1C models take top-of-atmosphere, L2A models surface reflectance",
            "eoinfer:dn_scale": 0.0001,
            "eoinfer:dn_nodata": 0,
            "eoinfer:gsd": 30.0,
            "eoinfer:gsd_note": "ukis-csmask: bands should be \"in approximately 30 m resolution\"",
            "eoinfer:tile_size": size[0],
            "eoinfer:overlap": 32,
            "eoinfer:reference_tiling": {"overlap_fraction": 0.2, "window": "tukey", "alpha": 0.4, "source": "ukis_csmask/utils.py"}
        },
        "links": [],
        "assets": {
            "model": crate::model::manifest::model_asset_json(
                onnx_href,
                &format!("ukis-csmask model_{variant}.onnx"),
                sha256,
                &band_defs
            ),
            "sidecar": {
                "href": onnx_href.replace(".onnx", ".json"),
                "title": "ukis-csmask sidecar the manifest was generated from",
                "type": "application/json",
                "roles": ["metadata"]
            }
        }
    }))
}

/// Writes the manifest `doc` to `path` (pretty JSON, atomically), refusing one that breaks
/// the STAC 1.1 / MLM v1.5 rules of [`crate::model::validate`].
pub(crate) fn write_checked(path: &Path, doc: &Value) -> Result<(), ModelError> {
    let write_err = |message: String| ModelError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    };
    let problems = crate::model::validate::manifest_problems(doc);
    if !problems.is_empty() {
        return Err(write_err(format!(
            "refusing to write an invalid STAC MLM manifest: {}",
            problems.join("; ")
        )));
    }
    let mut text = serde_json::to_string_pretty(doc).map_err(|e| write_err(e.to_string()))?;
    text.push('\n');
    crate::util::write_atomic(path, text.as_bytes()).map_err(|source| ModelError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `ukis-csmask-<variant>.json` into `out_dir` for every model in `package_dir`
/// (the unpacked `ukis_csmask` folder). ONNX hrefs are made relative to `out_dir`.
pub fn import(package_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut written = Vec::new();
    for variant in UKIS_MODELS {
        let sidecar_path = package_dir.join(format!("model_{variant}.json"));
        let onnx = package_dir.join(format!("model_{variant}.onnx"));
        let text = std::fs::read_to_string(&sidecar_path).map_err(|e| {
            sidecar_err(
                &sidecar_path,
                format!("{e}; pass the unpacked ukis_csmask folder with --package"),
            )
        })?;
        let sidecar: Value =
            serde_json::from_str(&text).map_err(|e| sidecar_err(&sidecar_path, e.to_string()))?;
        let sha = crate::util::sha256_file(&onnx).map_err(|source| ModelError::ManifestRead {
            path: onnx.clone(),
            source,
        })?;
        let href = crate::util::relative_path(&onnx, out_dir);
        let doc = manifest_from_sidecar(variant, &sidecar_path, &sidecar, &href, &sha)?;
        let path = out_dir.join(format!("ukis-csmask-{}.json", variant.replace('_', "-")));
        write_checked(&path, &doc)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> Value {
        json!({
            "data": {
                "dataset_statistics": {
                    "band_names": ["blue", "green", "red", "nir"],
                    "img": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]
                },
                "classes": 3,
                "target_size": [256, 256]
            },
            "model": {"version": "1.0.0-4BL1C"}
        })
    }

    #[test]
    fn generated_manifests_keep_the_stac_mlm_rules() {
        let doc = manifest_from_sidecar(
            "4b_l1c",
            Path::new("model_4b_l1c.json"),
            &sidecar(),
            "model_4b_l1c.onnx",
            "ab",
        )
        .expect("manifest");
        assert_eq!(
            crate::model::validate::manifest_problems(&doc),
            Vec::<String>::new()
        );
        // Band descriptions sit on the model asset (and, for MLM v1.5, in properties).
        assert_eq!(doc["assets"]["model"]["bands"], doc["properties"]["bands"]);
        assert_eq!(doc["assets"]["model"]["bands"][3]["eo:common_name"], "nir");
        assert!(
            doc["stac_extensions"]
                .as_array()
                .expect("extensions")
                .contains(&json!(CLASSIFICATION_SCHEMA))
        );
    }

    #[test]
    fn an_invalid_manifest_is_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut doc = manifest_from_sidecar(
            "4b_l1c",
            Path::new("model_4b_l1c.json"),
            &sidecar(),
            "model_4b_l1c.onnx",
            "ab",
        )
        .expect("manifest");
        let good = dir.path().join("good.json");
        write_checked(&good, &doc).expect("a valid manifest is written");
        assert!(good.is_file());

        doc["properties"]["mlm:tasks"] = json!(["embedding"]);
        let bad = dir.path().join("bad.json");
        let err = write_checked(&bad, &doc).expect_err("refused").to_string();
        assert!(
            err.contains("refusing to write an invalid STAC MLM manifest"),
            "{err}"
        );
        assert!(
            err.contains("\"embedding\" is not an MLM v1.5 task"),
            "{err}"
        );
        assert!(!bad.exists(), "nothing written");
    }
}
