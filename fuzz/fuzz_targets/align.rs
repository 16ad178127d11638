//! The packet aligner on arbitrary bytes cut into arbitrary reads.
//!
//! The first byte of the input seeds the read sizes; the rest is the
//! upstream. Whatever the bytes and the cuts: every packet out is 188
//! bytes starting with the sync byte, every input byte is either passed on
//! or counted as skipped, and the packets out are the same as when the
//! whole input arrives in one read.
#![no_main]

use bytes::{BufMut, Bytes};
use libfuzzer_sys::fuzz_target;
use restreamer::stream::align::{Aligner, PACKET_SIZE, SYNC_BYTE};

/// Feeds `input` in reads of the given sizes (cycled); returns the packets
/// taken and the bytes skipped.
fn align(input: &[u8], read_sizes: &[usize]) -> (Vec<u8>, u64) {
    let mut aligner = Aligner::new();
    let (mut out, mut taken) = (Vec::new(), Vec::<Bytes>::new());
    let mut seen = 0usize;
    let mut check = |packet: &[u8]| {
        assert_eq!(packet.len(), PACKET_SIZE);
        assert_eq!(packet[0], SYNC_BYTE);
        seen += 1;
    };
    let mut rest = input;
    for &size in read_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, later) = rest.split_at(size.clamp(1, rest.len()));
        aligner.read_buffer(read.len()).put_slice(read);
        aligner.scan(&mut check);
        aligner.take(&mut taken);
        rest = later;
    }
    aligner.finish(&mut check);
    aligner.take(&mut taken);
    for chunk in &taken {
        assert_eq!(chunk.len() % PACKET_SIZE, 0, "a chunk of part packets");
        out.extend_from_slice(chunk);
    }
    assert_eq!(out.len(), seen * PACKET_SIZE, "packets taken but not seen");
    (out, aligner.skipped_bytes())
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    // Read sizes from 1 byte to a little over two packets.
    let read_sizes: Vec<usize> = (0..7u32)
        .map(|i| (seed as usize).wrapping_mul(31 + i as usize * 17) % 400 + 1)
        .collect();
    let (cut, skipped) = align(input, &read_sizes);
    assert_eq!(
        cut.len() as u64 + skipped,
        input.len() as u64,
        "bytes neither passed on nor counted as skipped"
    );
    let (whole, _) = align(input, &[input.len().max(1)]);
    assert!(cut == whole, "the packets depend on where the reads were cut");
});
