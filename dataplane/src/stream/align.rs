//! Packet alignment: cutting an upstream byte stream into 188-byte MPEG-TS
//! packets.
//!
//! Upstream reads end wherever the network or the file system chose, not on
//! packet boundaries, and a broken upstream may send garbage. The
//! [`Aligner`] owns the buffer that upstream reads land in, and after every
//! read [`Aligner::scan`] extends the run of whole, verified packets at the
//! front of it. A packet is forwarded only while the stream is in sync, and
//! only once the next packet's sync byte confirms it. Sync is acquired (at
//! the start, and again after anything that is not a packet) on
//! [`LOCK_PACKETS`] sync bytes in a row, one packet apart: random bytes
//! have a sync byte 188 bytes after another one time in 256, so a single
//! confirmation would let about one random "packet" in 65,536 positions
//! through, five in a row one in a trillion. After garbage, the packets
//! that acquired sync are not forwarded either: the end of the garbage may
//! hold sync bytes one packet apart from the first real packets.
//!
//! Verified packets are handed out with [`Aligner::take`] as [`Bytes`]. A
//! large run shares the read buffer's memory; a small one (a datagram, a
//! trickle of a low-rate stream) is copied into a buffer of its own size,
//! so that a few packets never keep a whole 64 KiB read buffer alive in the
//! hub's ring, and the read buffer is reused. From there to the client
//! sockets a packet is never copied.

use bytes::{Buf, Bytes, BytesMut};

/// Size of one transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// First byte of every transport stream packet.
pub const SYNC_BYTE: u8 = 0x47;

/// Runs shorter than this are copied out of the read buffer rather than
/// sliced from it: a slice keeps the whole buffer alive (at least twice its
/// size when the run is shorter than this).
pub const COPY_BELOW: usize = 32 * 1024;

/// Sync bytes in a row, one packet apart, that (re)acquire sync.
pub const LOCK_PACKETS: usize = 5;

/// Turns arbitrary reads into runs of whole packets.
#[derive(Debug, Default)]
pub struct Aligner {
    /// `buf[aligned..]` starts at a packet boundary of a stream in sync.
    in_sync: bool,
    /// Bytes were skipped since sync was last held.
    after_garbage: bool,
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
            if !self.in_sync && !self.acquire_sync() {
                return;
            }
            let rest = &self.buf[self.aligned..];
            match rest.get(PACKET_SIZE) {
                Some(&next) if rest[0] == SYNC_BYTE && next == SYNC_BYTE => {
                    on_packet(&rest[..PACKET_SIZE]);
                    self.aligned += PACKET_SIZE;
                }
                // Not followed by a packet: it may be cut short, so it goes
                // too, and sync must be acquired again.
                Some(_) => {
                    self.in_sync = false;
                    self.skip(1);
                }
                None => return,
            }
        }
    }

    /// Looks for [`LOCK_PACKETS`] sync bytes in a row from `aligned` on,
    /// skipping what comes before them. False when more bytes are needed to
    /// tell; what might still start a packet is kept.
    fn acquire_sync(&mut self) -> bool {
        let rest = &self.buf[self.aligned..];
        let span = (LOCK_PACKETS - 1) * PACKET_SIZE;
        let mut start = 0;
        while start < rest.len() {
            if rest[start] == SYNC_BYTE {
                let confirmed = (1..LOCK_PACKETS)
                    .map(|k| rest.get(start + k * PACKET_SIZE))
                    .take_while(|byte| byte.is_some())
                    .all(|byte| byte == Some(&SYNC_BYTE));
                if !confirmed {
                    start += 1;
                    continue;
                }
                if start + span >= rest.len() {
                    // Plausible so far: wait for the rest of the run.
                    self.skip(start);
                    return false;
                }
                // After garbage, the packets that acquired sync only serve
                // for that.
                let discard = if self.after_garbage || start > 0 {
                    span
                } else {
                    0
                };
                self.skip(start + discard);
                self.in_sync = true;
                self.after_garbage = false;
                return true;
            }
            start += 1;
        }
        // Nothing here can start a packet: drop it all, so that a stream of
        // garbage does not grow the buffer.
        self.skip(rest.len());
        false
    }

    /// The upstream has ended: verifies a last whole packet, if there is
    /// one, and drops what is left.
    pub fn finish(&mut self, mut on_packet: impl FnMut(&[u8])) {
        self.scan(&mut on_packet);
        let rest = &self.buf[self.aligned..];
        if self.in_sync && rest.len() == PACKET_SIZE && rest[0] == SYNC_BYTE {
            on_packet(rest);
            self.aligned += PACKET_SIZE;
        } else {
            let rest = rest.len();
            self.skip(rest);
        }
        self.in_sync = false;
    }

    /// Drops `garbage` bytes at `aligned`, setting aside the packets
    /// verified before them.
    fn skip(&mut self, garbage: usize) {
        if garbage == 0 {
            return;
        }
        if self.aligned > 0 {
            let run = self.cut_aligned();
            self.ready_packets += run.len() / PACKET_SIZE;
            self.ready.push(run);
        }
        self.buf.advance(garbage);
        self.skipped += garbage as u64;
        self.after_garbage = true;
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
            let run = self.cut_aligned();
            out.push(run);
        }
    }

    /// Removes the verified run `buf[..aligned]`: a small one as a copy,
    /// a large one as a slice of the read buffer.
    fn cut_aligned(&mut self) -> Bytes {
        let run = if self.aligned < COPY_BELOW {
            let run = Bytes::copy_from_slice(&self.buf[..self.aligned]);
            self.buf.advance(self.aligned);
            run
        } else {
            self.buf.split_to(self.aligned).freeze()
        };
        self.aligned = 0;
        run
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
        let good = packets(20);
        let mut input = b"HTTP garbage".to_vec();
        input.extend_from_slice(&good[..10 * PACKET_SIZE]);
        input.extend_from_slice(&[0x00, 0x47, 0x12, 0x47]); // false sync bytes
        input.extend_from_slice(&good[10 * PACKET_SIZE..]);
        input.extend_from_slice(&[0x47; 5]); // a truncated last packet
                                             // After garbage, the four packets that acquire sync go; the packet
                                             // right before garbage cannot be told from one cut short, so it
                                             // goes too.
        let mut expected = good[4 * PACKET_SIZE..9 * PACKET_SIZE].to_vec();
        expected.extend_from_slice(&good[14 * PACKET_SIZE..]);
        for size in [1, 5, 188, 4096] {
            let (out, skipped) = align(&input, &[size]);
            assert_eq!(out, expected, "read size {size}");
            assert_eq!(
                skipped,
                (12 + 4 * 188 + 188 + 4 + 4 * 188 + 5) as u64,
                "read size {size}"
            );
        }
    }

    #[test]
    fn a_packet_cut_short_is_dropped_and_the_stream_resynchronises() {
        let good = packets(20);
        let mut input = good[..6 * PACKET_SIZE].to_vec();
        input.extend_from_slice(&good[6 * PACKET_SIZE..6 * PACKET_SIZE + 100]); // cut short
        input.extend_from_slice(&good[7 * PACKET_SIZE..]);
        let (out, _) = align(&input, &[64]);
        let mut expected = good[..6 * PACKET_SIZE].to_vec();
        expected.extend_from_slice(&good[11 * PACKET_SIZE..]);
        assert_eq!(out, expected);
    }

    #[test]
    fn garbage_ending_in_sync_bytes_before_packets_is_not_forwarded() {
        // The garbage's last byte is a sync byte one packet before the
        // first real packet: a false packet that looks in sync.
        let good = packets(10);
        let mut input = vec![0u8; 3 * PACKET_SIZE];
        input[2 * PACKET_SIZE] = SYNC_BYTE;
        input.extend_from_slice(&good);
        let (out, _) = align(&input, &[1000]);
        assert_eq!(out, good[3 * PACKET_SIZE..]);
    }

    #[test]
    fn sync_is_acquired_only_on_five_packets_in_a_row() {
        // Four packets between pieces of garbage never lock.
        let good = packets(4);
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(&good);
            input.extend_from_slice(&[1, 2, 3]);
        }
        let (out, skipped) = align(&input, &[100]);
        assert!(out.is_empty());
        assert_eq!(skipped, input.len() as u64);
    }

    #[test]
    fn random_bytes_never_pass_as_packets() {
        // Random bytes hold a sync byte 188 bytes after another one about
        // once per 65,536 positions: 8 MB would let about 120 through on a
        // single confirmation.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let input: Vec<u8> = (0..8_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let (out, skipped) = align(&input, &[65536]);
        assert!(out.is_empty(), "{} false packets", out.len() / PACKET_SIZE);
        assert_eq!(skipped, input.len() as u64);
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
