//! A gate session sent as a camera stream (`multipart/x-mixed-replace`, as an MJPEG camera sends
//! it, usually chunked), read part by part as it arrives, so the session's frames can be looked at
//! while the camera is still sending and the answer can go back before the stream ends.
//!
//! Every wait and every byte is budgeted: the whole body by `max_body_bytes` (413), one part by
//! the same limit (the parser's), the wait for the next part by `gate_frame_gap_ms` (408
//! `stream_stalled`: a camera that stops sending, or a client that trickles bytes, cannot hold
//! the session's inference slot), and the whole request by `request_timeout_s`. What is held at
//! once: the parser's one part in progress and the parts completed by one read.

use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use http_body::Body as _;
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;
use video::mjpeg::MjpegParser;

pub(crate) struct CameraStream {
    body: Body,
    parser: MjpegParser,
    /// Parts completed by the last read, not yet taken.
    ready: VecDeque<Vec<u8>>,
    read: usize,
    limit: usize,
    gap: Duration,
}

fn bad_stream(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_stream", msg)
}

impl CameraStream {
    /// A stream with this `Content-Type` (its boundary), nothing read yet.
    pub(crate) fn new(
        content_type: &str,
        body: Body,
        limit: usize,
        gap: Duration,
    ) -> ApiResult<CameraStream> {
        let boundary =
            MjpegParser::boundary_of(content_type).map_err(|e| bad_stream(e.to_string()))?;
        let parser = MjpegParser::new(&boundary, limit).map_err(|e| bad_stream(e.to_string()))?;
        Ok(CameraStream {
            body,
            parser,
            ready: VecDeque::new(),
            read: 0,
            limit,
            gap,
        })
    }

    /// The next part, in order; `None` once the closing delimiter (`--boundary--`) was read. A
    /// body that ends without it is refused (400 `bad_stream`: a part cut short by the end of
    /// the body is not guessed at).
    pub(crate) async fn next_part(&mut self) -> ApiResult<Option<Bytes>> {
        let deadline = Instant::now() + self.gap;
        loop {
            if let Some(part) = self.ready.pop_front() {
                return Ok(Some(Bytes::from(part)));
            }
            if self.parser.finished() {
                return Ok(None);
            }
            let frame = tokio::time::timeout_at(
                deadline,
                std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)),
            )
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "stream_stalled",
                    format!(
                        "no complete part within {} ms (gate_frame_gap_ms)",
                        self.gap.as_millis()
                    ),
                )
            })?;
            let data = match frame {
                None => {
                    return Err(bad_stream(
                        "the stream did not end with its closing delimiter (--boundary--)",
                    ))
                }
                Some(Err(e)) => return Err(bad_stream(format!("the stream broke off: {e}"))),
                // Trailers carry no part.
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            self.read = self.read.saturating_add(data.len());
            if self.read > self.limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the stream is over the body limit of {} bytes", self.limit),
                ));
            }
            let parts = self
                .parser
                .push(&data)
                .map_err(|e| bad_stream(e.to_string()))?;
            self.ready.extend(parts);
        }
    }
}
