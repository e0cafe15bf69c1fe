//! The application layer: what the `facegate` binary and the HTTP server both do, written once.
//! `main` parses arguments and prints; handlers parse requests and serialise; both call here to
//! load a pipeline ([`engine`]), choose the face an answer is about ([`faces`]) and open the data
//! directory with its master key ([`data`]).

#![forbid(unsafe_code)]

pub mod chip;
pub mod data;
pub mod engine;
pub mod faces;
pub mod liveness;

/// What the application layer fails with: the layers' own errors, or a request it cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Vision(#[from] vision::VisionError),
    #[error(transparent)]
    Gallery(#[from] gallery::GalleryError),
    /// No face in an image, a face index that does not exist, a missing key file.
    #[error("{0}")]
    Refused(String),
}

pub type Result<T> = std::result::Result<T, AppError>;
