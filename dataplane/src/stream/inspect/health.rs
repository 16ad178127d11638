//! Stream health: what the upstream really sends, judged from the packets
//! relayed, in the spirit of ETSI TR 101 290 (priorities 1 and 2).
//!
//! [`Health`] consumes the [`PacketFacts`] the [`Inspector`] reads once per
//! packet, and the tables it parses; it parses nothing itself. Per stream,
//! continuously:
//!
//! - **continuity** per PID (TR 101 290 1.4): a continuity counter that is
//!   not the previous one plus one is an error, except a packet repeated
//!   once, a packet without payload, and a packet whose adaptation field
//!   sets `discontinuity_indicator`. A new upstream connection or a file
//!   that starts again is a *discontinuity*: counted apart, never as loss;
//! - **PAT and PMT** presence and repetition interval (1.3, 1.5), on the
//!   wall clock, per program for the PMT;
//! - **PCR interval** of the programs' PCR PIDs (2.3): the step between two
//!   PCR values over 100 ms, or backwards, without `discontinuity_indicator`
//!   is an error;
//! - packets per **elementary stream**, the share of **null packets** and
//!   the **bitrate**, over the last few seconds.
//!
//! It also judges the content, for content failover ([`Health::check`]): an
//! upstream that sends no PAT, no PMT, no packet of any elementary stream
//! its PMT lists, or no packet of a video stream it lists, for
//! `contenttimeout`, or more than `ccerrorlimit` continuity errors in 10 s,
//! has lost its content. The source then ends that connection as if the
//! upstream had disconnected.
//!
//! The per-packet work is a table lookup and a compare; everything else is
//! done once per published run of packets or once a second.
//!
//! [`Inspector`]: super::Inspector

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::packet::{PacketFacts, NULL_PID};
use super::psi::{Program, StreamKind};

/// Number of PIDs.
const PIDS: usize = 8192;
/// PCR ticks per second.
const PCR_HZ: u64 = 27_000_000;
/// The PCR is 33 bits of 90 kHz base times 300 plus a 9-bit extension.
const PCR_WRAP: u64 = (1 << 33) * 300;
/// A PCR step above this is an error (ISO 13818-1 §2.7.2; TR 101 290 2.3).
pub const MAX_PCR_INTERVAL: Duration = Duration::from_millis(100);
/// Length of one statistics bucket.
const BUCKET: Duration = Duration::from_secs(1);
/// Rates and largest intervals are over this many last buckets.
const RATE_BUCKETS: usize = 5;
/// `ccerrorlimit` counts continuity errors over this many last buckets.
const CC_BUCKETS: usize = 10;
/// Continuity errors are logged at most this often.
const CC_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// A content loss names what has been missing for this much less than
/// `contenttimeout` too.
const REASON_SLACK: Duration = Duration::from_secs(1);
/// PIDs carrying a PCR that are followed at most.
const MAX_PCR_PIDS: usize = 16;

/// Per-PID continuity state: the last counter in the low nibble.
const CC_VALID: u8 = 0x10;
/// The last packet repeated the one before it.
const CC_REPEATED: u8 = 0x20;

/// What decides that an upstream's content is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthSettings {
    /// No PAT, PMT, elementary stream or video packets for this long.
    pub content_timeout: Option<Duration>,
    /// Continuity errors within 10 s.
    pub cc_error_limit: Option<u64>,
}

/// What [`Health::check`] found since it was last called.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The content of the current connection is lost, for this reason: end
    /// the connection and fail over. Reported once per connection.
    pub lost: Option<String>,
    /// The content is healthy again after a loss.
    pub restored: bool,
    /// Continuity errors to log now (at most once a second) and the PIDs
    /// they were on (the first few).
    pub continuity_errors: Option<(u64, Vec<u16>)>,
}

/// One elementary stream of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub pid: u16,
    pub stream_type: u8,
    /// `video`, `audio` or `other`.
    pub kind: &'static str,
    pub packets_per_second: f64,
}

/// The health figures of one stream, for the APIs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HealthReport {
    /// The upstream is connected and its content judged healthy.
    pub content_ok: bool,
    pub continuity_errors: u64,
    /// Upstream connections after the first, file loops, and packets with
    /// `discontinuity_indicator`: jumps that are not loss.
    pub discontinuities: u64,
    pub pcr_errors: u64,
    /// Connections ended because their content was lost.
    pub content_failovers: u64,
    /// Largest step between two PCRs of a program's PCR PID in the last
    /// seconds (`None`: no PCR seen).
    pub pcr_interval_seconds: Option<f64>,
    /// Largest time between two PATs in the last seconds, or since the last
    /// one if that is longer.
    pub pat_interval_seconds: Option<f64>,
    /// The same for the PMT (the largest over the programs).
    pub pmt_interval_seconds: Option<f64>,
    /// Null packets among the packets of the last seconds (0 to 1).
    pub null_share: f64,
    /// Bits per second received over the last seconds.
    pub bitrate: u64,
    /// Elementary streams of the PMTs, with their packet rates.
    pub streams: Vec<StreamReport>,
}

/// Counts of one bucket (about a second).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    started: Option<Instant>,
    packets: u64,
    nulls: u64,
    cc_errors: u64,
    /// Largest PCR step, in ticks.
    pcr_max: u64,
    pat_max: Duration,
    pmt_max: Duration,
}

/// An elementary stream followed for liveness and rate.
#[derive(Debug, Clone)]
struct Tracked {
    pid: u16,
    stream_type: u8,
    kind: StreamKind,
    /// `packets[pid]` when last looked at.
    last_count: u32,
    /// When its last packet was seen (or it was first listed, on this
    /// connection).
    last_seen: Instant,
    /// `(bucket start, packets[pid])` of the last buckets, for the rate.
    history: VecDeque<(Instant, u32)>,
}

/// A PMT followed for its repetition interval.
#[derive(Debug, Clone, Copy)]
struct PmtTrack {
    program: u16,
    /// Stream position of the last section seen.
    position: Option<u64>,
    last: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct PcrTrack {
    pid: u16,
    last: Option<u64>,
}

/// The health checks of one stream.
#[derive(Debug)]
pub struct Health {
    settings: HealthSettings,
    /// Per PID: `CC_*` state.
    cc: Box<[u8; PIDS]>,
    /// Per PID: packets seen on this connection (wrapping), to tell which
    /// streams flow.
    packets: Box<[u32; PIDS]>,
    pcr: Vec<PcrTrack>,
    bucket: Bucket,
    buckets: VecDeque<Bucket>,
    tracked: Vec<Tracked>,
    /// The PMT CRCs the tracked streams were taken from.
    tracked_from: Vec<Option<u32>>,
    pmts: Vec<PmtTrack>,
    /// Stream position of the last PAT section seen.
    pat_position: Option<u64>,

    // The current connection.
    connected_at: Option<Instant>,
    pat_at: Option<Instant>,
    pmt_at: Option<Instant>,
    stream_at: Option<Instant>,
    verdict_given: bool,

    /// Content judged healthy.
    content_ok: bool,
    continuity_errors: u64,
    discontinuities: u64,
    pcr_errors: u64,
    content_failovers: u64,
    cc_unlogged: u64,
    cc_unlogged_pids: Vec<u16>,
    cc_logged_at: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Health {
            settings: HealthSettings::default(),
            cc: Box::new([0; PIDS]),
            packets: Box::new([0; PIDS]),
            pcr: Vec::new(),
            bucket: Bucket::default(),
            buckets: VecDeque::new(),
            tracked: Vec::new(),
            tracked_from: Vec::new(),
            pmts: Vec::new(),
            pat_position: None,
            connected_at: None,
            pat_at: None,
            pmt_at: None,
            stream_at: None,
            verdict_given: false,
            content_ok: true,
            continuity_errors: 0,
            discontinuities: 0,
            pcr_errors: 0,
            content_failovers: 0,
            cc_unlogged: 0,
            cc_unlogged_pids: Vec::new(),
            cc_logged_at: None,
        }
    }

    /// What decides that content is lost, from the next connection on.
    pub fn set_settings(&mut self, settings: HealthSettings) {
        self.settings = settings;
    }

    /// A new upstream connection: a discontinuity if there was one before,
    /// and the content timers start.
    pub fn connected(&mut self, now: Instant) {
        if self.connected_at.is_some() {
            self.discontinuities += 1;
        }
        self.connected_at = Some(now);
        self.pat_at = None;
        self.pmt_at = None;
        self.stream_at = None;
        self.verdict_given = false;
        self.pmts.iter_mut().for_each(|pmt| pmt.last = None);
        self.tracked.clear();
        self.tracked_from.clear();
        self.packets.fill(0);
        self.forget_counters();
    }

    /// The stream jumps without loss (a file started again): continuity
    /// and PCR start anew.
    pub fn discontinuity(&mut self) {
        self.discontinuities += 1;
        self.forget_counters();
    }

    fn forget_counters(&mut self) {
        self.cc.fill(0);
        self.pcr.iter_mut().for_each(|track| track.last = None);
    }

    /// One packet's facts, as the inspector read them.
    #[inline]
    pub fn packet(&mut self, facts: &PacketFacts) {
        self.bucket.packets += 1;
        if facts.pid == NULL_PID {
            self.bucket.nulls += 1;
            return;
        }
        let index = usize::from(facts.pid);
        self.packets[index] = self.packets[index].wrapping_add(1);
        if facts.discontinuity {
            self.discontinuities += 1;
        }
        if facts.has_payload {
            let state = self.cc[index];
            let mut next = CC_VALID | facts.cc;
            if state & CC_VALID != 0 && !facts.discontinuity {
                let last = state & 0x0F;
                if facts.cc == (last + 1) & 0x0F {
                } else if facts.cc == last && state & CC_REPEATED == 0 {
                    next |= CC_REPEATED;
                } else {
                    self.continuity_error(facts.pid);
                }
            }
            self.cc[index] = next;
        }
        if let Some(pcr) = facts.pcr {
            self.pcr(facts.pid, pcr, facts.discontinuity);
        }
    }

    #[cold]
    fn continuity_error(&mut self, pid: u16) {
        self.continuity_errors += 1;
        self.bucket.cc_errors += 1;
        self.cc_unlogged += 1;
        if self.cc_unlogged_pids.len() < 8 && !self.cc_unlogged_pids.contains(&pid) {
            self.cc_unlogged_pids.push(pid);
        }
    }

    fn pcr(&mut self, pid: u16, pcr: u64, discontinuity: bool) {
        let track = match self.pcr.iter_mut().position(|t| t.pid == pid) {
            Some(index) => &mut self.pcr[index],
            None if self.pcr.len() < MAX_PCR_PIDS => {
                self.pcr.push(PcrTrack { pid, last: None });
                self.pcr.last_mut().expect("just pushed")
            }
            None => return,
        };
        if let (Some(last), false) = (track.last, discontinuity) {
            let step = (pcr + PCR_WRAP - last) % PCR_WRAP;
            if step > ticks(MAX_PCR_INTERVAL) {
                self.pcr_errors += 1;
            }
            // A step of more than a second is a jump, not an interval.
            if step <= PCR_HZ {
                self.bucket.pcr_max = self.bucket.pcr_max.max(step);
            }
        }
        track.last = Some(pcr);
    }

    /// After a run of packets: what the tables say now, at `now`.
    /// `pat_position` is the stream position of the last PAT section,
    /// `pmt_positions` that of each program's last PMT section.
    pub fn after_run(
        &mut self,
        pat_position: Option<u64>,
        programs: &[Program],
        pmt_positions: &[Option<u64>],
        now: Instant,
    ) {
        if pat_position.is_some() && pat_position != self.pat_position {
            self.pat_position = pat_position;
            if let Some(last) = self.pat_at {
                self.bucket.pat_max = self.bucket.pat_max.max(now - last);
            }
            self.pat_at = Some(now);
        }
        self.follow_pmts(programs, pmt_positions, now);
        if programs.len() != self.tracked_from.len()
            || programs
                .iter()
                .zip(&self.tracked_from)
                .any(|(program, crc)| program.pmt_crc != *crc)
        {
            self.retrack(programs, now);
        }
        for stream in &mut self.tracked {
            let count = self.packets[usize::from(stream.pid)];
            if count != stream.last_count {
                stream.last_count = count;
                stream.last_seen = now;
                self.stream_at = Some(now);
            }
        }
        self.roll(now);
    }

    fn follow_pmts(&mut self, programs: &[Program], positions: &[Option<u64>], now: Instant) {
        for (program, &position) in programs.iter().zip(positions) {
            let index = match self.pmts.iter().position(|p| p.program == program.number) {
                Some(index) => index,
                None => {
                    self.pmts.push(PmtTrack {
                        program: program.number,
                        position: None,
                        last: None,
                    });
                    self.pmts.len() - 1
                }
            };
            let pmt = &mut self.pmts[index];
            if position.is_some() && position != pmt.position {
                pmt.position = position;
                if let Some(last) = pmt.last {
                    self.bucket.pmt_max = self.bucket.pmt_max.max(now - last);
                }
                pmt.last = Some(now);
                self.pmt_at = Some(now);
            }
        }
        if self.pmts.len() > programs.len() {
            self.pmts
                .retain(|pmt| programs.iter().any(|p| p.number == pmt.program));
        }
    }

    /// The PMTs changed: follow their elementary streams, keeping what is
    /// known of the ones that stay.
    fn retrack(&mut self, programs: &[Program], now: Instant) {
        let old = std::mem::take(&mut self.tracked);
        for stream in programs.iter().flat_map(|p| p.streams.iter()) {
            if self.tracked.iter().any(|t| t.pid == stream.pid) {
                continue;
            }
            let kept = old.iter().find(|t| t.pid == stream.pid);
            self.tracked.push(Tracked {
                pid: stream.pid,
                stream_type: stream.stream_type,
                kind: stream.kind,
                // Packets counted since the connection began are seen now.
                last_count: kept.map_or(0, |t| t.last_count),
                last_seen: kept.map_or(now, |t| t.last_seen),
                history: kept.map(|t| t.history.clone()).unwrap_or_default(),
            });
        }
        self.tracked_from = programs.iter().map(|p| p.pmt_crc).collect();
    }

    /// Closes the current bucket when it is a second old.
    fn roll(&mut self, now: Instant) {
        let started = *self.bucket.started.get_or_insert(now);
        if now - started < BUCKET {
            return;
        }
        self.buckets.push_back(self.bucket);
        if self.buckets.len() > CC_BUCKETS {
            self.buckets.pop_front();
        }
        self.bucket = Bucket {
            started: Some(now),
            ..Bucket::default()
        };
        for stream in &mut self.tracked {
            stream
                .history
                .push_back((now, self.packets[usize::from(stream.pid)]));
            if stream.history.len() > RATE_BUCKETS {
                stream.history.pop_front();
            }
        }
    }

    /// Judges the content at `now`; see [`Check`].
    pub fn check(&mut self, now: Instant) -> Check {
        self.roll(now);
        let mut check = Check::default();
        if self.cc_unlogged > 0
            && self
                .cc_logged_at
                .is_none_or(|at| now - at >= CC_LOG_INTERVAL)
        {
            check.continuity_errors = Some((
                std::mem::take(&mut self.cc_unlogged),
                std::mem::take(&mut self.cc_unlogged_pids),
            ));
            self.cc_logged_at = Some(now);
        }
        let Some(connected_at) = self.connected_at else {
            return check;
        };
        if self.verdict_given {
            return check;
        }
        if let Some(reason) = self.lost(connected_at, now) {
            self.verdict_given = true;
            self.content_ok = false;
            self.content_failovers += 1;
            check.lost = Some(reason);
        } else if !self.content_ok
            && self.pat_at.is_some()
            && self.pmt_at.is_some()
            && self.stream_at.is_some()
        {
            self.content_ok = true;
            check.restored = true;
        }
        check
    }

    fn lost(&self, connected_at: Instant, now: Instant) -> Option<String> {
        if let Some(limit) = self.settings.cc_error_limit {
            let errors = self.recent_cc_errors();
            if errors >= limit {
                return Some(format!(
                    "{errors} continuity errors within 10 s (ccerrorlimit {limit})"
                ));
            }
        }
        let timeout = self.settings.content_timeout?;
        let silence = |since: Option<Instant>| now - since.unwrap_or(connected_at);
        let seconds = timeout.as_secs();
        let silences = [
            (silence(self.pat_at), "no PAT"),
            (silence(self.pmt_at), "no PMT"),
            (
                silence(self.stream_at),
                "no packet of any elementary stream",
            ),
        ];
        if silences.iter().any(|(silence, _)| *silence > timeout) {
            // What stopped at about the same time is named together.
            let nearly = |silence: Duration| silence + REASON_SLACK > timeout;
            let missing: Vec<&str> = silences
                .iter()
                .filter_map(|(silence, what)| nearly(*silence).then_some(*what))
                .collect();
            let mut reason = format!("{} for {seconds} s", missing.join(", "));
            if nearly(silence(self.stream_at)) {
                let (packets, nulls) = self.window_packets();
                reason += &if packets == 0 {
                    " (no packets at all)".to_string()
                } else {
                    format!(
                        " ({:.0} % null packets)",
                        nulls as f64 * 100.0 / packets as f64
                    )
                };
            }
            return Some(reason);
        }
        self.tracked
            .iter()
            .find(|stream| stream.kind.is_video() && now - stream.last_seen > timeout)
            .map(|stream| {
                format!(
                    "no packet of video PID {} for {seconds} s while other streams go on",
                    stream.pid
                )
            })
    }

    /// Continuity errors in the current bucket and the ones before it,
    /// about 10 s.
    fn recent_cc_errors(&self) -> u64 {
        self.bucket.cc_errors
            + self
                .buckets
                .iter()
                .rev()
                .take(CC_BUCKETS - 1)
                .map(|b| b.cc_errors)
                .sum::<u64>()
    }

    /// Packets and null packets in the rate window.
    fn window_packets(&self) -> (u64, u64) {
        self.window()
            .fold((0, 0), |(p, n), b| (p + b.packets, n + b.nulls))
    }

    /// The current bucket and the last closed ones of the rate window.
    fn window(&self) -> impl Iterator<Item = &Bucket> {
        std::iter::once(&self.bucket).chain(self.buckets.iter().rev().take(RATE_BUCKETS - 1))
    }

    /// The figures for the APIs. `connected`: the upstream is connected
    /// now (the tables' ages only grow while it is).
    pub fn report(&self, programs: &[Program], connected: bool, now: Instant) -> HealthReport {
        let started = self.window().filter_map(|b| b.started).min().unwrap_or(now);
        let seconds = (now - started).as_secs_f64();
        let (packets, nulls) = self.window_packets();
        let per_second = |count: u64| {
            if seconds >= 0.2 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        let pcr_pids: Vec<u16> = programs.iter().filter_map(|p| p.pcr_pid).collect();
        let pcr_max = self.window().map(|b| b.pcr_max).max().unwrap_or(0);
        let has_pcr = self
            .pcr
            .iter()
            .any(|t| t.last.is_some() && (pcr_pids.is_empty() || pcr_pids.contains(&t.pid)));
        let age = |at: Option<Instant>| {
            if connected {
                at.map(|at| now - at)
            } else {
                None
            }
        };
        let interval = |max: Duration, last: Option<Instant>| {
            last.map(|_| max.max(age(last).unwrap_or_default()).as_secs_f64())
        };
        let pat_max = self.window().map(|b| b.pat_max).max().unwrap_or_default();
        let pmt_max = self.window().map(|b| b.pmt_max).max().unwrap_or_default();
        let oldest_pmt = self.pmts.iter().filter_map(|p| p.last).min();
        HealthReport {
            content_ok: self.content_ok && connected,
            continuity_errors: self.continuity_errors,
            discontinuities: self.discontinuities,
            pcr_errors: self.pcr_errors,
            content_failovers: self.content_failovers,
            pcr_interval_seconds: has_pcr.then(|| pcr_max as f64 / PCR_HZ as f64),
            pat_interval_seconds: interval(pat_max, self.pat_at),
            pmt_interval_seconds: interval(pmt_max, oldest_pmt),
            null_share: if packets == 0 {
                0.0
            } else {
                nulls as f64 / packets as f64
            },
            bitrate: per_second(packets * 188 * 8).round() as u64,
            streams: self
                .tracked
                .iter()
                .map(|stream| {
                    let now_count = self.packets[usize::from(stream.pid)];
                    let rate = match stream.history.front() {
                        Some(&(at, count)) if now - at >= Duration::from_millis(200) => {
                            f64::from(now_count.wrapping_sub(count)) / (now - at).as_secs_f64()
                        }
                        _ => 0.0,
                    };
                    StreamReport {
                        pid: stream.pid,
                        stream_type: stream.stream_type,
                        kind: match stream.kind {
                            kind if kind.is_video() => "video",
                            StreamKind::Audio => "audio",
                            _ => "other",
                        },
                        packets_per_second: rate,
                    }
                })
                .collect(),
        }
    }

    /// Content judged healthy (whether connected or not).
    pub fn content_ok(&self) -> bool {
        self.content_ok
    }
}

fn ticks(duration: Duration) -> u64 {
    duration.as_nanos() as u64 * 27 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::inspect::psi::ElementaryStream;

    fn packet(pid: u16, cc: u8) -> PacketFacts {
        PacketFacts {
            pid,
            cc,
            has_payload: true,
            ..PacketFacts::default()
        }
    }

    fn with_pcr(pid: u16, cc: u8, pcr: u64) -> PacketFacts {
        PacketFacts {
            pcr: Some(pcr),
            ..packet(pid, cc)
        }
    }

    /// One program: video 0x100 (PCR), audio 0x101.
    fn programs() -> Vec<Program> {
        vec![Program {
            number: 1,
            pmt_pid: 0x1000,
            pcr_pid: Some(0x100),
            streams: vec![
                ElementaryStream {
                    pid: 0x100,
                    stream_type: 0x1B,
                    kind: StreamKind::H264,
                },
                ElementaryStream {
                    pid: 0x101,
                    stream_type: 0x0F,
                    kind: StreamKind::Audio,
                },
            ],
            pmt_crc: Some(1),
        }]
    }

    #[test]
    fn continuity_errors_are_jumps_not_repeats_or_announced_discontinuities() {
        let mut health = Health::new();
        health.connected(Instant::now());
        let mut feed = |facts: PacketFacts| health.packet(&facts);
        for cc in [14, 15, 0, 1, 1] {
            feed(packet(0x100, cc)); // wraps, one repeat: fine
        }
        feed(packet(0x100, 1)); // a second repeat: error
        feed(packet(0x100, 2));
        feed(packet(0x100, 4)); // one lost: error
        feed(PacketFacts {
            discontinuity: true,
            ..packet(0x100, 9)
        });
        feed(PacketFacts {
            has_payload: false,
            ..packet(0x100, 3) // no payload: the counter does not count
        });
        feed(packet(0x100, 10));
        feed(packet(0x1FFF, 7)); // null packets are not checked
        feed(packet(0x1FFF, 2));
        feed(packet(0x101, 5)); // another PID has its own counter
        feed(packet(0x101, 6));
        assert_eq!(health.continuity_errors, 2);

        // A file that starts again, a new connection: no error, counted apart.
        health.discontinuity();
        health.packet(&packet(0x100, 0));
        health.connected(Instant::now());
        health.packet(&packet(0x100, 7));
        health.packet(&packet(0x100, 8));
        assert_eq!(health.continuity_errors, 2);
        assert_eq!(
            health.discontinuities, 3,
            "an indicator, a loop, a connection"
        );
    }

    #[test]
    fn pcr_steps_over_100_ms_or_backwards_are_errors() {
        let mut health = Health::new();
        let start = Instant::now();
        health.connected(start);
        let ms = PCR_HZ / 1000;
        for (i, pcr) in [0, 40 * ms, 80 * ms, 380 * ms, 100 * ms]
            .into_iter()
            .enumerate()
        {
            health.packet(&with_pcr(0x100, i as u8, pcr));
        }
        assert_eq!(health.pcr_errors, 2, "a 300 ms gap and a step back");
        health.packet(&PacketFacts {
            discontinuity: true,
            ..with_pcr(0x100, 5, 90_000 * ms)
        });
        assert_eq!(health.pcr_errors, 2, "announced by discontinuity_indicator");
        health.after_run(Some(0), &programs(), &[Some(1)], start);
        let report = health.report(&programs(), true, start + Duration::from_millis(10));
        assert_eq!(report.pcr_interval_seconds, Some(0.3));
    }

    /// Feeds the tables and both streams at `at`.
    fn healthy_run(health: &mut Health, position: u64, at: Instant) {
        health.packet(&packet(0x100, (position % 16) as u8));
        health.packet(&packet(0x101, (position % 16) as u8));
        health.after_run(Some(position), &programs(), &[Some(position)], at);
    }

    #[test]
    fn content_is_lost_without_tables_or_streams_and_restored_with_them() {
        let mut health = Health::new();
        health.set_settings(HealthSettings {
            content_timeout: Some(Duration::from_secs(2)),
            cc_error_limit: None,
        });
        let start = Instant::now();
        health.connected(start);
        for _ in 0..10 {
            health.packet(&packet(NULL_PID, 0));
        }
        health.after_run(None, &[], &[], start);
        assert_eq!(
            health.check(start + Duration::from_secs(2)),
            Check::default()
        );
        let check = health.check(start + Duration::from_millis(2100));
        assert_eq!(
            check.lost.as_deref(),
            Some("no PAT, no PMT, no packet of any elementary stream for 2 s (100 % null packets)")
        );
        assert!(!health.content_ok());
        assert_eq!(
            health.check(start + Duration::from_secs(3)).lost,
            None,
            "said once"
        );

        // The next connection carries the channel.
        let next = start + Duration::from_secs(3);
        health.connected(next);
        healthy_run(&mut health, 100, next);
        assert!(health.check(next).restored);
        assert!(health.content_ok());
        assert_eq!(health.report(&programs(), true, next).content_failovers, 1);
    }

    #[test]
    fn video_that_stops_while_audio_goes_on_is_lost_content() {
        let mut health = Health::new();
        health.set_settings(HealthSettings {
            content_timeout: Some(Duration::from_secs(2)),
            cc_error_limit: None,
        });
        let start = Instant::now();
        health.connected(start);
        healthy_run(&mut health, 0, start);
        for i in 1..=20u64 {
            let at = start + Duration::from_millis(100 * i);
            health.packet(&packet(0x101, (i % 16) as u8));
            health.after_run(Some(i), &programs(), &[Some(i)], at);
            assert_eq!(health.check(at).lost, None, "at {i}");
        }
        let at = start + Duration::from_millis(2100);
        health.packet(&packet(0x101, 5));
        health.after_run(Some(21), &programs(), &[Some(21)], at);
        assert_eq!(
            health.check(at).lost.as_deref(),
            Some("no packet of video PID 256 for 2 s while other streams go on")
        );
    }

    #[test]
    fn continuity_errors_past_the_limit_in_10_s_are_lost_content() {
        let mut health = Health::new();
        health.set_settings(HealthSettings {
            content_timeout: None,
            cc_error_limit: Some(3),
        });
        let start = Instant::now();
        health.connected(start);
        health.packet(&packet(0x100, 0));
        health.packet(&packet(0x100, 5));
        health.packet(&packet(0x100, 9));
        let check = health.check(start);
        assert_eq!(check.continuity_errors, Some((2, vec![0x100])));
        assert_eq!(check.lost, None);
        // Logged at most once a second.
        health.packet(&packet(0x100, 12));
        let check = health.check(start + Duration::from_millis(500));
        assert_eq!(
            (check.continuity_errors, check.lost.is_some()),
            (None, true)
        );
        assert_eq!(
            health
                .check(start + Duration::from_secs(1))
                .continuity_errors,
            Some((1, vec![0x100]))
        );
    }
}
