//! How often to detect on a live stream that every-frame detection cannot keep up with.
//!
//! Detection is most of a frame's cost (docs/video.md, "Real time"), and the tracker carries a
//! face between detections. A camera does not wait for its reader: one that falls behind loses
//! units up to the next key frame, and with them whole stretches of every track in view. So
//! `watch --every auto` detects as often as real time allows on the machine it runs on: it
//! measures what a frame with detection and a frame without cost here, and picks the smallest
//! interval whose average cost per frame fits the stream's frame interval with a margin. Frames
//! the source still drops raise the interval one step at once.
//!
//! Changes are rare on purpose: the tracker's steps span the frames between detections, so its
//! predictions follow a change, but how long a lost track is kept and how many steps it went
//! unseen do not ([`crate::watch::Watcher::set_detect_every`]); a lower interval is taken only
//! after the averages have said it fits for [`Cadence::HOLD_SECONDS`] on end.

/// A detection interval as asked for (`--every`, a gate session's `every`): a fixed one (1 =
/// every frame), or `auto` ([`Cadence::adaptive`]). Written as the number or `auto`, in text
/// and in configuration files alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Every n-th frame, n at least 1.
    Fixed(u32),
    Auto,
}

impl Every {
    /// The interval to start at.
    pub fn first(self) -> u32 {
        match self {
            Every::Fixed(n) => n.max(1),
            Every::Auto => 1,
        }
    }

    /// The largest interval this may use when `auto` goes up to `max`.
    pub fn most(self, max: u32) -> u32 {
        match self {
            Every::Fixed(n) => n.max(1),
            Every::Auto => max.max(1),
        }
    }

    /// The cadence for a stream of `frames_per_second`, `auto` going up to `max`.
    pub fn cadence(self, max: u32, frames_per_second: f64) -> Cadence {
        match self {
            Every::Fixed(n) => Cadence::fixed(n),
            Every::Auto => Cadence::adaptive(1, max, frames_per_second),
        }
    }
}

impl std::str::FromStr for Every {
    type Err = String;

    fn from_str(s: &str) -> Result<Every, String> {
        if s == "auto" {
            return Ok(Every::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Every::Fixed(n)),
            _ => Err(format!(
                "{s:?}: a whole number of frames (1 = every frame) or auto"
            )),
        }
    }
}

impl std::fmt::Display for Every {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Every::Fixed(n) => write!(f, "{n}"),
            Every::Auto => f.write_str("auto"),
        }
    }
}

impl serde::Serialize for Every {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Every::Fixed(n) => s.serialize_u32(*n),
            Every::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Every {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Every, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        let text = match Written::deserialize(d)? {
            Written::Number(n) => n.to_string(),
            Written::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The detection interval of a stream, fixed or adapted to this machine's speed.
#[derive(Debug, Clone)]
pub struct Cadence {
    min: u32,
    max: u32,
    every: u32,
    adaptive: bool,
    /// The stream's frame rate (0 when fixed: not needed).
    frames_per_second: f64,
    /// Moving averages of what a frame costs here, ms: with detection, and without.
    detect_ms: Option<f64>,
    other_ms: Option<f64>,
    /// The source's dropped-unit count last seen.
    dropped: u64,
    /// Frames on end for which a lower interval has fitted.
    calm: u64,
    changes: u64,
    largest: u32,
    /// Whether this machine falls behind the stream even at the largest interval
    /// ([`Cadence::behind`]), frames on end that kept up since, and frames spent behind.
    behind: bool,
    kept_up: u64,
    frames_behind: u64,
}

/// Weight of a new frame in the moving averages: about the last 10 frames of each kind.
const SMOOTHING: f64 = 0.1;

impl Cadence {
    /// Share of the frame interval the average cost may use: the rest absorbs frames that cost
    /// more than the average (more faces to collect, a decision to make).
    pub const BUDGET: f64 = 0.85;
    /// A lower interval must have fitted this long on end before it is taken.
    pub const HOLD_SECONDS: f64 = 2.0;
    /// The largest interval `auto` goes to unless told: at 30 fps, detection 5 times a second.
    pub const DEFAULT_MAX: u32 = 6;
    /// The frame rates a camera may be said to have (`watch --fps`, a gate session's `fps`),
    /// frames a second.
    pub const FRAMES_PER_SECOND: std::ops::RangeInclusive<f64> = 1.0..=240.0;

    /// Always `every`.
    pub fn fixed(every: u32) -> Cadence {
        let every = every.max(1);
        Cadence {
            min: every,
            max: every,
            every,
            adaptive: false,
            frames_per_second: 0.0,
            detect_ms: None,
            other_ms: None,
            dropped: 0,
            calm: 0,
            changes: 0,
            largest: every,
            behind: false,
            kept_up: 0,
            frames_behind: 0,
        }
    }

    /// Between `min` and `max` (both at least 1), starting at `min`, for a stream of
    /// `frames_per_second` (a stream that does not say: 30, what gate and CCTV cameras send).
    pub fn adaptive(min: u32, max: u32, frames_per_second: f64) -> Cadence {
        let min = min.max(1);
        let fps = if frames_per_second.is_finite() && frames_per_second > 0.0 {
            frames_per_second
        } else {
            30.0
        };
        Cadence {
            max: max.max(min),
            adaptive: true,
            frames_per_second: fps,
            ..Cadence::fixed(min)
        }
    }

    /// The interval to detect at now.
    pub fn every(&self) -> u32 {
        self.every
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// The frame rate an adaptive cadence keeps up with (the one it was given, or 30 for a
    /// stream that did not say); `None` when fixed.
    pub fn frames_per_second(&self) -> Option<f64> {
        self.adaptive.then_some(self.frames_per_second)
    }

    /// The stream's frame interval, ms (adaptive only: a fixed cadence has no rate).
    fn frame_ms(&self) -> f64 {
        1000.0 / self.frames_per_second
    }

    /// What a frame may cost on average: [`Cadence::BUDGET`] of the frame interval, ms.
    fn budget(&self) -> f64 {
        Self::BUDGET * self.frame_ms()
    }

    /// Whether this machine falls behind the stream even at the largest interval: the average
    /// cost of a frame there exceeds the budget, or the source still drops units there. From the
    /// first such frame until it has kept up for [`Cadence::HOLD_SECONDS`] on end. Frames are
    /// being lost (or, read from a file, would be from a camera): the operator's to mend (a
    /// larger `--max-every`, a narrower face-size range, a lighter detector, a faster machine).
    /// Never for a fixed cadence, which does not know the stream's rate.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Frames observed while [`Cadence::behind`].
    pub fn frames_behind(&self) -> u64 {
        self.frames_behind
    }

    /// What a frame costs here on average at the current interval, ms (`None` before a
    /// detection frame was observed, or when fixed).
    pub fn cost_ms(&self) -> Option<f64> {
        self.cost_at(self.every).filter(|_| self.adaptive)
    }

    /// The share of the frame interval a frame may cost on average ([`Cadence::BUDGET`]), ms;
    /// `None` when fixed.
    pub fn budget_ms(&self) -> Option<f64> {
        self.adaptive.then(|| self.budget())
    }

    /// Times the interval changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The largest interval used.
    pub fn largest(&self) -> u32 {
        self.largest
    }

    /// After each frame: what it cost here (reading, decoding and processing it, ms), whether it
    /// ran detection, and the source's dropped-unit count so far. Returns the interval to
    /// detect at from now on.
    pub fn observe(&mut self, cost_ms: f64, detected: bool, dropped_total: u64) -> u32 {
        if !self.adaptive {
            return self.every;
        }
        let cost_ms = if cost_ms.is_finite() {
            cost_ms.max(0.0)
        } else {
            0.0
        };
        let average = if detected {
            &mut self.detect_ms
        } else {
            &mut self.other_ms
        };
        *average = Some(match *average {
            None => cost_ms,
            Some(a) => a + SMOOTHING * (cost_ms - a),
        });
        let dropped_now = dropped_total > self.dropped;
        self.dropped = dropped_total;
        let needed = self.needed();
        let hold = (Self::HOLD_SECONDS * 1000.0 / self.frame_ms()).ceil() as u64;
        self.calm = if needed < self.every && !dropped_now {
            self.calm + 1
        } else {
            0
        };
        let next = if dropped_now {
            // Behind already: whatever the averages say, one step more.
            needed.max(self.every + 1).min(self.max)
        } else if needed > self.every || self.calm >= hold {
            needed
        } else {
            self.every
        };
        if next != self.every {
            self.every = next;
            self.calm = 0;
            self.changes += 1;
            self.largest = self.largest.max(next);
        }
        let short = self.every == self.max
            && (dropped_now || self.cost_at(self.max).is_some_and(|c| c > self.budget()));
        if short {
            self.behind = true;
            self.kept_up = 0;
        } else if self.behind {
            self.kept_up += 1;
            self.behind = self.kept_up < hold;
        }
        if self.behind {
            self.frames_behind += 1;
        }
        self.every
    }

    /// The average cost of a frame at interval `n`, ms: one detection frame and `n - 1` others.
    fn cost_at(&self, n: u32) -> Option<f64> {
        let detect = self.detect_ms?;
        let other = self.other_ms.unwrap_or(0.0).min(detect);
        Some((detect + (n.max(1) - 1) as f64 * other) / n.max(1) as f64)
    }

    /// The smallest interval in [min, max] whose average cost per frame fits the budget (max
    /// when none does). Before a frame without detection has been seen, a detection frame's
    /// cost is all there is to go on.
    fn needed(&self) -> u32 {
        if self.detect_ms.is_none() {
            return self.every;
        }
        let budget = self.budget();
        (self.min..=self.max)
            .find(|&n| self.cost_at(n).is_some_and(|c| c <= budget))
            .unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::{Cadence, Every};

    #[test]
    fn an_interval_is_read_as_a_number_or_auto_in_text_and_in_configuration() {
        assert_eq!("4".parse(), Ok(Every::Fixed(4)));
        assert_eq!("auto".parse(), Ok(Every::Auto));
        for bad in ["0", "-1", "1.5", "Auto", "", "4294967296"] {
            assert!(bad.parse::<Every>().is_err(), "{bad:?}");
        }
        assert_eq!(Every::Fixed(3).to_string(), "3");
        assert_eq!(Every::Auto.to_string(), "auto");
        let read =
            |v: serde_json::Value| serde_json::from_value::<Every>(v).map_err(|e| e.to_string());
        assert_eq!(read(serde_json::json!(5)), Ok(Every::Fixed(5)));
        assert_eq!(read(serde_json::json!("auto")), Ok(Every::Auto));
        assert_eq!(read(serde_json::json!("2")), Ok(Every::Fixed(2)));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-3),
            serde_json::json!(2.5),
            serde_json::json!("often"),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_value(Every::Fixed(6)).ok(),
            Some(serde_json::json!(6))
        );
        assert_eq!(
            serde_json::to_value(Every::Auto).ok(),
            Some(serde_json::json!("auto"))
        );
        assert_eq!((Every::Auto.first(), Every::Auto.most(6)), (1, 6));
        assert_eq!((Every::Fixed(3).first(), Every::Fixed(3).most(6)), (3, 3));
    }

    /// Feeds `frames` frames detected on the cadence's own schedule, each costing `detect` or
    /// `other` ms, and returns the intervals in use after each.
    fn run(c: &mut Cadence, frames: u64, detect: f64, other: f64) -> Vec<u32> {
        let mut next = 0u64;
        (0..frames)
            .map(|i| {
                let detected = i >= next;
                if detected {
                    next = i + c.every() as u64;
                }
                c.observe(if detected { detect } else { other }, detected, 0)
            })
            .collect()
    }

    #[test]
    fn a_fixed_cadence_never_changes() {
        let mut c = Cadence::fixed(3);
        assert_eq!(run(&mut c, 300, 500.0, 1.0).last(), Some(&3));
        assert_eq!(c.observe(1.0, false, 99), 3);
        assert_eq!(c.changes(), 0);
    }

    #[test]
    fn a_machine_that_keeps_up_detects_on_every_frame() {
        // 30 fps: 33.3 ms a frame, budget 28.3; detection costs 20 ms.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        assert!(run(&mut c, 300, 20.0, 3.0).iter().all(|&n| n == 1));
    }

    #[test]
    fn a_slow_detector_gets_the_smallest_interval_that_fits() {
        // 80 ms detection, 4 ms otherwise: n = 3 averages 29.3 > 28.3, n = 4 averages 23.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        let used = run(&mut c, 300, 80.0, 4.0);
        assert_eq!(used.last(), Some(&4), "{used:?}");
        // It got there going up only, and settled.
        assert!(used.windows(2).all(|w| w[1] >= w[0]), "{used:?}");
        assert!(c.changes() <= 3);
        // Nothing fits: the largest interval allowed.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        assert_eq!(run(&mut c, 300, 500.0, 30.0).last(), Some(&6));
        assert_eq!(c.largest(), 6);
    }

    #[test]
    fn an_interval_comes_down_only_after_a_lower_one_fitted_for_a_while() {
        let mut c = Cadence::adaptive(1, 6, 30.0);
        run(&mut c, 100, 80.0, 4.0);
        assert_eq!(c.every(), 4);
        // The detector got fast (another stream on the machine ended): back to every frame,
        // but only once a lower interval has fitted for two seconds (60 frames at 30 fps).
        let used = run(&mut c, 200, 10.0, 2.0);
        let first_lower = used.iter().position(|&n| n < 4).unwrap();
        assert!(
            first_lower >= 50,
            "lowered after {first_lower} frames: {used:?}"
        );
        assert_eq!(used.last(), Some(&1));
    }

    #[test]
    fn dropped_units_raise_the_interval_at_once() {
        let mut c = Cadence::adaptive(2, 5, 25.0);
        assert_eq!(c.every(), 2);
        // The averages say 2 is fine, but the source dropped units: one step up, each time.
        assert_eq!(c.observe(10.0, true, 0), 2);
        assert_eq!(c.observe(10.0, false, 7), 3);
        assert_eq!(c.observe(10.0, false, 7), 3);
        assert_eq!(c.observe(10.0, false, 9), 4);
        assert_eq!(c.observe(10.0, false, 12), 5);
        assert_eq!(c.observe(10.0, false, 20), 5, "never above max");
    }

    #[test]
    fn a_machine_too_slow_even_at_the_largest_interval_is_behind_until_it_keeps_up_for_a_while() {
        // 500 ms detection, 30 ms otherwise: every 6th averages 108 ms against 28.3.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        assert!(!c.behind());
        assert!(c.budget_ms().is_some_and(|b| (b - 28.333).abs() < 0.001));
        // Nothing fits from the first detection on: the largest interval at once, and behind.
        assert_eq!(run(&mut c, 1, 500.0, 30.0), [6]);
        assert!(c.behind());
        run(&mut c, 99, 500.0, 30.0);
        assert!(c.behind());
        let behind = c.frames_behind();
        assert!(behind > 50, "{behind}");
        assert!(
            c.cost_ms().is_some_and(|ms| ms > 100.0),
            "{:?}",
            c.cost_ms()
        );
        // Faster again (another stream ended): still behind while the averages come down and
        // then until it kept up for 2 s (60 frames at 30 fps); no longer after, and no frame
        // counts then.
        let fast = (0..150)
            .map(|_| {
                run(&mut c, 1, 10.0, 2.0);
                c.behind()
            })
            .collect::<Vec<_>>();
        let caught = fast.iter().position(|&b| !b).unwrap();
        assert!((60..=100).contains(&caught), "{caught}: {fast:?}");
        assert!(fast[caught..].iter().all(|&b| !b));
        assert_eq!(c.frames_behind(), behind + caught as u64);
        // Units dropped below the largest interval: a step up, not behind (yet); dropped at the
        // largest: behind whatever the averages say.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        run(&mut c, 10, 5.0, 1.0);
        c.observe(5.0, false, 2);
        assert_eq!((c.every(), c.behind()), (2, false));
        let mut c = Cadence::adaptive(1, 2, 30.0);
        run(&mut c, 10, 5.0, 1.0);
        c.observe(5.0, false, 3);
        c.observe(5.0, true, 4);
        assert_eq!(c.every(), 2);
        assert!(c.behind());
        // Keeping up at a lower interval, or fixed: never behind.
        let mut c = Cadence::adaptive(1, 6, 30.0);
        run(&mut c, 300, 80.0, 4.0);
        assert_eq!((c.every(), c.behind(), c.frames_behind()), (4, false, 0));
        let mut c = Cadence::fixed(2);
        run(&mut c, 300, 500.0, 30.0);
        c.observe(5.0, false, 9);
        assert!(!c.behind());
        assert_eq!((c.cost_ms(), c.budget_ms()), (None, None));
    }

    #[test]
    fn an_unknown_frame_rate_is_taken_for_30_fps_and_bad_costs_do_no_harm() {
        let mut c = Cadence::adaptive(1, 6, 0.0);
        assert_eq!(c.frames_per_second(), Some(30.0));
        assert_eq!(run(&mut c, 100, 80.0, 4.0).last(), Some(&4));
        assert_eq!(
            Cadence::adaptive(1, 6, 25.0).frames_per_second(),
            Some(25.0)
        );
        assert_eq!(Cadence::fixed(4).frames_per_second(), None);
        let mut c = Cadence::adaptive(0, 0, f64::NAN);
        assert_eq!(c.frames_per_second(), Some(30.0));
        assert_eq!(c.observe(f64::INFINITY, true, 0), 1);
        assert_eq!(c.observe(f64::NAN, false, 0), 1);
    }
}
