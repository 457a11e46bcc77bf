//! One runner for every model kind: an OlmoEarth encoder runs with an AOI, shards, merge and
//! resume exactly as a segmentation model does; scenes of one date form one time step;
//! `bench-model` measures every kind. Real scenes, the committed Nano models, the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eoinfer, ok, ok_stdout, reference_python, root, shared_scene};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A polygon inside the Slovenia series: its corners cut off, so patches outside it are
/// masked.
const AOI: &str = common::SLOVENIA_AOI;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn series() -> PathBuf {
    shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100")
}

/// An embedding run of the five dates over the AOI: 32 px tiles (4 patches) overlapping by
/// 16 px, one tile row per block and column panels of 3 tile columns (48 px), so the run
/// has several blocks and panels to share out.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--model",
        &s(&root().join("models/olmoearth/olmoearth-v1-nano.json")),
        "--scene",
        &s(&series()),
        "--aoi",
        AOI,
        "--out",
        &s(out),
        "--name",
        "run",
        "--tile-size",
        "32",
        "--overlap",
        "16",
        "--block-rows",
        "1",
        "--panel-width",
        "48",
    ]
    .iter()
    .map(|x| (*x).to_string())
    .collect();
    a.extend(extra.iter().map(|x| (*x).to_string()));
    a
}

fn predict(out: &Path, extra: &[&str]) -> Vec<String> {
    [vec!["predict".to_string()], args(out, extra)].concat()
}

/// The uninterrupted one-process run.
fn one_process() -> &'static (PathBuf, serde_json::Value) {
    static RUN: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = root().join("target/test-fixtures/embed-one-process");
        let _ = std::fs::remove_dir_all(&dir);
        let summary = json(&ok_stdout(&eoinfer(predict(&dir, &["--json"]))));
        (dir, summary)
    })
}

fn sha(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The same embeddings COG bytes and the same GeoParquet rows (pyarrow) as the one-process
/// run.
fn same_as_one_process(out: &Path) {
    let (reference, _) = one_process();
    let cog = "run.embeddings.tif";
    assert_eq!(sha(&reference.join(cog)), sha(&out.join(cog)), "{cog}");
    let script = "import sys, json, pyarrow.parquet as pq\n\
        t = [pq.read_table(p).to_pylist() for p in sys.argv[1:3]]\n\
        key = lambda r: json.dumps(r, sort_keys=True, default=str)\n\
        print(json.dumps({'rows': [len(x) for x in t], 'equal': [key(r) for r in t[0]] == [key(r) for r in t[1]]}))";
    let table = "run.embeddings.parquet";
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(reference.join(table))
        .arg(out.join(table))
        .output()
        .unwrap();
    let r = json(&ok_stdout(&o));
    assert_eq!(r["equal"], true, "{r}");
    assert!(r["rows"][0].as_u64().unwrap() > 50, "{r}");
}

#[test]
fn an_embedding_run_over_an_aoi_is_masked_to_it_and_three_concurrent_shards_merge_to_its_bytes() {
    let (reference, summary) = one_process();
    let blocks = summary["job"]["blocks"].as_u64().unwrap();
    assert!(blocks >= 3, "{summary}");
    assert_eq!(summary["counts"]["time_steps"], 5);
    // Patches outside the polygon are nodata (NaN) and have no row.
    let valid = summary["counts"]["patches_valid"].as_u64().unwrap();
    let patches = summary["counts"]["patches"].as_u64().unwrap();
    assert!(
        valid > patches / 2 && valid < patches,
        "{valid} of {patches}"
    );
    assert_eq!(summary["counts"]["parquet_rows"], valid);
    let info = common::gdalinfo(&reference.join("run.embeddings.tif"));
    assert_eq!(info["bands"].as_array().unwrap().len(), 128);
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    // The grid is the AOI's (UTM 33N, 10 m pixels, patches of 80 m).
    assert_eq!(info["geoTransform"][1], 80.0);
    assert!(reference.join("run.item.json").exists());
    assert!(reference.join("run.plan.json").exists());
    // Column panels change neither the pixels nor the model runs: one panel (the default
    // 2048 px) writes the same COG bytes and the same rows (in another order).
    assert!(
        summary["parameters"]["panels"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let wide = tmp.path().join("one-panel");
    let mut one_panel = predict(&wide, &["--json"]);
    let at = one_panel.iter().position(|a| a == "--panel-width").unwrap();
    one_panel.drain(at..at + 2);
    let single = json(&ok_stdout(&eoinfer(&one_panel)));
    assert_eq!(single["parameters"]["panels"], 1);
    assert_eq!(
        single["job"]["tiles_run_all_processes"],
        summary["job"]["tiles_run_all_processes"]
    );
    let cog = "run.embeddings.tif";
    assert_eq!(sha(&reference.join(cog)), sha(&wide.join(cog)));
    let sorted = "import sys, json, pyarrow.parquet as pq\n\
        t = [sorted(json.dumps(r, sort_keys=True, default=str) for r in pq.read_table(p).to_pylist()) for p in sys.argv[1:3]]\n\
        print(json.dumps(t[0] == t[1]))";
    let table = "run.embeddings.parquet";
    let o = Command::new(reference_python())
        .args(["-c", sorted])
        .arg(reference.join(table))
        .arg(wide.join(table))
        .output()
        .unwrap();
    assert_eq!(ok_stdout(&o).trim(), "true");

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sharded");
    let plan = json(&ok_stdout(&eoinfer(
        [
            vec!["plan".to_string()],
            args(&out, &["--shards", "3", "--json"]),
        ]
        .concat(),
    )));
    assert_eq!(plan["shards"].as_array().unwrap().len(), 3);
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_eoinfer"))
                .args(predict(
                    &out,
                    &["--shard", &format!("{i}/3"), "--threads", "1", "--json"],
                ))
                .current_dir(root())
                .env_remove("ORT_DYLIB_PATH")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let r = json(&ok_stdout(&c.wait_with_output().unwrap()));
        assert_eq!(r["shard"], format!("{i}/3"));
    }
    assert!(!out.join("run.embeddings.tif").exists());
    let merged = json(&ok_stdout(&eoinfer(["merge", &s(&out), "--json"])));
    assert_eq!(
        merged["job"]["processes"],
        serde_json::json!(["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"])
    );
    assert_eq!(merged["counts"]["patches_valid"], valid);
    same_as_one_process(&out);
}

#[test]
fn an_embedding_run_killed_after_its_first_block_resumes_to_the_same_bytes() {
    let (_, full) = one_process();
    let blocks = full["job"]["blocks"].as_u64().unwrap() as usize;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let journal = out.join(".eoinfer/run");
    // One thread and one tile per batch: slow enough to be caught between blocks.
    let run = predict(&out, &["--threads", "1", "--batch-size", "1", "--json"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args(&run)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while common::block_lines(&journal) < 1 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
    // kill -9.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("run.summary.json").exists(), "killed too late");
    let done = common::block_lines(&journal);
    assert!(done >= 1 && done < blocks, "{done} of {blocks}");
    let rerun = json(&ok_stdout(&eoinfer(&run)));
    assert_eq!(rerun["job"]["blocks_already_done"], done as u64);
    assert_eq!(rerun["job"]["blocks_run"], (blocks - done) as u64);
    assert_eq!(common::block_lines(&journal), blocks);
    same_as_one_process(&out);
    // A finished run is not run again.
    let again = ok(&eoinfer(&run));
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn scenes_of_one_date_are_mosaicked_into_one_time_step() {
    let scene = series();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("split");
    std::fs::create_dir_all(&dir).unwrap();
    // Every date as it is, but 2015-08-20 as a west and an east half (two files, one date).
    for d in ["20150711", "20150731", "20150830", "20150909"] {
        std::os::unix::fs::symlink(
            scene.join(format!("S2_L1C_{d}_13band.tif")),
            dir.join(format!("S2_L1C_{d}_13band.tif")),
        )
        .unwrap();
    }
    let src = scene.join("S2_L1C_20150820_13band.tif");
    for (half, xoff, width) in [("west", 0, 50), ("east", 50, 50)] {
        let st = Command::new("gdal_translate")
            .args(["-q", "-srcwin"])
            .args([
                xoff.to_string(),
                "0".into(),
                width.to_string(),
                "101".into(),
            ])
            .arg(&src)
            .arg(dir.join(format!("S2_L1C_20150820_{half}.tif")))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let model = root().join("models/olmoearth/olmoearth-v1-nano.json");
    let run = |scenes: Vec<String>, out: &Path| {
        let mut a = vec![
            "predict".to_string(),
            "--model".into(),
            s(&model),
            "--out".into(),
            s(out),
            "--name".into(),
            "run".into(),
            "--json".into(),
        ];
        for sc in scenes {
            a.push("--scene".into());
            a.push(sc);
        }
        json(&ok_stdout(&eoinfer(a)))
    };
    let whole = run(vec![s(&scene)], &tmp.path().join("whole"));
    let files: Vec<String> = common::files_in(&dir)
        .iter()
        .map(|f| s(&dir.join(f)))
        .collect();
    assert_eq!(files.len(), 6);
    let split = run(files, &tmp.path().join("halves"));
    assert_eq!(split["counts"]["time_steps"], 5, "{split}");
    let step = &split["time_steps"][2];
    assert_eq!(step["date"]["day"], 20);
    let label = step["scene"].as_str().unwrap();
    assert!(label.contains("west") && label.contains("east"), "{label}");
    assert_eq!(step["mosaic"].as_array().unwrap().len(), 2);
    // The halves on the first date's grid are the whole file again: the same embeddings.
    let a: Vec<f32> = common::read_f32_bands(&tmp.path().join("whole/run.embeddings.tif")).concat();
    let b: Vec<f32> =
        common::read_f32_bands(&tmp.path().join("halves/run.embeddings.tif")).concat();
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())),
        "the mosaicked step differs from the whole file"
    );
    assert_eq!(
        whole["counts"]["patches_valid"],
        split["counts"]["patches_valid"]
    );
}

#[test]
fn dates_for_scenes_that_carry_their_own_are_refused_not_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let o = eoinfer([
        "predict",
        "--model",
        &s(&root().join("models/olmoearth/olmoearth-v1-nano.json")),
        "--scene",
        &s(&series()),
        "--dates",
        "2020-01-01",
        "--out",
        &s(tmp.path()),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--dates gives 1 dates, but only 0 of the scenes"),
        "{err}"
    );
    assert!(common::files_in(tmp.path()).is_empty());
}

#[test]
fn bench_model_measures_an_encoder_on_the_tiles_predict_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let r = json(&ok_stdout(&eoinfer(
        [vec!["bench-model".to_string()], args(tmp.path(), &[])].concat(),
    )));
    let (_, full) = one_process();
    assert_eq!(r["tiles"], full["counts"]["tiles"]);
    assert_eq!(r["tiles_inferred"], full["counts"]["tiles_inferred"]);
    assert!(r["inference_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["tiles_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

/// `eoinfer model check --golden` of a committed head: ONNX Runtime against PyTorch's output.
fn golden(model: &str) -> serde_json::Value {
    let dir = root().join("models/olmoearth");
    let r = json(&ok_stdout(&eoinfer([
        "model",
        "check",
        "--model",
        &s(&dir.join(format!("{model}.json"))),
        "--golden",
        &s(&dir.join("golden").join(model)),
    ])));
    assert!(
        r["golden"]["max_abs"].as_f64().unwrap() <= 1e-4,
        "{model}: {r}"
    );
    r
}

fn head_run(model: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "predict".to_string(),
        "--model".into(),
        s(&root().join(format!("models/olmoearth/{model}.json"))),
        "--scene".into(),
        s(&series()),
        "--out".into(),
        s(out),
        "--name".into(),
        "run".into(),
        "--json".into(),
    ];
    a.extend(extra.iter().map(|x| (*x).to_string()));
    json(&ok_stdout(&eoinfer(a)))
}

#[test]
fn a_regression_head_writes_a_value_map_with_its_name_unit_nodata_style_and_tile_statistics() {
    let r = golden("olmoearth-v1-nano-reg");
    assert_eq!(r["golden"]["shape"], serde_json::json!([1, 1, 64, 64]));
    let tmp = tempfile::tempdir().unwrap();
    let summary = head_run("olmoearth-v1-nano-reg", tmp.path(), &["--aoi", AOI]);
    let values = tmp.path().join("run.values.tif");
    assert_eq!(summary["outputs"]["values"], s(&values));
    let o = Command::new("gdalinfo")
        .args(["-json", "-stats"])
        .arg(&values)
        .output()
        .unwrap();
    let info = json(&ok_stdout(&o));
    let band = &info["bands"][0];
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    assert_eq!(band["type"], "Float32");
    assert_eq!(band["description"], "canopy_height");
    assert_eq!(band["unit"], "m");
    assert_eq!(band["noDataValue"], -9999.0);
    assert_eq!(band["metadata"][""]["VALUE_RANGE"], "0 50");
    // The AOI's grid at 10 m; pixels outside the polygon are nodata, the others values.
    assert_eq!(info["geoTransform"][1], 10.0);
    let valid = summary["counts"]["pixels_valid"].as_u64().unwrap();
    let pixels = summary["counts"]["pixels"].as_u64().unwrap();
    assert!(valid > pixels / 2 && valid < pixels, "{valid} of {pixels}");
    assert!(band["minimum"].as_f64().unwrap() > -9999.0);
    let style = std::fs::read_to_string(tmp.path().join("run.values.qml")).unwrap();
    assert!(style.contains("singlebandpseudocolor") && style.contains("canopy_height"));
    // Per-tile statistics: the tiles' valid pixels add up to the map's, each mean lies
    // between its tile's smallest and largest value.
    let script = "import sys, json, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1]).to_pylist()\n\
        ok = all(r['canopy_height_min'] <= r['canopy_height_mean'] <= r['canopy_height_max'] for r in t if r['valid_pixels'])\n\
        print(json.dumps({'rows': len(t), 'ordered': ok, 'cols': sorted(t[0])}))";
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(tmp.path().join("run.tiles.parquet"))
        .output()
        .unwrap();
    let t = json(&ok_stdout(&o));
    assert_eq!(t["ordered"], true, "{t}");
    assert_eq!(t["rows"], summary["counts"]["tiles"]);
    // `--value-dtype uint8`: 1..255 over the manifest's range (0-50 m), 0 = no data; scale
    // and offset give each value back within half a step (clamped to the range).
    let q = tmp.path().join("uint8");
    let qs = head_run(
        "olmoearth-v1-nano-reg",
        &q,
        &["--aoi", AOI, "--value-dtype", "uint8"],
    );
    // Tiles whose values leave the range are named in a warning (their values are clamped).
    let script = "import sys, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1]).to_pylist()\n\
        print(sum(1 for r in t if r['valid_pixels'] and (r['canopy_height_min'] < 0 or r['canopy_height_max'] > 50)))";
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(q.join("run.tiles.parquet"))
        .output()
        .unwrap();
    let outside: usize = ok_stdout(&o).trim().parse().unwrap();
    let warned = qs["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w.as_str().unwrap().contains("outside the expected range"));
    match warned {
        Some(w) => assert!(
            w.as_str()
                .unwrap()
                .starts_with(&format!("{outside} tile(s)")),
            "{w}"
        ),
        None => assert_eq!(outside, 0),
    }
    let script = "import sys, json, numpy as np, rasterio\n\
        f, q = rasterio.open(sys.argv[1]), rasterio.open(sys.argv[2])\n\
        a, b = f.read(1).astype(float), q.read(1)\n\
        vf, vq = a != f.nodata, b != 0\n\
        v = b * q.scales[0] + q.offsets[0]\n\
        err = float(np.abs(v - np.clip(a, 0, 50))[vf].max())\n\
        print(json.dumps({'dtype': str(b.dtype), 'nodata': q.nodata, 'same_valid': bool((vf == vq).all()), 'err': err, 'step': q.scales[0], 'desc': q.descriptions[0]}))";
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(&values)
        .arg(q.join("run.values.tif"))
        .output()
        .unwrap();
    let r = json(&ok_stdout(&o));
    assert_eq!(r["dtype"], "uint8", "{r}");
    assert_eq!(r["nodata"], 0.0, "{r}");
    assert_eq!(r["same_valid"], true, "{r}");
    assert_eq!(r["desc"], "canopy_height", "{r}");
    let step = r["step"].as_f64().unwrap();
    assert!((step - 50.0 / 254.0).abs() < 1e-9, "{r}");
    assert!(r["err"].as_f64().unwrap() <= step / 2.0 + 1e-4, "{r}");
    // Only a regression head has values to quantise.
    let o = eoinfer([
        "predict",
        "--model",
        &s(&root().join("models/olmoearth/olmoearth-v1-nano.json")),
        "--scene",
        &s(&series()),
        "--out",
        &s(&tmp.path().join("refused")),
        "--value-dtype",
        "uint8",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--value-dtype applies to regression heads")
    );
}

#[test]
fn a_classification_head_labels_each_window_with_its_class_scores() {
    let r = golden("olmoearth-v1-nano-cls");
    assert_eq!(r["golden"]["shape"], serde_json::json!([1, 4]));
    let tmp = tempfile::tempdir().unwrap();
    let summary = head_run("olmoearth-v1-nano-cls", tmp.path(), &[]);
    // 100 x 101 px in windows of 32 px: 4 x 4 windows of 320 m.
    assert_eq!(summary["grid"]["window_width"], 4);
    assert_eq!(summary["grid"]["window_height"], 4);
    let info = common::gdalinfo(&tmp.path().join("run.classes.tif"));
    assert_eq!(info["size"], serde_json::json!([4, 4]));
    assert_eq!(info["geoTransform"][1], 320.0);
    assert_eq!(
        info["bands"][0]["categories"],
        serde_json::json!(["cropland", "grassland", "forest", "water"])
    );
    assert!(info["bands"][0]["colorTable"].is_object());
    let per_class: u64 = summary["counts"]["class_pixels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_class, 16);
    // One row per window: the label is the best score, the scores are probabilities.
    let script = "import sys, json, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1]).to_pylist()\n\
        names = ['cropland', 'grassland', 'forest', 'water']\n\
        best = all(r['class_name'] == max(names, key=lambda n: r['score_' + n]) for r in t)\n\
        sums = all(abs(sum(r['score_' + n] for n in names) - 1) < 1e-5 for r in t)\n\
        print(json.dumps({'rows': len(t), 'best': best, 'sums': sums}))";
    let o = Command::new(reference_python())
        .args(["-c", script])
        .arg(tmp.path().join("run.windows.parquet"))
        .output()
        .unwrap();
    let t = json(&ok_stdout(&o));
    assert_eq!(
        t,
        serde_json::json!({"rows": 16, "best": true, "sums": true})
    );
    // The preview fills each window with its class's colour over the input: away from the
    // legend, a window's mean colour is nearest to its own class's colour.
    let (labels, ..) = common::read_u8(&tmp.path().join("run.classes.tif"), 1);
    let colours: Vec<[f64; 3]> = info["bands"][0]["colorTable"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .take(4)
        .map(|e| [0, 1, 2].map(|k| e[k].as_f64().unwrap()))
        .collect();
    let png = image::open(tmp.path().join("run.preview.png"))
        .unwrap()
        .to_rgba8();
    // 100 x 101 px scaled up 10 times: windows of 320 px.
    assert_eq!(png.dimensions(), (1000, 1010));
    for wy in 0..3_u32 {
        for wx in 0..3_u32 {
            let c = usize::from(labels[(wy * 4 + wx) as usize]);
            let mut mean = [0.0; 3];
            let mut n = 0.0;
            for y in (wy * 320 + 20..wy * 320 + 300).step_by(4) {
                for x in (wx * 320 + 20..wx * 320 + 300).step_by(4) {
                    let p = png.get_pixel(x, y).0;
                    for k in 0..3 {
                        mean[k] += f64::from(p[k]);
                    }
                    n += 1.0;
                }
            }
            let mean = mean.map(|v| v / n);
            let d = |q: &[f64; 3]| (0..3).map(|k| (mean[k] - q[k]).powi(2)).sum::<f64>();
            let nearest = (0..colours.len())
                .min_by(|&a, &b| d(&colours[a]).total_cmp(&d(&colours[b])))
                .unwrap();
            assert_eq!(nearest, c, "window ({wx}, {wy}): mean {mean:?}");
        }
    }
    common::assert_stac_valid(tmp.path());
    // Overlapping windows are refused with the reason.
    let o = eoinfer([
        "predict",
        "--model",
        &s(&root().join("models/olmoearth/olmoearth-v1-nano-cls.json")),
        "--scene",
        &s(&series()),
        "--out",
        &s(tmp.path()),
        "--overlap",
        "16",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not overlap"));
}

#[test]
fn flip_tta_makes_a_regression_head_mirror_with_the_series() {
    // The Slovenia dates cropped to 96 x 96 px (tiles at 0 and 32: a symmetric grid of whole
    // patches) and mirrored left-right: averaged over the flips, the value map of the
    // mirrored series is the mirrored value map.
    let tmp = tempfile::tempdir().unwrap();
    let code = r#"
import sys, pathlib, rasterio
from rasterio.windows import Window
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for f in sorted(src.glob("S2_L1C_*_13band.tif")):
    with rasterio.open(f) as s:
        a = s.read(window=Window(0, 0, 96, 96))
        p = s.profile
        p.update(width=96, height=96, transform=s.window_transform(Window(0, 0, 96, 96)))
        d = s.descriptions
    for name, data in (("crop", a), ("mirror", a[:, :, ::-1])):
        (out / name).mkdir(exist_ok=True)
        with rasterio.open(out / name / f.name, "w", **p) as o:
            o.write(data)
            for i, n in enumerate(d, 1):
                if n:
                    o.set_band_description(i, n)
"#;
    let o = Command::new(reference_python())
        .args(["-c", code])
        .arg(series())
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = root().join("models/olmoearth/olmoearth-v1-nano-reg.json");
    let mut maps = Vec::new();
    for name in ["crop", "mirror"] {
        let out = tmp.path().join(format!("{name}-out"));
        let summary = json(&ok_stdout(&eoinfer([
            "predict",
            "--model",
            &s(&model),
            "--scene",
            &s(&tmp.path().join(name)),
            "--out",
            &s(&out),
            "--name",
            "run",
            "--tta",
            "flip",
            "--json",
        ])));
        assert_eq!(summary["parameters"]["tta"], "flip");
        maps.push(common::read_f32_bands(&out.join("run.values.tif")).concat());
    }
    let (a, b) = (&maps[0], &maps[1]);
    assert_eq!(a.len(), 96 * 96);
    let worst = (0..96)
        .flat_map(|y| (0..96).map(move |x| (y, x)))
        .map(|(y, x)| (a[y * 96 + x] - b[y * 96 + 95 - x]).abs())
        .fold(0.0_f32, f32::max);
    assert!(worst < 1e-5, "flip TTA is not equivariant: {worst}");
    // Window labels are not averaged over flips.
    let o = eoinfer([
        "predict",
        "--model",
        &s(&root().join("models/olmoearth/olmoearth-v1-nano-cls.json")),
        "--scene",
        &s(&tmp.path().join("crop")),
        "--out",
        &s(&tmp.path().join("cls")),
        "--tta",
        "flip",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tta applies to outputs per pixel"));
}
