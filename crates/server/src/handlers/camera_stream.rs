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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures_util::StreamExt;

    const TYPE: &str = "multipart/x-mixed-replace; boundary=cam";

    /// A camera stream of these parts, closed or not.
    fn stream_of(parts: &[Vec<u8>], close: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for p in parts {
            body.extend_from_slice(b"--cam\r\nContent-Type: image/jpeg\r\n\r\n");
            body.extend_from_slice(p);
            body.extend_from_slice(b"\r\n");
        }
        if close {
            body.extend_from_slice(b"--cam--\r\n");
        }
        body
    }

    /// A body delivered in pieces of `piece` bytes.
    fn body_in_pieces(bytes: Vec<u8>, piece: usize) -> Body {
        let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures_util::stream::iter(pieces))
    }

    async fn all_parts(camera: &mut CameraStream) -> ApiResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(p) = camera.next_part().await? {
            out.push(p.to_vec());
        }
        Ok(out)
    }

    #[tokio::test]
    async fn parts_come_whole_and_in_order_however_the_body_is_cut() {
        let parts: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                (0..(100 + 37 * i as usize))
                    .map(|j| (j as u8) ^ i)
                    .collect()
            })
            .collect();
        let body = stream_of(&parts, true);
        for piece in [1, 7, 64, 4096, body.len()] {
            let mut camera = CameraStream::new(
                TYPE,
                body_in_pieces(body.clone(), piece),
                1 << 20,
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(
                all_parts(&mut camera).await.unwrap(),
                parts,
                "pieces of {piece}"
            );
            // After the closing delimiter: no more parts.
            assert!(camera.next_part().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_stream_cut_short_or_over_the_limit_is_refused() {
        let parts = vec![vec![1u8; 300], vec![2u8; 300]];
        // Without its closing delimiter: the parts before the cut, then a refusal.
        let mut camera = CameraStream::new(
            TYPE,
            body_in_pieces(stream_of(&parts, false), 50),
            1 << 20,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            camera.next_part().await.unwrap().unwrap().to_vec(),
            parts[0]
        );
        let e = all_parts(&mut camera).await.unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_stream"));
        // The body limit counts every byte read, closed stream or not.
        let body = stream_of(&parts, true);
        let limit = body.len() - 1;
        let mut camera = CameraStream::new(
            TYPE,
            body_in_pieces(body, 50),
            limit,
            Duration::from_secs(5),
        )
        .unwrap();
        let e = all_parts(&mut camera).await.unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
        // Not a camera stream's type.
        let e = CameraStream::new("image/jpeg", Body::empty(), 1 << 20, Duration::from_secs(5))
            .err()
            .unwrap();
        assert_eq!(e.code, "bad_stream");
    }

    #[tokio::test(start_paused = true)]
    async fn a_camera_that_stops_sending_is_refused_after_the_gap() {
        // One part, then the start of another, then nothing more (the connection stays open).
        let mut head = stream_of(&[vec![7u8; 100]], false);
        head.extend_from_slice(b"--cam\r\nContent-Type: image/jpeg\r\n\r\nxx");
        let body = Body::from_stream(
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(head))])
                .chain(futures_util::stream::pending()),
        );
        let gap = Duration::from_millis(1500);
        let mut camera = CameraStream::new(TYPE, body, 1 << 20, gap).unwrap();
        assert_eq!(camera.next_part().await.unwrap().unwrap().len(), 100);
        let start = Instant::now();
        let e = camera.next_part().await.unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::REQUEST_TIMEOUT, "stream_stalled")
        );
        assert!(start.elapsed() >= gap, "{:?}", start.elapsed());
    }
}
