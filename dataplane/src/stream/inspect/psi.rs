//! Program specific information: the PAT and the PMTs (ISO 13818-1
//! §2.4.4), reassembled from their packets, checked by CRC and parsed.
//!
//! A section may span packets and a packet may end one section and start
//! the next; [`Assembler`] follows the `pointer_field` rules for one PID and
//! keeps a copy of the packets of the last complete section, so that a new
//! client can be sent the tables exactly as the stream carried them (with
//! their continuity counters, so that the stream that follows continues
//! them without a jump).

use crate::stream::align::PACKET_SIZE;

use super::packet::PacketFacts;

/// The longest section there is (private sections; PSI is at most 1024).
const MAX_SECTION: usize = 4096;

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, MSB first, initial value all ones,
/// no final XOR. Over a whole section, CRC field included, it is zero.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04C1_1DB7
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    data.iter().fold(0xFFFF_FFFF, |crc, &byte| {
        (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ byte) as usize]
    })
}

/// Reassembles the sections of one PID.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The section being assembled.
    buf: Vec<u8>,
    /// Whether `buf` holds the start of a section.
    in_section: bool,
    /// The packets of the section being assembled.
    packets: Vec<[u8; PACKET_SIZE]>,
    /// The packets of the last complete section that passed its CRC.
    complete: Vec<[u8; PACKET_SIZE]>,
    /// Sections dropped for a wrong CRC or a length that cannot be.
    pub bad_sections: u64,
}

impl Assembler {
    /// Feeds one packet of this PID; calls `on_section` with every complete
    /// section (CRC checked) that ends in it.
    pub fn push(
        &mut self,
        packet: &[u8],
        facts: &PacketFacts,
        mut on_section: impl FnMut(&[u8], &[[u8; PACKET_SIZE]]),
    ) {
        if !facts.has_payload {
            return;
        }
        let payload = facts.payload(packet);
        if !facts.pusi {
            if self.in_section {
                self.packets
                    .push(packet.try_into().expect("a whole packet"));
                self.feed(payload, packet, &mut on_section);
            }
            return;
        }
        let Some((&pointer, rest)) = payload.split_first() else {
            return;
        };
        let pointer = usize::from(pointer);
        if pointer > rest.len() {
            self.reset();
            self.bad_sections += 1;
            return;
        }
        // The end of the previous section, then new sections.
        if self.in_section {
            self.packets
                .push(packet.try_into().expect("a whole packet"));
            self.feed(&rest[..pointer], packet, &mut on_section);
        }
        self.reset();
        self.feed_new(&rest[pointer..], packet, &mut on_section);
    }

    /// The packets of the last complete section.
    pub fn complete_packets(&self) -> &[[u8; PACKET_SIZE]] {
        &self.complete
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.packets.clear();
        self.in_section = false;
    }

    /// Forgets everything, including the last complete section.
    pub fn clear(&mut self) {
        self.reset();
        self.complete.clear();
    }

    /// Starts a section at `data`, unless it is stuffing.
    fn feed_new(
        &mut self,
        data: &[u8],
        packet: &[u8],
        on_section: &mut impl FnMut(&[u8], &[[u8; PACKET_SIZE]]),
    ) {
        if data.first().is_none_or(|&table_id| table_id == 0xFF) {
            return;
        }
        self.in_section = true;
        self.packets
            .push(packet.try_into().expect("a whole packet"));
        self.feed(data, packet, on_section);
    }

    fn feed(
        &mut self,
        data: &[u8],
        packet: &[u8],
        on_section: &mut impl FnMut(&[u8], &[[u8; PACKET_SIZE]]),
    ) {
        self.buf.extend_from_slice(data);
        if self.buf.len() < 3 {
            return;
        }
        let length = 3 + (usize::from(self.buf[1] & 0x0F) << 8 | usize::from(self.buf[2]));
        if length > MAX_SECTION {
            self.bad_sections += 1;
            self.reset();
            return;
        }
        if self.buf.len() < length {
            return;
        }
        let section = &self.buf[..length];
        let syntax = section[1] & 0x80 != 0;
        if !syntax || (length >= 12 && crc32(section) == 0) {
            self.complete.clear();
            self.complete.extend_from_slice(&self.packets);
            on_section(section, &self.complete);
        } else {
            self.bad_sections += 1;
        }
        // What follows in this packet may be another section.
        let after = data.len() - (self.buf.len() - length);
        self.reset();
        self.feed_new(&data[after..], packet, on_section);
    }
}

/// What kind of elementary stream a PMT entry is, as far as starting a
/// decoder is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    H264,
    H265,
    /// MPEG-1 or MPEG-2 video.
    Mpeg2,
    /// Video of another codec: random access points only by the indicator.
    OtherVideo,
    Audio,
    Other,
}

impl StreamKind {
    pub fn is_video(self) -> bool {
        matches!(
            self,
            StreamKind::H264 | StreamKind::H265 | StreamKind::Mpeg2 | StreamKind::OtherVideo
        )
    }

    /// From a PMT entry's `stream_type` and its descriptors.
    pub fn of(stream_type: u8, descriptors: &[u8]) -> StreamKind {
        match stream_type {
            0x01 | 0x02 => StreamKind::Mpeg2,
            0x1B => StreamKind::H264,
            0x24 => StreamKind::H265,
            0x10 | 0x20 | 0x42 | 0xD1 | 0xEA => StreamKind::OtherVideo,
            0x03 | 0x04 | 0x0F | 0x11 | 0x1C | 0x81 | 0x87 => StreamKind::Audio,
            0x06 if private_audio(descriptors) => StreamKind::Audio,
            _ => StreamKind::Other,
        }
    }
}

/// Whether the descriptors of a private PES entry (stream type 6) say audio:
/// DVB AC-3, E-AC-3, DTS, AAC descriptors, or an audio registration.
fn private_audio(mut descriptors: &[u8]) -> bool {
    while let [tag, length, rest @ ..] = descriptors {
        let length = usize::from(*length);
        let Some(body) = rest.get(..length) else {
            return false;
        };
        match tag {
            0x6A | 0x7A | 0x7B | 0x7C => return true,
            0x05 if matches!(
                body.get(..4),
                Some(b"AC-3" | b"EAC3" | b"DTS1" | b"DTS2" | b"DTS3" | b"Opus")
            ) =>
            {
                return true
            }
            _ => {}
        }
        descriptors = &rest[length..];
    }
    false
}

/// One elementary stream of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ElementaryStream {
    pub pid: u16,
    pub stream_type: u8,
    pub kind: StreamKind,
}

/// One program of the PAT and, once seen, its PMT.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Program {
    pub number: u16,
    pub pmt_pid: u16,
    /// From the PMT; `None` until it has been seen.
    pub pcr_pid: Option<u16>,
    pub streams: Vec<ElementaryStream>,
    /// CRC of the PMT section in force, to skip parsing repetitions.
    #[serde(skip)]
    pub pmt_crc: Option<u32>,
}

/// The CRC field of a section (its last four bytes).
pub fn section_crc(section: &[u8]) -> u32 {
    let n = section.len();
    u32::from_be_bytes([
        section[n - 4],
        section[n - 3],
        section[n - 2],
        section[n - 1],
    ])
}

/// The programs of a PAT section: `(program_number, pmt_pid)`, the network
/// PID (program 0) left out. `None` if it is not a PAT.
pub fn parse_pat(section: &[u8]) -> Option<impl Iterator<Item = (u16, u16)> + '_> {
    if section.first() != Some(&0x00) || section.len() < 12 {
        return None;
    }
    let entries = &section[8..section.len() - 4];
    Some(
        entries
            .chunks_exact(4)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u16::from_be_bytes([e[2] & 0x1F, e[3]]),
                )
            })
            .filter(|&(number, _)| number != 0),
    )
}

/// A PMT section: its program number, PCR PID and elementary streams, put
/// into `program` (whose stream list is reused). `false` if it is not a PMT.
pub fn parse_pmt(section: &[u8], program: &mut Program) -> bool {
    if section.first() != Some(&0x02) || section.len() < 16 {
        return false;
    }
    let body = &section[..section.len() - 4];
    program.pcr_pid = Some(u16::from_be_bytes([body[8] & 0x1F, body[9]]));
    let info_length = usize::from(body[10] & 0x0F) << 8 | usize::from(body[11]);
    program.streams.clear();
    let mut rest = body.get(12 + info_length..).unwrap_or_default();
    while let [stream_type, pid_high, pid_low, length_high, length_low, more @ ..] = rest {
        let length = usize::from(length_high & 0x0F) << 8 | usize::from(*length_low);
        let descriptors = more.get(..length).unwrap_or(more);
        program.streams.push(ElementaryStream {
            pid: u16::from_be_bytes([pid_high & 0x1F, *pid_low]),
            stream_type: *stream_type,
            kind: StreamKind::of(*stream_type, descriptors),
        });
        rest = more.get(length..).unwrap_or_default();
    }
    program.pmt_crc = Some(section_crc(section));
    true
}

/// The program number of a PMT section.
pub fn pmt_program_number(section: &[u8]) -> Option<u16> {
    (section.first() == Some(&0x02) && section.len() >= 16)
        .then(|| u16::from_be_bytes([section[3], section[4]]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A section with its CRC appended.
    pub fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
        let length = 5 + body.len() + 4;
        let mut s = vec![
            table_id,
            0xB0 | (length >> 8) as u8,
            length as u8,
            (id >> 8) as u8,
            id as u8,
            0xC1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        let crc = crc32(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    /// The packets that carry `section` on `pid`, from CC `cc`.
    pub fn packetize(pid: u16, cc: u8, section: &[u8]) -> Vec<[u8; PACKET_SIZE]> {
        let mut data = vec![0u8];
        data.extend_from_slice(section);
        data.chunks(PACKET_SIZE - 4)
            .enumerate()
            .map(|(i, chunk)| {
                let mut packet = [0xFFu8; PACKET_SIZE];
                packet[0] = 0x47;
                packet[1] = if i == 0 { 0x40 } else { 0 } | (pid >> 8) as u8;
                packet[2] = pid as u8;
                packet[3] = 0x10 | ((cc + i as u8) & 0x0F);
                packet[4..4 + chunk.len()].copy_from_slice(chunk);
                packet
            })
            .collect()
    }

    #[test]
    fn crc_of_a_known_pat() {
        // The PAT ffmpeg writes: one program, PMT on PID 0x1000.
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
            0x04, 0xB2,
        ];
        assert_eq!(crc32(&pat), 0);
        let programs: Vec<_> = parse_pat(&pat).unwrap().collect();
        assert_eq!(programs, [(1, 0x1000)]);
    }

    #[test]
    fn a_section_across_packets_is_reassembled_and_checked() {
        let mut body = vec![0xE1, 0x00, 0xF0, 0x00];
        for i in 0..60u16 {
            body.extend_from_slice(&[0x1B, 0xE1, i as u8, 0xF0, 0x00]);
        }
        let pmt = section(0x02, 7, &body);
        let packets = packetize(0x1000, 5, &pmt);
        assert_eq!(packets.len(), 2);
        let mut assembler = Assembler::default();
        let mut found = Vec::new();
        for packet in &packets {
            let facts = PacketFacts::parse(packet);
            assembler.push(packet, &facts, |s, p| found.push((s.to_vec(), p.len())));
        }
        assert_eq!(found, [(pmt.clone(), 2)]);
        let mut program = Program::default();
        assert!(parse_pmt(&found[0].0, &mut program));
        assert_eq!(program.pcr_pid, Some(0x100));
        assert_eq!(program.streams.len(), 60);
        assert_eq!(program.streams[0].kind, StreamKind::H264);

        // The same with one bit flipped: dropped, counted.
        let mut broken = packets.clone();
        broken[1][10] ^= 1;
        let mut assembler = Assembler::default();
        let mut count = 0;
        for packet in &broken {
            assembler.push(packet, &PacketFacts::parse(packet), |_, _| count += 1);
        }
        assert_eq!(count, 0);
        assert_eq!(assembler.bad_sections, 1);
    }

    #[test]
    fn two_sections_in_one_packet_and_a_pointer_field() {
        let a = section(0x00, 1, &[0x00, 0x01, 0xF0, 0x00]);
        let b = section(0x00, 2, &[0x00, 0x02, 0xF1, 0x00]);
        let mut packet = [0xFFu8; PACKET_SIZE];
        packet[..5].copy_from_slice(&[0x47, 0x40, 0x00, 0x10, 3]);
        packet[5..8].copy_from_slice(&[1, 2, 3]); // the tail of an earlier section
        packet[8..8 + a.len()].copy_from_slice(&a);
        packet[8 + a.len()..8 + a.len() + b.len()].copy_from_slice(&b);
        let mut assembler = Assembler::default();
        let mut found = Vec::new();
        assembler.push(&packet, &PacketFacts::parse(&packet), |s, _| {
            found.push(s.to_vec())
        });
        assert_eq!(found, [a, b]);
    }

    #[test]
    fn private_audio_is_told_by_its_descriptors() {
        assert_eq!(StreamKind::of(0x06, &[0x6A, 1, 0]), StreamKind::Audio);
        assert_eq!(
            StreamKind::of(0x06, &[0x05, 4, b'O', b'p', b'u', b's']),
            StreamKind::Audio
        );
        assert_eq!(StreamKind::of(0x06, &[0x56, 0]), StreamKind::Other);
        assert_eq!(StreamKind::of(0x0F, &[]), StreamKind::Audio);
    }
}
