//! The fixed part of a transport stream packet (ISO 13818-1 §2.4.3.2) and
//! its adaptation field (§2.4.3.4), read once into [`PacketFacts`].

use crate::stream::align::PACKET_SIZE;

/// The PID of null (stuffing) packets.
pub const NULL_PID: u16 = 0x1FFF;
/// The PID of the program association table.
pub const PAT_PID: u16 = 0x0000;

/// What the header and the adaptation field of one packet say.
///
/// Plain data, `Copy`, no allocation: every consumer of the inspection
/// (instant start, stream health) reads it instead of parsing the packet
/// again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketFacts {
    pub pid: u16,
    /// `payload_unit_start_indicator`: a PES packet or a section starts here.
    pub pusi: bool,
    pub transport_error: bool,
    /// `transport_scrambling_control` is not zero.
    pub scrambled: bool,
    pub has_payload: bool,
    /// `continuity_counter` (meaningful only with a payload).
    pub cc: u8,
    /// The adaptation field's `discontinuity_indicator`.
    pub discontinuity: bool,
    /// The adaptation field's `random_access_indicator`.
    pub random_access: bool,
    /// The program clock reference, in 27 MHz ticks, when the packet has one.
    pub pcr: Option<u64>,
    /// Where the payload starts in the packet (188 when there is none).
    pub payload_offset: u8,
}

impl PacketFacts {
    /// Reads the header of a whole packet (`packet.len() == 188`, starting
    /// with the sync byte, as the aligner guarantees). An adaptation field
    /// whose length runs past the packet leaves the packet without payload.
    #[inline]
    pub fn parse(packet: &[u8]) -> PacketFacts {
        debug_assert_eq!(packet.len(), PACKET_SIZE);
        let (b1, b2, b3) = (packet[1], packet[2], packet[3]);
        let control = (b3 >> 4) & 0b11;
        let mut facts = PacketFacts {
            pid: u16::from(b1 & 0x1F) << 8 | u16::from(b2),
            pusi: b1 & 0x40 != 0,
            transport_error: b1 & 0x80 != 0,
            scrambled: b3 & 0xC0 != 0,
            has_payload: control & 0b01 != 0,
            cc: b3 & 0x0F,
            payload_offset: 4,
            ..PacketFacts::default()
        };
        if control & 0b10 != 0 {
            let length = usize::from(packet[4]);
            let payload_offset = 5 + length;
            if payload_offset > PACKET_SIZE {
                facts.has_payload = false;
                facts.payload_offset = PACKET_SIZE as u8;
                return facts;
            }
            facts.payload_offset = payload_offset as u8;
            if length > 0 {
                let flags = packet[5];
                facts.discontinuity = flags & 0x80 != 0;
                facts.random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 && length >= 7 {
                    let p = &packet[6..12];
                    let base = u64::from(p[0]) << 25
                        | u64::from(p[1]) << 17
                        | u64::from(p[2]) << 9
                        | u64::from(p[3]) << 1
                        | u64::from(p[4]) >> 7;
                    let extension = u64::from(p[4] & 1) << 8 | u64::from(p[5]);
                    facts.pcr = Some(base * 300 + extension);
                }
            }
        }
        if !facts.has_payload {
            facts.payload_offset = PACKET_SIZE as u8;
        }
        facts
    }

    /// The packet's payload (empty when it has none).
    #[inline]
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        &packet[usize::from(self.payload_offset)..]
    }

    pub fn is_null(&self) -> bool {
        self.pid == NULL_PID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_read() {
        let mut packet = [0xFFu8; PACKET_SIZE];
        packet[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x17]);
        let facts = PacketFacts::parse(&packet);
        assert_eq!(facts.pid, 0x100);
        assert!(facts.pusi && facts.has_payload && !facts.scrambled);
        assert_eq!(facts.cc, 7);
        assert_eq!(facts.payload_offset, 4);
        assert_eq!(facts.pcr, None);
    }

    #[test]
    fn adaptation_field_flags_and_pcr_are_read() {
        let mut packet = [0xFFu8; PACKET_SIZE];
        // PID 0x1011, adaptation field and payload, CC 3.
        packet[..4].copy_from_slice(&[0x47, 0x50, 0x11, 0x33]);
        packet[4] = 7;
        packet[5] = 0x80 | 0x40 | 0x10;
        // PCR base 0x1_0000_0001 (33 bits), extension 0x101.
        packet[6..12].copy_from_slice(&[0x80, 0x00, 0x00, 0x00, 0xFF, 0x01]);
        let facts = PacketFacts::parse(&packet);
        assert_eq!(facts.pid, 0x1011);
        assert!(facts.pusi && facts.discontinuity && facts.random_access);
        assert_eq!(facts.pcr, Some(0x1_0000_0001 * 300 + 0x101));
        assert_eq!(facts.payload_offset, 12);
        assert_eq!(facts.payload(&packet).len(), PACKET_SIZE - 12);
    }

    #[test]
    fn an_adaptation_field_too_long_leaves_no_payload() {
        let mut packet = [0u8; PACKET_SIZE];
        packet[..5].copy_from_slice(&[0x47, 0x00, 0x20, 0x30, 200]);
        let facts = PacketFacts::parse(&packet);
        assert!(!facts.has_payload);
        assert!(facts.payload(&packet).is_empty());
    }
}
