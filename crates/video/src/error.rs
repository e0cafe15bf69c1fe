use std::path::PathBuf;

/// Why a stream could not be read or tracked. Messages name the problem, never frame content.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error("over a limit: {0}")]
    TooLarge(String),
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    /// A camera (RTSP or HTTP) could not be reached, failed its protocol or stopped answering.
    #[error("camera failed: {0}")]
    Camera(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("H.264 decoder: {0}")]
    Decoder(String),
    #[error(transparent)]
    Vision(#[from] vision::VisionError),
}
