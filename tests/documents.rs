//! Valid documents: every manifest in models/ and the Items and catalog a demo run and an
//! embedding run write validate against their STAC core schema and every extension they
//! declare, offline (tests/reference/validate_stac.py: ../shared/stac-schemas and pystac's
//! bundled STAC 1.1.0 core), and every manifest loads with stac-model. A schema that is not
//! available offline fails the test. The validator and eoinfer's own pre-write check
//! (`eoinfer::model::validate`) reject the same broken manifests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const MANIFESTS: [&str; 9] = [
    "s2cloudless.json",
    "ukis-csmask-4b-l1c.json",
    "ukis-csmask-4b-l2a.json",
    "ukis-csmask-6b-l1c.json",
    "ukis-csmask-6b-l2a.json",
    "olmoearth/olmoearth-v1-nano.json",
    "olmoearth/olmoearth-v1_2-nano.json",
    "olmoearth/olmoearth-v1-nano-s1.json",
    "olmoearth/olmoearth-v1-nano-seg.json",
];

#[test]
fn every_manifest_in_models_is_valid_and_loads_with_stac_model() {
    let models = root().join("models");
    let (ok, report) = validate_stac(&[&models]);
    // (models/*-dynamic.json are copies scripts/onnx_dynamic_hw.py derives from a manifest, for
    // tests/tuning.rs; one left from an older manifest fails here: delete it.)
    assert_all_valid(ok, &report);
    let docs = report["documents"].as_object().unwrap();
    for m in MANIFESTS {
        let p = models.join(m).display().to_string();
        assert_eq!(docs.get(&p), Some(&json!("ok")), "{m} not validated");
        assert_eq!(
            report["stac_model"][&p], "loaded",
            "{m} did not load with stac-model"
        );
        // eoinfer's own pre-write check agrees.
        assert_eq!(
            eoinfer::model::validate::manifest_problems(&read_json(&models.join(m))),
            Vec::<String>::new(),
            "{m}"
        );
    }
    // Every STAC document in models/ was validated; the JSON that is not STAC is the golden
    // data's metadata and ukis-csmask's own sidecars.
    for p in report["not_stac"].as_array().unwrap() {
        let p = p.as_str().unwrap();
        assert!(
            p.ends_with("/golden.json") || p.contains("/models/ukis-csmask/"),
            "{p} is JSON in models/ but not a STAC document"
        );
    }
    // The embedding encoders declare the MLM task chosen for them (the enum has no
    // `embedding`); the segmentation head declares its output's task.
    for (m, task) in [
        ("olmoearth/olmoearth-v1-nano.json", "similarity-search"),
        ("olmoearth/olmoearth-v1_2-nano.json", "similarity-search"),
        ("olmoearth/olmoearth-v1-nano-s1.json", "similarity-search"),
        (
            "olmoearth/olmoearth-v1-nano-seg.json",
            "semantic-segmentation",
        ),
    ] {
        let doc = read_json(&models.join(m));
        assert_eq!(doc["properties"]["mlm:tasks"], json!([task]), "{m}");
        assert_eq!(doc["properties"]["eoinfer:kind"], "embedding", "{m}");
        assert_eq!(
            doc["assets"]["model"]["bands"], doc["properties"]["bands"],
            "{m}: the model asset carries the band descriptions"
        );
    }

    // The committed OlmoEarth manifests are what export.py writes for the committed models.
    let mut cmd = std::process::Command::new(reference_python());
    cmd.arg(root().join("tests/reference/olmoearth_manifests.py"));
    for m in MANIFESTS.iter().filter(|m| m.starts_with("olmoearth/")) {
        cmd.arg(models.join(m));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "committed OlmoEarth manifests differ from export.py's: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_items_and_catalog_of_a_demo_run_and_an_embedding_run_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let seg_model = manifest("ukis-csmask-6b-l1c.json");
    let scene = demo_scene();
    ok(&eoinfer([
        "predict",
        "--model",
        seg_model.to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--probabilities",
        "--vectors",
        "--qgis-project",
        "--confidence",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "demo",
    ]));
    predict_series_embeddings(&out, "series");
    let (ok, report) = validate_stac(&[&out]);
    assert_all_valid(ok, &report);
    let docs = report["documents"].as_object().unwrap();
    let mut names: Vec<&str> = docs.keys().map(|k| k.rsplit('/').next().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["catalog.json", "demo.item.json", "series.item.json"],
        "{report}"
    );
    // One catalog links both runs.
    let catalog = read_json(&out.join("catalog.json"));
    let items: Vec<&str> = catalog["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "item")
        .map(|l| l["href"].as_str().unwrap())
        .collect();
    assert_eq!(items, ["./demo.item.json", "./series.item.json"]);
}

/// The 6-band L1C manifest, the OlmoEarth v1 Nano one and its segmentation head, each broken
/// in one way the schemas forbid.
fn broken_manifests() -> Vec<(&'static str, Value)> {
    let ukis = read_json(&manifest("ukis-csmask-6b-l1c.json"));
    let olmo = read_json(&manifest("olmoearth/olmoearth-v1-nano.json"));
    let seg = read_json(&manifest("olmoearth/olmoearth-v1-nano-seg.json"));

    let mut embedding = olmo.clone();
    embedding["properties"]["mlm:tasks"] = json!(["embedding"]);
    embedding["properties"]["mlm:output"][0]["tasks"] = json!(["embedding"]);

    let mut bands_in_properties_only = ukis.clone();
    bands_in_properties_only["assets"]["model"]
        .as_object_mut()
        .unwrap()
        .remove("bands");

    let mut classification_v2 = ukis.clone();
    classification_v2["stac_extensions"][3] =
        json!("https://stac-extensions.github.io/classification/v2.0.0/schema.json");

    let mut class_without_description = seg;
    class_without_description["properties"]["mlm:output"][0]["classification:classes"][0]
        .as_object_mut()
        .unwrap()
        .remove("description");

    let mut no_artifact_type = ukis;
    no_artifact_type["assets"]["model"]
        .as_object_mut()
        .unwrap()
        .remove("mlm:artifact_type");

    vec![
        ("embedding-task.json", embedding),
        ("bands-in-properties-only.json", bands_in_properties_only),
        ("classification-v2.json", classification_v2),
        ("class-without-description.json", class_without_description),
        ("no-artifact-type.json", no_artifact_type),
    ]
}

#[test]
fn the_validator_and_eoinfers_check_reject_broken_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let cases = broken_manifests();
    for (name, doc) in &cases {
        std::fs::write(
            dir.path().join(name),
            serde_json::to_string_pretty(doc).unwrap(),
        )
        .unwrap();
        assert!(
            !eoinfer::model::validate::manifest_problems(doc).is_empty(),
            "eoinfer's check accepts {name}"
        );
    }
    let (ok, report) = validate_stac(&[dir.path()]);
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert!(!ok, "the validator accepted broken manifests:\n{pretty}");
    assert_eq!(report["failures"], cases.len(), "{pretty}");

    let errors = |name: &str| -> Vec<(String, String, String)> {
        let key = dir.path().join(name).display().to_string();
        report["documents"][&key]
            .as_array()
            .unwrap_or_else(|| panic!("{name} passed:\n{pretty}"))
            .iter()
            .map(|e| {
                (
                    e["schema"].as_str().unwrap().to_string(),
                    e["path"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let has = |name: &str, schema: &str, path: &str, message: &str| {
        assert!(
            errors(name)
                .iter()
                .any(|(s, p, m)| s.contains(schema) && p == path && m.contains(message)),
            "{name}: no error {schema} {path} {message:?} in {:#?}",
            errors(name)
        );
    };
    let mlm = "/mlm/v1.5.0/schema.json";
    has(
        "embedding-task.json",
        mlm,
        "$.properties['mlm:tasks'][0]",
        "'embedding' is not one of",
    );
    has(
        "embedding-task.json",
        "stac-model",
        "$.properties",
        "mlm:tasks",
    );
    assert_eq!(
        report["stac_model"][dir.path().join("embedding-task.json").display().to_string()],
        "failed"
    );
    has(
        "bands-in-properties-only.json",
        "/v1.1.0/item-spec/json-schema/item.json",
        "$.properties",
        "False schema does not allow",
    );
    has(
        "classification-v2.json",
        "/classification/v2.0.0/",
        "$",
        "schema not available offline",
    );
    assert_eq!(
        report["unavailable_offline"],
        json!(["https://stac-extensions.github.io/classification/v2.0.0/schema.json"])
    );
    has(
        "class-without-description.json",
        mlm,
        "$.properties['mlm:output'][0]['classification:classes']",
        "'description' is a required property",
    );
    has(
        "no-artifact-type.json",
        mlm,
        "$.assets.model",
        "'mlm:artifact_type' is a required property",
    );
}

/// A real run Item broken in each way the STAC schemas forbid.
fn broken_items(item: &Value) -> Vec<(&'static str, Value)> {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = item.clone();
        f(&mut d);
        d
    };
    vec![
        (
            "bbox-of-three.json",
            with(&|d| d["bbox"] = json!([1.0, 2.0, 3.0])),
        ),
        (
            "null-datetime-without-range.json",
            with(&|d| d["properties"]["datetime"] = Value::Null),
        ),
        (
            "shape-of-three.json",
            with(&|d| d["properties"]["proj:shape"] = json!([1, 2, 3])),
        ),
        (
            "asset-without-href.json",
            with(&|d| {
                d["assets"]["classes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("href");
            }),
        ),
        (
            "link-without-rel.json",
            with(&|d| {
                d["links"][0].as_object_mut().unwrap().remove("rel");
            }),
        ),
        (
            "software-as-text.json",
            with(&|d| d["properties"]["processing:software"] = json!("eoinfer 0.1.0")),
        ),
    ]
}

#[test]
fn the_validator_and_eoinfers_check_reject_broken_run_items() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(&eoinfer([
        "predict",
        "--model",
        manifest("ukis-csmask-6b-l1c.json").to_str().unwrap(),
        "--scene",
        demo_scene().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        "demo",
    ]));
    let item = read_json(&out.join("demo.item.json"));
    // The real Item passes both.
    assert_eq!(
        eoinfer::output::stac::item_problems(&item),
        Vec::<String>::new()
    );
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    let cases = broken_items(&item);
    for (name, doc) in &cases {
        std::fs::write(
            broken.join(name),
            serde_json::to_string_pretty(doc).unwrap(),
        )
        .unwrap();
        assert!(
            !eoinfer::output::stac::item_problems(doc).is_empty(),
            "eoinfer's check accepts {name}"
        );
    }
    let (ok, report) = validate_stac(&[&broken]);
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    assert!(!ok, "the validator accepted broken Items:\n{pretty}");
    assert_eq!(report["failures"], cases.len(), "{pretty}");
}
