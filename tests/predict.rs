//! `eoinfer predict` on the real demo scene with the real ukis-csmask model: the COG a user
//! opens in QGIS, the tiles GeoParquet, the run summary, band mapping, manifest generation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::path::Path;

fn demo_run(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        manifest("ukis-csmask-6b-l1c.json").display().to_string(),
        "--scene".into(),
        demo_scene().display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let o = eoinfer(&args);
    ok(&o);
    serde_json::from_slice(&o.stdout).expect("summary json on stdout")
}

#[test]
fn demo_class_map_is_a_georeferenced_cog_with_colours_and_category_names() {
    let dir = tempfile::tempdir().unwrap();
    let summary = demo_run(dir.path(), &["--probabilities"]);
    let classes = dir.path().join("T33UUU_20170216T102101.classes.tif");
    assert_eq!(
        summary["outputs"]["classes"].as_str().unwrap(),
        classes.display().to_string()
    );
    let info = gdalinfo(&classes);
    assert_eq!(info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    assert_eq!(
        info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"],
        "DEFLATE"
    );
    assert!(
        info["coordinateSystem"]["wkt"]
            .as_str()
            .unwrap()
            .contains("ID[\"EPSG\",32633]]")
    );
    // Extent equals the scene's (the 10 m band B02 covers the whole scene).
    let scene = gdalinfo(&demo_scene().join("T33UUU_20170216T102101_B02.jp2"));
    assert_eq!(info["cornerCoordinates"], scene["cornerCoordinates"]);
    assert_eq!(info["size"], serde_json::json!([512, 256]));
    let band = &info["bands"][0];
    assert_eq!(band["noDataValue"], 255.0);
    assert_eq!(band["colorInterpretation"], "Palette");
    assert_eq!(band["block"], serde_json::json!([512, 512]));
    assert_eq!(
        band["categories"],
        serde_json::json!(["clear", "cloud", "cloud_shadow"])
    );
    let entries = band["colorTable"]["entries"].as_array().unwrap();
    assert_eq!(entries[0], serde_json::json!([166, 217, 106, 255]));
    assert_eq!(entries[1], serde_json::json!([255, 255, 255, 255]));
    assert_eq!(entries[2], serde_json::json!([94, 60, 153, 255]));
    assert_eq!(entries[255][3], 0, "nodata is transparent");

    // The scene has real clouds and shadows: every class occurs.
    let (px, _, _) = read_u8(&classes, 1);
    for c in 0..3 {
        let n = px.iter().filter(|&&v| v == c).count();
        assert!(n > 1000, "class {c} has only {n} pixels");
    }
    assert_eq!(summary["counts"]["pixels_valid"], 512 * 256);

    let probs = gdalinfo(&dir.path().join("T33UUU_20170216T102101.probs.tif"));
    assert_eq!(probs["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"], "COG");
    let names: Vec<&str> = probs["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["description"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clear", "cloud", "cloud_shadow"]);
    for b in probs["bands"].as_array().unwrap() {
        assert!((b["scale"].as_f64().unwrap() - 1.0 / 255.0).abs() < 1e-12);
        assert_eq!(b["offset"], 0.0);
        let ci = b["colorInterpretation"].as_str().unwrap();
        assert!(
            ci == "Gray" || ci == "Undefined",
            "probabilities are not shown as RGB: {ci}"
        );
    }
    // Probabilities sum to 1 per pixel (within quantisation).
    let p: Vec<Vec<u8>> = (1..=3)
        .map(|b| read_u8(&dir.path().join("T33UUU_20170216T102101.probs.tif"), b).0)
        .collect();
    for i in (0..512 * 256).step_by(97) {
        let s: u32 = p.iter().map(|b| u32::from(b[i])).sum();
        assert!((253..=257).contains(&s), "pixel {i} sums to {s}");
        let argmax = (0..3).max_by_key(|&c| (p[c][i], 3 - c)).unwrap();
        assert!(
            p[argmax][i] >= p[usize::from(px[i])][i],
            "class is the most probable"
        );
    }

    // The summary is saved beside the outputs and names the model's checksum.
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("T33UUU_20170216T102101.summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["model"]["sha256"], summary["model"]["sha256"]);
    assert_eq!(saved["model"]["sha256"].as_str().unwrap().len(), 64);
    // No temporary files remain (the journal folder is kept; the parts in it are gone).
    assert!(
        files_in(dir.path())
            .iter()
            .all(|f| !f.starts_with('.') || f == ".eoinfer"),
        "{:?}",
        files_in(dir.path())
    );
    let work = dir.path().join(".eoinfer/T33UUU_20170216T102101");
    // Besides the lock files (job.lock, main.lock, merge.lock), two journals.
    let mut kept: Vec<String> = files_in(&work)
        .into_iter()
        .filter(|f| Path::new(f).extension().is_none_or(|e| e != "lock"))
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].starts_with("journal-main-") && kept[1].starts_with("journal-merge-"));
}

fn parquet_rows(path: &Path) -> (Vec<Vec<(String, Field)>>, serde_json::Value) {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let geo = geo_metadata(path);
    let rows = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            r.unwrap()
                .get_column_iter()
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect()
        })
        .collect();
    (rows, geo)
}

fn field<'a>(row: &'a [(String, Field)], name: &str) -> &'a Field {
    &row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("column {name}"))
        .1
}

#[test]
fn tile_fractions_in_the_geoparquet_match_counts_from_the_cog() {
    let dir = tempfile::tempdir().unwrap();
    demo_run(dir.path(), &["--overlap", "64"]);
    let (px, w, _) = read_u8(&dir.path().join("T33UUU_20170216T102101.classes.tif"), 1);
    let (rows, geo) = parquet_rows(&dir.path().join("T33UUU_20170216T102101.tiles.parquet"));
    assert_eq!(geo["version"], "1.1.0");
    assert_eq!(geo["primary_column"], "geometry");
    assert_eq!(geo["columns"]["geometry"]["encoding"], "WKB");
    assert_eq!(geo["columns"]["geometry"]["crs"]["id"]["code"], 32633);
    // 512 x 256 px, 256 px tiles with 64 px overlap: columns at 0, 192, 256; one row.
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let get_i = |n: &str| match field(row, n) {
            Field::Int(v) => *v as usize,
            f => panic!("{n}: {f:?}"),
        };
        let (x, y, tw, th) = (
            get_i("x_off"),
            get_i("y_off"),
            get_i("width"),
            get_i("height"),
        );
        let mut counts = [0_u64; 3];
        for yy in y..y + th {
            for xx in x..x + tw {
                counts[usize::from(px[yy * w + xx])] += 1;
            }
        }
        let valid: u64 = counts.iter().sum();
        assert_eq!(field(row, "valid_pixels"), &Field::Long(valid as i64));
        for (c, name) in ["clear", "cloud", "cloud_shadow"].iter().enumerate() {
            assert_eq!(
                field(row, &format!("count_{name}")),
                &Field::Long(counts[c] as i64)
            );
            let Field::Double(f) = field(row, &format!("fraction_{name}")) else {
                panic!()
            };
            assert!((f - counts[c] as f64 / valid as f64).abs() < 1e-12);
        }
        let Field::Bytes(wkb) = field(row, "geometry") else {
            panic!("geometry is WKB bytes")
        };
        assert_eq!(wkb.len(), 93, "a polygon with one ring of 5 points");
        assert_eq!(field(row, "inferred"), &Field::Bool(true));
    }

    // geopandas reads the table with its CRS; DuckDB sums the class counts.
    let seen = check_parquet(
        dir.path()
            .join("T33UUU_20170216T102101.tiles.parquet")
            .to_str()
            .unwrap(),
        "-",
    );
    assert_eq!(seen["tiles"]["epsg"], 32633);
    assert_eq!(seen["tiles"]["rows"], 3);
    assert_eq!(seen["tiles"]["geom_types"], serde_json::json!(["Polygon"]));
    assert_eq!(seen["tiles"]["area_m2"][0], 256.0 * 256.0 * 30.0 * 30.0);
    let sums = &seen["tiles"]["duckdb_class_sums"];
    let total: u64 = ["count_clear", "count_cloud", "count_cloud_shadow"]
        .iter()
        .map(|c| sums[*c].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3 * 256 * 256);
}

#[test]
fn a_plain_stack_without_band_names_runs_with_a_band_mapping_and_gives_the_same_classes() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.tif");
    ok(&eoinfer([
        "prepare",
        "--model",
        manifest("ukis-csmask-6b-l1c.json").to_str().unwrap(),
        "--scene",
        demo_scene().to_str().unwrap(),
        "--out",
        stack.to_str().unwrap(),
    ]));
    // A VRT over the stack whose bands carry no names, like a Landsat or plain export.
    let plain = dir.path().join("plain.vrt");
    let st = std::process::Command::new("gdal_translate")
        .args(["-q", "-of", "VRT", "-mo", "X=1"])
        .arg(&stack)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(st.success());
    let xml = std::fs::read_to_string(&plain).unwrap();
    let xml: String = xml
        .lines()
        .filter(|l| !l.contains("<Description>"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&plain, xml).unwrap();

    let model = manifest("ukis-csmask-6b-l1c.json");
    let out1 = dir.path().join("o1");
    let o = eoinfer([
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        plain.to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needs band blue (B02)") && err.contains("--bands blue="),
        "{err}"
    );

    ok(&eoinfer([
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--scene",
        plain.to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
        "--bands",
        "blue=1,green=2,red=3,nir=4,swir16=5,B12=6",
    ]));
    let out2 = dir.path().join("o2");
    demo_run(&out2, &[]);
    let (a, _, _) = read_u8(&out1.join("plain.classes.tif"), 1);
    let (b, _, _) = read_u8(&out2.join("T33UUU_20170216T102101.classes.tif"), 1);
    assert_eq!(a, b, "same pixels in, same classes out");
}

#[test]
fn committed_manifests_are_exactly_what_import_ukis_generates() {
    let dir = tempfile::tempdir().unwrap();
    let out = eoinfer([
        "model",
        "import-ukis",
        "--package",
        root().join("models/ukis-csmask").to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    ok(&out);
    for v in ["4b-l1c", "4b-l2a", "6b-l1c", "6b-l2a"] {
        let name = format!("ukis-csmask-{v}.json");
        let mut generated: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(&name)).unwrap())
                .unwrap();
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(manifest(&name)).unwrap()).unwrap();
        // Hrefs are relative to the folder written to; compare the rest exactly.
        for a in ["model", "sidecar"] {
            generated["assets"][a]["href"] = committed["assets"][a]["href"].clone();
        }
        assert_eq!(
            generated, committed,
            "{name} differs from the generator's output; run `eoinfer model import-ukis`"
        );
        let check = eoinfer([
            "model",
            "check",
            "--model",
            manifest(&name).to_str().unwrap(),
        ]);
        ok(&check);
    }
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(manifest("ukis-csmask-6b-l1c.json")).unwrap(),
    )
    .unwrap();
    let p = &m["properties"];
    assert_eq!(
        p["mlm:input"][0]["bands"],
        serde_json::json!(["B02", "B03", "B04", "B08", "B11", "B12"])
    );
    assert_eq!(p["mlm:input"][0]["value_scaling"][0]["type"], "z-score");
    assert_eq!(
        p["mlm:input"][0]["input"]["dim_order"],
        serde_json::json!(["batch", "bands", "height", "width"])
    );
    assert_eq!(p["eoinfer:gsd"], 30.0);
    assert_eq!(
        p["mlm:output"][0]["classification:classes"][2]["name"],
        "cloud_shadow"
    );
}

#[test]
fn a_scene_smaller_than_one_tile_is_padded_and_keeps_its_own_grid() {
    let dir = tempfile::tempdir().unwrap();
    // At 60 m the demo scene is 256 x 128 px, less than one 256 px tile high.
    let summary = demo_run(dir.path(), &["--resolution", "60"]);
    assert_eq!(summary["scene"]["width"], 256);
    assert_eq!(summary["scene"]["height"], 128);
    assert_eq!(summary["counts"]["tiles"], 1);
    assert!(
        summary["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("smaller than one 256 px tile")),
        "{}",
        summary["warnings"]
    );
    let info = gdalinfo(&dir.path().join("T33UUU_20170216T102101.classes.tif"));
    assert_eq!(info["size"], serde_json::json!([256, 128]));
    assert_eq!(
        info["geoTransform"],
        serde_json::json!([330_000.0, 60.0, 0.0, 5_822_040.0, 0.0, -60.0])
    );
    let (px, _, _) = read_u8(&dir.path().join("T33UUU_20170216T102101.classes.tif"), 1);
    assert!(px.iter().all(|&c| c < 3));
}
