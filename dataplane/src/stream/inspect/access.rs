//! Random access points in a video elementary stream: does this PES packet
//! begin an access unit that a decoder can start from?
//!
//! When the encoder sets the adaptation field's `random_access_indicator`
//! the question is answered by the packet header. Many do not; then the
//! start of the PES payload is read, across packets if needed, up to the
//! first picture:
//!
//! - H.264: an IDR slice (NAL type 5), or an I slice in an access unit led
//!   by a sequence parameter set (open GOPs with a recovery point);
//! - H.265: an IRAP picture (NAL types 16–23: BLA, IDR, CRA);
//! - MPEG-1/2 video: a sequence header followed by an I picture.
//!
//! The PES header is skipped; its PTS is kept (for the keyframe interval).

use super::psi::StreamKind;

/// Bytes kept after a start code: enough for the NAL header and the first
/// fields of an H.264 slice header, or an MPEG-2 picture header.
const CODE_BYTES: usize = 5;
/// How far into a PES packet an answer is looked for.
const MAX_SCAN_BYTES: usize = 8 * 184;

/// The answer, once there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Read more of the PES packet.
    Undecided,
    RandomAccess,
    NotRandomAccess,
}

/// Reads the start of one video PES packet at a time.
#[derive(Debug, Clone)]
pub struct AccessScanner {
    kind: StreamKind,
    /// Consecutive zero bytes just read.
    zeros: u32,
    /// Collecting the bytes after a start code.
    collecting: bool,
    code: [u8; CODE_BYTES],
    code_len: usize,
    /// An SPS (H.264) or a sequence header (MPEG-2) led this access unit.
    parameter_set: bool,
    scanned: usize,
    /// The PES header has been skipped.
    in_payload: bool,
    pub pts: Option<u64>,
}

impl AccessScanner {
    pub fn new(kind: StreamKind) -> Self {
        AccessScanner {
            kind,
            zeros: 0,
            collecting: false,
            code: [0; CODE_BYTES],
            code_len: 0,
            parameter_set: false,
            scanned: 0,
            in_payload: false,
            pts: None,
        }
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Starts on a new PES packet, whose first payload bytes are `data`.
    pub fn start(&mut self, data: &[u8]) -> Verdict {
        *self = AccessScanner::new(self.kind);
        let Some((header_length, pts)) = pes_header(data) else {
            return Verdict::NotRandomAccess;
        };
        self.pts = pts;
        self.in_payload = true;
        match data.get(header_length..) {
            Some(rest) => self.feed(rest),
            None => Verdict::NotRandomAccess,
        }
    }

    /// Reads more of the PES packet (the payload of its next packet).
    pub fn feed(&mut self, data: &[u8]) -> Verdict {
        if !self.in_payload {
            return Verdict::NotRandomAccess;
        }
        for &byte in data {
            if self.collecting {
                self.code[self.code_len] = byte;
                self.code_len += 1;
                if self.code_len == self.needed() {
                    self.collecting = false;
                    match self.judge() {
                        Verdict::Undecided => {}
                        verdict => return verdict,
                    }
                }
                self.zeros = u32::from(byte == 0);
                continue;
            }
            if byte == 0 {
                self.zeros += 1;
            } else {
                if byte == 1 && self.zeros >= 2 {
                    self.collecting = true;
                    self.code_len = 0;
                }
                self.zeros = 0;
            }
        }
        self.scanned += data.len();
        if self.scanned > MAX_SCAN_BYTES {
            Verdict::NotRandomAccess
        } else {
            Verdict::Undecided
        }
    }

    /// Bytes after the start code needed to judge it: more only for the
    /// start of a picture (slices and parameter sets are short, and the
    /// next start code must not be swallowed).
    fn needed(&self) -> usize {
        match (self.kind, self.code[0]) {
            (StreamKind::H264, nal) if nal & 0x1F == 1 => CODE_BYTES,
            (StreamKind::Mpeg2, 0x00) => 3,
            _ => 1,
        }
    }

    fn judge(&mut self) -> Verdict {
        let code = &self.code;
        match self.kind {
            StreamKind::H264 => match code[0] & 0x1F {
                5 => Verdict::RandomAccess,
                7 => {
                    self.parameter_set = true;
                    Verdict::Undecided
                }
                1 => {
                    // slice_type after first_mb_in_slice, both Exp-Golomb.
                    let mut bits = Bits::new(&code[1..]);
                    let _first_mb = bits.ue();
                    match bits.ue() {
                        Some(2 | 4 | 7 | 9) if self.parameter_set => Verdict::RandomAccess,
                        _ => Verdict::NotRandomAccess,
                    }
                }
                2..=4 => Verdict::NotRandomAccess,
                _ => Verdict::Undecided,
            },
            StreamKind::H265 => match (code[0] >> 1) & 0x3F {
                16..=23 => Verdict::RandomAccess,
                0..=15 | 24..=31 => Verdict::NotRandomAccess,
                _ => Verdict::Undecided,
            },
            StreamKind::Mpeg2 => match code[0] {
                0xB3 => {
                    self.parameter_set = true;
                    Verdict::Undecided
                }
                0x00 => {
                    let picture_coding_type = (code[2] >> 3) & 0x07;
                    if picture_coding_type == 1 && self.parameter_set {
                        Verdict::RandomAccess
                    } else {
                        Verdict::NotRandomAccess
                    }
                }
                0x01..=0xAF => Verdict::NotRandomAccess,
                _ => Verdict::Undecided,
            },
            _ => Verdict::NotRandomAccess,
        }
    }
}

/// The length of a PES header at the start of `data` and its PTS (90 kHz),
/// or `None` when `data` does not start a PES packet.
pub fn pes_header(data: &[u8]) -> Option<(usize, Option<u64>)> {
    if data.len() < 6 || data[..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = data[3];
    // Stream ids without the optional header (§2.4.3.7).
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return Some((6, None));
    }
    if data.len() < 9 || data[6] & 0xC0 != 0x80 {
        return None;
    }
    let length = 9 + usize::from(data[8]);
    let pts = (data[7] & 0x80 != 0 && data.len() >= 14).then(|| {
        let p = &data[9..14];
        u64::from(p[0] >> 1 & 0x07) << 30
            | u64::from(p[1]) << 22
            | u64::from(p[2] >> 1) << 15
            | u64::from(p[3]) << 7
            | u64::from(p[4] >> 1)
    });
    Some((length, pts))
}

/// A big-endian bit reader for the few Exp-Golomb codes needed.
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, bit: 0 }
    }

    fn read(&mut self) -> Option<u32> {
        let byte = self.data.get(self.bit / 8)?;
        let value = (byte >> (7 - self.bit % 8)) & 1;
        self.bit += 1;
        Some(u32::from(value))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.read()? == 0 {
            zeros += 1;
            if zeros > 16 {
                return None;
            }
        }
        let mut value = 0;
        for _ in 0..zeros {
            value = value << 1 | self.read()?;
        }
        Some((1 << zeros) - 1 + value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pes(es: &[u8]) -> Vec<u8> {
        // Video PES with a PTS of 90000.
        let mut data = vec![
            0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21, 0x00, 0x05, 0xBF, 0x21,
        ];
        data.extend_from_slice(es);
        data
    }

    #[test]
    fn h264_idr_and_sps_led_i_slices_are_random_access() {
        let mut scanner = AccessScanner::new(StreamKind::H264);
        // AUD, SPS, PPS, IDR.
        let idr = pes(&[
            0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x68, 0xEE, 0, 0, 1, 0x65, 0x88,
            0x84,
        ]);
        assert_eq!(scanner.start(&idr), Verdict::RandomAccess);
        assert_eq!(scanner.pts, Some(90000));
        // AUD, non-IDR P slice: first_mb 0 ('1'), slice_type 5 ('00110').
        let p = pes(&[0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0b1001_1000, 0, 0, 0]);
        assert_eq!(scanner.start(&p), Verdict::NotRandomAccess);
        // SPS then a non-IDR I slice (slice_type 7: '0001000').
        let open = pes(&[0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x41, 0b1000_1000, 0, 0, 0]);
        assert_eq!(scanner.start(&open), Verdict::RandomAccess);
        // The same I slice without an SPS: no.
        let lone = pes(&[0, 0, 1, 0x41, 0b1000_1000, 0, 0, 0]);
        assert_eq!(scanner.start(&lone), Verdict::NotRandomAccess);
    }

    #[test]
    fn the_answer_may_come_in_a_later_packet() {
        let mut scanner = AccessScanner::new(StreamKind::H264);
        let sei = pes(&[0, 0, 1, 0x06, 5, 200]);
        assert_eq!(scanner.start(&sei), Verdict::Undecided);
        assert_eq!(scanner.feed(&[7; 100]), Verdict::Undecided);
        // The start code split across packets.
        assert_eq!(scanner.feed(&[0x80, 0, 0]), Verdict::Undecided);
        assert_eq!(
            scanner.feed(&[1, 0x65, 0x88, 0, 0, 0]),
            Verdict::RandomAccess
        );
    }

    #[test]
    fn h265_irap_and_mpeg2_i_pictures() {
        let mut scanner = AccessScanner::new(StreamKind::H265);
        // AUD (35), VPS (32), IDR_W_RADL (19).
        let idr = pes(&[
            0, 0, 1, 0x46, 1, 0x50, 0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1, 0xAF,
        ]);
        assert_eq!(scanner.start(&idr), Verdict::RandomAccess);
        let trail = pes(&[0, 0, 1, 0x46, 1, 0x50, 0, 0, 1, 0x02, 1, 0xD0]);
        assert_eq!(scanner.start(&trail), Verdict::NotRandomAccess);

        let mut scanner = AccessScanner::new(StreamKind::Mpeg2);
        // Sequence header, GOP header, I picture (coding type 1).
        let i = pes(&[
            0, 0, 1, 0xB3, 0x16, 0, 0xF0, 0, 0, 1, 0xB8, 0, 8, 0, 0, 0, 1, 0x00, 0x00, 0x0F, 0xFF,
            0xF8,
        ]);
        assert_eq!(scanner.start(&i), Verdict::RandomAccess);
        // A P picture (coding type 2) without a sequence header.
        let p = pes(&[0, 0, 1, 0x00, 0x00, 0x50, 0xFF, 0xF8]);
        assert_eq!(scanner.start(&p), Verdict::NotRandomAccess);
    }
}
