//! The benchmark's transport stream: constant-bitrate packets on one PID,
//! with a continuity counter that reveals every lost packet, and every
//! 10 ms a marker packet on a private PID carrying the wall-clock time it
//! was written, from which a client computes the latency the proxy added.

use std::time::{SystemTime, UNIX_EPOCH};

pub const PACKET: usize = 188;
/// The PID carrying the bulk of the stream.
pub const DATA_PID: u16 = 0x100;
/// The private PID carrying the timestamp markers.
pub const MARKER_PID: u16 = 0x1ff0;
const MAGIC: &[u8; 4] = b"RSTB";

/// Makes the packets of the stream in order.
#[derive(Debug, Default)]
pub struct Generator {
    data_cc: u8,
    marker_cc: u8,
}

impl Generator {
    /// Appends a data packet.
    pub fn data(&mut self, out: &mut Vec<u8>) {
        let mut packet = [0xffu8; PACKET];
        header(&mut packet, DATA_PID, self.data_cc);
        self.data_cc = (self.data_cc + 1) & 0x0f;
        out.extend_from_slice(&packet);
    }

    /// Appends a marker packet stamped with the current time.
    pub fn marker(&mut self, out: &mut Vec<u8>) {
        let mut packet = [0xffu8; PACKET];
        header(&mut packet, MARKER_PID, self.marker_cc);
        self.marker_cc = (self.marker_cc + 1) & 0x0f;
        packet[4..8].copy_from_slice(MAGIC);
        packet[8..16].copy_from_slice(&now_ns().to_be_bytes());
        out.extend_from_slice(&packet);
    }
}

fn header(packet: &mut [u8; PACKET], pid: u16, cc: u8) {
    packet[0] = 0x47;
    packet[1..3].copy_from_slice(&pid.to_be_bytes());
    packet[3] = 0x10 | cc; // payload only
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Checks a client's packets: continuity per PID, and marker latency.
#[derive(Debug, Default)]
pub struct Checker {
    last_cc: [Option<u8>; 2],
    /// Packets missing, by continuity counter (a lower bound: a gap of 16
    /// looks like none, but a keeping-up client has no gaps at all).
    pub continuity_errors: u64,
    pub packets: u64,
}

impl Checker {
    /// Looks at one packet; returns the latency in microseconds if it is a
    /// marker.
    pub fn packet(&mut self, packet: &[u8]) -> Option<u64> {
        self.packets += 1;
        let pid = u16::from_be_bytes([packet[1], packet[2]]) & 0x1fff;
        let slot = match pid {
            DATA_PID => 0,
            MARKER_PID => 1,
            _ => return None,
        };
        let cc = packet[3] & 0x0f;
        if let Some(last) = self.last_cc[slot] {
            let expected = (last + 1) & 0x0f;
            if cc != expected {
                self.continuity_errors += u64::from((cc + 16 - expected) & 0x0f).max(1);
            }
        }
        self.last_cc[slot] = Some(cc);
        if slot == 1 && &packet[4..8] == MAGIC {
            let sent = u64::from_be_bytes(packet[8..16].try_into().unwrap());
            return Some(now_ns().saturating_sub(sent) / 1000);
        }
        None
    }

    /// Forgets continuity state (after a resynchronisation).
    pub fn resync(&mut self) {
        self.last_cc = [None, None];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_has_no_errors_and_a_gap_is_counted() {
        let mut generator = Generator::default();
        let mut stream = Vec::new();
        for i in 0..40 {
            if i % 10 == 0 {
                generator.marker(&mut stream);
            } else {
                generator.data(&mut stream);
            }
        }
        let mut checker = Checker::default();
        let latencies: Vec<u64> = stream
            .chunks(PACKET)
            .filter_map(|p| checker.packet(p))
            .collect();
        assert_eq!(checker.continuity_errors, 0);
        assert_eq!(latencies.len(), 4);

        let mut checker = Checker::default();
        for (i, packet) in stream.chunks(PACKET).enumerate() {
            if i != 5 && i != 6 {
                checker.packet(packet);
            }
        }
        assert_eq!(checker.continuity_errors, 2);
    }
}
