//! A STAC Item whose assets are on an HTTP server (a range-capable server on loopback,
//! read through GDAL's /vsicurl/) gives the same results as the same files read locally, for
//! a segmentation and an embedding model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The Earth Search Item of the T29RKH scene with its COG hrefs pointed at `base` (only the
/// assets whose files are here); its `s3://` JP2 copies stay as they are: eoinfer prefers the
/// served COG and never opens them (nor asks for an S3 endpoint).
fn item_at(cogs: &Path, base: &str, target: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cogs.join("S2A_29RKH_20200219_0_L2A.json")).unwrap();
    let mut item: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut kept = serde_json::Map::new();
    for (key, asset) in item["assets"].as_object().unwrap() {
        let href = asset["href"].as_str().unwrap();
        let name = href.rsplit('/').next().unwrap();
        let tif = Path::new(name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tif"));
        if href.starts_with("s3://") {
            kept.insert(key.clone(), asset.clone());
            continue;
        }
        if !cogs.join(name).is_file() || !tif {
            continue;
        }
        let mut a = asset.clone();
        a["href"] = format!("{base}/{name}").into();
        kept.insert(key.clone(), a);
    }
    item["assets"] = kept.into();
    std::fs::write(target, serde_json::to_string(&item).unwrap()).unwrap();
    target.to_path_buf()
}

fn predict(model: &str, scene: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        s(&manifest(model)),
        "--scene".into(),
        scene.into(),
        "--out".into(),
        s(out),
        "--name".into(),
        "run".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|x| (*x).to_string()));
    let o = eoinfer(&args);
    serde_json::from_str(&ok_stdout(&o)).unwrap()
}

#[test]
fn an_earth_search_item_served_over_http_gives_the_results_of_the_local_files() {
    let cogs = shared_scene("s2_l2a_T29RKH_20200219_earthsearch/original_cogs");
    let server = Server::start(&cogs);
    let tmp = tempfile::tempdir().unwrap();
    let item = item_at(
        &cogs,
        &format!("http://127.0.0.1:{}", server.1),
        &tmp.path().join("item.json"),
    );

    // Segmentation: the 6-band L2A cloud model at the scene's 100 m.
    let remote = predict(
        "ukis-csmask-6b-l2a.json",
        &s(&item),
        &tmp.path().join("seg-remote"),
        &["--resolution", "100", "--probabilities"],
    );
    let local = predict(
        "ukis-csmask-6b-l2a.json",
        &s(&cogs),
        &tmp.path().join("seg-local"),
        &["--resolution", "100", "--probabilities"],
    );
    let blue = remote["scene"]["bands"][0]["source"].as_str().unwrap();
    assert!(
        blue.starts_with("/vsicurl/http://127.0.0.1:") && blue.ends_with("/B02.tif"),
        "{blue}"
    );
    assert_eq!(remote["scene"]["sensor"]["sensor"], "sentinel-2");
    assert_eq!(remote["scene"]["sensor"]["level"], "SR");
    assert!(
        remote["scene"]["bands"][0]["scaling"]
            .as_str()
            .unwrap()
            .contains("raster:bands scale/offset"),
        "{}",
        remote["scene"]["bands"][0]
    );
    assert_eq!(
        remote["counts"]["class_pixels"],
        local["counts"]["class_pixels"]
    );
    same_rasters(
        &tmp.path().join("seg-remote"),
        &tmp.path().join("seg-local"),
    );

    // Embeddings: OlmoEarth v1 Nano on the one date, at 200 m.
    let args = ["--resolution", "200"];
    let remote = predict(
        "olmoearth/olmoearth-v1-nano.json",
        &s(&item),
        &tmp.path().join("emb-remote"),
        &args,
    );
    // The folder's file names carry no date: the Item's is given.
    let local = predict(
        "olmoearth/olmoearth-v1-nano.json",
        &s(&cogs),
        &tmp.path().join("emb-local"),
        &["--resolution", "200", "--dates", "2020-02-19"],
    );
    assert_eq!(
        remote["counts"]["patches_valid"],
        local["counts"]["patches_valid"]
    );
    let a = read_f32_bands(&tmp.path().join("emb-remote/run.embeddings.tif"));
    let b = read_f32_bands(&tmp.path().join("emb-local/run.embeddings.tif"));
    assert_eq!(
        a, b,
        "embeddings differ between the HTTP and the local files"
    );
    drop(server);
}
