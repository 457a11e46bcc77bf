//! ONNX Runtime IO binding: a session's input and output tensors allocated once per batch
//! shape in memory the device reads directly, filled in place each batch, the output written
//! by ONNX Runtime into its bound tensor and read back once per batch. On CUDA and TensorRT
//! the tensors are in page-locked (pinned) host memory, so each batch crosses to the GPU in
//! one DMA copy each way, with no staging copy; on the CPU they are ordinary CPU tensors, and
//! the same code path runs, so CI tests it without a GPU.

use crate::model::Device;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

/// One input's data for a run.
pub enum Feed<'a> {
    /// float32 values.
    F32(&'a [f32]),
    /// int32 values.
    I32(&'a [i32]),
}

/// An allocated input tensor.
enum Held {
    F32(Tensor<f32>),
    I32(Tensor<i32>),
}

/// The binding of one session.
pub struct Bound {
    binding: IoBinding,
    input_alloc: Allocator,
    output_alloc: Allocator,
    inputs: Vec<(String, Vec<usize>, Held)>,
    output: Option<(String, Vec<usize>)>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("inputs", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

fn allocator(session: &Session, device: Device, kind: MemoryType) -> Result<Allocator, String> {
    let info = match device {
        Device::Cpu => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        ),
        Device::Cuda(n) | Device::TensorRt(n) => MemoryInfo::new(
            AllocationDevice::CUDA_PINNED,
            n,
            AllocatorType::Device,
            kind,
        ),
    }
    .map_err(|e| e.to_string())?;
    if device == Device::Cpu {
        return Ok(Allocator::default());
    }
    Allocator::new(session, info).map_err(|e| format!("IO binding allocator: {e}"))
}

impl Bound {
    /// A binding of the session of the model `onnx`, as a model error.
    pub fn for_model(
        session: &Session,
        onnx: &std::path::Path,
        device: Device,
    ) -> Result<Self, crate::error::ModelError> {
        Self::new(session, device).map_err(|message| crate::error::ModelError::Inference {
            path: onnx.to_path_buf(),
            message,
        })
    }

    /// A binding of `session` for `device`.
    pub fn new(session: &Session, device: Device) -> Result<Self, String> {
        Ok(Self {
            binding: session.create_binding().map_err(|e| e.to_string())?,
            input_alloc: allocator(session, device, MemoryType::CPUInput)?,
            output_alloc: allocator(session, device, MemoryType::CPUOutput)?,
            inputs: Vec::new(),
            output: None,
        })
    }

    /// Copies `feed` into input `name`'s tensor of `shape` (allocated when the shape is new)
    /// and binds it.
    fn put(&mut self, name: &str, shape: &[usize], feed: &Feed<'_>) -> Result<(), String> {
        let i = match self.inputs.iter().position(|(n, _, _)| n == name) {
            Some(i) if self.inputs[i].1 == shape => i,
            found => {
                let held = match feed {
                    Feed::F32(_) => Held::F32(
                        Tensor::<f32>::new(&self.input_alloc, shape.to_vec())
                            .map_err(|e| e.to_string())?,
                    ),
                    Feed::I32(_) => Held::I32(
                        Tensor::<i32>::new(&self.input_alloc, shape.to_vec())
                            .map_err(|e| e.to_string())?,
                    ),
                };
                let entry = (name.to_string(), shape.to_vec(), held);
                if let Some(i) = found {
                    self.inputs[i] = entry;
                    i
                } else {
                    self.inputs.push(entry);
                    self.inputs.len() - 1
                }
            }
        };
        let len = |n: usize| -> Result<(), String> {
            if n == shape.iter().product::<usize>() {
                Ok(())
            } else {
                Err(format!("input {name}: {n} values for the shape {shape:?}"))
            }
        };
        match (&mut self.inputs[i].2, feed) {
            (Held::F32(t), Feed::F32(v)) => {
                len(v.len())?;
                t.extract_tensor_mut().1.copy_from_slice(v);
                self.binding.bind_input(name, t)
            }
            (Held::I32(t), Feed::I32(v)) => {
                len(v.len())?;
                t.extract_tensor_mut().1.copy_from_slice(v);
                self.binding.bind_input(name, t)
            }
            _ => return Err(format!("input {name} changed its element type")),
        }
        .map_err(|e| e.to_string())
    }

    /// Runs `session` on `inputs` (name, shape, values) and copies its output `output` of
    /// `shape` (float32) into `out` when given.
    pub fn run(
        &mut self,
        session: &mut Session,
        inputs: &[(&str, &[usize], Feed<'_>)],
        output: (&str, &[usize]),
        out: Option<&mut Vec<f32>>,
    ) -> Result<(), String> {
        for (name, shape, feed) in inputs {
            self.put(name, shape, feed)?;
        }
        let (out_name, out_shape) = output;
        if self
            .output
            .as_ref()
            .is_none_or(|(n, s)| n != out_name || s != out_shape)
        {
            let t = Tensor::<f32>::new(&self.output_alloc, out_shape.to_vec())
                .map_err(|e| e.to_string())?;
            self.binding
                .bind_output(out_name, t)
                .map_err(|e| e.to_string())?;
            self.output = Some((out_name.to_string(), out_shape.to_vec()));
        }
        let outputs = session
            .run_binding(&self.binding)
            .map_err(|e| e.to_string())?;
        let (shape, values) = outputs[out_name]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        let got: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        if got != out_shape {
            return Err(format!(
                "output {out_name} has the shape {got:?}, expected {out_shape:?}"
            ));
        }
        if let Some(out) = out {
            out.extend_from_slice(values);
        }
        Ok(())
    }
}
