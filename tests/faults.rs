//! The faults real runs meet, each reproduced: inputs changed under a resumable run, a full
//! disk (a real tmpfs), two processes on one job and two runs on one catalog, SIGINT and
//! SIGTERM, a run that fails before its first block, and limits (grid size, threads, batch
//! memory under a real cgroup). Real scene, real model, the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eoinfer, ok, ok_stdout, root, same_rasters};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MODEL: &str = "models/ukis-csmask-6b-l1c.json";
const BANDS: [&str; 6] = ["B02", "B03", "B04", "B08", "B11", "B12"];

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The demo run at 10 m in 4 blocks of one tile row (28 tiles), with probabilities.
fn args(scene: &Path, out: &Path) -> Vec<String> {
    [
        "predict",
        "--model",
        MODEL,
        "--scene",
        &s(scene),
        "--out",
        &s(out),
        "--name",
        "run",
        "--resolution",
        "10",
        "--block-rows",
        "1",
        "--probabilities",
    ]
    .map(String::from)
    .to_vec()
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| (*s).to_string()));
    base
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eoinfer"))
        .args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The uninterrupted run of [`args`] on the demo scene that the others are compared with.
fn reference() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = root().join("target/test-fixtures/faults-reference");
        let _ = std::fs::remove_dir_all(&dir);
        ok(&eoinfer(args(&common::demo_scene(), &dir)));
        dir
    })
}

/// Every file under `dir`, relative, recursively.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` but the lock files (which stay, empty of work).
fn tree_without_locks(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|f| Path::new(f).extension().is_none_or(|e| e != "lock"))
        .collect()
}

/// Temporary and unfinished files under `dir` (none may be left).
fn debris(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|f| f.contains(".partial") || f.contains(".staged") || f.contains(".staging"))
        .collect()
}

/// Block records in the journals of a run's work folder.
fn journalled(work: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for f in common::files_in(work) {
        if f.starts_with("journal-") {
            for line in std::fs::read_to_string(work.join(f)).unwrap().lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v["kind"] == "block" {
                        out.push(v);
                    }
                }
            }
        }
    }
    out
}

/// The part files in the work folder's parts are exactly those the journal records.
fn only_journalled_parts(work: &Path) {
    let mut recorded: Vec<String> = journalled(work)
        .iter()
        .flat_map(|r| {
            let mut files: Vec<String> = r["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["file"].as_str().unwrap().to_string())
                .collect();
            if let Some(c) = r["carry"]["file"].as_str() {
                files.push(c.to_string());
            }
            files
        })
        .collect();
    recorded.sort();
    recorded.dedup();
    let on_disk = common::files_in(&work.join("parts"));
    let mut on_disk: Vec<String> = on_disk;
    on_disk.sort();
    assert_eq!(on_disk, recorded, "parts on disk vs journal");
}

fn wait_for_blocks(child: &mut Child, work: &Path, n: usize) {
    let start = Instant::now();
    while journalled(work).len() < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The six model bands of the demo scene, copied (they will be changed).
fn scene_copy(dir: &Path) -> PathBuf {
    let scene = dir.join("scene");
    std::fs::create_dir_all(&scene).unwrap();
    for b in BANDS {
        let f = format!("T33UUU_20170216T102101_{b}.jp2");
        std::fs::copy(common::demo_scene().join(&f), scene.join(&f)).unwrap();
    }
    scene
}

#[test]
fn a_resumed_run_whose_input_changed_at_the_same_path_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = scene_copy(tmp.path());
    let out = tmp.path().join("out");
    let work = out.join(".eoinfer/run");
    let a = args(&scene, &out);
    // kill -9 after the first block.
    let mut child = spawn(&a);
    wait_for_blocks(&mut child, &work, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    // B04 is replaced by another file at the same path (here: the green band).
    let b04 = scene.join("T33UUU_20170216T102101_B04.jp2");
    let original = std::fs::read(&b04).unwrap();
    std::fs::copy(scene.join("T33UUU_20170216T102101_B03.jp2"), &b04).unwrap();
    let r = eoinfer(&a);
    assert_eq!(r.status.code(), Some(2));
    let err = stderr(&r);
    for needle in [
        "_B04.jp2 changed",
        "size 518110 -> 520571 bytes",
        "resuming would mix results",
        "--force",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    assert!(!out.join("run.classes.tif").exists());
    // A change inside the file at the same size shows too (its modification time).
    let mut bytes = original;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&b04, &bytes).unwrap();
    let r = eoinfer(&a);
    assert_eq!(r.status.code(), Some(2));
    let err = stderr(&r);
    assert!(err.contains("_B04.jp2 changed (modified"), "{err}");
    // --force starts over on the new input: the outputs are those of a fresh run on it.
    std::fs::copy(scene.join("T33UUU_20170216T102101_B03.jp2"), &b04).unwrap();
    let forced = json(&ok_stdout(&eoinfer(with(
        a.clone(),
        &["--force", "--json"],
    ))));
    assert_eq!(forced["job"]["blocks_already_done"], 0);
    let fresh = tmp.path().join("fresh");
    ok(&eoinfer(args(&scene, &fresh)));
    same_rasters(&out, &fresh);
}

#[test]
fn an_input_changed_while_the_blocks_ran_is_refused_at_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let scene = scene_copy(tmp.path());
    let out = tmp.path().join("out");
    // Every block is run by one shard; B04 changes before the merge.
    ok(&eoinfer(with(args(&scene, &out), &["--shard", "0/1"])));
    let b04 = scene.join("T33UUU_20170216T102101_B04.jp2");
    std::fs::copy(scene.join("T33UUU_20170216T102101_B03.jp2"), &b04).unwrap();
    let r = eoinfer(["merge", &s(&out)]);
    assert_eq!(r.status.code(), Some(2));
    let err = stderr(&r);
    assert!(err.contains("_B04.jp2 changed (size"), "{err}");
    assert!(!out.join("run.classes.tif").exists());
    assert!(debris(&out).is_empty(), "{:?}", debris(&out));
}

/// A tmpfs of `size` mounted at `dir` (needs root, as CI runs), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root); run the tests as root"
        );
        Self(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_leaves_no_unfinished_part_and_the_same_command_resumes() {
    let reference = reference();
    // The run needs about 9 MB of parts and carries, then 3 MB more for the merge: the disk
    // fills up in the first block, in the middle, in the last block and during the merge.
    for size in ["1m", "3m", "8500k", "10m"] {
        let tmp = tempfile::tempdir().unwrap();
        let disk = Tmpfs::mount(&tmp.path().join("disk"), size);
        let out = tmp.path().join("disk/out");
        let work = out.join(".eoinfer/run");
        let a = args(&common::demo_scene(), &out);
        let r = eoinfer(&a);
        assert_eq!(r.status.code(), Some(2), "{size}: {}", stderr(&r));
        let err = stderr(&r);
        let done = journalled(&work).len();
        let full = format!("the disk of {} is full", out.display());
        let kept = format!("{done} of 4 blocks are finished and kept");
        for needle in [
            full.as_str(),
            kept.as_str(),
            "the rest of the run needs about",
            "free now",
            "rerun the same command to resume",
        ] {
            assert!(err.contains(needle), "{size}: {needle} missing from: {err}");
        }
        // No block is journalled without its complete parts, and the failed run removed
        // its unfinished files (with no block finished: its plan and work folder too).
        assert!(debris(&out).is_empty(), "{size}: {:?}", debris(&out));
        only_journalled_parts(&work);
        assert!(!out.join("run.classes.tif").exists());
        if done == 0 {
            assert!(
                tree_without_locks(&out).is_empty(),
                "{size}: {:?}",
                tree(&out)
            );
        }
        // Space freed: the same command resumes and gives the uninterrupted run's outputs.
        disk.resize("64m");
        let rerun = json(&ok_stdout(&eoinfer(with(a, &["--json"]))));
        assert_eq!(rerun["job"]["blocks_already_done"], done as u64, "{size}");
        same_rasters(reference, &out);
        assert!(debris(&out).is_empty(), "{size}: {:?}", debris(&out));
        eprintln!("{size}: {done} blocks were finished when the disk was full: {err}");
    }
}

#[test]
fn a_second_process_on_the_same_job_fails_at_once_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = args(&common::demo_scene(), &out);
    let mut first = spawn(&a);
    // Once the first holds the job (its plan is written), start the second.
    let start = Instant::now();
    while !out.join("run.plan.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = eoinfer(&a);
    // It failed at once, while the first still runs.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended first"
    );
    assert_eq!(second.status.code(), Some(2));
    let err = stderr(&second);
    let pid = format!("another eoinfer (pid {} on ", first.id());
    assert!(err.contains(&pid), "{pid} missing from: {err}");
    assert!(err.contains("is running this job"), "{err}");
    // The first finishes untouched: the whole set of outputs; a rerun is a no-op and the
    // category names are still there.
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    same_rasters(reference(), &out);
    let again = ok(&eoinfer(&a));
    assert!(again.contains("nothing to do"), "{again}");
    assert!(out.join("run.classes.tif.aux.xml").exists());
}

#[test]
fn runs_finishing_at_once_in_one_folder_keep_every_link_of_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let names = ["a", "b", "c", "d", "e", "f"];
    let children: Vec<Child> = names
        .iter()
        .map(|n| {
            spawn(&[
                "predict".into(),
                "--model".into(),
                MODEL.into(),
                "--scene".into(),
                s(&common::demo_scene()),
                "--out".into(),
                s(&out),
                "--name".into(),
                (*n).into(),
                "--threads".into(),
                "1".into(),
            ])
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let cat = json(&std::fs::read_to_string(out.join("catalog.json")).unwrap());
    let mut items: Vec<String> = cat["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "item")
        .map(|l| l["href"].as_str().unwrap().to_string())
        .collect();
    items.sort();
    assert_eq!(items, names.map(|n| format!("./{n}.item.json")), "{cat}");
    assert!(debris(&out).is_empty(), "{:?}", debris(&out));
}

#[test]
fn sigterm_and_sigint_remove_temporary_files_say_what_is_done_and_the_rerun_resumes() {
    let reference = reference();
    for (sig, code, moment) in [
        (libc::SIGTERM, 143, 1),
        (libc::SIGINT, 130, 2),
        (libc::SIGTERM, 143, 4),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let work = out.join(".eoinfer/run");
        let a = with(args(&common::demo_scene(), &out), &["--vectors"]);
        let mut child = spawn(&a);
        wait_for_blocks(&mut child, &work, moment);
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        if moment == 4 && o.status.success() {
            // The merge finished before the signal came: nothing to check this time.
            eprintln!("the run finished before SIGTERM; skipped the last case");
            continue;
        }
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        let err = stderr(&o);
        let done = journalled(&work).len();
        let said =
            format!("interrupted: {done} of 4 blocks are done; rerun the same command to resume");
        assert!(err.contains(&said), "{said} missing from: {err}");
        assert!(debris(&out).is_empty(), "{:?}", debris(&out));
        // No half set of outputs: none, or (a signal after the last rename) all of them.
        let finals = [
            "run.classes.tif",
            "run.probs.tif",
            "run.polygons.gpkg",
            "run.summary.json",
        ]
        .map(|f| out.join(f).exists());
        assert!(finals == [false; 4] || finals == [true; 4], "{finals:?}");
        if finals[0] {
            continue;
        }
        only_journalled_parts(&work);
        let rerun = json(&ok_stdout(&eoinfer(with(a, &["--json"]))));
        assert_eq!(rerun["job"]["blocks_already_done"], done as u64);
        same_rasters(reference, &out);
    }
}

#[test]
fn a_run_that_finishes_no_block_leaves_no_plan_and_a_fixed_input_runs_with_any_options() {
    let tmp = tempfile::tempdir().unwrap();
    // The six model bands in one uncompressed GeoTIFF, cut off after 2 % of its bytes: the
    // reader fails in the first block.
    let demo = common::demo_scene();
    let good = tmp.path().join("good.tif");
    common::demo_stack(&good, &["TILED=NO"]);
    let tif = tmp.path().join("stack.tif");
    std::fs::copy(&good, &tif).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&tif).unwrap();
    f.set_len(f.metadata().unwrap().len() / 50).unwrap();
    drop(f);
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        eoinfer(with(
            vec![
                "predict".into(),
                "--model".into(),
                MODEL.into(),
                "--scene".into(),
                s(&tif),
                "--bands".into(),
                "B02=1,B03=2,B04=3,B08=4,B11=5,B12=6".into(),
                "--resolution".into(),
                "10".into(),
                "--out".into(),
                s(&out),
                "--name".into(),
                "run".into(),
            ],
            extra,
        ))
    };
    let r = run(&[]);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("stack.tif"), "{}", stderr(&r));
    assert!(tree_without_locks(&out).is_empty(), "{:?}", tree(&out));
    // The input fixed, a rerun with other options runs (nothing was finished to protect).
    std::fs::copy(&good, &tif).unwrap();
    let r = run(&["--overlap", "64", "--json"]);
    let summary = json(&ok_stdout(&r));
    assert_eq!(summary["parameters"]["tiling"]["overlap"], 64);
    // The plan of a run that was stopped before its first block (here: one written by
    // `eoinfer plan`) is replaced too; one with finished blocks is not.
    let other = tmp.path().join("other");
    ok(&eoinfer(
        with(args(&demo, &other), &["--overlap", "16"])
            .into_iter()
            .map(|a| if a == "predict" { "plan".into() } else { a })
            .collect::<Vec<String>>(),
    ));
    ok(&eoinfer(args(&demo, &other)));
    let refused = eoinfer(with(args(&demo, &other), &["--overlap", "16"]));
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
}

#[test]
fn values_out_of_range_are_refused_with_the_allowed_range_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The demo at its 30 m (3 tiles); the options under test come on top.
    let base: Vec<String> = [
        "predict",
        "--model",
        MODEL,
        "--scene",
        &s(&common::demo_scene()),
        "--out",
        &s(&out),
    ]
    .map(String::from)
    .to_vec();
    let cases: [(&[&str], &str); 12] = [
        (&["--resolution", "0"], "pass a pixel size above 0"),
        (&["--resolution", "-1"], "pass a pixel size above 0"),
        (
            &["--resolution", "0.001"],
            "more than the limit of 10000000000 pixels",
        ),
        (&["--max-pixels", "100000"], "--max-pixels"),
        (&["--threads", "10000"], "up to"),
        (&["--threads", "-1"], "-1 is negative; pass 0"),
        (&["--batch-size", "0"], "0 means nothing here"),
        (
            &["--batch-size", "-1"],
            "-1 is negative; pass a whole number from 1",
        ),
        (&["--batch-size", "100000"], "from 1 to 65536"),
        (&["--block-rows", "0"], "0 means nothing here"),
        (&["--memory-limit", "-1G"], "negative"),
        (
            &[
                "--resolution",
                "10",
                "--batch-size",
                "28",
                "--memory-limit",
                "1G",
            ],
            "the allowed range here is 1 to",
        ),
    ];
    for (extra, needle) in cases {
        let r = eoinfer(with(base.clone(), extra));
        assert_eq!(r.status.code(), Some(2), "{extra:?}");
        let err = stderr(&r);
        assert!(
            err.contains(needle),
            "{extra:?}: {needle} missing from: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(tree(&out).is_empty(), "{extra:?}: {:?}", tree(&out));
    }
}

/// Runs `eoinfer` inside a new memory cgroup limited to `bytes` (v2 where the memory
/// controller is available, else v1), as Kubernetes and Slurm run it.
fn in_cgroup(bytes: u64, args: &[String]) -> Output {
    let name = format!("eoinfer-test-{}", std::process::id());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (dir, file) = if std::fs::read_to_string(v2).is_ok_and(|c| c.contains("memory")) {
        (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
    } else if Path::new("/sys/fs/cgroup/memory").is_dir() {
        (
            Path::new("/sys/fs/cgroup/memory").join(&name),
            "memory.limit_in_bytes",
        )
    } else {
        panic!("no cgroup memory controller (v2 or v1) to test with");
    };
    std::fs::create_dir_all(&dir).expect("creating a cgroup needs root (CI runs as root)");
    std::fs::write(dir.join(file), bytes.to_string()).unwrap();
    let procs = dir.join("cgroup.procs");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec \"$0\" \"$@\"",
            procs.display()
        ))
        .arg(env!("CARGO_BIN_EXE_eoinfer"))
        .args(args)
        .current_dir(root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&dir);
    out
}

#[test]
fn the_memory_limit_of_the_cgroup_refuses_a_batch_that_would_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = with(args(&common::demo_scene(), &out), &["--batch-size", "16"]);
    let r = in_cgroup(1 << 30, &a);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let err = stderr(&r);
    for needle in [
        "memory limit of 1.0 GiB (cgroup",
        "--batch-size 16 is too large",
        "1 to",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
    // The batch it says fits runs inside the same limit.
    let max: String = err
        .split("the allowed range here is 1 to ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let fits = with(args(&common::demo_scene(), &out), &["--batch-size", &max]);
    let r = in_cgroup(1 << 30, &fits);
    assert!(r.status.success(), "batch {max}: {}", stderr(&r));
}

#[test]
fn a_scene_read_over_http_is_fingerprinted_by_size_and_last_modified() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let translate = |compress: &str| {
        common::demo_stack(
            &served.join("stack.tif"),
            &["TILED=YES", &format!("COMPRESS={compress}")],
        );
    };
    translate("DEFLATE");
    let server = common::Server::start(&served);
    let url = format!("/vsicurl/http://127.0.0.1:{}/stack.tif", server.1);
    let out = tmp.path().join("out");
    let a: Vec<String> = [
        "predict",
        "--model",
        MODEL,
        "--scene",
        &url,
        "--bands",
        "B02=1,B03=2,B04=3,B08=4,B11=5,B12=6",
        "--out",
        &s(&out),
        "--name",
        "web",
    ]
    .map(String::from)
    .to_vec();
    ok(&eoinfer(&a));
    let plan = json(&std::fs::read_to_string(out.join("web.plan.json")).unwrap());
    let entry = plan["input_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == url.as_str())
        .unwrap_or_else(|| panic!("{url} not in {}", plan["input_files"]))
        .clone();
    let size = std::fs::metadata(served.join("stack.tif")).unwrap().len();
    assert_eq!(entry["bytes"], size);
    assert!(
        entry["modified"].as_str().unwrap().ends_with(" GMT"),
        "{entry}"
    );
    // The same URL now serves another file.
    translate("LZW");
    let r = eoinfer(&a);
    assert_eq!(r.status.code(), Some(2));
    let err = stderr(&r);
    assert!(
        err.contains(&format!("{url} changed (size {size} -> ")),
        "{err}"
    );
}
