//! A live camera, replayed in virtual time: the frames of a recording or a generated scene are
//! released at their times, queued for a reader that may be busy, and lost when the queue is
//! full, as [`crate::rtsp`] loses them (units up to the next key frame).
//!
//! `eval video --live` measures with it what a live pipeline on this machine delivers: the
//! reader's costs are measured as it runs and move the clock on; the camera does not wait. A
//! recording read frame by frame (`watch FILE`) never falls behind, so it cannot show what a
//! detector too slow for the camera costs in accuracy; this can, with exact ground truth.

use std::collections::VecDeque;

/// The camera and the queue in front of the reader.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LiveOptions {
    pub frames_per_second: f64,
    /// Frames that may wait for the reader ([`crate::rtsp::QUEUED_UNITS`] for an RTSP camera).
    pub queue: usize,
    /// A key frame every this many frames: after a loss, frames are lost up to the next one
    /// (an H.264 decoder cannot start elsewhere). 1 = every frame stands alone (MJPEG).
    pub key_every: u64,
}

impl Default for LiveOptions {
    /// A 30 fps camera with a key frame every second, read through the RTSP source's queue.
    fn default() -> Self {
        LiveOptions {
            frames_per_second: 30.0,
            queue: crate::rtsp::QUEUED_UNITS,
            key_every: 30,
        }
    }
}

/// A frame the reader took: its number in the camera's stream and how long it had waited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Taken {
    pub frame: u64,
    pub waited_ms: f64,
}

/// What the replay did, for the report.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LiveFacts {
    pub frames_read: u64,
    pub frames_lost: u64,
    /// How long frames waited in the queue before the reader took them, ms.
    pub wait_mean_ms: f64,
    pub wait_max_ms: f64,
}

/// The camera's clock and the reader's queue.
#[derive(Debug, Clone)]
pub struct LiveReplay {
    options: LiveOptions,
    frames: u64,
    /// The next frame the camera sends.
    next_arrival: u64,
    queue: VecDeque<u64>,
    /// A frame was lost: the rest are lost up to the next key frame.
    awaiting_key: bool,
    now_ms: f64,
    facts: LiveFacts,
    waited_sum_ms: f64,
}

impl LiveReplay {
    /// A camera sending `frames` frames. A queue of 0 is taken as 1, a key frame interval of 0
    /// as 1, a frame rate that is not positive as 30.
    pub fn new(frames: u64, options: LiveOptions) -> LiveReplay {
        let fps = options.frames_per_second;
        LiveReplay {
            options: LiveOptions {
                frames_per_second: if fps.is_finite() && fps > 0.0 {
                    fps
                } else {
                    30.0
                },
                queue: options.queue.max(1),
                key_every: options.key_every.max(1),
            },
            frames,
            next_arrival: 0,
            queue: VecDeque::new(),
            awaiting_key: false,
            now_ms: 0.0,
            facts: LiveFacts::default(),
            waited_sum_ms: 0.0,
        }
    }

    /// When the camera sends frame `f`, ms from the first.
    pub fn sent_ms(&self, f: u64) -> f64 {
        f as f64 * 1000.0 / self.options.frames_per_second
    }

    /// The frames the camera has sent by now go into the queue, or are lost. While the reader
    /// works nothing leaves the queue, so taking arrivals in order is exact.
    fn arrive(&mut self) {
        while self.next_arrival < self.frames && self.sent_ms(self.next_arrival) <= self.now_ms {
            let f = self.next_arrival;
            self.next_arrival += 1;
            if self.awaiting_key && !f.is_multiple_of(self.options.key_every) {
                self.facts.frames_lost += 1;
            } else if self.queue.len() >= self.options.queue {
                self.facts.frames_lost += 1;
                self.awaiting_key = true;
            } else {
                self.awaiting_key = false;
                self.queue.push_back(f);
            }
        }
    }

    /// The next frame the reader gets, waiting for the camera if none is queued; `None` once
    /// the camera's frames are all sent and read.
    pub fn take(&mut self) -> Option<Taken> {
        self.arrive();
        while self.queue.is_empty() {
            if self.next_arrival >= self.frames {
                return None;
            }
            // Idle: the clock goes on to the camera's next frame.
            self.now_ms = self.now_ms.max(self.sent_ms(self.next_arrival));
            self.arrive();
        }
        let frame = self.queue.pop_front()?;
        let waited_ms = self.now_ms - self.sent_ms(frame);
        self.facts.frames_read += 1;
        self.waited_sum_ms += waited_ms;
        self.facts.wait_max_ms = self.facts.wait_max_ms.max(waited_ms);
        Some(Taken { frame, waited_ms })
    }

    /// The reader spent `ms` on the frame it took (decoding and processing it).
    pub fn spend(&mut self, ms: f64) {
        if ms.is_finite() && ms > 0.0 {
            self.now_ms += ms;
        }
    }

    /// The camera's clock now, ms from its first frame.
    pub fn now_ms(&self) -> f64 {
        self.now_ms
    }

    /// Frames lost so far (what a live source reports as dropped).
    pub fn lost(&self) -> u64 {
        self.facts.frames_lost
    }

    pub fn options(&self) -> LiveOptions {
        self.options
    }

    /// Frames read and lost so far, and how long the read ones waited.
    pub fn facts(&self) -> LiveFacts {
        LiveFacts {
            wait_mean_ms: self.waited_sum_ms / self.facts.frames_read.max(1) as f64,
            ..self.facts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every frame, the n-th read costing `cost(n)` ms: the frames read, in order.
    fn read_all(r: &mut LiveReplay, cost: impl Fn(u64) -> f64) -> Vec<Taken> {
        let mut taken = Vec::new();
        while let Some(t) = r.take() {
            r.spend(cost(taken.len() as u64));
            taken.push(t);
        }
        taken
    }

    #[test]
    fn a_reader_that_keeps_up_reads_every_frame_as_it_comes() {
        let mut r = LiveReplay::new(300, LiveOptions::default());
        let taken = read_all(&mut r, |_| 20.0);
        assert_eq!(taken.len(), 300);
        assert!(taken.iter().enumerate().all(|(i, t)| t.frame == i as u64));
        // Each frame is taken when it is sent: the clock waited for the camera.
        assert!(taken.iter().all(|t| t.waited_ms == 0.0), "{taken:?}");
        let f = r.facts();
        assert_eq!((f.frames_read, f.frames_lost), (300, 0));
    }

    #[test]
    fn a_slow_reader_loses_frames_up_to_the_next_key_frame() {
        // 1 ms between frames, 3 ms to read one, room for 2, a key frame every 5 (worked by
        // hand: frame 3 finds the queue full; 4 is lost waiting for key frame 5, which gets in;
        // 6 finds it full again; ...).
        let mut r = LiveReplay::new(
            20,
            LiveOptions {
                frames_per_second: 1000.0,
                queue: 2,
                key_every: 5,
            },
        );
        let taken = read_all(&mut r, |_| 3.0);
        let frames: Vec<u64> = taken.iter().map(|t| t.frame).collect();
        assert_eq!(frames, [0, 1, 2, 5, 10, 11, 15, 16]);
        let waited: Vec<f64> = taken.iter().map(|t| t.waited_ms).collect();
        assert_eq!(waited, [0.0, 2.0, 4.0, 4.0, 2.0, 4.0, 3.0, 5.0]);
        let f = r.facts();
        assert_eq!((f.frames_read, f.frames_lost), (8, 12));
        assert_eq!(f.wait_max_ms, 5.0);
        assert_eq!(f.wait_mean_ms, 24.0 / 8.0);
    }

    #[test]
    fn the_queue_absorbs_an_expensive_frame_now_and_then() {
        // Detection on every 6th frame read at 180 ms, 2 ms otherwise: 31.7 ms a frame on
        // average, under the 33.3 of a 30 fps camera. A second's queue carries the reader
        // through each detection frame; a queue of 4 (what the RTSP source had) is full before
        // one ends, and loses a second of frames each time.
        let cost = |n: u64| if n.is_multiple_of(6) { 180.0 } else { 2.0 };
        let mut long = LiveReplay::new(900, LiveOptions::default());
        assert_eq!(read_all(&mut long, cost).len(), 900);
        assert_eq!(long.lost(), 0);
        assert!(long.facts().wait_max_ms > 140.0, "{:?}", long.facts());
        let mut short = LiveReplay::new(
            900,
            LiveOptions {
                queue: 4,
                ..Default::default()
            },
        );
        read_all(&mut short, cost);
        assert!(short.lost() > 300, "{:?}", short.facts());
    }

    #[test]
    fn without_key_frames_to_wait_for_only_the_frames_that_find_the_queue_full_are_lost() {
        let options = |key_every| LiveOptions {
            frames_per_second: 1000.0,
            queue: 2,
            key_every,
        };
        let mut each = LiveReplay::new(20, options(1));
        let mut keyed = LiveReplay::new(20, options(5));
        let (a, b) = (read_all(&mut each, |_| 3.0), read_all(&mut keyed, |_| 3.0));
        assert!(a.len() > b.len(), "{a:?} {b:?}");
        assert_eq!(each.lost() + a.len() as u64, 20);
    }

    #[test]
    fn odd_settings_and_costs_do_no_harm() {
        let mut r = LiveReplay::new(
            10,
            LiveOptions {
                frames_per_second: f64::NAN,
                queue: 0,
                key_every: 0,
            },
        );
        assert_eq!(r.options().frames_per_second, 30.0);
        r.spend(f64::INFINITY);
        r.spend(-5.0);
        assert_eq!(read_all(&mut r, |_| f64::NAN).len(), 10);
        assert_eq!(LiveReplay::new(0, LiveOptions::default()).take(), None);
    }
}
