use std::path::PathBuf;

/// Everything the gallery can fail with. Messages name the thing that was wrong and never
/// include template bytes or clear-text subject references.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("unknown gallery '{0}'")]
    UnknownGallery(String),
    #[error("gallery '{0}' already exists")]
    GalleryExists(String),
    #[error("unknown subject in gallery '{0}' (or erased, or past its retention period)")]
    UnknownSubject(String),
    #[error("subject is already enrolled in gallery '{0}'")]
    DuplicateSubject(String),
    #[error("wrong master key: data was sealed with key {expected}, the key given is {given}")]
    WrongKey { expected: String, given: String },
    #[error("master key problem: {0}")]
    Key(String),
    #[error("decryption failed (tampered data or wrong key): {0}")]
    Decrypt(String),
    #[error("template has {got} dimensions, gallery '{gallery}' holds {expected}")]
    Dimension {
        gallery: String,
        expected: usize,
        got: usize,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The gallery's policy refuses to grow past what its model pack can deliver at its target
    /// FPIR (the message says the size, the expected FNIR and the limit).
    #[error("gallery outgrows its pack: {0}")]
    Outgrown(String),
    #[error("data directory {0} is not initialised (run `facegate gallery create` first)")]
    NotInitialised(PathBuf),
    /// The storage backend failed (the message is the backend's). Backend-neutral on purpose:
    /// callers never depend on which database holds the gallery.
    #[error("storage: {0}")]
    Storage(String),
    /// The storage backend cannot be reached now (a database restarting, failing over, or a
    /// read-only standby). The same request may succeed when retried; a write whose connection
    /// was lost at commit may already have landed, so writes must be safe to repeat (they are:
    /// enrolment answers `DuplicateSubject`, deletion `UnknownSubject`).
    #[error("storage unavailable, retry shortly: {0}")]
    Unavailable(String),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log: {0}")]
    Audit(String),
}

impl GalleryError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GalleryError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<template::UnknownMetric> for GalleryError {
    fn from(e: template::UnknownMetric) -> Self {
        GalleryError::Invalid(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, GalleryError>;
