//! Run with `cargo +nightly fuzz run frame_decoder` from `crates/fiscal`.
//!
//! Feeds arbitrary bytes, in arbitrary chunks, to the ISL frame decoder of
//! both dialects and both directions: it must never panic and its buffer
//! must never grow beyond one maximal frame.
#![no_main]

use counterfoil_fiscal::isl::Dialect;
use counterfoil_fiscal::isl::codec::{Decoder, Direction, Event, decode_one, encode_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    for dialect in [Dialect::Classic, Dialect::X] {
        for dir in [Direction::Request, Direction::Reply] {
            let mut d = Decoder::new(dialect, dir);
            let max = d.max_frame();
            for chunk in bytes.chunks(split) {
                d.push(chunk);
                while let Some(ev) = d.next_event() {
                    if let (Event::Frame(f), Direction::Reply) = (&ev, dir) {
                        // Whatever decodes must encode back to a frame that decodes the same.
                        if let Ok(again) = encode_reply(dialect, f.seq, f.cmd, &f.data, &f.status) {
                            assert_eq!(decode_one(dialect, dir, &again).ok().as_ref(), Some(f));
                        }
                    }
                }
                assert!(d.buffered() <= max);
            }
            let _ = decode_one(dialect, dir, bytes);
        }
    }
});
