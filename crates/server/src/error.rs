//! The one error shape of the API: a stable code, a message, the request id (added by the
//! envelope). Never a trace; internal errors are logged, not returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use vision::VisionError;

#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see server log)",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<gallery::GalleryError> for ApiError {
    fn from(e: gallery::GalleryError) -> Self {
        use gallery::GalleryError as G;
        let (status, code) = match &e {
            G::UnknownGallery(_) => (StatusCode::NOT_FOUND, "unknown_gallery"),
            G::UnknownSubject(_) => (StatusCode::NOT_FOUND, "unknown_subject"),
            G::GalleryExists(_) => (StatusCode::CONFLICT, "gallery_exists"),
            G::DuplicateSubject(_) => (StatusCode::CONFLICT, "duplicate_subject"),
            G::Dimension { .. } | G::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            G::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            _ => {
                tracing::error!(error = %e, "internal error");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<VisionError> for ApiError {
    fn from(e: VisionError) -> Self {
        match e {
            VisionError::TooLarge { .. } | VisionError::TooManyBytes { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image_too_large",
                e.to_string(),
            ),
            VisionError::Truncated(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "truncated_image",
                e.to_string(),
            ),
            VisionError::Decode(_)
            | VisionError::UnsupportedFormat(_)
            | VisionError::Empty
            | VisionError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_image", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "inference error");
                ApiError::internal()
            }
        }
    }
}
