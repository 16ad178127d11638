//! Real-time pacing of a recorded stream by its Program Clock Reference.
//!
//! A file holds a stream that was broadcast at some rate; read as fast as
//! the disk allows, it would arrive at clients minutes ahead of real time.
//! The [`Pacer`] watches the PCR (the 27 MHz clock that encoders stamp into
//! the adaptation field of one PID) and tells the source when each PCR is
//! due on the wall clock. When the PCR jumps (the file looped, or the
//! recording has a discontinuity) the pacer starts a new time base where
//! the old one left off, so the stream continues without a burst or a stall.

use std::time::Duration;

use tokio::time::Instant;

/// PCR ticks per second.
const PCR_HZ: u64 = 27_000_000;
/// A PCR step larger than this (or backwards) is a discontinuity.
const MAX_PCR_STEP: u64 = PCR_HZ; // one second
/// The PCR is 33 bits of 90 kHz base times 300 plus a 9-bit extension.
const PCR_WRAP: u64 = (1 << 33) * 300;

#[derive(Debug, Default)]
pub struct Pacer {
    /// The PID that carries the PCR we follow (the first one seen).
    pcr_pid: Option<u16>,
    /// The newest PCR and when it is due on the wall clock.
    last: Option<(u64, Instant)>,
    /// When the newest PCR is due, until [`Pacer::due`] takes it.
    due: Option<Instant>,
}

impl Pacer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at one packet for a PCR.
    pub fn observe(&mut self, packet: &[u8]) {
        let Some((pid, pcr)) = pcr_of(packet) else {
            return;
        };
        if *self.pcr_pid.get_or_insert(pid) != pid {
            return;
        }
        // Each PCR is due one step after the previous one; a step that is
        // too large or backwards is a discontinuity, due right away.
        let due = match self.last {
            Some((last_pcr, last_due)) => {
                let step = (pcr + PCR_WRAP - last_pcr) % PCR_WRAP;
                if step <= MAX_PCR_STEP {
                    last_due + ticks(step)
                } else {
                    last_due
                }
            }
            None => Instant::now(),
        };
        self.last = Some((pcr, due));
        self.due = Some(due);
    }

    /// When the packets seen so far may be sent, if that is in the future.
    pub fn due(&mut self) -> Option<Instant> {
        self.due.take().filter(|due| *due > Instant::now())
    }
}

fn ticks(pcr_ticks: u64) -> Duration {
    Duration::from_nanos(pcr_ticks * 1000 / 27)
}

/// The PID and PCR (in 27 MHz ticks) of a packet that carries one.
pub fn pcr_of(packet: &[u8]) -> Option<(u16, u64)> {
    if packet.len() < 12 {
        return None;
    }
    let pid = u16::from_be_bytes([packet[1], packet[2]]) & 0x1fff;
    let has_adaptation_field = packet[3] & 0x20 != 0;
    let adaptation_length = packet[4];
    let has_pcr = packet[5] & 0x10 != 0;
    if !has_adaptation_field || adaptation_length < 7 || !has_pcr {
        return None;
    }
    let b = &packet[6..12];
    let base = (u64::from(b[0]) << 25)
        | (u64::from(b[1]) << 17)
        | (u64::from(b[2]) << 9)
        | (u64::from(b[3]) << 1)
        | (u64::from(b[4]) >> 7);
    let extension = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
    Some((pid, base * 300 + extension))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet on `pid` carrying `pcr` (27 MHz ticks).
    fn packet_with_pcr(pid: u16, pcr: u64) -> [u8; 188] {
        let mut packet = [0xffu8; 188];
        let (base, extension) = (pcr / 300, pcr % 300);
        packet[0] = 0x47;
        packet[1..3].copy_from_slice(&pid.to_be_bytes());
        packet[3] = 0x20; // adaptation field only
        packet[4] = 183;
        packet[5] = 0x10; // PCR flag
        packet[6] = (base >> 25) as u8;
        packet[7] = (base >> 17) as u8;
        packet[8] = (base >> 9) as u8;
        packet[9] = (base >> 1) as u8;
        packet[10] = ((base & 1) << 7) as u8 | 0x7e | (extension >> 8) as u8;
        packet[11] = extension as u8;
        packet
    }

    #[test]
    fn pcr_round_trips() {
        for pcr in [0, 1, 299, 300, 27_000_000, PCR_WRAP - 1] {
            assert_eq!(pcr_of(&packet_with_pcr(0x100, pcr)), Some((0x100, pcr)));
        }
        let mut no_pcr = packet_with_pcr(0x100, 5);
        no_pcr[5] = 0;
        assert_eq!(pcr_of(&no_pcr), None);
    }

    #[tokio::test(start_paused = true)]
    async fn packets_are_due_at_their_pcr_and_a_loop_continues_smoothly() {
        let mut pacer = Pacer::new();
        let start = Instant::now();
        pacer.observe(&packet_with_pcr(0x100, 1_000_000));
        assert_eq!(pacer.due(), None, "the first PCR is due at once");
        pacer.observe(&packet_with_pcr(0x100, 1_000_000 + PCR_HZ / 2));
        assert_eq!(pacer.due(), Some(start + Duration::from_millis(500)));
        // Another PID's PCR is ignored.
        pacer.observe(&packet_with_pcr(0x200, 0));
        assert_eq!(pacer.due(), None);
        // The file loops: the PCR goes back to where it started.
        pacer.observe(&packet_with_pcr(0x100, 1_000_000));
        assert_eq!(pacer.due(), Some(start + Duration::from_millis(500)));
        pacer.observe(&packet_with_pcr(0x100, 1_000_000 + PCR_HZ / 10));
        assert_eq!(pacer.due(), Some(start + Duration::from_millis(600)));
    }
}
