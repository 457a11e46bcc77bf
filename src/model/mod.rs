//! Models: the STAC MLM manifest, the ONNX Runtime session, importers that generate manifests.

pub mod binding;
pub mod embedding;
pub mod encoder;
pub mod golden;
pub mod import_onnx;
pub mod manifest;
pub mod runtime;
pub mod temporal;
pub mod ukis;
pub mod validate;

pub use encoder::{Encoder, Model};
pub use manifest::{ClassInfo, ModelBand, ModelSpec};
pub use runtime::{Device, Segmenter};
