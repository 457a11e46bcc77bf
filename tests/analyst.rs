//! Outputs for analysts: QGIS styles beside the rasters, a STAC Item per run and the output
//! folder's STAC catalog, checked with pystac.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Runs the 6-band L1C model over the demo scene into `out` as `<name>.*`; returns stdout.
fn predict_demo(out: &std::path::Path, name: &str, extra: &[&str]) -> String {
    let model = manifest("ukis-csmask-6b-l1c.json");
    let scene = demo_scene();
    let mut args = vec![
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    ok_stdout(&eoinfer(&args))
}

#[test]
fn runs_write_qgis_styles_and_stac_items_that_pystac_reads() {
    let dir = tempfile::tempdir().unwrap();
    let model = manifest("ukis-csmask-6b-l1c.json");
    let out = dir.path().join("out");
    predict_demo(&out, "first", &["--probabilities"]);
    predict_demo(&out, "second", &[]);

    // QGIS loads <name>.qml for <name>.tif: the class names and colours of the manifest.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    let qml = std::fs::read_to_string(out.join("first.classes.qml")).unwrap();
    assert!(qml.contains("type=\"paletted\""));
    let classes = doc["properties"]["mlm:output"][0]["classification:classes"]
        .as_array()
        .unwrap();
    assert_eq!(qml.matches("<paletteEntry").count(), classes.len());
    for c in classes {
        let name = c["name"].as_str().unwrap();
        let colour = c["color_hint"].as_str().unwrap().to_ascii_lowercase();
        assert!(
            qml.contains(&format!(
                "value=\"{}\" label=\"{name}\" color=\"#{colour}\"",
                c["value"]
            )),
            "{name} #{colour} missing in\n{qml}"
        );
    }
    let probs_qml = std::fs::read_to_string(out.join("first.probs.qml")).unwrap();
    assert!(probs_qml.contains("singlebandpseudocolor"));
    assert!(!out.join("second.probs.qml").exists());

    // STAC: the Items load with pystac and list every asset; the catalog links both runs.
    let check = r#"
import json, sys, pystac
out = sys.argv[1]
cat = pystac.Catalog.from_file(f"{out}/catalog.json")
items = {i.id: i for i in cat.get_items()}
first = items["first"]
assets = sorted(first.assets)
for key, a in first.assets.items():
    if key != "model":
        assert __import__("os").path.exists(a.get_absolute_href()), (key, a.get_absolute_href())
print(json.dumps({
    "items": sorted(items), "assets_first": assets, "assets_second": sorted(items["second"].assets),
    "epsg": first.properties.get("proj:code"), "shape": first.properties.get("proj:shape"),
    "datetime": first.datetime.isoformat(), "bbox": first.bbox,
    "sha": first.properties["eoinfer:model"]["onnx_sha256"],
}))
"#;
    let o = std::process::Command::new(reference_python())
        .args(["-c", check])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items"], serde_json::json!(["first", "second"]));
    assert_eq!(
        r["assets_first"],
        serde_json::json!([
            "classes",
            "classes_style",
            "model",
            "plan",
            "probabilities",
            "probabilities_style",
            "summary",
            "thumbnail",
            "tiles"
        ])
    );
    assert_eq!(
        r["assets_second"],
        serde_json::json!([
            "classes",
            "classes_style",
            "model",
            "plan",
            "summary",
            "thumbnail",
            "tiles"
        ])
    );
    assert_eq!(r["epsg"], "EPSG:32633");
    assert_eq!(r["shape"], serde_json::json!([256, 512]));
    assert!(r["datetime"].as_str().unwrap().starts_with("2017-02-16"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("first.summary.json")).unwrap())
            .unwrap();
    assert_eq!(r["sha"], summary["model"]["sha256"]);
    // The bbox is the scene's footprint in WGS84 (T33UUU lies near 13 E, 52.5 N).
    let b: Vec<f64> = r["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        b[0] > 12.0 && b[2] < 14.5 && b[1] > 51.5 && b[3] < 53.5,
        "{b:?}"
    );
}

#[test]
fn polygons_cover_the_class_map_exactly_and_are_dissolved_across_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The demo scene's class regions cross the blended grid's tile edges (x = 224, 256).
    let stdout = predict_demo(&out, "run", &["--vectors", "--json"]);
    let summary: serde_json::Value =
        serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
    let gpkg = out.join("run.polygons.gpkg");
    assert!(gpkg.is_file());
    let classes = out.join("run.classes.tif");
    for (fmt, ext) in [("parquet", "parquet"), ("fgb", "fgb")] {
        ok(&eoinfer([
            "polygonize",
            classes.to_str().unwrap(),
            "--vector-format",
            fmt,
            "--out",
            out.join(format!("alone.{ext}")).to_str().unwrap(),
        ]));
    }
    let o = std::process::Command::new(reference_python())
        .arg(root().join("tests/reference/check_polygons.py"))
        .arg(&classes)
        .arg(&gpkg)
        .arg(out.join("alone.parquet"))
        .arg(out.join("alone.fgb"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("{r}");
    for (path, f) in r["files"].as_object().unwrap() {
        assert_eq!(f["same_class_shared_edges"], 0, "{path} has seams");
        assert!(f["polygons"].as_u64().unwrap() > 10, "{path}");
        assert_eq!(
            f["names"],
            serde_json::json!(["clear", "cloud", "cloud_shadow"]),
            "{path}"
        );
    }
    let stats = &summary["counts"]["polygons"];
    assert_eq!(
        stats["polygons"].as_u64().unwrap(),
        r["files"][gpkg.to_str().unwrap()]["polygons"]
            .as_u64()
            .unwrap()
    );

    // --min-area drops small polygons; everything left is at least that large.
    let small = out.join("small.gpkg");
    let s = ok_stdout(&eoinfer([
        "polygonize",
        classes.to_str().unwrap(),
        "--min-area",
        "9000",
        "--simplify",
        "15",
        "--out",
        small.to_str().unwrap(),
    ]));
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert!(s["stats"]["dropped"].as_u64().unwrap() > 0);
    assert!(s["stats"]["polygons"].as_u64().unwrap() < stats["polygons"].as_u64().unwrap());

    // A raster that is not a class map: a clear error, no output.
    let bad = eoinfer([
        "polygonize",
        out.join("run.tiles.parquet").to_str().unwrap(),
        "--out",
        out.join("bad.gpkg").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!out.join("bad.gpkg").exists());
}

#[test]
fn zonal_statistics_over_real_regions_equal_a_numpy_computation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_demo(&out, "run", &["--probabilities"]);
    let regions = demo_scene().parent().unwrap().join("s2l1c_ref.gpkg");
    for touched in [false, true] {
        let t = if touched { "1" } else { "0" };
        let zc = out.join(format!("zonal{t}.parquet"));
        let zcsv = out.join(format!("zonal{t}.csv"));
        let zp = out.join(format!("zonal_probs{t}.parquet"));
        for (raster, table) in [
            ("run.classes.tif", &zc),
            ("run.classes.tif", &zcsv),
            ("run.probs.tif", &zp),
        ] {
            let mut args = vec![
                "zonal".to_string(),
                "--raster".into(),
                out.join(raster).display().to_string(),
                "--regions".into(),
                regions.display().to_string(),
                "--out".into(),
                table.display().to_string(),
            ];
            if touched {
                args.push("--all-touched".into());
            }
            ok(&eoinfer(&args));
        }
        let o = std::process::Command::new(reference_python())
            .arg(root().join("tests/reference/check_zonal.py"))
            .arg(out.join("run.classes.tif"))
            .arg(out.join("run.probs.tif"))
            .arg(&regions)
            .arg(&zc)
            .arg(&zcsv)
            .arg(&zp)
            .arg(t)
            .output()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&o.stdout));
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["regions"], 30);
        assert_eq!(r["crs"], 32633);
        assert!(r["regions_with_pixels"].as_u64().unwrap() >= 20);
    }
    // GeoParquet regions (written by geopandas, in WGS84) give the same table.
    let gp = out.join("regions.parquet");
    let o = std::process::Command::new(reference_python())
        .args([
            "-c",
            "import sys, geopandas as gpd; gpd.read_file(sys.argv[1]).to_crs(4326).to_parquet(sys.argv[2], index=False)",
        ])
        .arg(&regions)
        .arg(&gp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_parquet = out.join("zonal_from_parquet.csv");
    ok(&eoinfer([
        "zonal",
        "--raster",
        out.join("run.classes.tif").to_str().unwrap(),
        "--regions",
        gp.to_str().unwrap(),
        "--out",
        from_parquet.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(&from_parquet).unwrap(),
        std::fs::read_to_string(out.join("zonal0.csv")).unwrap(),
        "GeoParquet regions give the GeoPackage regions' table"
    );

    // Bad input: regions that are not polygons / a wrong extension.
    let bad = eoinfer([
        "zonal",
        "--raster",
        out.join("run.classes.tif").to_str().unwrap(),
        "--regions",
        out.join("run.summary.json").to_str().unwrap(),
        "--out",
        out.join("x.parquet").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!out.join("x.parquet").exists());
    let bad = eoinfer([
        "zonal",
        "--raster",
        out.join("run.classes.tif").to_str().unwrap(),
        "--regions",
        regions.to_str().unwrap(),
        "--out",
        out.join("x.xlsx").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_outputs_open_styled_in_real_qgis() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_demo(
        &out,
        "run",
        &["--probabilities", "--vectors", "--qgis-project"],
    );
    let png = root().join("outputs/qgis-render-test.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let o = std::process::Command::new("/usr/bin/python3")
        .arg(root().join("tests/reference/check_qgis.py"))
        .arg(out.join("run.classes.tif"))
        .arg(out.join("run.polygons.gpkg"))
        .arg(out.join("run.qgs"))
        .arg(&png)
        .env("QT_QPA_PLATFORM", "offscreen")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "PyQGIS failed (scripts/setup.sh --reference installs python3-qgis): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let r: serde_json::Value =
        serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    println!("{r}");
    assert_eq!(r["raster_valid"], true);
    assert_eq!(r["raster_crs"], "EPSG:32633");
    let (want, _) = extent(&out.join("run.classes.tif"));
    for (a, b) in r["raster_extent"].as_array().unwrap().iter().zip(want) {
        assert!((a.as_f64().unwrap() - b).abs() < 1e-6, "{r}");
    }
    assert_eq!(r["raster_renderer"], "paletted");
    assert_eq!(
        r["classes"],
        serde_json::json!([
            [0, "clear", "#a6d96a"],
            [1, "cloud", "#ffffff"],
            [2, "cloud_shadow", "#5e3c99"]
        ])
    );
    assert_eq!(r["vector_valid"], true);
    assert_eq!(r["vector_crs"], "EPSG:32633");
    assert!(r["vector_features"].as_u64().unwrap() > 10);
    assert_eq!(r["vector_renderer"], "categorizedSymbol");
    assert_eq!(r["project_read"], true);
    assert_eq!(
        r["project_layers"],
        serde_json::json!(["classes", "polygons", "probabilities"])
    );
    assert_eq!(r["project_layers_valid"], true);
    assert_eq!(
        r["project_renderers"],
        serde_json::json!([
            ["classes", "paletted"],
            ["polygons", "categorizedSymbol"],
            ["probabilities", "singlebandpseudocolor"]
        ])
    );
    assert_eq!(r["project_groups"], serde_json::json!(["eoinfer: run"]));
    assert_eq!(r["png_saved"], true);
    assert!(r["png_colours"].as_u64().unwrap() > 2, "{r}");
    assert!(png.is_file());
}

#[test]
fn embedding_runs_write_stac_items_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_series_embeddings(&out, "series");
    let check = r#"
import json, sys, pystac
cat = pystac.Catalog.from_file(sys.argv[1] + "/catalog.json")
item = next(iter(cat.get_items()))
print(json.dumps({"id": item.id, "assets": sorted(item.assets),
    "start": item.properties.get("start_datetime"), "end": item.properties.get("end_datetime"),
    "code": item.properties.get("proj:code"), "inputs": len(item.properties["eoinfer:inputs"])}))
"#;
    let o = std::process::Command::new(reference_python())
        .args(["-c", check])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["id"], "series");
    assert_eq!(
        r["assets"],
        serde_json::json!([
            "embeddings",
            "embeddings_table",
            "model",
            "plan",
            "summary",
            "thumbnail"
        ])
    );
    // The preview: the first three principal components of the embeddings, one block of
    // 10 x 10 px per pixel of the 100 x 101 px grid (scaled up 10 times), with a legend.
    let png = image::open(out.join("series.preview.png"))
        .unwrap()
        .to_rgba8();
    assert_eq!(png.dimensions(), (1000, 1010));
    let top: std::collections::HashSet<[u8; 4]> = (0..400)
        .step_by(5)
        .flat_map(|y| (0..1000).step_by(5).map(move |x| (x, y)))
        .map(|(x, y)| png.get_pixel(x, y).0)
        .collect();
    assert!(top.len() > 20, "{} colours", top.len());
    assert!(
        png.pixels().any(|p| p.0 == [20, 20, 20, 255]),
        "legend text"
    );
    let item = read_json(&out.join("series.item.json"));
    assert!(
        item["assets"]["thumbnail"]["title"]
            .as_str()
            .unwrap()
            .contains("principal components of the 128-dimensional embeddings")
    );
    assert_eq!(r["start"], "2015-07-11T00:00:00Z");
    assert_eq!(r["code"], "EPSG:32633");
    assert_eq!(r["inputs"], 5);
}

/// The manifest's classes of the 6-band model: (value, name, colour).
fn manifest_classes() -> Vec<(u8, String, [u8; 3])> {
    let doc = read_json(&manifest("ukis-csmask-6b-l1c.json"));
    doc["properties"]["mlm:output"][0]["classification:classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let hex = c["color_hint"].as_str().unwrap();
            let h = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            (
                c["value"].as_u64().unwrap() as u8,
                c["name"].as_str().unwrap().to_string(),
                [h(0), h(2), h(4)],
            )
        })
        .collect()
}

#[test]
fn confidence_is_the_winning_probability_and_the_tiles_carry_its_mean() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_demo(
        &out,
        "demo",
        &["--probabilities", "--confidence", "--qgis-project"],
    );
    let (conf, w, h) = read_u8(&out.join("demo.confidence.tif"), 1);
    let (classes, ..) = read_u8(&out.join("demo.classes.tif"), 1);
    let probs: Vec<Vec<u8>> = (1..=3)
        .map(|b| read_u8(&out.join("demo.probs.tif"), b).0)
        .collect();
    let (mut low, mut with_class) = (0, 0);
    for i in 0..w * h {
        if classes[i] == 255 {
            assert_eq!(conf[i], 0, "pixel {i} has no class but a confidence");
            continue;
        }
        with_class += 1;
        let top = probs.iter().map(|p| p[i]).max().unwrap();
        assert!(
            conf[i] >= 1 && conf[i].abs_diff(top) <= 1,
            "pixel {i}: confidence {} vs max probability {top}",
            conf[i]
        );
        low += usize::from(conf[i] < 179);
    }
    assert!(with_class > 100_000);
    // Some pixels are uncertain (cloud edges): the map is not constant.
    assert!(low > 100, "{low} pixels below 70 %");
    let info = gdalinfo(&out.join("demo.confidence.tif"));
    let band = &info["bands"][0];
    assert_eq!(band["type"], "Byte");
    assert_eq!(band["noDataValue"], 0.0);
    assert_eq!(band["description"], "confidence");
    assert!((band["scale"].as_f64().unwrap() - 1.0 / 255.0).abs() < 1e-12);
    assert!(
        std::fs::read_to_string(out.join("demo.confidence.qml"))
            .unwrap()
            .contains("singlebandpseudocolor")
    );
    assert!(
        std::fs::read_to_string(out.join("demo.qgs"))
            .unwrap()
            .contains("demo.confidence.tif")
    );
    // Each tile's mean and smallest confidence over its pixels with a class.
    let rows = parquet_json_rows(&out.join("demo.tiles.parquet"));
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let (x0, y0) = (
            r["x_off"].as_u64().unwrap() as usize,
            r["y_off"].as_u64().unwrap() as usize,
        );
        let (tw, th) = (
            r["width"].as_u64().unwrap() as usize,
            r["height"].as_u64().unwrap() as usize,
        );
        let mut vals = Vec::new();
        for y in y0..y0 + th {
            for x in x0..x0 + tw {
                if classes[y * w + x] != 255 {
                    vals.push(f64::from(conf[y * w + x]) / 255.0);
                }
            }
        }
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            (r["confidence_mean"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{r:?}"
        );
        assert!(
            (r["confidence_min"].as_f64().unwrap() - min).abs() < 1e-12,
            "{r:?}"
        );
    }
    let item = read_json(&out.join("demo.item.json"));
    assert_eq!(
        item["assets"]["confidence"]["href"],
        "./demo.confidence.tif"
    );
    assert_eq!(
        item["assets"]["confidence_style"]["roles"],
        serde_json::json!(["style"])
    );
    let summary = read_json(&out.join("demo.summary.json"));
    assert!(
        summary["outputs"]["confidence"]
            .as_str()
            .unwrap()
            .ends_with("demo.confidence.tif")
    );
    // Confidence needs classes: refused for an embedding model, before anything is written.
    let series = shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100");
    let o = eoinfer([
        "predict",
        "--model",
        manifest("olmoearth/olmoearth-v1-nano.json")
            .to_str()
            .unwrap(),
        "--scene",
        series.to_str().unwrap(),
        "--out",
        dir.path().join("emb").to_str().unwrap(),
        "--confidence",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--confidence apply to class maps"));
}

#[test]
fn the_preview_shows_the_class_map_over_the_input_in_the_manifests_colours() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_demo(&out, "demo", &[]);
    let png = image::open(out.join("demo.preview.png"))
        .unwrap()
        .to_rgba8();
    // 512 x 256 px: scaled up twice to 1024 px on the longer side.
    assert_eq!(png.dimensions(), (1024, 512));
    let item = read_json(&out.join("demo.item.json"));
    let thumb = &item["assets"]["thumbnail"];
    assert_eq!(thumb["href"], "./demo.preview.png");
    assert_eq!(thumb["type"], "image/png");
    assert_eq!(thumb["roles"][0], "thumbnail");
    assert!(
        thumb["title"]
            .as_str()
            .unwrap()
            .contains("natural colour (red, green, blue) of 2017-02-16"),
        "{thumb}"
    );
    let (classes, w, h) = read_u8(&out.join("demo.classes.tif"), 1);
    let palette = manifest_classes();
    // The legend (lower left) shows each class of the map in its exact manifest colour.
    for (v, name, colour) in &palette {
        if classes.contains(v) {
            assert!(
                png.pixels()
                    .any(|p| p.0 == [colour[0], colour[1], colour[2], 255]),
                "no swatch of {name} {colour:?}"
            );
        }
    }
    // Outside the legend, each class's pixels are tinted with its colour: their mean colour is
    // nearest to the class's own colour of all the manifest's.
    let mut sums = vec![[0.0_f64; 3]; palette.len()];
    let mut n = vec![0_usize; palette.len()];
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (2 * x as u32, 2 * y as u32);
            if px < 450 && py > 400 {
                continue;
            }
            let c = usize::from(classes[y * w + x]);
            if c < palette.len() {
                let p = png.get_pixel(px, py).0;
                for k in 0..3 {
                    sums[c][k] += f64::from(p[k]);
                }
                n[c] += 1;
            }
        }
    }
    for (c, (_, name, _)) in palette.iter().enumerate() {
        if n[c] < 500 {
            continue;
        }
        let mean: Vec<f64> = sums[c].iter().map(|s| s / n[c] as f64).collect();
        let nearest = palette
            .iter()
            .enumerate()
            .min_by(|a, b| {
                let d = |q: &[u8; 3]| {
                    (0..3)
                        .map(|k| (mean[k] - f64::from(q[k])).powi(2))
                        .sum::<f64>()
                };
                d(&a.1.2).total_cmp(&d(&b.1.2))
            })
            .unwrap()
            .0;
        assert_eq!(nearest, c, "{name}: mean preview colour {mean:?}");
    }
    // The input shows through: many colours, not flat class fills.
    let distinct: std::collections::HashSet<[u8; 4]> = png.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 2000, "{} colours", distinct.len());
    // The work folder keeps no input samples once the run is merged.
    assert!(
        files_in(&out.join(".eoinfer/demo"))
            .iter()
            .all(|f| !f.starts_with("preview-")),
    );
}

/// Runs tests/reference/check_catalog.py on `out` with `args`; returns its report.
fn check_catalog(out: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(reference_python())
        .arg(root().join("tests/reference/check_catalog.py"))
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "check_catalog.py: {e}: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert!(o.status.success(), "{report:#}");
    report
}

#[test]
fn the_catalog_parquet_reads_back_as_the_items_and_answers_queries_by_place_date_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    predict_demo(&out, "demo", &[]);
    predict_demo(&out, "demo60", &["--resolution", "60"]);
    let scene = demo_scene();
    ok(&eoinfer([
        "predict",
        "--model",
        manifest("ukis-csmask-4b-l1c.json").to_str().unwrap(),
        "--scene",
        scene.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--name",
        "demo4b",
    ]));
    predict_series_embeddings(&out, "series");
    // stac-geoparquet reads the same four Items as catalog.json links.
    let all = check_catalog(&out, &[]);
    assert_eq!(all["items"], 4, "{all:#}");
    assert_eq!(all["equal"], true, "{all:#}");
    assert_eq!(
        all["metadata"]["stac-geoparquet"]["version"], "1.0.0",
        "{all:#}"
    );
    let bbox = |name: &str| {
        let b = read_json(&out.join(format!("{name}.item.json")))["bbox"].clone();
        let v: Vec<String> = b
            .as_array()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        v.join(",")
    };
    let query = |args: &[&str]| check_catalog(&out, args)["query"].clone();
    assert_eq!(
        query(&["--model", "ukis-csmask-6b-l1c"]),
        serde_json::json!(["demo", "demo60"])
    );
    assert_eq!(
        query(&["--bbox", &bbox("series")]),
        serde_json::json!(["series"])
    );
    assert_eq!(
        query(&["--start", "2015-08-01", "--end", "2015-08-31"]),
        serde_json::json!(["series"])
    );
    assert_eq!(
        query(&[
            "--bbox",
            &bbox("demo"),
            "--start",
            "2017-02-16",
            "--end",
            "2017-02-17",
            "--model",
            "ukis-csmask-4b-l1c"
        ]),
        serde_json::json!(["demo4b"])
    );
    assert_eq!(query(&["--start", "2020-01-01"]), serde_json::json!([]));
    // A run again under a name already there replaces its row; nothing temporary is left.
    predict_demo(&out, "demo60", &["--resolution", "60", "--force"]);
    let again = check_catalog(&out, &[]);
    assert_eq!(again["items"], 4);
    assert_eq!(again["equal"], true, "{again:#}");
    assert!(
        files_in(&out).iter().all(|f| !f.ends_with(".partial")),
        "{:?}",
        files_in(&out)
    );
    assert_stac_valid(&out);
}
