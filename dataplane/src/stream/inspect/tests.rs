//! The inspector on hand-made streams: tables, random access points with and
//! without the indicator, the skip marks, restarts.

use super::psi::tests::{packetize, section};
use super::*;

pub(crate) const VIDEO: u16 = 0x100;
pub(crate) const AUDIO: u16 = 0x101;
const PMT: u16 = 0x1000;

/// A stream under construction, with continuity counters per PID.
#[derive(Default)]
pub(crate) struct Stream {
    pub(crate) packets: Vec<[u8; PACKET_SIZE]>,
    cc: std::collections::HashMap<u16, u8>,
}

impl Stream {
    fn next_cc(&mut self, pid: u16) -> u8 {
        let cc = self.cc.entry(pid).or_insert(0);
        let this = *cc;
        *cc = (*cc + 1) & 0x0F;
        this
    }

    fn table(&mut self, pid: u16, section: &[u8]) {
        let cc = self.next_cc(pid);
        for packet in packetize(pid, cc, section) {
            self.packets.push(packet);
        }
    }

    pub(crate) fn pat(&mut self) {
        self.table(PAT_PID, &section(0x00, 1, &[0x00, 0x01, 0xF0, 0x00]));
    }

    pub(crate) fn pmt(&mut self, streams: &[(u8, u16)]) {
        let mut body = vec![0xE1, 0x00, 0xF0, 0x00];
        for &(stream_type, pid) in streams {
            body.extend_from_slice(&[stream_type, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
        }
        self.table(PMT, &section(0x02, 1, &body));
    }

    /// A PES packet of `es` bytes on `pid`, the first packet with the
    /// random access indicator if asked.
    pub(crate) fn pes(&mut self, pid: u16, es: &[u8], random_access: bool) {
        let mut data = vec![
            0,
            0,
            1,
            if pid == AUDIO { 0xC0 } else { 0xE0 },
            0,
            0,
            0x80,
            0,
            0,
        ];
        data.extend_from_slice(es);
        let mut first = true;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let mut packet = [0xFFu8; PACKET_SIZE];
            packet[0] = 0x47;
            packet[1] = if first { 0x40 } else { 0 } | (pid >> 8) as u8;
            packet[2] = pid as u8;
            let cc = self.next_cc(pid);
            let mut at = 4;
            if first && random_access {
                packet[3] = 0x30 | cc;
                packet[4] = 1;
                packet[5] = 0x40;
                at = 6;
            } else {
                packet[3] = 0x10 | cc;
            }
            let room = PACKET_SIZE - at;
            let n = room.min(rest.len());
            if n < room {
                // Stuff with an adaptation field, as muxers do.
                let stuffing = room - n;
                packet[3] |= 0x20;
                if at == 4 {
                    packet[4] = (stuffing - 1) as u8;
                    if stuffing > 1 {
                        packet[5] = 0;
                    }
                    at = 4 + stuffing;
                } else {
                    packet[4] += stuffing as u8;
                    at += stuffing;
                }
            }
            packet[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            first = false;
            self.packets.push(packet);
        }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.packets.iter().flatten().copied().collect()
    }
}

pub(crate) const IDR: &[u8] = &[
    0, 0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x68, 0xEE, 0, 0, 1, 0x65, 0x88,
];
pub(crate) const P_FRAME: &[u8] = &[0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0b1001_1000, 0, 0];

fn inspect_all(inspector: &mut Inspector, data: &[u8]) -> Vec<Mark> {
    inspector.inspect(data, |_, _| {}).collect()
}

fn random_access_positions(marks: &[Mark]) -> Vec<u64> {
    marks
        .iter()
        .filter_map(|m| match m {
            Mark::RandomAccess { position, .. } => Some(*position),
            _ => None,
        })
        .collect()
}

fn skip_positions(marks: &[Mark]) -> Vec<u64> {
    marks
        .iter()
        .filter_map(|m| match m {
            Mark::Skip { position } => Some(*position),
            _ => None,
        })
        .collect()
}

#[test]
fn tables_are_read_and_the_video_stream_is_keyed() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x0F, AUDIO), (0x1B, VIDEO)]);
    let mut inspector = Inspector::new();
    inspect_all(&mut inspector, &stream.bytes());
    assert_eq!(inspector.programs().len(), 1);
    let program = &inspector.programs()[0];
    assert_eq!(
        (program.number, program.pmt_pid, program.pcr_pid),
        (1, PMT, Some(VIDEO))
    );
    assert_eq!(program.streams.len(), 2);
    assert_eq!(inspector.keyed().unwrap().pid, VIDEO);
    assert_eq!(inspector.role(VIDEO), Role::Keyed);
    assert_eq!(inspector.role(PMT), Role::Pmt);
    assert_eq!(inspector.role(PAT_PID), Role::Pat);
    assert_eq!(inspector.tables_seen(), 2);
    assert_eq!(inspector.position(), 2);
}

#[test]
fn keyframes_are_found_without_the_indicator_and_partial_units_marked() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)]);
    stream.pes(AUDIO, &[0xAA; 300], false); // 2 packets: positions 2, 3
    stream.pes(VIDEO, P_FRAME, false); // 4
    stream.pes(AUDIO, &[0xAA; 300], false); // 5 (start), 6
                                            // Keyframe at 7, while an audio PES is in progress (8 is its start, 9
                                            // its continuation: that one belongs to a unit begun after it).
    let audio_start = stream.packets.len();
    stream.pes(AUDIO, &[0xAA; 300], false);
    let second = stream.packets.remove(audio_start + 1);
    stream.pes(VIDEO, IDR, false);
    // Now: ... 7 = audio start, 8 = video IDR; put the audio continuation after.
    stream.packets.push(second); // 9: continues audio begun at 7 (before the IDR)
    stream.pes(AUDIO, &[0xAA; 300], false); // 10, 11
    let mut inspector = Inspector::new();
    let marks = inspect_all(&mut inspector, &stream.bytes());
    assert_eq!(random_access_positions(&marks), [8]);
    assert_eq!(skip_positions(&marks), [9]);
    let Mark::RandomAccess { tables, .. } = &marks[0] else {
        panic!("{marks:?}")
    };
    let expected: Vec<u8> = stream.packets[..2].iter().flatten().copied().collect();
    assert_eq!(&tables[..], &expected[..]);
}

#[test]
fn the_indicator_alone_makes_a_random_access_point() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x1B, VIDEO)]);
    stream.pes(VIDEO, P_FRAME, true);
    stream.pes(VIDEO, P_FRAME, false);
    let mut inspector = Inspector::new();
    let marks = inspect_all(&mut inspector, &stream.bytes());
    assert_eq!(random_access_positions(&marks), [2]);
}

#[test]
fn a_keyframe_decided_in_a_later_packet_and_run() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)]);
    stream.pes(AUDIO, &[0xAA; 300], false); // 2, 3
    let audio_tail = stream.packets.pop().unwrap();
    // SEI of 400 bytes before the IDR: decided in the third packet.
    let mut es = vec![0, 0, 1, 0x06, 5];
    es.extend_from_slice(&[0x55; 400]);
    es.extend_from_slice(IDR);
    stream.pes(VIDEO, &es, false); // 3, 4, 5
    stream.packets.insert(4, audio_tail); // 4: audio continuation after the candidate
    let data = stream.bytes();
    let mut inspector = Inspector::new();
    // One packet per run: the answer comes after the candidate's run.
    let mut marks = Vec::new();
    for packet in data.chunks(PACKET_SIZE) {
        marks.extend(inspector.inspect(packet, |_, _| {}));
    }
    assert_eq!(random_access_positions(&marks), [3]);
    assert_eq!(skip_positions(&marks), [4]);
}

#[test]
fn audio_only_programs_start_on_every_audio_unit() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x06, 0x200), (0x0F, AUDIO)]);
    stream.pes(AUDIO, &[0xAA; 100], false);
    stream.pes(AUDIO, &[0xAA; 100], false);
    let mut inspector = Inspector::new();
    let marks = inspect_all(&mut inspector, &stream.bytes());
    assert_eq!(inspector.keyed().unwrap().pid, AUDIO);
    assert_eq!(random_access_positions(&marks), [2, 3]);
}

#[test]
fn the_first_program_with_video_is_keyed() {
    let mut stream = Stream::default();
    stream.table(
        PAT_PID,
        &section(0x00, 1, &[0x00, 0x01, 0xF0, 0x00, 0x00, 0x02, 0xF0, 0x01]),
    );
    // Program 1: audio only; program 2: video.
    stream.table(
        PMT,
        &section(
            0x02,
            1,
            &[0xE1, 0x01, 0xF0, 0x00, 0x0F, 0xE1, 0x01, 0xF0, 0],
        ),
    );
    stream.table(
        0x1001,
        &section(
            0x02,
            2,
            &[0xE3, 0x00, 0xF0, 0x00, 0x1B, 0xE3, 0x00, 0xF0, 0],
        ),
    );
    let mut inspector = Inspector::new();
    inspect_all(&mut inspector, &stream.bytes());
    assert_eq!(inspector.programs().len(), 2);
    assert_eq!(inspector.keyed().unwrap().pid, 0x300);
}

#[test]
fn nothing_is_found_before_the_tables_and_after_a_restart() {
    let mut stream = Stream::default();
    stream.pes(VIDEO, IDR, true);
    stream.pat();
    stream.pmt(&[(0x1B, VIDEO)]);
    stream.pes(VIDEO, IDR, false);
    let data = stream.bytes();
    let mut inspector = Inspector::new();
    let marks = inspect_all(&mut inspector, &data);
    assert_eq!(random_access_positions(&marks), [3]);
    inspector.restart();
    assert!(inspector.keyed().is_none());
    // Positions go on; the first keyframe before new tables is not used.
    let marks = inspect_all(&mut inspector, &data);
    assert_eq!(random_access_positions(&marks), [7]);
}

#[test]
fn every_packet_is_reported_once_with_its_position() {
    let mut stream = Stream::default();
    stream.pat();
    stream.pmt(&[(0x1B, VIDEO)]);
    stream.pes(VIDEO, &[0; 1000], false);
    let data = stream.bytes();
    let mut inspector = Inspector::new();
    let mut seen = Vec::new();
    let _ = inspector.inspect(&data, |position, facts| seen.push((position, facts.pid)));
    assert_eq!(seen.len(), data.len() / PACKET_SIZE);
    assert!(seen.iter().enumerate().all(|(i, &(p, _))| p == i as u64));
    assert_eq!(seen[0].1, PAT_PID);
    assert_eq!(seen[2].1, VIDEO);
}
