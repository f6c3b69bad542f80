//! Pure ISL frame codec: no I/O, no allocation beyond one bounded frame.
//!
//! Host → device: `01 LEN SEQ CMD DATA 05 BCC 03`.
//! Device → host: `01 LEN SEQ CMD DATA 04 STATUS 05 BCC 03`.
//! Single bytes `15` (NAK) and `16` (SYN) travel outside frames.
//!
//! * LEN counts the bytes after `01` up to and including `05`, plus `0x20`:
//!   one byte in the classic dialect, four nibble bytes (each `+0x30`) in X.
//! * SEQ is `0x20..=0x7F`; CMD is one byte (classic) or four nibble bytes (X).
//! * BCC is the 16-bit sum of the bytes after `01` through `05`, as four
//!   nibble bytes each `+0x30`.
//! * Data bytes below `0x20` other than TAB and LF are sent as `10, b+0x40`.

use super::Dialect;

/// Start of a frame.
pub const PREAMBLE: u8 = 0x01;
/// End of data in a reply, before the status bytes.
pub const SEPARATOR: u8 = 0x04;
/// End of the checksummed part.
pub const POSTAMBLE: u8 = 0x05;
/// End of a frame.
pub const TERMINATOR: u8 = 0x03;
/// Escape byte for control characters in data.
pub const ESCAPE: u8 = 0x10;
/// Negative acknowledgement: the frame was bad, send it again.
pub const NAK: u8 = 0x15;
/// Synchronous idle: the device is busy, keep waiting.
pub const SYN: u8 = 0x16;

/// Which side of the conversation a frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host to device (no status).
    Request,
    /// Device to host (with status bytes).
    Reply,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number, `0x20..=0x7F`.
    pub seq: u8,
    /// Command code.
    pub cmd: u16,
    /// Data, unescaped.
    pub data: Vec<u8>,
    /// Status bytes (replies only).
    pub status: Vec<u8>,
}

/// A problem with bytes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// SEQ outside `0x20..=0x7F`.
    #[error("sequence number out of range")]
    BadSeq,
    /// CMD outside the dialect's range.
    #[error("command code out of range")]
    BadCmd,
    /// Data longer than the dialect allows.
    #[error("data too long")]
    TooLong,
    /// LEN field malformed or out of range.
    #[error("bad length field")]
    BadLength,
    /// Postamble, separator or terminator missing where LEN says it is.
    #[error("bad frame structure")]
    BadStructure,
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    BadChecksum,
    /// Status byte without bit 7 set.
    #[error("bad status byte")]
    BadStatus,
    /// An escape byte not followed by an escaped control character.
    #[error("bad escape sequence")]
    BadEscape,
}

/// The ISL checksum of `bytes`: 16-bit sum as four nibble bytes `+0x30`.
pub fn bcc(bytes: &[u8]) -> [u8; 4] {
    let sum = bytes
        .iter()
        .fold(0u16, |acc, &b| acc.wrapping_add(u16::from(b)));
    nibbles(sum)
}

fn nibbles(v: u16) -> [u8; 4] {
    [
        0x30 + ((v >> 12) & 0xF) as u8,
        0x30 + ((v >> 8) & 0xF) as u8,
        0x30 + ((v >> 4) & 0xF) as u8,
        0x30 + (v & 0xF) as u8,
    ]
}

fn from_nibbles(b: &[u8]) -> Option<u16> {
    let mut v: u16 = 0;
    for &x in b {
        if !(0x30..=0x3F).contains(&x) {
            return None;
        }
        v = (v << 4) | u16::from(x - 0x30);
    }
    Some(v)
}

/// Escapes data: control bytes other than TAB and LF become `10, b+0x40`.
pub fn escape(data: &[u8], out: &mut Vec<u8>) {
    for &b in data {
        if b < 0x20 && b != b'\t' && b != b'\n' {
            out.push(ESCAPE);
            out.push(b + 0x40);
        } else {
            out.push(b);
        }
    }
}

/// Reverses [`escape`].
///
/// # Errors
///
/// [`CodecError::BadEscape`] for an escape byte at the end or not followed
/// by `0x40..=0x5F`.
pub fn unescape(data: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(data.len());
    let mut it = data.iter();
    while let Some(&b) = it.next() {
        if b == ESCAPE {
            match it.next() {
                Some(&n) if (0x40..0x60).contains(&n) => out.push(n - 0x40),
                _ => return Err(CodecError::BadEscape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn head(dialect: Dialect, body_len: usize, seq: u8, cmd: u16, out: &mut Vec<u8>) {
    // LEN counts LEN itself, SEQ, CMD, DATA(+separator+status) and 05.
    match dialect {
        Dialect::Classic => {
            let len = 0x20 + 1 + 1 + 1 + body_len + 1;
            out.push(len as u8);
            out.push(seq);
            out.push(cmd as u8);
        }
        Dialect::X => {
            let len = 0x20 + 4 + 1 + 4 + body_len + 1;
            out.extend_from_slice(&nibbles(len as u16));
            out.push(seq);
            out.extend_from_slice(&nibbles(cmd));
        }
    }
}

fn check_head(dialect: Dialect, seq: u8, cmd: u16) -> Result<(), CodecError> {
    if !(0x20..=0x7F).contains(&seq) {
        return Err(CodecError::BadSeq);
    }
    if dialect == Dialect::Classic && !(0x20..=0xFF).contains(&cmd) {
        return Err(CodecError::BadCmd);
    }
    Ok(())
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.push(POSTAMBLE);
    let sum = bcc(&out[1..]);
    out.extend_from_slice(&sum);
    out.push(TERMINATOR);
    out
}

/// Encodes a host request frame.
///
/// # Errors
///
/// [`CodecError`] when SEQ or CMD is out of range or the escaped data is too long.
pub fn encode_request(
    dialect: Dialect,
    seq: u8,
    cmd: u16,
    data: &[u8],
) -> Result<Vec<u8>, CodecError> {
    check_head(dialect, seq, cmd)?;
    let mut body = Vec::with_capacity(data.len() + 8);
    escape(data, &mut body);
    if body.len() > dialect.max_request_data() {
        return Err(CodecError::TooLong);
    }
    let mut out = Vec::with_capacity(body.len() + 20);
    out.push(PREAMBLE);
    head(dialect, body.len(), seq, cmd, &mut out);
    out.extend_from_slice(&body);
    Ok(finish(out))
}

/// Encodes a device reply frame (used by the simulator). Bit 7 of every
/// status byte is forced on, as the protocol requires.
///
/// # Errors
///
/// [`CodecError`] when SEQ or CMD is out of range, the status has the wrong
/// length, or the escaped data is too long.
pub fn encode_reply(
    dialect: Dialect,
    seq: u8,
    cmd: u16,
    data: &[u8],
    status: &[u8],
) -> Result<Vec<u8>, CodecError> {
    check_head(dialect, seq, cmd)?;
    if status.len() != dialect.status_len() {
        return Err(CodecError::BadStatus);
    }
    let mut body = Vec::with_capacity(data.len() + 16);
    escape(data, &mut body);
    if body.len() > dialect.max_reply_data() {
        return Err(CodecError::TooLong);
    }
    body.push(SEPARATOR);
    body.extend(status.iter().map(|s| s | 0x80));
    let mut out = Vec::with_capacity(body.len() + 20);
    out.push(PREAMBLE);
    head(dialect, body.len(), seq, cmd, &mut out);
    out.extend_from_slice(&body);
    Ok(finish(out))
}

/// Something the decoder found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, valid frame.
    Frame(Frame),
    /// A NAK byte outside a frame.
    Nak,
    /// A SYN byte outside a frame.
    Syn,
    /// A frame-shaped run of bytes that failed a check; the decoder has
    /// skipped its preamble and resynchronised.
    Bad(CodecError),
}

/// A streaming decoder: feed bytes with [`Decoder::push`], take events with
/// [`Decoder::next_event`]. Its buffer never grows beyond one maximal frame
/// plus the last push, whatever the input.
#[derive(Debug)]
pub struct Decoder {
    dialect: Dialect,
    dir: Direction,
    buf: Vec<u8>,
    /// Bytes skipped because they were outside any frame.
    pub skipped: u64,
}

impl Decoder {
    /// A decoder for frames of `dialect` going in `dir`.
    pub fn new(dialect: Dialect, dir: Direction) -> Self {
        Self {
            dialect,
            dir,
            buf: Vec::new(),
            skipped: 0,
        }
    }

    /// The longest frame this decoder accepts, in bytes.
    pub fn max_frame(&self) -> usize {
        let data = match self.dir {
            Direction::Request => self.dialect.max_request_data(),
            Direction::Reply => self.dialect.max_reply_data() + 1 + self.dialect.status_len(),
        };
        let head = match self.dialect {
            Dialect::Classic => 3,
            Dialect::X => 9,
        };
        1 + head + data + 1 + 4 + 1
    }

    /// Appends bytes from the wire.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Event> {
        // Find the next interesting byte.
        let pos = self
            .buf
            .iter()
            .position(|&b| b == PREAMBLE || b == NAK || b == SYN);
        let Some(pos) = pos else {
            self.skipped += self.buf.len() as u64;
            self.buf.clear();
            return None;
        };
        if pos > 0 {
            self.skipped += pos as u64;
            self.buf.drain(..pos);
        }
        match self.buf[0] {
            NAK => {
                self.buf.drain(..1);
                return Some(Event::Nak);
            }
            SYN => {
                self.buf.drain(..1);
                return Some(Event::Syn);
            }
            _ => {}
        }
        match self.try_frame() {
            Ok(None) => None,
            Ok(Some((frame, used))) => {
                self.buf.drain(..used);
                Some(Event::Frame(frame))
            }
            Err(e) => {
                // Skip this preamble and resynchronise on the next one.
                self.buf.drain(..1);
                Some(Event::Bad(e))
            }
        }
    }

    /// Tries to decode a frame at the start of the buffer (which is `01`).
    /// Ok(None): need more bytes. Ok(Some((frame, bytes used))).
    fn try_frame(&self) -> Result<Option<(Frame, usize)>, CodecError> {
        let b = &self.buf;
        let (len_width, cmd_width) = match self.dialect {
            Dialect::Classic => (1usize, 1usize),
            Dialect::X => (4, 4),
        };
        if b.len() < 1 + len_width {
            return Ok(None);
        }
        let len = match self.dialect {
            Dialect::Classic => usize::from(b[1]),
            Dialect::X => usize::from(from_nibbles(&b[1..5]).ok_or(CodecError::BadLength)?),
        };
        // counted = LEN..=POSTAMBLE
        let counted = len.checked_sub(0x20).ok_or(CodecError::BadLength)?;
        let min = len_width + 1 + cmd_width + 1;
        let min = match self.dir {
            Direction::Request => min,
            Direction::Reply => min + 1 + self.dialect.status_len(),
        };
        let total = 1 + counted + 4 + 1;
        if counted < min || total > self.max_frame() {
            return Err(CodecError::BadLength);
        }
        // The frame must not contain another preamble before its end: if it
        // does, the LEN byte was corrupt. Checking early keeps us from
        // waiting for bytes that belong to the next frame.
        let avail = b.len().min(total);
        if b[1..avail].contains(&PREAMBLE) {
            return Err(CodecError::BadStructure);
        }
        if b.len() < total {
            return Ok(None);
        }
        let post = counted; // index of 05
        if b[post] != POSTAMBLE || b[total - 1] != TERMINATOR {
            return Err(CodecError::BadStructure);
        }
        if bcc(&b[1..=post]) != b[post + 1..post + 5] {
            return Err(CodecError::BadChecksum);
        }
        let seq = b[1 + len_width];
        if !(0x20..=0x7F).contains(&seq) {
            return Err(CodecError::BadSeq);
        }
        let cmd_at = 2 + len_width;
        let cmd = match self.dialect {
            Dialect::Classic => u16::from(b[cmd_at]),
            Dialect::X => from_nibbles(&b[cmd_at..cmd_at + 4]).ok_or(CodecError::BadCmd)?,
        };
        let data_at = cmd_at + cmd_width;
        let (data, status) = match self.dir {
            Direction::Request => (&b[data_at..post], &b[post..post]),
            Direction::Reply => {
                let sl = self.dialect.status_len();
                let sep = post - sl - 1;
                if b[sep] != SEPARATOR {
                    return Err(CodecError::BadStructure);
                }
                let status = &b[sep + 1..post];
                if status.iter().any(|s| s & 0x80 == 0) {
                    return Err(CodecError::BadStatus);
                }
                (&b[data_at..sep], status)
            }
        };
        let data = unescape(data)?;
        Ok(Some((
            Frame {
                seq,
                cmd,
                data,
                status: status.to_vec(),
            },
            total,
        )))
    }
}

/// Decodes exactly one complete frame from `bytes` (test and tooling helper).
///
/// # Errors
///
/// The first [`CodecError`] met, or [`CodecError::BadStructure`] when the
/// bytes hold no complete frame.
pub fn decode_one(dialect: Dialect, dir: Direction, bytes: &[u8]) -> Result<Frame, CodecError> {
    let mut d = Decoder::new(dialect, dir);
    d.push(bytes);
    match d.next_event() {
        Some(Event::Frame(f)) => Ok(f),
        Some(Event::Bad(e)) => Err(e),
        _ => Err(CodecError::BadStructure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bcc_worked_example_from_the_vendor_document() {
        // DT-P, "Low-level protocol": a sum of 0x1AE3 is sent as 31 3A 3E 33.
        assert_eq!(nibbles(0x1AE3), [0x31, 0x3A, 0x3E, 0x33]);
        // A byte run summing to 0x1AE3.
        let mut v = vec![0xFFu8; 0x1AE3 / 0xFF];
        v.push((0x1AE3 % 0xFF) as u8);
        assert_eq!(bcc(&v), [0x31, 0x3A, 0x3E, 0x33]);
    }

    #[test]
    fn classic_status_request_layout() {
        // Command 4Ah (status), no data, SEQ 0x20:
        // LEN = 0x20 + LEN + SEQ + CMD + 05 = 0x24.
        let f = encode_request(Dialect::Classic, 0x20, 0x4A, b"").unwrap();
        let sum = 0x24u16 + 0x20 + 0x4A + 0x05;
        let mut expect = vec![0x01, 0x24, 0x20, 0x4A, 0x05];
        expect.extend_from_slice(&nibbles(sum));
        expect.push(0x03);
        assert_eq!(f, expect);
        assert_eq!(
            f,
            [0x01, 0x24, 0x20, 0x4A, 0x05, 0x30, 0x30, 0x39, 0x33, 0x03]
        );
    }

    #[test]
    fn x_request_layout() {
        // DT-X: LEN = 0x20 + 10 + len(DATA), as four nibble bytes; CMD as four nibble bytes.
        let f = encode_request(Dialect::X, 0x21, 0x4A, b"").unwrap();
        assert_eq!(
            &f[..10],
            &[0x01, 0x30, 0x30, 0x32, 0x3A, 0x21, 0x30, 0x30, 0x34, 0x3A]
        );
        assert_eq!(f[10], POSTAMBLE);
        assert_eq!(*f.last().unwrap(), TERMINATOR);
        let g = encode_request(Dialect::X, 0x21, 0x30, b"1\t0000\t1\t").unwrap();
        // 0x20 + 10 + 9 = 0x33
        assert_eq!(&g[1..5], &[0x30, 0x30, 0x33, 0x33]);
    }

    #[test]
    fn classic_reply_layout() {
        let f = encode_reply(Dialect::Classic, 0x25, 0x71, b"123", &[0x80; 6]).unwrap();
        // LEN = 0x20 + 3 (LEN,SEQ,CMD) + 3 data + 1 sep + 6 status + 1 postamble.
        assert_eq!(f[1], 0x20 + 14);
        assert_eq!(f[7], SEPARATOR);
        let d = decode_one(Dialect::Classic, Direction::Reply, &f).unwrap();
        assert_eq!(d.data, b"123");
        assert_eq!(d.status, vec![0x80; 6]);
    }

    #[test]
    fn classic_len_always_fits_one_byte() {
        let d = Dialect::Classic;
        let f = encode_reply(d, 0x20, 0x31, &[b'x'; 212], &[0x80; 6]).unwrap();
        assert_eq!(f[1], 0xFF);
        assert_eq!(decode_one(d, Direction::Reply, &f).unwrap().data.len(), 212);
        assert_eq!(
            encode_reply(d, 0x20, 0x31, &[b'x'; 213], &[0x80; 6]),
            Err(CodecError::TooLong)
        );
        let f = encode_request(d, 0x20, 0x31, &[b'x'; 213]).unwrap();
        assert!(f[1] < 0xFF);
    }

    #[test]
    fn escaping_and_corruption() {
        let f = encode_request(Dialect::Classic, 0x30, 0x31, &[0x01, 0x05, b'a', b'\t']).unwrap();
        assert!(!f[1..f.len() - 1].contains(&PREAMBLE));
        let d = decode_one(Dialect::Classic, Direction::Request, &f).unwrap();
        assert_eq!(d.data, vec![0x01, 0x05, b'a', b'\t']);
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 2] ^= 0x01;
        assert_eq!(
            decode_one(Dialect::Classic, Direction::Request, &bad),
            Err(CodecError::BadChecksum)
        );
        assert_eq!(
            encode_request(Dialect::Classic, 0x10, 0x31, b""),
            Err(CodecError::BadSeq)
        );
        assert_eq!(
            encode_request(Dialect::Classic, 0x20, 0x31, &[b'x'; 214]),
            Err(CodecError::TooLong)
        );
    }

    #[test]
    fn stream_with_syn_nak_noise_and_split_reads() {
        let a = encode_reply(Dialect::X, 0x22, 0x31, b"0\t", &[0x80; 8]).unwrap();
        let b = encode_reply(Dialect::X, 0x23, 0x35, b"0\tD\t1.00\t", &[0x80; 8]).unwrap();
        let mut stream = vec![SYN, SYN, 0xFF, 0x7E];
        stream.extend_from_slice(&a);
        stream.push(NAK);
        stream.extend_from_slice(&b);
        let mut d = Decoder::new(Dialect::X, Direction::Reply);
        let mut events = Vec::new();
        for chunk in stream.chunks(3) {
            d.push(chunk);
            while let Some(e) = d.next_event() {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 5);
        assert_eq!(events[0], Event::Syn);
        assert!(matches!(&events[2], Event::Frame(f) if f.seq == 0x22 && f.cmd == 0x31));
        assert_eq!(events[3], Event::Nak);
        assert!(matches!(&events[4], Event::Frame(f) if f.data == b"0\tD\t1.00\t"));
        assert_eq!(d.skipped, 2);
    }

    fn dialect() -> impl Strategy<Value = Dialect> {
        prop_oneof![Just(Dialect::Classic), Just(Dialect::X)]
    }

    proptest! {
        #[test]
        fn request_round_trip(dialect in dialect(), seq in 0x20u8..=0x7F, cmd in 0x20u16..=0xFF,
                              data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let f = encode_request(dialect, seq, cmd, &data).unwrap();
            let d = decode_one(dialect, Direction::Request, &f).unwrap();
            prop_assert_eq!(d, Frame { seq, cmd, data, status: vec![] });
        }

        #[test]
        fn reply_round_trip(dialect in dialect(), seq in 0x20u8..=0x7F, cmd in 0x20u16..=0xFF,
                            data in proptest::collection::vec(any::<u8>(), 0..100),
                            status in proptest::collection::vec(0x80u8..=0xFF, 8)) {
            let status = &status[..dialect.status_len()];
            let f = encode_reply(dialect, seq, cmd, &data, status).unwrap();
            let d = decode_one(dialect, Direction::Reply, &f).unwrap();
            prop_assert_eq!(d, Frame { seq, cmd, data, status: status.to_vec() });
        }

        #[test]
        fn single_bit_flip_never_yields_a_different_valid_frame(
            dialect in dialect(), data in proptest::collection::vec(0x20u8..0x7F, 0..40),
            at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let f = encode_request(dialect, 0x33, 0x31, &data).unwrap();
            let mut g = f.clone();
            let i = at.index(g.len());
            g[i] ^= 1 << bit;
            let mut d = Decoder::new(dialect, Direction::Request);
            d.push(&g);
            while let Some(e) = d.next_event() {
                if let Event::Frame(fr) = e {
                    prop_assert_eq!(fr, Frame { seq: 0x33, cmd: 0x31, data: data.clone(), status: vec![] });
                }
            }
        }

        #[test]
        fn decoder_survives_random_bytes(dialect in dialect(), reply in any::<bool>(),
                                         chunks in proptest::collection::vec(
                                             proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let dir = if reply { Direction::Reply } else { Direction::Request };
            let mut d = Decoder::new(dialect, dir);
            let max = d.max_frame();
            for c in &chunks {
                d.push(c);
                while d.next_event().is_some() {}
                prop_assert!(d.buffered() <= max, "buffer {} > {}", d.buffered(), max);
            }
        }
    }
}
