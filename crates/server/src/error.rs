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
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is temporary (busy slots, loading galleries, a database failing over):
            // tell clients when to come back instead of letting them hammer.
            return (self.status, [("retry-after", "1")], body).into_response();
        }
        (self.status, body).into_response()
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
            G::Outgrown(_) => (StatusCode::CONFLICT, "gallery_outgrown"),
            G::Dimension { .. } | G::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            G::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            // The database is restarting or failing over. A write cut off at its commit may or
            // may not have landed; retrying is safe either way (a repeated enrolment answers
            // duplicate_subject, a repeated deletion unknown_subject).
            G::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the gallery database is not reachable right now (restart or failover); retry shortly — retrying a write is safe",
                );
            }
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
