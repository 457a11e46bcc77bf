//! Scale-out on a real engine: a single-node Slurm cluster (Debian 12's slurmctld, slurmd and
//! munge, Slurm 22.05) started by `tests/reference/slurm_cluster.sh` with everything in a
//! temporary folder and stopped at the end, runs the project's own `deploy/slurm/` scripts
//! exactly as the README tells users to (through `submit.sh`, with the documented overrides),
//! and the merged outputs are compared byte for byte with one process. Skipped, saying so,
//! only where the test cannot run as root (the daemons run as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eoinfer, ok, root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running single-node cluster; stopped (nothing left running) when dropped.
struct Cluster {
    dir: PathBuf,
}

fn script() -> PathBuf {
    root().join("tests/reference/slurm_cluster.sh")
}

impl Cluster {
    /// Starts the cluster in `dir`, or `None` (with the reason on stderr) without root.
    fn start(dir: &Path) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "skipped: the single-node Slurm cluster needs root (its daemons run as root); run the tests as root to include it"
            );
            return None;
        }
        let o = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the Slurm cluster did not start:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Some(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm client command against this cluster.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// The state of each job or array task of `ids` (`squeue -t all`), once none of them is
    /// pending, running or completing; panics after `limit`.
    fn wait(&self, ids: &[&str], limit: Duration) -> BTreeMap<String, String> {
        let t0 = Instant::now();
        loop {
            let o = self
                .cmd("squeue")
                .args(["-h", "-t", "all", "-o", "%i %T", "-j", &ids.join(",")])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let states: BTreeMap<String, String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(i, s)| (i.to_string(), s.to_string()))
                .collect();
            let busy = states.values().any(|s| {
                matches!(
                    s.as_str(),
                    "PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING" | "SUSPENDED"
                )
            });
            if !states.is_empty() && !busy {
                return states;
            }
            assert!(
                t0.elapsed() < limit,
                "jobs {ids:?} still queued after {limit:?}: {states:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The daemons' logs, for a failure message.
    fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|f| {
                let text =
                    std::fs::read_to_string(self.dir.join("log").join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let o = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
        if let Ok(o) = o {
            if !o.status.success() {
                eprintln!(
                    "stopping the Slurm cluster failed:\n{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// A box inside the demo scene (longitude/latitude): the AOI of the runs.
const AOI: &str = "12.52,52.46,12.70,52.52";

/// `eoinfer predict` options the array and the one process share beyond the scripts' own.
const EXTRA: [&str; 4] = ["--resolution", "10", "--block-rows", "1"];

/// The class map, probabilities, tiles and preview: what a segmentation run's outputs are
/// compared by.
const CLASS_MAP: [&str; 4] = [
    "district.classes.tif",
    "district.probs.tif",
    "district.tiles.parquet",
    "district.preview.png",
];

/// The inputs of the runs and the environment the scripts need.
struct Ctx<'a> {
    cluster: &'a Cluster,
    path: String,
    model: PathBuf,
    scene: PathBuf,
    aoi: String,
    /// `EOINFER_OUTPUTS`, or `None` for the script's default (`--probabilities --vectors`).
    outputs: Option<&'static str>,
}

impl Ctx<'_> {
    /// `deploy/slurm/submit.sh` in `work` with `shards` shards and extra eoinfer options, as
    /// the docs say; returns the array's and the merge's job ids.
    fn submit(&self, work: &Path, shards: usize, extra: &[&str]) -> (String, String) {
        self.submit_with(work, shards, &["--cpus-per-task=1", "--mem=2G"], extra)
    }

    /// A Slurm client command run from the job folder `work`, with the environment the
    /// scripts' jobs inherit: eoinfer and ONNX Runtime found, the output folder and name.
    fn job_cmd(&self, program: &str, work: &Path) -> Command {
        let mut c = self.cluster.cmd(program);
        c.current_dir(work)
            .env("PATH", &self.path)
            .env(
                "ORT_DYLIB_PATH",
                root().join("third_party/onnxruntime/libonnxruntime.so.1.31.1"),
            )
            .env("EOINFER_OUT", work.join("outputs/district"))
            .env("EOINFER_NAME", "district");
        c
    }

    /// [`Self::submit`] with these sbatch options for the array.
    fn submit_with(
        &self,
        work: &Path,
        shards: usize,
        sbatch: &[&str],
        extra: &[&str],
    ) -> (String, String) {
        std::fs::create_dir_all(work).unwrap();
        let mut submit = self.job_cmd("bash", work);
        submit
            .arg(root().join("deploy/slurm/submit.sh"))
            .args(sbatch)
            .arg("--")
            .args(extra)
            .env("EOINFER_SHARDS", shards.to_string())
            .env("EOINFER_MODEL", &self.model)
            .env("EOINFER_SCENES", &self.scene)
            .env("EOINFER_AOI", &self.aoi)
            .env("EOINFER_MERGE_OPTS", "--cpus-per-task=1 --mem=1G");
        if let Some(outputs) = self.outputs {
            submit.env("EOINFER_OUTPUTS", outputs);
        }
        let o = submit.output().unwrap();
        assert!(
            o.status.success(),
            "submit.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ids = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let (array, merge) = ids.split_once(' ').expect("submit.sh prints two job ids");
        (array.to_string(), merge.to_string())
    }

    /// Queues the merge again after the requeued task `task` (as the docs say: a dependency
    /// on the whole array stays unsatisfiable once one of its tasks failed); returns its job
    /// id.
    fn merge_again(&self, work: &Path, task: &str) -> String {
        let o = self
            .job_cmd("sbatch", work)
            .args([
                "--parsable",
                &format!("--dependency=afterok:{task}"),
                "--cpus-per-task=1",
                "--mem=1G",
            ])
            .arg(root().join("deploy/slurm/merge.sbatch"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Slurm's one-word state of a job or array task.
    fn state(&self, id: &str) -> String {
        let o = self
            .cluster
            .cmd("squeue")
            .args(["-h", "-t", "all", "-o", "%T", "-j", id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Runs `scontrol args`.
    fn scontrol(&self, args: &[&str]) {
        let o = self.cluster.cmd("scontrol").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "scontrol {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Waits until `id` is pending again after a requeue and its earlier run has ended (its
    /// log `log`, when it was running, says it was interrupted), then starts it without
    /// Slurm's hold of a requeued job (its BeginTime, about two minutes). Started while the
    /// node still ends the earlier run, Slurm kills it ("Job credential revoked"): a few
    /// seconds are left for that.
    fn start_requeued(&self, id: &str, log: Option<&Path>) {
        let t0 = Instant::now();
        let ended = || {
            log.is_none_or(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains("interrupted")))
        };
        while !(self.state(id).starts_with("PENDING") && ended()) {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{id}: {}",
                self.state(id)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(5));
        self.scontrol(&["update", &format!("JobId={id}"), "StartTime=now"]);
    }

    /// One process with the array script's options and `extra`, into `out`.
    fn one_process(&self, out: &Path, extra: &[&str]) {
        let outputs = self.outputs.unwrap_or("--probabilities --vectors");
        ok(&eoinfer(
            [
                "predict",
                "--model",
                self.model.to_str().unwrap(),
                "--scene",
                self.scene.to_str().unwrap(),
                "--aoi",
                &self.aoi,
                "--out",
                out.to_str().unwrap(),
                "--name",
                "district",
            ]
            .iter()
            .copied()
            .chain(outputs.split_whitespace())
            .chain(extra.iter().copied()),
        ));
    }
}

/// The class map, probabilities, tiles and preview of two runs are the same bytes.
fn same(a: &Path, b: &Path, what: &str) {
    same_files(a, b, &CLASS_MAP, what);
}

/// The files `files` of two runs are the same bytes.
fn same_files(a: &Path, b: &Path, files: &[&str], what: &str) {
    for f in files {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{what}: {f} differs from one process's"
        );
    }
}

/// A task requeued midway resumes from its journal to one process's bytes.
fn requeued_midway(ctx: &Ctx<'_>, tmp: &Path) -> PathBuf {
    let cluster = ctx.cluster;
    // 2. A task requeued midway (`scontrol requeue`, once its journal shows a finished
    // block) is stopped by Slurm's SIGTERM, runs again and resumes from its journal: every
    // block is journalled once, the result is one process's. Test-time augmentation makes
    // the run long enough to requeue (9 blocks, about 20 s here).
    let slow: Vec<&str> = EXTRA.iter().copied().chain(["--tta", "d4"]).collect();
    let work2 = tmp.join("requeue");
    let (array, merge) = ctx.submit(&work2, 1, &slow);
    let task = format!("{array}_0");
    first_block(ctx, &work2.join("outputs/district/.eoinfer/district"));
    ctx.scontrol(&["requeue", &task]);
    let log = work2.join(format!("logs/eoinfer-predict-{array}_0.log"));
    ctx.start_requeued(&task, Some(&log));
    let states = cluster.wait(&[&array, &merge], Duration::from_secs(600));
    assert!(
        states.values().all(|s| s == "COMPLETED"),
        "{states:?}\n{}",
        cluster.logs()
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("restart 1"), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    assert!(
        log.contains("resuming: blocks finished before are not recomputed"),
        "{log}"
    );
    each_block_journalled_once(&work2);
    let one2 = tmp.join("one-tta");
    ctx.one_process(&one2, &slow);
    same(&work2.join("outputs/district"), &one2, "requeued midway");
    one2
}

/// Every block of the run in `work` is journalled once over all its processes (a resumed
/// task did not run its finished blocks again).
fn each_block_journalled_once(work: &Path) {
    let out = work.join("outputs/district");
    let summary = common::read_json(&out.join("district.summary.json"));
    let blocks = summary["job"]["blocks"].as_u64().unwrap() as usize;
    assert_eq!(
        common::block_lines(&out.join(".eoinfer/district")),
        blocks,
        "a block was journalled twice"
    );
}

/// Waits until the journal in `journal` holds a finished block.
fn first_block(ctx: &Ctx<'_>, journal: &Path) {
    let t0 = Instant::now();
    while common::block_lines(journal) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no block finished\n{}",
            ctx.cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A task stopped by SIGTERM as at a time limit or pre-emption (`scancel --batch
/// --signal=TERM`) stops cleanly, its merge is cancelled, and submitting the run again
/// resumes it to one process's bytes (`reference`).
fn stopped_by_term_and_resubmitted(ctx: &Ctx<'_>, tmp: &Path, reference: &Path) {
    let slow: Vec<&str> = EXTRA.iter().copied().chain(["--tta", "d4"]).collect();
    let work = tmp.join("term");
    let (array, merge) = ctx.submit(&work, 1, &slow);
    let journal = work.join("outputs/district/.eoinfer/district");
    first_block(ctx, &journal);
    let o = ctx
        .cluster
        .cmd("scancel")
        .args(["--batch", "--signal=TERM", &format!("{array}_0")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let states = ctx
        .cluster
        .wait(&[&array, &merge], Duration::from_secs(300));
    assert_eq!(states[&format!("{array}_0")], "FAILED", "{states:?}");
    assert_eq!(
        states[&merge], "CANCELLED",
        "the merge ran after a failed task: {states:?}"
    );
    let log = |a: &str| {
        std::fs::read_to_string(work.join(format!("logs/eoinfer-predict-{a}_0.log"))).unwrap()
    };
    assert!(log(&array).contains("interrupted"), "{}", log(&array));
    // The same submission again resumes.
    let (again, merge) = ctx.submit(&work, 1, &slow);
    let states = ctx
        .cluster
        .wait(&[&again, &merge], Duration::from_secs(600));
    assert!(states.values().all(|s| s == "COMPLETED"), "{states:?}");
    assert!(
        log(&again).contains("resuming: blocks finished before are not recomputed"),
        "{}",
        log(&again)
    );
    each_block_journalled_once(&work);
    same(
        &work.join("outputs/district"),
        reference,
        "stopped by SIGTERM",
    );
}

/// A task that fails for a transient reason (a band file moved away while it starts, then
/// put back: not a content change): the merge never runs, `eoinfer merge` by hand names the
/// missing blocks and shard, and requeueing the task plus a new merge complete the run to one
/// process's bytes (`reference`). The array is held and its tasks released one at a time.
fn a_failed_task_requeued_and_merged_again(ctx: &Ctx<'_>, tmp: &Path, reference: &Path) {
    let scene = tmp.join("scene");
    std::fs::create_dir(&scene).unwrap();
    let mut bands = Vec::new();
    for f in common::files_in(&ctx.scene) {
        std::os::unix::fs::symlink(ctx.scene.join(&f), scene.join(&f)).unwrap();
        bands.push(f);
    }
    let b02 = bands
        .iter()
        .find(|f| f.contains("_B02"))
        .expect("a B02 file")
        .clone();
    let ctx = Ctx {
        scene,
        aoi: ctx.aoi.clone(),
        path: ctx.path.clone(),
        model: ctx.model.clone(),
        ..*ctx
    };
    let work = tmp.join("failed");
    let (array, merge) = ctx.submit_with(
        &work,
        2,
        &["--cpus-per-task=1", "--mem=2G", "--hold"],
        &EXTRA,
    );
    let (t0, t1) = (format!("{array}_0"), format!("{array}_1"));
    ctx.scontrol(&["release", &t0]);
    ctx.cluster.wait(&[&t0], Duration::from_secs(300));
    assert_eq!(ctx.state(&t0), "COMPLETED");
    let away = ctx.scene.join(format!(".{b02}.away"));
    std::fs::rename(ctx.scene.join(&b02), &away).unwrap();
    ctx.scontrol(&["release", &t1]);
    let states = ctx
        .cluster
        .wait(&[&array, &merge], Duration::from_secs(300));
    assert_eq!(states[&t1], "FAILED", "{states:?}");
    assert_eq!(
        states[&merge], "CANCELLED",
        "the merge ran after a failed task: {states:?}"
    );
    // While the file is gone, a merge by hand says so (the inputs must be those the finished
    // blocks read); once it is back, it names the missing blocks and their shard.
    let out = work.join("outputs/district");
    let o = eoinfer(["merge", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is gone"));
    std::fs::rename(&away, ctx.scene.join(&b02)).unwrap();
    let o = eoinfer(["merge", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1/2") && err.contains("block"), "{err}");
    ctx.scontrol(&["requeue", &t1]);
    ctx.start_requeued(&t1, None);
    let merge = ctx.merge_again(&work, &t1);
    let states = ctx
        .cluster
        .wait(&[&array, &merge], Duration::from_secs(600));
    assert!(states.values().all(|s| s == "COMPLETED"), "{states:?}");
    same(&out, reference, "a failed task requeued");
}

/// An OlmoEarth run of each kind but the class map (which the runs above are) through the same
/// scripts over a polygon AOI of the Slovenia series, its class-map outputs replaced
/// (`EOINFER_OUTPUTS=`): Nano's embeddings (five dates), a regression head's value map and a
/// classification head's window labels. 3 shards and the merge give one process's bytes of
/// each output, and a valid Item.
fn olmoearth_runs_in_three_shards(seg: &Ctx<'_>, tmp: &Path) {
    // 32 px tiles overlapping by 16 px and a block per tile row: several blocks to share out
    // on a 92 x 96 px AOI (window labels: 32 px windows, which do not overlap).
    let tiles = ["--tile-size", "32", "--overlap", "16", "--block-rows", "1"];
    let runs: [(&str, &[&str], &[&str]); 3] = [
        (
            "olmoearth-v1-nano",
            &tiles,
            &["district.embeddings.tif", "district.embeddings.parquet"],
        ),
        (
            "olmoearth-v1-nano-reg",
            &tiles,
            &["district.values.tif", "district.tiles.parquet"],
        ),
        (
            "olmoearth-v1-nano-cls",
            &["--block-rows", "1"],
            &["district.classes.tif", "district.windows.parquet"],
        ),
    ];
    for (model, extra, files) in runs {
        let ctx = Ctx {
            model: root().join(format!("models/olmoearth/{model}.json")),
            scene: common::shared_scene("s2_l1c_timeseries_eolearn_slovenia_101x100"),
            aoi: common::SLOVENIA_AOI.to_string(),
            outputs: Some(""),
            path: seg.path.clone(),
            ..*seg
        };
        let work = tmp.join(model);
        let t0 = Instant::now();
        let (array, merge) = ctx.submit(&work, 3, extra);
        let states = ctx
            .cluster
            .wait(&[&array, &merge], Duration::from_secs(600));
        assert!(
            states.values().all(|s| s == "COMPLETED"),
            "{model}: {states:?}\n{}",
            ctx.cluster.logs()
        );
        println!(
            "Slurm: {model} in 3 array tasks and the merge in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let out = work.join("outputs/district");
        let summary = common::read_json(&out.join("district.summary.json"));
        assert_eq!(
            summary["job"]["processes"],
            serde_json::json!(["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]),
            "{model}: {summary}"
        );
        assert!(summary["job"]["blocks"].as_u64().unwrap() >= 3, "{summary}");
        each_block_journalled_once(&work);
        let one = tmp.join(format!("one-{model}"));
        ctx.one_process(&one, extra);
        let mut compared = files.to_vec();
        compared.push("district.preview.png");
        same_files(
            &out,
            &one,
            &compared,
            &format!("{model} in 3 shards on Slurm"),
        );
        common::assert_stac_valid(&out);
    }
}

#[test]
fn the_deploy_scripts_run_on_a_real_slurm_cluster_and_merge_to_the_bytes_of_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(&tmp.path().join("cluster")) else {
        return;
    };
    // As the README says: from the folder the outputs and logs go to, EOINFER_* naming the
    // inputs, the number of shards once, the CPUs and memory of this machine as sbatch
    // options, extra eoinfer options after `--`.
    let work = tmp.path().join("job");
    std::fs::create_dir(&work).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_eoinfer"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ctx = Ctx {
        cluster: &cluster,
        path,
        model: root().join("models/ukis-csmask-6b-l1c.json"),
        scene: common::demo_scene(),
        aoi: AOI.to_string(),
        outputs: None,
    };
    // 1. Three shards and the merge.
    let t0 = Instant::now();
    let (array, merge) = ctx.submit(&work, 3, &EXTRA);
    let (array, merge) = (array.as_str(), merge.as_str());
    let states = cluster.wait(&[array, merge], Duration::from_secs(600));
    let array_tasks: Vec<&String> = states
        .keys()
        .filter(|k| k.starts_with(&format!("{array}_")))
        .collect();
    assert_eq!(array_tasks.len(), 3, "{states:?}");
    assert!(
        states.values().all(|s| s == "COMPLETED"),
        "{states:?}\n{}",
        cluster.logs()
    );
    println!(
        "Slurm: 3 array tasks and the merge in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let merged = work.join("outputs/district");
    let summary = common::read_json(&merged.join("district.summary.json"));
    assert_eq!(
        summary["job"]["processes"],
        serde_json::json!(["shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]),
        "{summary}"
    );
    assert!(summary["job"]["blocks"].as_u64().unwrap() >= 3, "{summary}");
    // Every task's log is in logs/ of the submit folder.
    let logs = common::files_in(&work.join("logs"));
    assert_eq!(
        logs.iter()
            .filter(|f| f.starts_with("eoinfer-predict-"))
            .count(),
        3,
        "{logs:?}"
    );
    let one = tmp.path().join("one");
    ctx.one_process(&one, &EXTRA);
    same(&merged, &one, "3 shards on Slurm");

    let tta = requeued_midway(&ctx, tmp.path());
    stopped_by_term_and_resubmitted(&ctx, tmp.path(), &tta);
    a_failed_task_requeued_and_merged_again(&ctx, tmp.path(), &one);
    olmoearth_runs_in_three_shards(&ctx, tmp.path());
    drop(ctx);
    drop(cluster);
    let left = Command::new("pgrep")
        .args(["-f", &tmp.path().join("cluster").display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "daemons left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
