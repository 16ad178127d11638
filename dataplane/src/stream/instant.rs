//! Instant start: where in the hub's ring a new viewer begins.
//!
//! The [`Inspector`](crate::stream::inspect::Inspector) reports the random
//! access points of the stream's keyed stream (see its docs) and, for the
//! latest one, the packets of other PIDs that continue a unit begun before
//! it. The hub keeps them here as [`StartPoint`]s, and keeps the ring's
//! packets from the latest one on (once per stream, whatever the number of
//! viewers), up to `instantstartlimit` bytes: past that the viewer starts
//! live, as without instant start, and it is logged once.
//!
//! A new viewer is given the start point's PAT and PMT packets, then the
//! ring from the start point on, minus the packets of its skip list: its
//! first bytes decode without an error. Catching up (the burst of up to one
//! GOP) is not falling behind: until the viewer is within `outputbuffer`
//! packets of live, it only loses packets if the ring lets go of them (a
//! newer start point came and it had not got past it). A viewer that falls
//! behind resumes on the next start point, with fresh tables, instead of in
//! the middle of a picture.

use std::collections::VecDeque;

use bytes::Bytes;
use tracing::warn;

use crate::stream::align::PACKET_SIZE;
use crate::stream::inspect::Mark;

/// The instant start settings of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstantStart {
    /// `instantstart`: start viewers on a random access point.
    pub enabled: bool,
    /// `instantstartlimit`: the most held for it, in bytes.
    pub limit_bytes: u64,
    /// The stream's name, for the log.
    pub stream: String,
}

impl InstantStart {
    /// Instant start off: every viewer starts live.
    pub fn off() -> Self {
        InstantStart {
            enabled: false,
            limit_bytes: 0,
            stream: String::new(),
        }
    }
}

/// A random access point still in the ring.
#[derive(Debug)]
pub struct StartPoint {
    pub position: u64,
    /// The PAT and PMT packets to send before it.
    pub tables: Bytes,
    /// Positions, ascending, of packets a viewer started here skips.
    skips: Vec<u64>,
}

/// Where a viewer started at a start point is in its skip list.
#[derive(Debug, Clone, Copy)]
pub struct SkipCursor {
    start: u64,
    index: usize,
}

/// What the viewer at `next_packet` is to do about its skip list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    /// Packets to pass over from `next_packet` on.
    pub now: u64,
    /// The next skipped packet after those, if known: send up to it.
    pub until: Option<u64>,
}

/// The start points of one stream, and what they measure.
#[derive(Debug)]
pub struct StartPoints {
    settings: InstantStart,
    points: VecDeque<StartPoint>,
    /// The inspector has found a stream to start viewers on.
    keyed: bool,
    /// The hold went past the limit and was let go (logged once).
    over_limit: bool,
    logged_limit: bool,
    last_pts: Option<u64>,
    /// Measured interval between random access points, in milliseconds.
    pub interval_ms: u64,
    /// Bytes held for instant start (from the latest start point to live).
    pub held_bytes: u64,
}

impl StartPoints {
    pub fn new(settings: InstantStart) -> Self {
        StartPoints {
            settings,
            points: VecDeque::new(),
            keyed: false,
            over_limit: false,
            logged_limit: false,
            last_pts: None,
            interval_ms: 0,
            held_bytes: 0,
        }
    }

    pub fn set_settings(&mut self, settings: InstantStart) {
        if !settings.enabled {
            self.points.clear();
        }
        self.settings = settings;
    }

    /// Whether viewers are started on start points at all: enabled, and the
    /// stream has something to start on.
    pub fn active(&self) -> bool {
        self.settings.enabled && self.keyed && !self.over_limit
    }

    pub fn set_keyed(&mut self, keyed: bool) {
        self.keyed = keyed;
    }

    /// A new upstream connection: its stream starts anywhere.
    pub fn clear(&mut self) {
        self.points.clear();
        self.keyed = false;
        self.last_pts = None;
        self.held_bytes = 0;
    }

    /// Takes in what the inspector found.
    pub fn mark(&mut self, mark: Mark) {
        match mark {
            Mark::RandomAccess {
                position,
                tables,
                pts,
            } => {
                if let (Some(last), Some(pts)) = (self.last_pts, pts) {
                    let ticks = pts.wrapping_sub(last) & ((1 << 33) - 1);
                    // Ignore jumps (a loop, a new upstream clock).
                    if ticks > 0 && ticks < 60 * 90_000 {
                        self.interval_ms = ticks / 90;
                    }
                }
                self.last_pts = pts.or(self.last_pts);
                if self.settings.enabled {
                    self.over_limit = false;
                    self.points.push_back(StartPoint {
                        position,
                        tables,
                        skips: Vec::new(),
                    });
                }
            }
            Mark::Skip { position } => {
                if let Some(latest) = self.points.back_mut() {
                    latest.skips.push(position);
                }
            }
        }
    }

    /// The oldest packet the ring must keep for instant start, given the
    /// position of the next packet to be published. Past the limit the
    /// start points are let go.
    pub fn oldest_needed(&mut self, head: u64) -> Option<u64> {
        let latest = self.points.back()?.position;
        let held = (head - latest) * PACKET_SIZE as u64;
        if held > self.settings.limit_bytes {
            if !self.logged_limit {
                warn!(
                    event = "instant-start-limit",
                    stream = %self.settings.stream,
                    limit_bytes = self.settings.limit_bytes,
                    "the stream since its last random access point is larger than instantstartlimit: new viewers start live until the next one"
                );
                self.logged_limit = true;
            }
            self.points.clear();
            self.over_limit = true;
            self.held_bytes = 0;
            return None;
        }
        self.held_bytes = held;
        Some(latest)
    }

    /// Whether the stream from `since` to `head` is more than the limit.
    pub fn over_limit(&self, since: u64, head: u64) -> bool {
        head.saturating_sub(since) * PACKET_SIZE as u64 > self.settings.limit_bytes
    }

    /// How long a viewer waits for the next start point before it is given
    /// the live stream: two measured keyframe intervals, between 1 and 10 s
    /// (10 s before one is measured).
    pub fn longest_wait(&self) -> std::time::Duration {
        let millis = if self.interval_ms == 0 {
            10_000
        } else {
            (2 * self.interval_ms).clamp(1_000, 10_000)
        };
        std::time::Duration::from_millis(millis)
    }

    /// Forgets start points whose packets have left the ring.
    pub fn evict_before(&mut self, oldest_kept: u64) {
        while self
            .points
            .front()
            .is_some_and(|point| point.position < oldest_kept)
        {
            self.points.pop_front();
        }
    }

    pub fn latest(&self) -> Option<&StartPoint> {
        self.points.back()
    }

    /// The first start point at or after `position`.
    pub fn at_or_after(&self, position: u64) -> Option<&StartPoint> {
        let index = self.points.partition_point(|p| p.position < position);
        self.points.get(index)
    }

    /// Where a viewer starting at `point` begins in its skip list.
    pub fn cursor(point: &StartPoint) -> SkipCursor {
        SkipCursor {
            start: point.position,
            index: 0,
        }
    }

    /// Moves `cursor` to `next_packet` and says what to skip; `None` once
    /// the skip list can have nothing more for this viewer.
    pub fn skip(&self, cursor: &mut SkipCursor, next_packet: u64) -> Option<Skip> {
        let index = self
            .points
            .binary_search_by_key(&cursor.start, |p| p.position)
            .ok()?;
        let skips = &self.points[index].skips;
        while skips.get(cursor.index).is_some_and(|&s| s < next_packet) {
            cursor.index += 1;
        }
        let mut now = 0;
        while skips.get(cursor.index) == Some(&(next_packet + now)) {
            now += 1;
            cursor.index += 1;
        }
        let until = skips.get(cursor.index).copied();
        // A newer start point closed this list.
        if until.is_none() && now == 0 && index + 1 < self.points.len() {
            return None;
        }
        Some(Skip { now, until })
    }
}
