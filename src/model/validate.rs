//! The rules a model manifest must keep to be a valid STAC 1.1 Item with the MLM v1.5
//! extension (and eo v2.0.0, file v2.1.0, classification v1.1.0), checked in Rust before a
//! generator writes one (`eoinfer model import-ukis`).
//!
//! This is a structural check of the rules eoinfer's manifests can break (required fields,
//! the MLM task enum, where band descriptions may sit, declared extensions that can be checked
//! offline, class objects), not a JSON Schema validator: `tests/reference/validate_stac.py`
//! validates every manifest against the full offline schemas, and `tests/documents.rs` checks
//! that both reject the same broken manifests.

use serde_json::{Map, Value};

/// The STAC version the manifests declare.
pub const STAC_VERSION: &str = "1.1.0";
/// The eo extension the band definitions use (`eo:common_name`, `eo:center_wavelength`).
pub const EO_SCHEMA: &str = "https://stac-extensions.github.io/eo/v2.0.0/schema.json";
/// The file extension of the model asset (`file:checksum`, `file:size`).
pub const FILE_SCHEMA: &str = "https://stac-extensions.github.io/file/v2.1.0/schema.json";
/// The classification extension of the output classes (v1.1.0: the version MLM v1.5 refers
/// to, and one with an offline copy; v2.0.0 has none).
pub const CLASSIFICATION_SCHEMA: &str =
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json";

/// Extension schemas with an offline copy in `../shared/stac-schemas`: the only ones a
/// manifest may declare, so that every declared schema can be checked without a network.
pub const OFFLINE_EXTENSIONS: [&str; 12] = [
    "https://stac-extensions.github.io/mlm/v1.5.0/schema.json",
    "https://stac-extensions.github.io/mlm/v1.5.2/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    EO_SCHEMA,
    "https://stac-extensions.github.io/file/v1.0.0/schema.json",
    FILE_SCHEMA,
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    CLASSIFICATION_SCHEMA,
];

/// The MLM v1.5 task enum (`mlm:tasks`, `mlm:output[].tasks`). It has no embedding task:
/// embedding encoders declare `similarity-search` (see the README, Models).
pub const MLM_TASKS: [&str; 14] = [
    "regression",
    "classification",
    "scene-classification",
    "detection",
    "object-detection",
    "segmentation",
    "semantic-segmentation",
    "instance-segmentation",
    "panoptic-segmentation",
    "similarity-search",
    "generative",
    "image-captioning",
    "super-resolution",
    "downscaling",
];

/// MLM data types (the raster extension v1.1.0 enum).
const DATA_TYPES: [&str; 16] = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
    "float64", "cint16", "cint32", "cfloat32", "cfloat64", "other",
];

/// `mlm:` fields MLM v1.5 allows in Item properties (any other `mlm:` field is an error).
const MLM_ITEM_FIELDS: [&str; 17] = [
    "mlm:name",
    "mlm:architecture",
    "mlm:tasks",
    "mlm:framework",
    "mlm:framework_version",
    "mlm:memory_size",
    "mlm:total_parameters",
    "mlm:pretrained",
    "mlm:pretrained_source",
    "mlm:batch_size_suggestion",
    "mlm:accelerator",
    "mlm:accelerator_constrained",
    "mlm:accelerator_summary",
    "mlm:accelerator_count",
    "mlm:input",
    "mlm:output",
    "mlm:hyperparameters",
];

const ACCELERATORS: [&str; 7] = [
    "amd64",
    "cuda",
    "xla",
    "amd-rocm",
    "intel-ipex-cpu",
    "intel-ipex-gpu",
    "macos-arm",
];

fn has_role(asset: &Value, role: &str) -> bool {
    asset
        .get("roles")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|x| x == role))
}

fn nonempty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// Names of the bands an `mlm:input` lists (strings or `{"name": ...}` objects).
fn input_band_names(input: &Value) -> Vec<&str> {
    input
        .get("bands")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().or_else(|| b.get("name").and_then(Value::as_str)))
                .collect()
        })
        .unwrap_or_default()
}

fn check_tasks(v: Option<&Value>, at: &str, out: &mut Vec<String>) {
    let Some(tasks) = v.and_then(Value::as_array) else {
        out.push(format!("{at}: required, an array of MLM tasks"));
        return;
    };
    for (i, t) in tasks.iter().enumerate() {
        match t.as_str() {
            Some(s) if MLM_TASKS.contains(&s) => {
                if tasks[..i].contains(t) {
                    out.push(format!("{at}[{i}]: task {s:?} repeated"));
                }
            }
            _ => out.push(format!(
                "{at}[{i}]: {t} is not an MLM v1.5 task (one of {})",
                MLM_TASKS.join(", ")
            )),
        }
    }
}

fn check_structure(v: Option<&Value>, at: &str, out: &mut Vec<String>) {
    let Some(s) = v.filter(|s| s.is_object()) else {
        out.push(format!("{at}: required (shape, dim_order, data_type)"));
        return;
    };
    let shape = s.get("shape").and_then(Value::as_array);
    if !shape
        .is_some_and(|a| !a.is_empty() && a.iter().all(|d| d.as_i64().is_some_and(|d| d >= -1)))
    {
        out.push(format!("{at}.shape: a non-empty array of integers >= -1"));
    }
    let order = s.get("dim_order").and_then(Value::as_array);
    let order_ok = order.is_some_and(|a| {
        !a.is_empty()
            && a.iter().enumerate().all(|(i, d)| {
                d.as_str().is_some_and(|d| {
                    !d.is_empty()
                        && d.bytes()
                            .all(|c| c.is_ascii_lowercase() || c == b'-' || c == b'_')
                }) && !a[..i].contains(d)
            })
    });
    if !order_ok {
        out.push(format!(
            "{at}.dim_order: a non-empty array of unique lowercase names"
        ));
    }
    if let (Some(sh), Some(o)) = (shape, order) {
        if sh.len() != o.len() {
            out.push(format!("{at}: shape and dim_order differ in length"));
        }
    }
    if !s
        .get("data_type")
        .and_then(Value::as_str)
        .is_some_and(|d| DATA_TYPES.contains(&d))
    {
        out.push(format!("{at}.data_type: one of {}", DATA_TYPES.join(", ")));
    }
}

fn check_scaling(v: Option<&Value>, at: &str, out: &mut Vec<String>) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    let Some(entries) = v.as_array().filter(|a| !a.is_empty()) else {
        out.push(format!("{at}: null or a non-empty array"));
        return;
    };
    for (i, e) in entries.iter().enumerate() {
        let need: &[&str] = match e.get("type").and_then(Value::as_str) {
            Some("min-max" | "clip") => &["minimum", "maximum"],
            Some("z-score") => &["mean", "stddev"],
            Some("clip-min") => &["minimum"],
            Some("clip-max") => &["maximum"],
            Some("offset" | "scale") => &["value"],
            Some("processing") => &[],
            _ => {
                out.push(format!("{at}[{i}].type: not an MLM value scaling type"));
                continue;
            }
        };
        for k in need {
            if !e.get(*k).is_some_and(Value::is_number) {
                out.push(format!("{at}[{i}].{k}: required number"));
            }
        }
    }
}

fn check_classes(v: &Value, at: &str, out: &mut Vec<String>) {
    let Some(classes) = v.as_array() else {
        out.push(format!("{at}: an array of class objects"));
        return;
    };
    for (i, c) in classes.iter().enumerate() {
        if c.get("value").and_then(Value::as_i64).is_none() {
            out.push(format!("{at}[{i}].value: required integer"));
        }
        // classification v1.1.0 requires a description (v2.0.0 a name).
        if !c.get("description").is_some_and(Value::is_string) {
            out.push(format!(
                "{at}[{i}].description: required by classification v1.1.0"
            ));
        }
        if c.get("name").is_some_and(|n| !n.is_string()) {
            out.push(format!("{at}[{i}].name: a string"));
        }
        if let Some(h) = c.get("color_hint") {
            if !h
                .as_str()
                .is_some_and(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                out.push(format!("{at}[{i}].color_hint: six hex digits (RRGGBB)"));
            }
        }
    }
}

fn check_bands_list(v: &Value, at: &str, declared: &[&str], out: &mut Vec<String>) {
    let Some(bands) = v.as_array() else {
        out.push(format!("{at}: an array of band objects"));
        return;
    };
    for (i, b) in bands.iter().enumerate() {
        let Some(obj) = b.as_object() else {
            out.push(format!("{at}[{i}]: a band object"));
            continue;
        };
        if obj.get("name").is_some_and(|n| !n.is_string()) {
            out.push(format!("{at}[{i}].name: a string"));
        }
        if obj.keys().any(|k| k.starts_with("eo:")) && !declared.contains(&EO_SCHEMA) {
            out.push(format!(
                "{at}[{i}]: uses eo: fields, so stac_extensions must declare {EO_SCHEMA}"
            ));
        }
        for k in ["eo:center_wavelength", "eo:full_width_half_max"] {
            if obj.get(k).is_some_and(|w| !w.is_number()) {
                out.push(format!("{at}[{i}].{k}: a number"));
            }
        }
    }
}

/// The rules of `mlm:input`; returns the band names the inputs use.
fn check_inputs<'a>(props: &'a Map<String, Value>, out: &mut Vec<String>) -> Vec<&'a str> {
    let inputs = props.get("mlm:input").and_then(Value::as_array);
    if inputs.is_none() {
        out.push("$.properties.mlm:input: required array".into());
    }
    let mut used_bands: Vec<&str> = Vec::new();
    for (i, input) in inputs.into_iter().flatten().enumerate() {
        let at = format!("$.properties.mlm:input[{i}]");
        if !nonempty_str(input.get("name")) {
            out.push(format!("{at}.name: required"));
        }
        check_structure(input.get("input"), &format!("{at}.input"), out);
        check_scaling(
            input.get("value_scaling"),
            &format!("{at}.value_scaling"),
            out,
        );
        let names = input_band_names(input);
        let has_bands_dim = input
            .pointer("/input/dim_order")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "bands"));
        if !names.is_empty() && !has_bands_dim {
            out.push(format!(
                "{at}.input.dim_order: lists bands, so it needs a \"bands\" dimension"
            ));
        }
        if names.is_empty() && has_bands_dim {
            out.push(format!(
                "{at}.input.dim_order: has a \"bands\" dimension but the input lists no bands"
            ));
        }
        used_bands.extend(names);
    }
    used_bands
}

/// The rules of `mlm:output`.
fn check_outputs(props: &Map<String, Value>, declared: &[&str], out: &mut Vec<String>) {
    let outputs = props.get("mlm:output").and_then(Value::as_array);
    if outputs.is_none() {
        out.push("$.properties.mlm:output: required array".into());
    }
    for (i, o) in outputs.into_iter().flatten().enumerate() {
        let at = format!("$.properties.mlm:output[{i}]");
        if !nonempty_str(o.get("name")) {
            out.push(format!("{at}.name: required"));
        }
        check_tasks(o.get("tasks"), &format!("{at}.tasks"), out);
        check_structure(o.get("result"), &format!("{at}.result"), out);
        if let Some(c) = o.get("classification:classes") {
            check_classes(c, &format!("{at}.classification:classes"), out);
            if c.as_array().is_some_and(|a| !a.is_empty())
                && !declared.contains(&CLASSIFICATION_SCHEMA)
            {
                out.push(format!(
                    "{at}.classification:classes: declare {CLASSIFICATION_SCHEMA}"
                ));
            }
        }
    }
}

/// The rules of the assets: at least one model asset, with an artifact type; no other
/// asset has one.
fn check_assets(assets: &Map<String, Value>, declared: &[&str], out: &mut Vec<String>) {
    // Assets: at least one model asset, with an artifact type; no other asset has one.
    let mut model_assets = 0;
    for (key, a) in assets {
        let at = format!("$.assets.{key}");
        if !nonempty_str(a.get("href")) {
            out.push(format!("{at}.href: required"));
        }
        let is_model = has_role(a, "mlm:model");
        model_assets += usize::from(is_model);
        if is_model && !nonempty_str(a.get("mlm:artifact_type")) {
            out.push(format!(
                "{at}.mlm:artifact_type: required on the mlm:model asset"
            ));
        }
        if !is_model && a.get("mlm:artifact_type").is_some() {
            out.push(format!(
                "{at}.mlm:artifact_type: only the mlm:model asset may have one"
            ));
        }
        if a.as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("file:")))
            && !declared.contains(&FILE_SCHEMA)
        {
            out.push(format!("{at}: uses file: fields, declare {FILE_SCHEMA}"));
        }
        if let Some(b) = a.get("bands") {
            check_bands_list(b, &format!("{at}.bands"), declared, out);
        }
    }
    if model_assets == 0 {
        out.push("$.assets: no asset has the role mlm:model".into());
    }
}

/// Every rule of STAC 1.1 / MLM v1.5 the manifest `doc` breaks, each as `json.path: reason`
/// (empty when it keeps them all).
#[must_use]
pub fn manifest_problems(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if doc.get("type").and_then(Value::as_str) != Some("Feature") {
        out.push("$.type: must be \"Feature\" (a STAC Item)".into());
    }
    if doc.get("stac_version").and_then(Value::as_str) != Some(STAC_VERSION) {
        out.push(format!("$.stac_version: must be {STAC_VERSION:?}"));
    }
    if !nonempty_str(doc.get("id")) {
        out.push("$.id: required, a non-empty string".into());
    }
    if !doc.get("links").is_some_and(Value::is_array) {
        out.push("$.links: required array".into());
    }
    match doc.get("geometry") {
        None => out.push("$.geometry: required (null for a model)".into()),
        Some(Value::Null) if doc.get("bbox").is_some() => {
            out.push("$.bbox: not allowed when geometry is null".into());
        }
        _ => {}
    }

    // Declared extensions: each must have an offline copy; MLM is required.
    let declared: Vec<&str> = doc
        .get("stac_extensions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (i, e) in declared.iter().enumerate() {
        if !OFFLINE_EXTENSIONS.contains(e) {
            out.push(format!(
                "$.stac_extensions[{i}]: {e} has no offline schema copy and cannot be checked (declare one of {})",
                OFFLINE_EXTENSIONS.join(", ")
            ));
        }
        if declared[..i].contains(e) {
            out.push(format!("$.stac_extensions[{i}]: {e} repeated"));
        }
    }
    if !declared.iter().any(|e| e.contains("/mlm/v1.5.")) {
        out.push("$.stac_extensions: must declare the MLM extension v1.5".into());
    }

    let Some(props) = doc.get("properties").and_then(Value::as_object) else {
        out.push("$.properties: required object".into());
        return out;
    };
    let Some(assets) = doc.get("assets").and_then(Value::as_object) else {
        out.push("$.assets: required object".into());
        return out;
    };

    match props.get("datetime") {
        None => out.push("$.properties.datetime: required (null with start/end)".into()),
        Some(Value::Null) => {
            for k in ["start_datetime", "end_datetime"] {
                if !nonempty_str(props.get(k)) {
                    out.push(format!("$.properties.{k}: required when datetime is null"));
                }
            }
        }
        Some(_) => {}
    }

    // MLM fields in the properties.
    for k in ["mlm:name", "mlm:architecture"] {
        if !nonempty_str(props.get(k)) {
            out.push(format!("$.properties.{k}: required, a non-empty string"));
        }
    }
    check_tasks(props.get("mlm:tasks"), "$.properties.mlm:tasks", &mut out);
    for k in props.keys().filter(|k| k.starts_with("mlm:")) {
        if !MLM_ITEM_FIELDS.contains(&k.as_str()) {
            out.push(format!(
                "$.properties.{k}: not an MLM field of Item properties"
            ));
        }
    }
    if let Some(a) = props.get("mlm:accelerator") {
        if !(a.is_null() || a.as_str().is_some_and(|a| ACCELERATORS.contains(&a))) {
            out.push(format!(
                "$.properties.mlm:accelerator: null or one of {}",
                ACCELERATORS.join(", ")
            ));
        }
    }
    let used_bands = check_inputs(props, &mut out);
    check_outputs(props, &declared, &mut out);

    check_assets(assets, &declared, &mut out);

    // Bands (STAC 1.1): band descriptions belong to assets; Item properties may carry them
    // only when an asset does. MLM v1.5 finds the bands its inputs name in properties.bands.
    let asset_bands = assets.values().any(|a| a.get("bands").is_some());
    let prop_bands = props.get("bands");
    if let Some(b) = prop_bands {
        check_bands_list(b, "$.properties.bands", &declared, &mut out);
        if !asset_bands {
            out.push(
                "$.properties.bands: STAC 1.1 allows bands in properties only when an asset carries bands (put them on the mlm:model asset)"
                    .into(),
            );
        }
    }
    if !used_bands.is_empty() {
        let defined = |list: Option<&Value>| -> Vec<String> {
            list.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b.get("name").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let in_props = defined(prop_bands);
        if in_props.is_empty() {
            out.push(
                "$.properties.bands: the MLM inputs name bands, so MLM v1.5 needs their definitions here (and on the mlm:model asset)"
                    .into(),
            );
        }
        let model_asset_bands: Vec<String> = assets
            .values()
            .filter(|a| has_role(a, "mlm:model"))
            .flat_map(|a| defined(a.get("bands")))
            .collect();
        for name in used_bands {
            if !in_props.is_empty() && !in_props.iter().any(|n| n == name) {
                out.push(format!(
                    "$.properties.bands: no definition of input band {name}"
                ));
            }
            if !model_asset_bands.iter().any(|n| n == name) {
                out.push(format!(
                    "$.assets (mlm:model).bands: no definition of input band {name}"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small manifest that keeps every rule.
    fn valid() -> Value {
        json!({
            "type": "Feature", "stac_version": "1.1.0",
            "stac_extensions": [crate::model::manifest::MLM_SCHEMA, EO_SCHEMA, FILE_SCHEMA, CLASSIFICATION_SCHEMA],
            "id": "m", "geometry": null,
            "properties": {
                "datetime": null, "start_datetime": "2020-01-01T00:00:00Z", "end_datetime": "2021-01-01T00:00:00Z",
                "mlm:name": "m", "mlm:architecture": "U-Net", "mlm:tasks": ["semantic-segmentation"],
                "bands": [{"name": "B02", "eo:common_name": "blue", "eo:center_wavelength": 0.49}],
                "mlm:input": [{"name": "x", "bands": ["B02"],
                    "input": {"shape": [-1, 1, 8, 8], "dim_order": ["batch", "bands", "height", "width"], "data_type": "float32"},
                    "value_scaling": [{"type": "z-score", "mean": 0.1, "stddev": 0.2}]}],
                "mlm:output": [{"name": "y", "tasks": ["semantic-segmentation"],
                    "result": {"shape": [-1, 2, 8, 8], "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
                    "classification:classes": [{"value": 0, "name": "a", "description": "a", "color_hint": "a6d96a"}]}]
            },
            "links": [],
            "assets": {"model": {"href": "m.onnx", "roles": ["mlm:model"], "mlm:artifact_type": "onnx",
                "file:checksum": "1220ab",
                "bands": [{"name": "B02", "eo:common_name": "blue", "eo:center_wavelength": 0.49}]}}
        })
    }

    fn problems_after(edit: impl FnOnce(&mut Value)) -> String {
        let mut doc = valid();
        edit(&mut doc);
        manifest_problems(&doc).join("\n")
    }

    #[test]
    fn a_valid_manifest_has_no_problems() {
        assert_eq!(manifest_problems(&valid()), Vec::<String>::new());
    }

    #[test]
    fn an_embedding_task_is_not_an_mlm_task() {
        let p = problems_after(|d| d["properties"]["mlm:tasks"] = json!(["embedding"]));
        assert!(
            p.contains("mlm:tasks[0]: \"embedding\" is not an MLM v1.5 task"),
            "{p}"
        );
        let p = problems_after(|d| {
            d["properties"]["mlm:output"][0]["tasks"] = json!(["feature-extraction"]);
        });
        assert!(p.contains("mlm:output[0].tasks[0]"), "{p}");
    }

    #[test]
    fn bands_only_in_properties_break_stac_1_1() {
        let p = problems_after(|d| {
            d["assets"]["model"]
                .as_object_mut()
                .unwrap()
                .remove("bands");
        });
        assert!(p.contains("only when an asset carries bands"), "{p}");
        assert!(p.contains("no definition of input band B02"), "{p}");
        let p = problems_after(|d| {
            d["properties"].as_object_mut().unwrap().remove("bands");
        });
        assert!(p.contains("MLM v1.5 needs their definitions here"), "{p}");
    }

    #[test]
    fn extensions_must_be_checkable_offline_and_declared() {
        let p = problems_after(|d| {
            d["stac_extensions"][3] =
                json!("https://stac-extensions.github.io/classification/v2.0.0/schema.json");
        });
        assert!(p.contains("has no offline schema copy"), "{p}");
        assert!(
            p.contains("declare https://stac-extensions.github.io/classification/v1.1.0"),
            "{p}"
        );
        let p = problems_after(|d| d["stac_extensions"][1] = json!(FILE_SCHEMA));
        assert!(p.contains("repeated"), "{p}");
        assert!(p.contains("uses eo: fields"), "{p}");
    }

    #[test]
    fn classes_need_a_description_and_hex_colours() {
        let p = problems_after(|d| {
            let c = &mut d["properties"]["mlm:output"][0]["classification:classes"][0];
            c.as_object_mut().unwrap().remove("description");
            c["color_hint"] = json!("#a6d96a");
        });
        assert!(
            p.contains("description: required by classification v1.1.0"),
            "{p}"
        );
        assert!(p.contains("color_hint: six hex digits"), "{p}");
    }

    #[test]
    fn required_mlm_fields_and_structures_are_checked() {
        let p = problems_after(|d| {
            let props = d["properties"].as_object_mut().unwrap();
            props.remove("mlm:name");
            props.insert("mlm:artifact_type".into(), json!("onnx"));
            d["properties"]["mlm:input"][0]["input"]["shape"] = json!([-1, 1, 8]);
            d["properties"]["mlm:input"][0]["input"]["data_type"] = json!("float");
            d["assets"]["model"]
                .as_object_mut()
                .unwrap()
                .remove("mlm:artifact_type");
        });
        for want in [
            "mlm:name: required",
            "mlm:artifact_type: not an MLM field of Item properties",
            "shape and dim_order differ in length",
            "data_type: one of",
            "mlm:artifact_type: required on the mlm:model asset",
        ] {
            assert!(p.contains(want), "{want} missing in\n{p}");
        }
    }
}
