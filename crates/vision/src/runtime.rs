//! ONNX Runtime, loaded dynamically from the shared library shipped in the PyPI `onnxruntime`
//! wheel (fetched into the facegate home by `facegate models fetch`), so users never set
//! variables and no ONNX Runtime build is linked into the binary.

use crate::error::VisionError;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Finds `libonnxruntime.so*` in a directory (the newest-looking name wins).
pub fn find_library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// Loads ONNX Runtime once per process. `library` is the shared library to use; without it,
/// `ORT_DYLIB_PATH` is honoured (for users who bring their own build).
pub fn ensure_runtime(library: Option<&Path>) -> Result<(), VisionError> {
    if ENV.get().is_some() {
        return Ok(());
    }
    let _guard = INIT
        .lock()
        .map_err(|_| VisionError::Runtime("runtime init lock poisoned".into()))?;
    if ENV.get().is_some() {
        return Ok(());
    }
    let path = match library {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .ok_or_else(|| {
                VisionError::Runtime(
                    "no ONNX Runtime library: run `facegate models fetch` (or set ORT_DYLIB_PATH)"
                        .into(),
                )
            })?,
    };
    if !path.is_file() {
        return Err(VisionError::Runtime(format!(
            "ONNX Runtime library not found at {}",
            path.display()
        )));
    }
    let env = ort::init_from(&path)
        .map_err(|e| VisionError::Runtime(format!("loading {}: {e}", path.display())))?
        .with_name("facegate")
        .with_telemetry(false)
        .build()?;
    let _ = ENV.set(env);
    Ok(())
}

/// Builds a session on the given bytes with `threads` intra-op threads (0 = ORT's default).
pub fn session_from_bytes(
    bytes: &[u8],
    threads: usize,
) -> Result<ort::session::Session, VisionError> {
    session_with_memory(bytes, threads, SessionMemory::Arena)
}

/// How a session holds its working memory between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMemory {
    /// ONNX Runtime's arena: fastest for inputs of one size (embedders), but it keeps the largest
    /// run's memory for the life of the session.
    Arena,
    /// No arena and no memory pattern: every run returns its tensors to the allocator. For the
    /// detectors, whose input size follows the frame: one large frame must not leave its
    /// gigabytes held by a server afterwards.
    Released,
}

/// [`session_from_bytes`] with a choice of [`SessionMemory`].
pub fn session_with_memory(
    bytes: &[u8],
    threads: usize,
    memory: SessionMemory,
) -> Result<ort::session::Session, VisionError> {
    use ort::session::builder::GraphOptimizationLevel;
    let env = ENV
        .get()
        .ok_or_else(|| VisionError::Runtime("ONNX Runtime is not loaded".into()))?;
    let mut b = ort::session::Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| VisionError::Runtime(e.to_string()))?;
    if threads > 0 {
        b = b
            .with_intra_threads(threads)
            .map_err(|e| VisionError::Runtime(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| VisionError::Runtime(e.to_string()))?;
    }
    if memory == SessionMemory::Released {
        b = b
            .with_memory_pattern(false)
            .map_err(|e| VisionError::Runtime(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| VisionError::Runtime(e.to_string()))?;
    }
    Ok(b.commit_from_memory(bytes)?)
}
