//! OlmoEarth encoders exported by models/olmoearth/export.py (v1 Nano and v1.2 Nano, random
//! seeded weights, committed with their manifests and golden data): ONNX Runtime driven from
//! Rust reproduces PyTorch's embeddings on a real 12-month WorldCereal window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn check(model: &str, golden: &std::path::Path) -> std::process::Output {
    eoinfer([
        "model",
        "check",
        "--model",
        root()
            .join("models/olmoearth")
            .join(format!("{model}.json"))
            .to_str()
            .unwrap(),
        "--golden",
        golden.to_str().unwrap(),
    ])
}

#[test]
fn committed_olmoearth_nano_models_match_pytorch_on_the_golden_window() {
    for model in ["olmoearth-v1-nano", "olmoearth-v1_2-nano"] {
        let golden = root().join("models/olmoearth/golden").join(model);
        let out = check(model, &golden);
        ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let g = &report["golden"];
        let (cos, max_abs) = (
            g["min_cosine"].as_f64().unwrap(),
            g["max_abs"].as_f64().unwrap(),
        );
        println!(
            "{model}: {} patches, min cosine {cos:.12}, max abs {max_abs:.3e} (ONNX Runtime from Rust vs PyTorch)",
            g["patches"]
        );
        assert_eq!(g["shape"], serde_json::json!([1, 128, 8, 8]));
        assert!(cos >= 0.99999, "{model}: cosine {cos}");
        assert!(max_abs <= 1e-4, "{model}: max abs {max_abs}");
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root()
                    .join("models/olmoearth")
                    .join(format!("{model}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["properties"]["eoinfer:random_weights"], true);
        assert_eq!(manifest["properties"]["eoinfer:patch_size"], 8);
        assert_eq!(
            report["sha256"].as_str().unwrap(),
            &manifest["assets"]["model"]["file:checksum"]
                .as_str()
                .unwrap()[4..]
        );
    }
}

#[test]
fn a_golden_output_that_differs_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("models/olmoearth/golden/olmoearth-v1-nano");
    for f in ["golden.json", "s2.bin", "timestamps.bin", "features.bin"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut features = std::fs::read(dir.path().join("features.bin")).unwrap();
    let v = f32::from_le_bytes(features[..4].try_into().unwrap()) + 0.01;
    features[..4].copy_from_slice(&v.to_le_bytes());
    std::fs::write(dir.path().join("features.bin"), features).unwrap();
    let out = check("olmoearth-v1-nano", dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("golden check failed"));
}
