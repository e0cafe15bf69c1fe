use std::path::PathBuf;

/// Everything the vision layer can fail with. Callers get a typed reason; the CLI adds context.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("image refused: {0}")]
    Truncated(String),
    #[error("image could not be decoded: {0}")]
    Decode(String),
    #[error("unsupported image format{0}")]
    UnsupportedFormat(String),
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("image is empty or has a zero dimension")]
    Empty,
    #[error("input is {got} bytes, over the limit of {limit}")]
    TooManyBytes { got: u64, limit: u64 },
    #[error("model file is malformed: {0}")]
    ModelFormat(String),
    #[error("model pack problem: {0}")]
    Pack(String),
    #[error("checksum mismatch for {file}: expected {expected}, got {actual}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("fetching models failed: {0}")]
    Fetch(String),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl VisionError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VisionError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ort::Error> for VisionError {
    fn from(e: ort::Error) -> Self {
        VisionError::Runtime(e.to_string())
    }
}
