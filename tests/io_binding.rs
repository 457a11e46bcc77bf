//! ONNX Runtime IO binding (issue 16): the code path a GPU run always takes (buffers
//! allocated once per batch shape, bound, the output read back once per batch) runs on the
//! CPU with `--io-binding`, and gives the same bytes as plain runs, for a segmentation model
//! and for an OlmoEarth encoder with a head (several inputs, a partial last batch).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;

fn run(model: &str, scene: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        root().join(model).to_str().unwrap().into(),
        "--scene".into(),
        scene.to_str().unwrap().into(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--name".into(),
        "run".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let o = eoinfer(args);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn io_binding_on_the_cpu_gives_the_same_class_map_and_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("plain"), dir.path().join("bound"));
    let scene = demo_scene();
    // 5 tiles of 256 px at batch 2: two full batches and one of a single tile.
    run(
        "models/ukis-csmask-6b-l1c.json",
        &scene,
        &a,
        &["--probabilities", "--batch-size", "2"],
    );
    run(
        "models/ukis-csmask-6b-l1c.json",
        &scene,
        &b,
        &["--probabilities", "--batch-size", "2", "--io-binding"],
    );
    same_rasters(&a, &b);
}

#[test]
fn io_binding_on_the_cpu_gives_the_same_values_for_an_encoder_with_sentinel_1() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("months");
    std::fs::create_dir(&scenes).unwrap();
    worldcereal_s2(&scenes, 64, &ALL_MONTHS);
    worldcereal_s1(&scenes, 64, &ALL_MONTHS, false);
    let (a, b) = (dir.path().join("plain"), dir.path().join("bound"));
    // 32 px tiles with 4 px overlap on 64 px: 9 tiles at batch 4, a last batch of one.
    let extra = [
        "--relax-temporal-contract",
        "--accept-out-of-range",
        "--batch-size",
        "4",
    ];
    run("models/olmoearth/task-lfmc-nano.json", &scenes, &a, &extra);
    let mut bound = extra.to_vec();
    bound.push("--io-binding");
    run("models/olmoearth/task-lfmc-nano.json", &scenes, &b, &bound);
    let (x, y) = (
        read_f32_bands(&a.join("run.values.tif")),
        read_f32_bands(&b.join("run.values.tif")),
    );
    assert_eq!(x.len(), 1);
    let differ = x[0]
        .iter()
        .zip(&y[0])
        .filter(|(p, q)| p.to_bits() != q.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} values differ");
}
