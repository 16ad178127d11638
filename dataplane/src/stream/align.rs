//! Packet alignment: cutting an upstream byte stream into 188-byte MPEG-TS
//! packets.
//!
//! Upstream reads end wherever the network or the file system chose, not on
//! packet boundaries, and a broken upstream may send garbage. The
//! [`Aligner`] owns the buffer that upstream reads land in, and after every
//! read [`Aligner::scan`] extends the run of whole, verified packets at the
//! front of it. Anything that does not start with the sync byte `0x47` is
//! skipped until a sync byte is found again (confirmed by the next packet's
//! sync byte when it is already there).
//!
//! Verified packets are handed out with [`Aligner::take`] as [`Bytes`] that
//! share the read buffer's memory: from here to the client sockets a packet
//! is never copied.

use bytes::{Buf, Bytes, BytesMut};

/// Size of one transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// First byte of every transport stream packet.
pub const SYNC_BYTE: u8 = 0x47;

/// Turns arbitrary reads into runs of whole packets.
#[derive(Debug, Default)]
pub struct Aligner {
    /// Bytes read and not yet taken. `buf[..aligned]` is whole packets.
    buf: BytesMut,
    /// Length of the verified prefix of `buf`.
    aligned: usize,
    /// Verified runs cut off by garbage that followed them, oldest first.
    ready: Vec<Bytes>,
    /// Packets in `ready`.
    ready_packets: usize,
    /// Bytes skipped because they were not part of a packet.
    skipped: u64,
}

impl Aligner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffer to read into, with at least `spare` bytes of room. Reads
    /// must only append to it.
    pub fn read_buffer(&mut self, spare: usize) -> &mut BytesMut {
        self.buf.reserve(spare);
        &mut self.buf
    }

    /// Verifies the bytes appended since the last call, calling `on_packet`
    /// for each newly verified packet.
    ///
    /// A packet is verified when it starts with the sync byte and the next
    /// packet does too, so a packet cut short by a broken upstream is
    /// dropped instead of being glued to the start of the next one. The last
    /// packet read therefore waits for the first byte of the next read (or
    /// for [`Aligner::finish`]).
    pub fn scan(&mut self, mut on_packet: impl FnMut(&[u8])) {
        loop {
            let rest = &self.buf[self.aligned..];
            match rest.get(PACKET_SIZE) {
                Some(&next) if rest[0] == SYNC_BYTE && next == SYNC_BYTE => {
                    on_packet(&rest[..PACKET_SIZE]);
                    self.aligned += PACKET_SIZE;
                }
                Some(_) => self.skip_garbage(),
                // Drop leading garbage early, so that a stream of garbage
                // does not grow the buffer.
                None if !rest.is_empty() && rest[0] != SYNC_BYTE => {
                    self.skip_garbage();
                    return;
                }
                None => return,
            }
        }
    }

    /// The upstream has ended: verifies a last whole packet, if there is
    /// one, and drops what is left.
    pub fn finish(&mut self, mut on_packet: impl FnMut(&[u8])) {
        self.scan(&mut on_packet);
        let rest = &self.buf[self.aligned..];
        if rest.len() == PACKET_SIZE && rest[0] == SYNC_BYTE {
            on_packet(rest);
            self.aligned += PACKET_SIZE;
        } else {
            self.skipped += rest.len() as u64;
            self.buf.truncate(self.aligned);
        }
    }

    /// Drops bytes from `aligned` up to the next plausible packet start.
    fn skip_garbage(&mut self) {
        let rest = &self.buf[self.aligned..];
        // A sync byte counts when the next packet's sync byte follows it
        // where it should, or when not enough is buffered yet to tell.
        let next = (1..rest.len()).find(|&i| {
            rest[i] == SYNC_BYTE
                && rest
                    .get(i + PACKET_SIZE)
                    .is_none_or(|&byte| byte == SYNC_BYTE)
        });
        let garbage = next.unwrap_or(rest.len());
        if self.aligned > 0 {
            let run = self.buf.split_to(self.aligned).freeze();
            self.ready_packets += run.len() / PACKET_SIZE;
            self.ready.push(run);
            self.aligned = 0;
        }
        self.buf.advance(garbage);
        self.skipped += garbage as u64;
    }

    /// Whole packets verified and not yet taken.
    pub fn packets(&self) -> usize {
        self.ready_packets + self.aligned / PACKET_SIZE
    }

    /// Bytes skipped so far because they were not part of a packet.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Moves every verified packet into `out`, as few [`Bytes`] as possible,
    /// oldest first.
    pub fn take(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.ready);
        self.ready_packets = 0;
        if self.aligned > 0 {
            out.push(self.buf.split_to(self.aligned).freeze());
            self.aligned = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` packets whose payload bytes all carry the packet's number.
    fn packets(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|n| {
                let mut packet = vec![n as u8; PACKET_SIZE];
                packet[0] = SYNC_BYTE;
                packet
            })
            .collect()
    }

    /// Feeds `input` in reads of the given sizes (cycled) and returns all
    /// packets taken, concatenated.
    fn align(input: &[u8], read_sizes: &[usize]) -> (Vec<u8>, u64) {
        let mut aligner = Aligner::new();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut rest = input;
        for &size in read_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = size.min(rest.len());
            aligner.read_buffer(n).extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            aligner.scan(|packet| seen.extend_from_slice(packet));
            aligner.take(&mut out);
        }
        aligner.finish(|packet| seen.extend_from_slice(packet));
        aligner.take(&mut out);
        let taken: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(taken, seen, "on_packet saw exactly the packets taken");
        (taken, aligner.skipped_bytes())
    }

    #[test]
    fn whole_packets_pass_unchanged_whatever_the_read_size() {
        let input = packets(20);
        for size in 1..=(3 * PACKET_SIZE + 1) {
            let (out, skipped) = align(&input, &[size]);
            assert_eq!(out, input, "read size {size}");
            assert_eq!(skipped, 0);
        }
    }

    #[test]
    fn uneven_reads_split_packets_anywhere() {
        let input = packets(50);
        let (out, _) = align(&input, &[1, 187, 189, 2, 376, 7, 1000]);
        assert_eq!(out, input);
    }

    #[test]
    fn garbage_before_between_and_after_packets_is_skipped() {
        let good = packets(6);
        let mut input = b"HTTP garbage".to_vec();
        input.extend_from_slice(&good[..3 * PACKET_SIZE]);
        input.extend_from_slice(&[0x00, 0x47, 0x12, 0x47]); // false sync bytes
        input.extend_from_slice(&good[3 * PACKET_SIZE..]);
        input.extend_from_slice(&[0x47; 5]); // a truncated last packet
                                             // The packet right before the garbage cannot be told from one cut
                                             // short, so it goes too.
        let mut expected = good[..2 * PACKET_SIZE].to_vec();
        expected.extend_from_slice(&good[3 * PACKET_SIZE..]);
        for size in [1, 5, 188, 4096] {
            let (out, skipped) = align(&input, &[size]);
            assert_eq!(out, expected, "read size {size}");
            assert_eq!(skipped, 12 + 188 + 4 + 5, "read size {size}");
        }
    }

    #[test]
    fn a_packet_cut_short_is_dropped_and_the_stream_resynchronises() {
        let good = packets(4);
        let mut input = good[..PACKET_SIZE].to_vec();
        input.extend_from_slice(&good[PACKET_SIZE..PACKET_SIZE + 100]); // cut short
        input.extend_from_slice(&good[2 * PACKET_SIZE..]);
        let (out, _) = align(&input, &[64]);
        let mut expected = good[..PACKET_SIZE].to_vec();
        expected.extend_from_slice(&good[2 * PACKET_SIZE..]);
        assert_eq!(out, expected);
    }

    #[test]
    fn endless_garbage_does_not_grow_the_buffer() {
        let mut aligner = Aligner::new();
        for _ in 0..1000 {
            aligner.read_buffer(1000).extend_from_slice(&[0u8; 1000]);
            aligner.scan(|_| {});
            assert!(aligner.buf.len() < PACKET_SIZE);
        }
        assert_eq!(aligner.skipped_bytes(), 1_000_000);
        assert_eq!(aligner.packets(), 0);
    }
}
