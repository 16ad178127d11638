//! Stream inspection: reading every packet's header once, on the data path
//! between [`align`](crate::stream::align) and [`hub`](crate::stream::hub).
//!
//! The hub runs each run of packets it is given through its stream's
//! [`Inspector`] before the packets enter the ring (under the publish lock,
//! so one run at a time, in stream order). For each packet the inspector:
//!
//! 1. reads the header and adaptation field into [`PacketFacts`] (PID,
//!    `payload_unit_start_indicator`, continuity counter, discontinuity and
//!    random access indicators, PCR) and hands them to the caller's
//!    per-packet callback;
//! 2. reassembles and CRC-checks the PAT and the PMTs ([`psi`]), keeping the
//!    programs, their elementary streams and their types, and a copy of the
//!    packets that carried the tables last;
//! 3. picks the stream that new viewers are started on (the *keyed* stream:
//!    the first video stream of the first program that has one, else the
//!    first audio stream of the first program) and finds its *random access
//!    points*: a packet that starts a PES packet and either carries
//!    `random_access_indicator` or whose payload begins an access unit a
//!    decoder can start from ([`access`]); every audio PES start for audio;
//! 4. for the most recent random access point, marks the packets of other
//!    PIDs that continue a PES packet or a section begun before it, so that
//!    a viewer started there gets no partial unit of any PID.
//!
//! What it finds goes back to the caller as [`Mark`]s with absolute stream
//! positions (the hub's packet numbers: the inspector counts every packet it
//! is given, and it is given every packet the ring gets).
//!
//! Nothing is allocated per packet: PSI packets are copied into buffers
//! that are reused, and a [`Bytes`] of the tables is built only when a
//! random access point needs it and the tables changed since.
//!
//! # Extending it (stream health)
//!
//! A second consumer of the per-packet facts does not parse again: the
//! `each` callback of [`Inspector::inspect`] is called with every packet's
//! position and [`PacketFacts`] before the inspector acts on it, and the
//! inspector's state is readable meanwhile ([`Inspector::programs`],
//! [`Inspector::role`], [`Inspector::keyed`]): continuity per PID, PCR
//! intervals of the program's PCR PID, null packets, packets per elementary
//! stream can all be counted there. [`Inspector::restart`] is called when
//! the upstream connection changes (a new connection starts anywhere: its
//! continuity counters and tables are unrelated to the last one), which is
//! where such a consumer resets its own state too. [`Inspector::tables_seen`]
//! counts PAT and PMT sections that passed their CRC;
//! [`Inspector::pat_position`] and [`Inspector::pmt_positions`] say where
//! the last of each was.
//!
//! [`health`] is that consumer: the stream health checks (continuity, PAT
//! and PMT intervals, PCR intervals, packets per elementary stream, null
//! packets, bitrate) and the judgement that content is lost.

pub mod access;
pub mod health;
pub mod packet;
pub mod psi;

use bytes::{Bytes, BytesMut};

use crate::stream::align::PACKET_SIZE;

use self::access::{AccessScanner, Verdict};
pub use self::packet::{PacketFacts, NULL_PID, PAT_PID};
use self::psi::{parse_pat, parse_pmt, pmt_program_number, section_crc, Assembler};
pub use self::psi::{ElementaryStream, Program, StreamKind};

/// Number of PIDs.
const PIDS: usize = 8192;
/// More programs than this in one PAT are ignored.
const MAX_PROGRAMS: usize = 250;
/// How many packets of the keyed PID may pass before a random access point
/// candidate is decided (the start of the access unit is read across them).
const MAX_CANDIDATE_PACKETS: u32 = 8;

/// What the inspector found in a run of packets.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// The packet at `position` is a random access point of the keyed
    /// stream. `tables` are the PAT and PMT packets as the stream carried
    /// them last before it (each table's packets whole, in PAT order), to
    /// be sent first to a viewer started there; `pts` is the PES packet's
    /// presentation time (90 kHz) if it has one.
    RandomAccess {
        position: u64,
        tables: Bytes,
        pts: Option<u64>,
    },
    /// The packet at `position` continues a PES packet or section begun
    /// before the latest random access point: a viewer started there skips
    /// it. Comes after that point's [`Mark::RandomAccess`], positions
    /// ascending.
    Skip { position: u64 },
}

/// What a PID carries, as far as the inspector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Pat,
    Pmt,
    /// The stream viewers are started on.
    Keyed,
}

const ROLE_UNKNOWN: u8 = 0;
const ROLE_PAT: u8 = 1;
/// PMT PIDs: `ROLE_PMT + index` into `pmt_assemblers`.
const ROLE_PMT: u8 = 2;

/// A random access point being decided.
#[derive(Debug)]
struct Candidate {
    position: u64,
    tables: Bytes,
    packets: u32,
    /// Skip marks that apply if it is one.
    skips: Vec<u64>,
}

/// The inspection state of one stream.
#[derive(Debug)]
pub struct Inspector {
    /// Position of the next packet.
    position: u64,
    /// Per PID: `ROLE_*`.
    roles: Box<[u8; PIDS]>,
    /// Per PID: 1 + position of its last packet with a payload unit start
    /// (0: none since the last restart).
    last_start: Box<[u64; PIDS]>,
    pat: Assembler,
    pat_crc: Option<u32>,
    pmt_assemblers: Vec<(u16, Assembler)>,
    programs: Vec<Program>,
    /// The PMT packets of each program (same order as `programs`).
    pmt_packets: Vec<Vec<[u8; PACKET_SIZE]>>,
    /// Position of the packet that completed the last PAT section.
    pat_position: Option<u64>,
    /// The same for each program's PMT (same order as `programs`).
    pmt_positions: Vec<Option<u64>>,
    keyed: Option<ElementaryStream>,
    scanner: AccessScanner,
    candidate: Option<Candidate>,
    /// Position of the latest random access point.
    latest: Option<u64>,
    /// The tables as a buffer, while they have not changed.
    tables: Option<Bytes>,
    tables_seen: u64,
    marks: Vec<Mark>,
    /// Candidates' skip lists, kept for reuse.
    spare_skips: Vec<u64>,
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new()
    }
}

impl Inspector {
    pub fn new() -> Self {
        let mut roles = Box::new([ROLE_UNKNOWN; PIDS]);
        roles[usize::from(PAT_PID)] = ROLE_PAT;
        Inspector {
            position: 0,
            roles,
            last_start: Box::new([0; PIDS]),
            pat: Assembler::default(),
            pat_crc: None,
            pmt_assemblers: Vec::new(),
            programs: Vec::new(),
            pmt_packets: Vec::new(),
            pat_position: None,
            pmt_positions: Vec::new(),
            keyed: None,
            scanner: AccessScanner::new(StreamKind::Other),
            candidate: None,
            latest: None,
            tables: None,
            tables_seen: 0,
            marks: Vec::new(),
            spare_skips: Vec::new(),
        }
    }

    /// Inspects a run of whole packets, calling `each` with every packet's
    /// position and facts, and returns what it found in them.
    pub fn inspect(
        &mut self,
        run: &[u8],
        mut each: impl FnMut(u64, &PacketFacts),
    ) -> std::vec::Drain<'_, Mark> {
        debug_assert_eq!(run.len() % PACKET_SIZE, 0);
        for packet in run.chunks_exact(PACKET_SIZE) {
            let facts = PacketFacts::parse(packet);
            each(self.position, &facts);
            self.packet(packet, &facts);
            self.position += 1;
        }
        self.marks.drain(..)
    }

    /// The upstream connection changed: the next packet starts anywhere.
    /// Tables, PES states and random access points are forgotten; positions
    /// go on.
    pub fn restart(&mut self) {
        self.roles.fill(ROLE_UNKNOWN);
        self.roles[usize::from(PAT_PID)] = ROLE_PAT;
        self.last_start.fill(0);
        self.pat.clear();
        self.pat_crc = None;
        self.pmt_assemblers.clear();
        self.programs.clear();
        self.pmt_packets.clear();
        self.pmt_positions.clear();
        self.pat_position = None;
        self.keyed = None;
        self.candidate = None;
        self.latest = None;
        self.tables = None;
        self.marks.clear();
    }

    /// Position of the next packet to be inspected.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The programs of the current PAT, in its order, with their streams
    /// once their PMT has been seen.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// The stream viewers are started on, once the tables name one.
    pub fn keyed(&self) -> Option<ElementaryStream> {
        self.keyed
    }

    /// What a PID carries.
    pub fn role(&self, pid: u16) -> Role {
        if self.keyed.is_some_and(|keyed| keyed.pid == pid) {
            return Role::Keyed;
        }
        match self.roles[usize::from(pid & 0x1FFF)] {
            ROLE_UNKNOWN => Role::Unknown,
            ROLE_PAT => Role::Pat,
            _ => Role::Pmt,
        }
    }

    /// PAT and PMT sections seen so far (CRC correct).
    pub fn tables_seen(&self) -> u64 {
        self.tables_seen
    }

    /// Position of the packet that completed the last PAT section (CRC
    /// correct) since the last restart.
    pub fn pat_position(&self) -> Option<u64> {
        self.pat_position
    }

    /// The same for each program's PMT, in the order of
    /// [`Inspector::programs`].
    pub fn pmt_positions(&self) -> &[Option<u64>] {
        &self.pmt_positions
    }

    /// Sections dropped for a bad CRC or length.
    pub fn bad_sections(&self) -> u64 {
        self.pat.bad_sections
            + self
                .pmt_assemblers
                .iter()
                .map(|(_, a)| a.bad_sections)
                .sum::<u64>()
    }

    fn packet(&mut self, packet: &[u8], facts: &PacketFacts) {
        let pid = facts.pid;
        let index = usize::from(pid);
        match self.roles[index] {
            ROLE_UNKNOWN => {}
            ROLE_PAT => self.pat_packet(packet, facts),
            role => self.pmt_packet(usize::from(role - ROLE_PMT), packet, facts),
        }

        let keyed = self.keyed.filter(|keyed| keyed.pid == pid);
        if facts.has_payload && pid != NULL_PID && keyed.is_none() && !facts.pusi {
            // Continues a unit begun before the latest random access point?
            let started = self.last_start[index];
            if self.latest.is_some_and(|latest| started <= latest) {
                self.marks.push(Mark::Skip {
                    position: self.position,
                });
            }
            if let Some(candidate) = &mut self.candidate {
                if started <= candidate.position {
                    candidate.skips.push(self.position);
                }
            }
        }
        if facts.pusi && facts.has_payload {
            self.last_start[index] = self.position + 1;
        }
        if let Some(keyed) = keyed {
            self.keyed_packet(keyed, packet, facts);
        }
    }

    fn keyed_packet(&mut self, keyed: ElementaryStream, packet: &[u8], facts: &PacketFacts) {
        if !facts.has_payload {
            return;
        }
        let payload = facts.payload(packet);
        if facts.pusi {
            // A new PES packet: the last candidate was not one.
            self.drop_candidate();
            let verdict = if keyed.kind == StreamKind::Audio {
                self.scanner = AccessScanner::new(keyed.kind);
                self.scanner.pts = access::pes_header(payload).and_then(|(_, pts)| pts);
                Verdict::RandomAccess
            } else {
                if self.scanner.kind() != keyed.kind {
                    self.scanner = AccessScanner::new(keyed.kind);
                }
                match self.scanner.start(payload) {
                    _ if facts.random_access => Verdict::RandomAccess,
                    verdict => verdict,
                }
            };
            if verdict == Verdict::NotRandomAccess {
                return;
            }
            let tables = self.tables_bytes();
            if tables.is_empty() {
                return;
            }
            let mut skips = std::mem::take(&mut self.spare_skips);
            skips.clear();
            self.candidate = Some(Candidate {
                position: self.position,
                tables,
                packets: 1,
                skips,
            });
            if verdict == Verdict::RandomAccess {
                self.confirm_candidate();
            }
        } else if let Some(candidate) = &mut self.candidate {
            candidate.packets += 1;
            match self.scanner.feed(payload) {
                Verdict::RandomAccess => self.confirm_candidate(),
                Verdict::NotRandomAccess => self.drop_candidate(),
                Verdict::Undecided if candidate.packets >= MAX_CANDIDATE_PACKETS => {
                    self.drop_candidate()
                }
                Verdict::Undecided => {}
            }
        }
    }

    fn confirm_candidate(&mut self) {
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        self.latest = Some(candidate.position);
        self.marks.push(Mark::RandomAccess {
            position: candidate.position,
            tables: candidate.tables,
            pts: self.scanner.pts,
        });
        self.marks.extend(
            candidate
                .skips
                .iter()
                .map(|&position| Mark::Skip { position }),
        );
        self.spare_skips = candidate.skips;
    }

    fn drop_candidate(&mut self) {
        if let Some(candidate) = self.candidate.take() {
            self.spare_skips = candidate.skips;
        }
    }

    fn pat_packet(&mut self, packet: &[u8], facts: &PacketFacts) {
        let mut changed = None;
        let mut seen = false;
        let crc = self.pat_crc;
        self.pat.push(packet, facts, |section, _| {
            if section[0] != 0x00 {
                return;
            }
            seen = true;
            if crc != Some(section_crc(section)) {
                changed = Some(section.to_vec());
            }
        });
        if seen {
            self.tables = None;
            self.tables_seen += 1;
            self.pat_position = Some(self.position);
        }
        if let Some(section) = changed {
            self.pat_crc = Some(section_crc(&section));
            self.apply_pat(&section);
        }
    }

    /// A new PAT: the program list, and the PMT PIDs to follow.
    fn apply_pat(&mut self, section: &[u8]) {
        let Some(entries) = parse_pat(section) else {
            return;
        };
        let entries: Vec<(u16, u16)> = entries.take(MAX_PROGRAMS).collect();
        let unchanged = entries.len() == self.programs.len()
            && entries
                .iter()
                .zip(&self.programs)
                .all(|(&(number, pid), p)| p.number == number && p.pmt_pid == pid);
        if unchanged {
            return;
        }
        for (pid, _) in &self.pmt_assemblers {
            self.roles[usize::from(*pid)] = ROLE_UNKNOWN;
        }
        self.pmt_assemblers.clear();
        self.programs.clear();
        self.pmt_packets.clear();
        self.pmt_positions.clear();
        for (number, pid) in entries {
            self.programs.push(Program {
                number,
                pmt_pid: pid,
                ..Program::default()
            });
            self.pmt_packets.push(Vec::new());
            self.pmt_positions.push(None);
            if self.roles[usize::from(pid)] == ROLE_UNKNOWN && pid != NULL_PID {
                self.roles[usize::from(pid)] = ROLE_PMT + self.pmt_assemblers.len() as u8;
                self.pmt_assemblers.push((pid, Assembler::default()));
            }
        }
        self.choose_keyed();
    }

    fn pmt_packet(&mut self, assembler: usize, packet: &[u8], facts: &PacketFacts) {
        let Some((pid, assembler)) = self.pmt_assemblers.get_mut(assembler) else {
            return;
        };
        let pid = *pid;
        let programs = &mut self.programs;
        let pmt_packets = &mut self.pmt_packets;
        let pmt_positions = &mut self.pmt_positions;
        let position = self.position;
        let mut changed = false;
        let mut seen = false;
        assembler.push(packet, facts, |section, packets| {
            let Some(number) = pmt_program_number(section) else {
                return;
            };
            let Some(index) = programs
                .iter()
                .position(|p| p.number == number && p.pmt_pid == pid)
            else {
                return;
            };
            seen = true;
            pmt_packets[index].clear();
            pmt_packets[index].extend_from_slice(packets);
            pmt_positions[index] = Some(position);
            let program = &mut programs[index];
            if program.pmt_crc != Some(section_crc(section)) && parse_pmt(section, program) {
                changed = true;
            }
        });
        if seen {
            self.tables = None;
            self.tables_seen += 1;
        }
        if changed {
            self.choose_keyed();
        }
    }

    /// The first video stream of the first program with video, else the
    /// first audio stream of the first program with audio.
    fn choose_keyed(&mut self) {
        let streams = || self.programs.iter().flat_map(|p| p.streams.iter());
        let keyed = streams()
            .find(|s| s.kind.is_video())
            .or_else(|| streams().find(|s| s.kind == StreamKind::Audio))
            .copied();
        if keyed != self.keyed {
            self.keyed = keyed;
            self.candidate = None;
            self.latest = None;
        }
    }

    /// The PAT and every known PMT, as the stream carried them last; empty
    /// until a PAT and the keyed stream's PMT have been seen.
    fn tables_bytes(&mut self) -> Bytes {
        if let Some(tables) = &self.tables {
            return tables.clone();
        }
        let pat = self.pat.complete_packets();
        if pat.is_empty() || self.keyed.is_none() {
            return Bytes::new();
        }
        let count = pat.len() + self.pmt_packets.iter().map(Vec::len).sum::<usize>();
        let mut tables = BytesMut::with_capacity(count * PACKET_SIZE);
        for packet in pat.iter().chain(self.pmt_packets.iter().flatten()) {
            tables.extend_from_slice(packet);
        }
        let tables = tables.freeze();
        self.tables = Some(tables.clone());
        tables
    }
}

#[cfg(test)]
pub(crate) mod tests;
