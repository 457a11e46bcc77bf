//! ONNX Runtime: finding the shared library, one session per model with its shapes checked
//! against the manifest, batched runs.

use crate::error::ModelError;
use crate::model::manifest::ModelSpec;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};
use std::path::{Path, PathBuf};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on GPU `n` (needs the `cuda` cargo feature and the
    /// onnxruntime-gpu library); it fails loudly instead of falling back to the CPU.
    Cuda(i32),
    /// TensorRT on GPU `n`, in fp16, its engines cached beside the model
    /// (`<model>.onnx.trt-cache/`), nodes TensorRT cannot take on CUDA (needs the `tensorrt`
    /// cargo feature, the onnxruntime-gpu library and TensorRT's own libraries).
    TensorRt(i32),
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        if s == "cuda" {
            return Ok(Device::Cuda(0));
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n
                .parse()
                .map(Device::Cuda)
                .map_err(|_| format!("`{s}`: the GPU index must be a number, e.g. cuda:0"));
        }
        if s == "tensorrt" {
            return Ok(Device::TensorRt(0));
        }
        if let Some(n) = s.strip_prefix("tensorrt:") {
            return n
                .parse()
                .map(Device::TensorRt)
                .map_err(|_| format!("`{s}`: the GPU index must be a number, e.g. tensorrt:0"));
        }
        Err(format!(
            "`{s}` is not a device; use cpu, cuda:N or tensorrt:N"
        ))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

/// cuDNN's convolution algorithm search for the CUDA device, from `EOINFER_CUDA_CONV_SEARCH`:
/// `heuristic` (the default: cuDNN's heuristics; measured on an H200, the cloud model's run
/// took 11.6 s instead of 21.1 s with the same class map), `exhaustive` (ONNX Runtime's own
/// default: every algorithm benchmarked for each new input shape) or `default` (one fixed
/// algorithm).
pub fn cuda_conv_search() -> Result<&'static str, String> {
    match std::env::var("EOINFER_CUDA_CONV_SEARCH") {
        Err(_) => Ok("heuristic"),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "exhaustive" => Ok("exhaustive"),
            "" | "heuristic" => Ok("heuristic"),
            "default" => Ok("default"),
            other => Err(format!(
                "EOINFER_CUDA_CONV_SEARCH={other}: use exhaustive, heuristic or default"
            )),
        },
    }
}

/// The CUDA execution provider on GPU `n` with the configured convolution search.
#[cfg(feature = "cuda")]
fn cuda(n: i32) -> Result<ort::ep::ExecutionProviderDispatch, String> {
    use ort::ep::cuda::ConvAlgorithmSearch;
    let search = match cuda_conv_search()? {
        "exhaustive" => ConvAlgorithmSearch::Exhaustive,
        "default" => ConvAlgorithmSearch::Default,
        _ => ConvAlgorithmSearch::Heuristic,
    };
    Ok(ort::ep::CUDA::default()
        .with_device_id(n)
        .with_conv_algorithm_search(search)
        .build()
        .error_on_failure())
}

/// The folder TensorRT's engines of `onnx` are cached in: beside the model.
#[must_use]
pub fn tensorrt_cache(onnx: &Path) -> PathBuf {
    crate::util::with_suffix(onnx, ".trt-cache")
}

/// The execution providers of `device` for the model `onnx`; a device this build or machine
/// cannot serve is an error that says what is missing (never a silent CPU fallback).
pub(crate) fn execution_providers(
    device: Device,
    onnx: &Path,
) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, String> {
    let _ = onnx;
    match device {
        Device::Cpu => Ok(Vec::new()),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Ok(vec![cuda(n)?]),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(format!(
            "--device {device}: this eoinfer was built without CUDA support; rebuild it with \
             `cargo build --release --features cuda` and run it with the onnxruntime-gpu 1.31 library (--ort-lib)"
        )),
        #[cfg(feature = "tensorrt")]
        Device::TensorRt(n) => {
            // ONNX Runtime makes the folder when it writes the first engine.
            let cache = tensorrt_cache(onnx);
            let dir = cache.display().to_string();
            Ok(vec![
                ort::ep::TensorRT::default()
                    .with_device_id(n)
                    .with_fp16(true)
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir)
                    .build()
                    .error_on_failure(),
                cuda(n)?,
            ])
        }
        #[cfg(not(feature = "tensorrt"))]
        Device::TensorRt(_) => Err(format!(
            "--device {device}: this eoinfer was built without TensorRT support; rebuild it with \
             `cargo build --release --features tensorrt`, run it with the onnxruntime-gpu 1.31 library \
             (--ort-lib) and TensorRT's libraries on LD_LIBRARY_PATH (PyPI: tensorrt-cu13-libs), \
             or use --device cuda:N"
        )),
    }
}

/// The ONNX Runtime library file the project's set-up fetches.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where `make demo` / `scripts/fetch-assets.sh` put the library.
#[must_use]
pub fn project_runtime_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("third_party/onnxruntime")
        .join(ORT_LIB_NAME)
}

/// Finds ONNX Runtime: `--ort-lib`, then `ORT_DYLIB_PATH`, then the project's fetched copy,
/// then next to the executable.
pub fn find_runtime(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ModelError::RuntimeNotFound(format!(
                "--ort-lib {} does not exist; pass the path of libonnxruntime.so (ONNX Runtime 1.31), e.g. third_party/onnxruntime/{ORT_LIB_NAME}",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ModelError::RuntimeNotFound(format!(
                "ORT_DYLIB_PATH={} does not exist; point it at libonnxruntime.so (ONNX Runtime 1.31) or unset it",
                p.display()
            )))
        };
    }
    let mut tried = vec![project_runtime_path()];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join(ORT_LIB_NAME));
        tried.push(dir.join("libonnxruntime.so"));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(ModelError::RuntimeNotFound(format!(
        "ONNX Runtime was not found (looked for --ort-lib, ORT_DYLIB_PATH, {}). eoinfer loads the ONNX Runtime \
         shared library at run time: run `make demo` or `scripts/fetch-assets.sh` in the repository to fetch it \
         (pinned wheel onnxruntime==1.31.1 from PyPI, checked against its sha256), or get it yourself with \
         `pip download --no-deps onnxruntime==1.31.1 && unzip -j onnxruntime-1.31.1-*.whl 'onnxruntime/capi/{ORT_LIB_NAME}'` \
         and pass the file with --ort-lib or ORT_DYLIB_PATH, or copy it next to the eoinfer executable.",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Loads ONNX Runtime from `path` and creates the process's environment.
pub fn init_runtime(path: &Path) -> Result<ort::environment::Environment, ModelError> {
    let load = |m: String| ModelError::RuntimeLoad {
        path: path.to_path_buf(),
        message: m,
    };
    ort::init_from(path)
        .map_err(|e| load(e.to_string()))?
        .with_name("eoinfer")
        .with_telemetry(false)
        .build()
        .map_err(|e| load(e.to_string()))
}

/// Version string of the loaded ONNX Runtime build.
#[must_use]
pub fn runtime_info() -> String {
    ort::info().to_string()
}

/// An ONNX Runtime session on `onnx` with the run's threads and device: every optimisation,
/// one inter-op thread, and intra-op threads that sleep instead of spinning while they wait,
/// leaving the cores to the reader and the writers (measured: no loss on the model alone,
/// ~4 % faster end to end).
pub(crate) fn open_session(
    env: &ort::environment::Environment,
    onnx: &Path,
    threads: usize,
    device: Device,
) -> Result<Session, ModelError> {
    let onnx_err = |m: String| ModelError::OnnxLoad {
        path: onnx.to_path_buf(),
        message: m,
    };
    Session::builder(env)
        .map_err(|e| onnx_err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| onnx_err(ort::Error::<()>::from(e).to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| onnx_err(ort::Error::<()>::from(e).to_string()))?
        .with_inter_threads(1)
        .map_err(|e| onnx_err(ort::Error::<()>::from(e).to_string()))?
        .with_intra_op_spinning(false)
        .map_err(|e| onnx_err(ort::Error::<()>::from(e).to_string()))?
        .with_execution_providers(execution_providers(device, onnx).map_err(ModelError::Device)?)
        .map_err(|e| {
            let hint = if matches!(device, Device::TensorRt(_)) {
                "; TensorRT needs its libraries (libnvinfer.so.10 and friends, PyPI \
                 tensorrt-cu13-libs) on LD_LIBRARY_PATH beside the onnxruntime-gpu library"
            } else {
                ""
            };
            ModelError::Device(format!(
                "--device {device}: {}{hint}",
                ort::Error::<()>::from(e)
            ))
        })?
        .commit_from_file(onnx)
        .map_err(|e| onnx_err(e.to_string()))
}

fn tensor_shape(t: &ValueType) -> Option<Vec<i64>> {
    match t {
        ValueType::Tensor { shape, .. } => Some(shape.to_vec()),
        _ => None,
    }
}

fn dims_match(manifest: &[i64], model: &[i64]) -> bool {
    manifest.len() == model.len()
        && manifest
            .iter()
            .zip(model)
            .all(|(&a, &b)| a < 0 || b < 0 || a == b)
}

/// A segmentation model: one ONNX Runtime session, owned by one thread.
pub struct Segmenter {
    session: Session,
    pub(crate) onnx: PathBuf,
    bands: usize,
    tile: usize,
    /// Output planes per tile: the classes, or 1 for a per-pixel model (its probability).
    classes: usize,
    softmax: bool,
    tta: crate::tta::Tta,
    /// A per-pixel model: tiles go in as `[pixels, bands]` rows.
    pixel: bool,
    /// The `[pixels, bands]` batch of a per-pixel model (reused).
    rows: Vec<f32>,
    /// IO binding (`--io-binding`, on by default on a GPU).
    bound: Option<crate::model::binding::Bound>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("onnx", &self.onnx)
            .finish_non_exhaustive()
    }
}

impl Segmenter {
    /// Opens the model's ONNX file and checks its input and output shapes against the manifest.
    pub fn load(
        env: &ort::environment::Environment,
        spec: &ModelSpec,
        threads: usize,
        device: Device,
    ) -> Result<Self, ModelError> {
        if !spec.onnx.is_file() {
            return Err(ModelError::OnnxMissing {
                path: spec.onnx.clone(),
                manifest: spec.manifest.clone(),
            });
        }
        let session = open_session(env, &spec.onnx, threads, device)?;
        let mismatch = |what: String| ModelError::ShapeMismatch {
            manifest: spec.manifest.clone(),
            onnx: spec.onnx.clone(),
            what,
        };
        if session.inputs().len() != 1 || session.outputs().is_empty() {
            return Err(mismatch(format!(
                "the ONNX model has {} inputs and {} outputs; eoinfer runs models with one input",
                session.inputs().len(),
                session.outputs().len()
            )));
        }
        let in_shape = tensor_shape(session.inputs()[0].dtype())
            .ok_or_else(|| mismatch("the ONNX input is not a tensor".into()))?;
        let out_shape = tensor_shape(session.outputs()[0].dtype())
            .ok_or_else(|| mismatch("the ONNX output is not a tensor".into()))?;
        if !dims_match(&spec.input_shape, &in_shape) {
            return Err(mismatch(format!(
                "input shape: manifest {:?}, ONNX {in_shape:?}",
                spec.input_shape
            )));
        }
        if !dims_match(&spec.output_shape, &out_shape) {
            return Err(mismatch(format!(
                "output shape: manifest {:?}, ONNX {out_shape:?}",
                spec.output_shape
            )));
        }
        if in_shape[1] >= 0 && in_shape[1] as usize != spec.bands.len() {
            return Err(mismatch(format!(
                "the ONNX model takes {} bands, the manifest lists {}",
                in_shape[1],
                spec.bands.len()
            )));
        }
        let pixel = spec.pixel.is_some();
        if pixel {
            if in_shape.len() != 2 || out_shape.len() != 2 || out_shape[1] > 1 {
                return Err(mismatch(format!(
                    "a per-pixel model takes [pixels, bands] and gives [pixels, 1]; the ONNX \
                     model takes {in_shape:?} and gives {out_shape:?}"
                )));
            }
        } else {
            Self::check_image_shapes(spec, &in_shape, &out_shape).map_err(mismatch)?;
        }
        Ok(Self {
            session,
            onnx: spec.onnx.clone(),
            bands: spec.bands.len(),
            tile: spec.tile_size,
            classes: if pixel { 1 } else { spec.classes.len() },
            softmax: spec.softmax,
            tta: crate::tta::Tta::None,
            pixel,
            rows: Vec::new(),
            bound: None,
        })
    }

    /// Runs through ONNX Runtime's IO binding (buffers allocated once, in pinned memory on a
    /// GPU) when `on`; a per-pixel model keeps plain runs.
    pub fn with_io_binding(mut self, device: Device, on: bool) -> Result<Self, ModelError> {
        if on && !self.pixel {
            self.bound = Some(crate::model::binding::Bound::for_model(
                &self.session,
                &self.onnx,
                device,
            )?);
        }
        Ok(self)
    }

    /// An image model's class count and tile size against its ONNX shapes (NCHW).
    fn check_image_shapes(
        spec: &ModelSpec,
        in_shape: &[i64],
        out_shape: &[i64],
    ) -> Result<(), String> {
        if in_shape.len() != 4 || out_shape.len() != 4 {
            return Err(format!(
                "an image model takes and gives [batch, channels, height, width]; the ONNX \
                 model takes {in_shape:?} and gives {out_shape:?}"
            ));
        }
        if out_shape[1] >= 0 && out_shape[1] as usize != spec.classes.len() {
            return Err(format!(
                "the ONNX model gives {} classes, the manifest lists {}",
                out_shape[1],
                spec.classes.len()
            ));
        }
        for (what, dim) in [("height", in_shape[2]), ("width", in_shape[3])] {
            if dim >= 0 && dim as usize != spec.tile_size {
                return Err(format!(
                    "the ONNX input {what} is fixed at {dim}, the tile size asked for is {}; \
                     --tile-size needs a model whose input height and width are dynamic \
                     (make one with scripts/onnx_dynamic_hw.py)",
                    spec.tile_size
                ));
            }
        }
        Ok(())
    }

    /// Averages the model over flips / rotations of each tile (`--tta`).
    #[must_use]
    pub fn with_tta(mut self, tta: crate::tta::Tta) -> Self {
        self.tta = tta;
        self
    }

    /// Runs a batch through ONNX Runtime and nothing else (no copy, no softmax): the limit
    /// the pipeline is measured against (`eoinfer bench-model`).
    pub fn run_raw(&mut self, input: &[f32], batch: usize) -> Result<(), ModelError> {
        self.run_session(input, batch, None)
    }

    /// One `session.run` with the output's shape checked; the output is copied into `out`
    /// when given.
    fn run_session(
        &mut self,
        input: &[f32],
        batch: usize,
        out: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let err = |m: String| ModelError::Inference {
            path: self.onnx.clone(),
            message: m,
        };
        if self.pixel {
            return self.run_pixels(input, batch, out);
        }
        if let Some(bound) = self.bound.as_mut() {
            let input_name = self.session.inputs()[0].name().to_string();
            let output_name = self.session.outputs()[0].name().to_string();
            return bound
                .run(
                    &mut self.session,
                    &[(
                        &input_name,
                        &[batch, self.bands, self.tile, self.tile],
                        crate::model::binding::Feed::F32(input),
                    )],
                    (&output_name, &[batch, self.classes, self.tile, self.tile]),
                    out,
                )
                .map_err(err);
        }
        // The batch as an NCHW array: its length is checked against the shape here.
        let nchw =
            ndarray::ArrayView4::from_shape((batch, self.bands, self.tile, self.tile), input)
                .map_err(|e| err(format!("batch of {} values: {e}", input.len())))?;
        let tensor = TensorRef::from_array_view(nchw).map_err(|e| err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| err(e.to_string()))?;
        let probs = outputs[0]
            .try_extract_array::<f32>()
            .map_err(|e| err(e.to_string()))?;
        crate::model::encoder::copy_output(
            &probs,
            &[batch, self.classes, self.tile, self.tile],
            out,
        )
        .map_err(err)
    }

    /// A per-pixel model's run: the NCHW batch as `[pixels, bands]` rows, the output (one
    /// probability per pixel) back as one plane per tile.
    fn run_pixels(
        &mut self,
        input: &[f32],
        batch: usize,
        out: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let err = |m: String| ModelError::Inference {
            path: self.onnx.clone(),
            message: m,
        };
        let (c, plane) = (self.bands, self.tile * self.tile);
        if input.len() != batch * c * plane {
            return Err(err(format!(
                "batch of {} values for {batch} tiles of {c} bands",
                input.len()
            )));
        }
        self.rows.clear();
        self.rows.resize(batch * plane * c, 0.0);
        for b in 0..batch {
            let tile = &input[b * c * plane..(b + 1) * c * plane];
            let rows = &mut self.rows[b * plane * c..(b + 1) * plane * c];
            for (k, band) in tile.chunks_exact(plane).enumerate() {
                for (i, &v) in band.iter().enumerate() {
                    rows[i * c + k] = v;
                }
            }
        }
        let view = ndarray::ArrayView2::from_shape((batch * plane, c), &self.rows)
            .map_err(|e| err(e.to_string()))?;
        let tensor = TensorRef::from_array_view(view).map_err(|e| err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| err(e.to_string()))?;
        let probs = outputs[0]
            .try_extract_array::<f32>()
            .map_err(|e| err(e.to_string()))?;
        crate::model::encoder::copy_output(&probs, &[batch * plane, 1], out).map_err(err)
    }

    /// Runs a batch (`batch * bands * tile * tile` values, NCHW) and returns class
    /// probabilities (`batch * classes * tile * tile`), averaged over the `--tta` symmetries.
    pub fn run(&mut self, input: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let variants = self.tta.variants();
        if variants.len() == 1 {
            return self.infer(input, batch);
        }
        let n = self.tile;
        let mut acc = vec![0.0_f32; batch * self.classes * n * n];
        let mut turned = vec![0.0_f32; input.len()];
        for &k in variants {
            crate::tta::transform_planes(k, input, &mut turned, n);
            let probs = self.infer(&turned, batch)?;
            crate::tta::accumulate_inverse(k, &probs, &mut acc, n);
        }
        let scale = 1.0 / variants.len() as f32;
        for v in &mut acc {
            *v *= scale;
        }
        Ok(acc)
    }

    fn infer(&mut self, input: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let plane = self.tile * self.tile;
        let mut probs = Vec::with_capacity(batch * self.classes * plane);
        self.run_session(input, batch, Some(&mut probs))?;
        if self.softmax {
            for sample in probs.chunks_mut(self.classes * plane) {
                crate::blend::softmax_classes(sample, self.classes);
            }
        }
        Ok(probs)
    }
}
