//! Time-series encoders (OlmoEarth) in ONNX Runtime: `s2` `[B, H, W, T, C]`, `timestamps`
//! `[B, T, 3]` and, for models that take it, `s1` `[B, H, W, T, 2]` in; per-patch embeddings
//! `[B, D, H/p, W/p]` or a head's per-pixel output `[B, K, H, W]` out. [`Model`] is what the
//! runner holds: a single-date segmentation model or an encoder.

use crate::error::ModelError;
use crate::model::embedding::EncoderHead;
use crate::model::{ModelSpec, Segmenter};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use std::borrow::Cow;
use std::path::PathBuf;

/// An encoder session with the run's time steps.
pub struct Encoder {
    session: Session,
    onnx: PathBuf,
    tile: usize,
    bands: usize,
    s1_bands: usize,
    /// `[day, month 0-11, year]` per time step.
    timestamps: Vec<i32>,
    /// Whether the model takes them (else it numbers its steps itself).
    timestamps_input: bool,
    out_channels: usize,
    out_side: usize,
    softmax: bool,
    /// One row of scores per tile (a classification head).
    per_tile: bool,
    /// Test-time augmentation (heads with an output per pixel).
    tta: crate::tta::Tta,
    /// IO binding (`--io-binding`, on by default on a GPU).
    bound: Option<crate::model::binding::Bound>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("onnx", &self.onnx)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Opens the encoder a manifest names (inputs and output checked against it) for tiles of
    /// `spec.tile_size` pixels and the time steps `timestamps` (`[day, month 0-11, year]`).
    pub fn load(
        env: &ort::environment::Environment,
        spec: &ModelSpec,
        threads: usize,
        device: crate::model::Device,
        timestamps: Vec<i32>,
    ) -> Result<Self, ModelError> {
        let enc = spec
            .encoder
            .as_ref()
            .ok_or_else(|| ModelError::ManifestInvalid {
                path: spec.manifest.clone(),
                what: "not an encoder (`eoinfer:kind` = `embedding`)".into(),
            })?;
        let text =
            std::fs::read_to_string(&spec.manifest).map_err(|source| ModelError::ManifestRead {
                path: spec.manifest.clone(),
                source,
            })?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ModelError::ManifestJson {
                path: spec.manifest.clone(),
                source,
            })?;
        let (session, onnx) =
            crate::model::golden::open_embedding_model(env, &spec.manifest, &doc, threads, device)?;
        let classes = enc.head.as_ref().map_or(0, Vec::len);
        // Side 0: one row of scores per tile (`[B, K]`).
        let (out_channels, out_side) = match enc.head_kind {
            EncoderHead::Embeddings => (enc.embedding_dim, spec.tile_size / enc.patch_size),
            EncoderHead::Segmentation => (classes, spec.tile_size),
            EncoderHead::Regression => (1, spec.tile_size),
            EncoderHead::Classification => (classes, 0),
        };
        Ok(Self {
            session,
            onnx,
            tile: spec.tile_size,
            bands: enc.bands.len(),
            s1_bands: enc.sentinel1.as_ref().map_or(0, |s| s.bands.len()),
            timestamps,
            timestamps_input: enc.timestamps_input,
            out_channels,
            out_side,
            softmax: enc.head.is_some() && enc.head_softmax,
            per_tile: out_side == 0,
            tta: crate::tta::Tta::None,
            bound: None,
        })
    }

    /// Runs through ONNX Runtime's IO binding (buffers allocated once, in pinned memory on a
    /// GPU) when `on`.
    pub fn with_io_binding(
        mut self,
        device: crate::model::Device,
        on: bool,
    ) -> Result<Self, ModelError> {
        if on {
            self.bound = Some(crate::model::binding::Bound::for_model(
                &self.session,
                &self.onnx,
                device,
            )?);
        }
        Ok(self)
    }

    /// Averages a per-pixel head over flips / rotations of each tile (`--tta`).
    #[must_use]
    pub fn with_tta(mut self, tta: crate::tta::Tta) -> Self {
        self.tta = tta;
        self
    }

    /// The time steps of the next batches (`[day, month 0-11, year]` each; their number
    /// decides the input's time axis).
    pub fn set_timestamps(&mut self, timestamps: Vec<i32>) {
        self.timestamps = timestamps;
    }

    fn steps(&self) -> usize {
        self.timestamps.len() / 3
    }

    /// One `session.run`; the output (checked for shape and finiteness) is copied into `out`
    /// when given.
    fn run_session(
        &mut self,
        s2: &[f32],
        s1: &[f32],
        batch: usize,
        out: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let err = |m: String| ModelError::Inference {
            path: self.onnx.clone(),
            message: m,
        };
        let (tile, steps) = (self.tile, self.steps());
        let ts: Vec<i32> = (0..batch)
            .flat_map(|_| self.timestamps.iter().copied())
            .collect();
        let full = [batch, self.out_channels, self.out_side, self.out_side];
        let expected = if self.per_tile { &full[..2] } else { &full[..] };
        if let Some(bound) = self.bound.as_mut() {
            use crate::model::binding::Feed;
            let output_name = self.session.outputs()[0].name().to_string();
            let s2_shape = [batch, tile, tile, steps, self.bands];
            let ts_shape = [batch, steps, 3];
            let s1_shape = [batch, tile, tile, steps, self.s1_bands];
            let mut feeds = vec![("s2", &s2_shape[..], Feed::F32(s2))];
            if self.timestamps_input {
                feeds.push(("timestamps", &ts_shape[..], Feed::I32(&ts)));
            }
            if self.s1_bands > 0 {
                feeds.push(("s1", &s1_shape[..], Feed::F32(s1)));
            }
            return bound
                .run(&mut self.session, &feeds, (&output_name, expected), out)
                .map_err(err);
        }
        // The batch as `[batch, h, w, T, bands]` arrays: lengths are checked here.
        let shape_err = |what: &str, n: usize, e: ndarray::ShapeError| {
            err(format!("{what} batch of {n} values: {e}"))
        };
        let s2 = ndarray::ArrayView5::from_shape((batch, tile, tile, steps, self.bands), s2)
            .map_err(|e| shape_err("s2", s2.len(), e))?;
        let s2 = TensorRef::from_array_view(s2).map_err(|e| err(e.to_string()))?;
        let tt = ndarray::ArrayView3::from_shape((batch, steps, 3), ts.as_slice())
            .map_err(|e| shape_err("timestamps", ts.len(), e))?;
        let tt = TensorRef::from_array_view(tt).map_err(|e| err(e.to_string()))?;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(Cow::Borrowed("s2"), s2.into())];
        if self.timestamps_input {
            inputs.push((Cow::Borrowed("timestamps"), tt.into()));
        }
        if self.s1_bands > 0 {
            let s1 = ndarray::ArrayView5::from_shape((batch, tile, tile, steps, self.s1_bands), s1)
                .map_err(|e| shape_err("s1", s1.len(), e))?;
            let s1 = TensorRef::from_array_view(s1).map_err(|e| err(e.to_string()))?;
            inputs.push((Cow::Borrowed("s1"), s1.into()));
        }
        let outs = self.session.run(inputs).map_err(|e| err(e.to_string()))?;
        let output = outs[0]
            .try_extract_array::<f32>()
            .map_err(|e| err(e.to_string()))?;
        copy_output(&output, expected, out).map_err(err)
    }

    /// Runs a batch: `s2` is `batch * tile * tile * steps * bands` normalised values, `s1`
    /// the same with the Sentinel-1 bands (empty for models without it). Returns the output
    /// (`batch * channels * side * side`), softmaxed for a head whose manifest asks for it.
    pub fn run(&mut self, s2: &[f32], s1: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let variants = self.tta.variants();
        if variants.len() == 1 {
            return self.infer(s2, s1, batch);
        }
        // Each symmetry of the tiles, the output mapped back, averaged.
        let (n, steps) = (self.tile, self.steps());
        let mut acc = vec![0.0_f32; batch * self.out_channels * n * n];
        let mut s2_turned = vec![0.0_f32; s2.len()];
        let mut s1_turned = vec![0.0_f32; s1.len()];
        for &k in variants {
            crate::tta::transform_pixels(k, s2, &mut s2_turned, n, steps * self.bands);
            if self.s1_bands > 0 {
                crate::tta::transform_pixels(k, s1, &mut s1_turned, n, steps * self.s1_bands);
            }
            let out = self.infer(&s2_turned, &s1_turned, batch)?;
            crate::tta::accumulate_inverse(k, &out, &mut acc, n);
        }
        let scale = 1.0 / variants.len() as f32;
        for v in &mut acc {
            *v *= scale;
        }
        Ok(acc)
    }

    fn infer(&mut self, s2: &[f32], s1: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        let per = self.out_channels * self.out_side.pow(2).max(1);
        let mut out = Vec::with_capacity(batch * per);
        self.run_session(s2, s1, batch, Some(&mut out))?;
        if self.softmax {
            for sample in out.chunks_mut(per) {
                crate::blend::softmax_classes(sample, self.out_channels);
            }
        }
        Ok(out)
    }
}

/// The model a run holds: one thread owns it.
#[derive(Debug)]
pub enum Model {
    /// A single-date segmentation model (one NCHW input).
    Segmenter(Segmenter),
    /// A time-series encoder, with or without a head.
    Encoder(Encoder),
}

impl Model {
    /// The ONNX file, for messages.
    #[must_use]
    pub fn onnx(&self) -> &std::path::Path {
        match self {
            Model::Segmenter(m) => &m.onnx,
            Model::Encoder(m) => &m.onnx,
        }
    }

    /// Runs a batch and returns its output per tile (see [`Segmenter::run`], [`Encoder::run`]).
    pub fn run(&mut self, input: &[f32], s1: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        match self {
            Model::Segmenter(m) => m.run(input, batch),
            Model::Encoder(m) => m.run(input, s1, batch),
        }
    }

    /// Runs a batch through ONNX Runtime and nothing else: the limit `bench-model` measures.
    pub fn run_raw(&mut self, input: &[f32], s1: &[f32], batch: usize) -> Result<(), ModelError> {
        match self {
            Model::Segmenter(m) => m.run_raw(input, batch),
            Model::Encoder(m) => m.run_session(input, s1, batch, None),
        }
    }
}

/// Checks a model output's shape against `expected` and appends its values (row-major) to
/// `out` when given.
pub(crate) fn copy_output(
    output: &ndarray::ArrayViewD<'_, f32>,
    expected: &[usize],
    out: Option<&mut Vec<f32>>,
) -> Result<(), String> {
    if output.shape() != expected {
        return Err(format!(
            "output shape {:?}, expected {expected:?}",
            output.shape()
        ));
    }
    if let Some(out) = out {
        match output.as_slice() {
            Some(data) => out.extend_from_slice(data),
            None => out.extend(output.iter().copied()),
        }
    }
    Ok(())
}
