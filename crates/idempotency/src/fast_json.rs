//! The canonical JSON form without building a `serde_json::Value`, for the
//! bodies most requests carry: integers, strings without escapes, `true`,
//! `false`, `null`, arrays and objects with distinct keys.
//!
//! Anything else (floats, exponents, escapes, control characters, duplicate
//! keys, deep nesting, invalid JSON) makes [`canonical`] answer `None`, and
//! the caller takes the general path through `serde_json::Value`. Where it
//! answers, the bytes are exactly those of the general path.

/// Deeper documents take the general path (which has its own limit).
const MAX_DEPTH: usize = 64;
/// Longest integer taken here: 18 digits always fit in an `i64`.
const MAX_DIGITS: usize = 18;

/// An object member already written to the output: `"key":value` at
/// `start..end` of the output, the key's content from the input.
struct Member<'a> {
    key: &'a [u8],
    start: usize,
    end: usize,
}

struct Parser<'a, 'o> {
    b: &'a [u8],
    at: usize,
    out: &'o mut Vec<u8>,
    members: Vec<Member<'a>>,
}

/// Writes the canonical form of `body` (sorted keys, no whitespace) to
/// `out`, or returns `None` (with `out` in an unspecified state) when the
/// general path is needed.
pub(crate) fn canonical(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    // Strings may hold any UTF-8; checking the whole body once is cheaper
    // than per string, and non-ASCII outside strings is invalid anyway.
    std::str::from_utf8(body).ok()?;
    let mut p = Parser {
        b: body,
        at: 0,
        out,
        members: Vec::new(),
    };
    p.value(0)?;
    p.ws();
    (p.at == p.b.len()).then_some(())
}

impl<'a> Parser<'a, '_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let s = self.string()?;
                self.out.push(b'"');
                self.out.extend_from_slice(s);
                self.out.push(b'"');
                Some(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        if self.b.get(self.at..end)? != word {
            return None;
        }
        self.at = end;
        self.out.extend_from_slice(word);
        Some(())
    }

    /// An integer as `serde_json` writes it back: no sign on zero, no
    /// leading zeros, no fraction or exponent, at most 18 digits.
    fn integer(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let n = self.at - digits;
        let first = self.b.get(digits).copied();
        if n == 0 || n > MAX_DIGITS || (first == Some(b'0') && (n > 1 || digits > start)) {
            // Empty, too long, leading zero, or `-0` (written back as `0`).
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        self.out.extend_from_slice(&self.b[start..self.at]);
        Some(())
    }

    /// The content of a string without escapes or control characters; the
    /// cursor is on its opening quote.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.at + 1;
        let len = self.b.get(start..)?.iter().position(|&c| c == b'"')?;
        let s = &self.b[start..start + len];
        if s.iter().any(|&c| c == b'\\' || c < 0x20) {
            return None;
        }
        self.at = start + len + 1;
        Some(s)
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.out.push(b'[');
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            self.out.push(b']');
            return Some(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.out.push(b',');
                }
                b']' => {
                    self.at += 1;
                    self.out.push(b']');
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.out.push(b'{');
        let body = self.out.len();
        let base = self.members.len();
        let mut sorted = true;
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            self.out.push(b'}');
            return Some(());
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            if self.members.len() > base {
                match self.members[self.members.len() - 1].key.cmp(key) {
                    std::cmp::Ordering::Less => {}
                    // A repeated key: the general path keeps the last value.
                    std::cmp::Ordering::Equal => return None,
                    std::cmp::Ordering::Greater => sorted = false,
                }
                self.out.push(b',');
            }
            let start = self.out.len();
            self.out.push(b'"');
            self.out.extend_from_slice(key);
            self.out.extend_from_slice(b"\":");
            self.value(depth)?;
            let end = self.out.len();
            self.members.push(Member { key, start, end });
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        if !sorted {
            let members = &mut self.members[base..];
            members.sort_unstable_by(|a, b| a.key.cmp(b.key));
            if members.windows(2).any(|w| w[0].key == w[1].key) {
                return None;
            }
            let written = self.out[body..].to_vec();
            self.out.truncate(body);
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out
                    .extend_from_slice(&written[m.start - body..m.end - body]);
            }
        }
        self.members.truncate(base);
        self.out.push(b'}');
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::canonical_json;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The general path's answer.
    fn general(body: &[u8]) -> Option<Vec<u8>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let mut out = Vec::new();
        canonical_json(&v, &mut out);
        Some(out)
    }

    fn fast(body: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        canonical(body, &mut out).map(|()| out)
    }

    /// Writes `v` with keys in reverse order and optional whitespace.
    fn emit(v: &Value, spaced: bool, out: &mut String) {
        let sp = if spaced { " \n\t" } else { "" };
        match v {
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(sp);
                    emit(x, spaced, out);
                }
                out.push_str(sp);
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().rev().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(sp);
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push_str(sp);
                    out.push(':');
                    out.push_str(sp);
                    emit(x, spaced, out);
                }
                out.push_str(sp);
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1000i64..1000).prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-z\"\\\\é\u{1}/ ~!]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c !é]{0,3}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn common_bodies_take_this_path() {
        for (body, want) in [
            (
                &br#"{"amount":1250,"currency":"EUR","table":7}"#[..],
                &br#"{"amount":1250,"currency":"EUR","table":7}"#[..],
            ),
            (
                br#" { "table" : 7, "currency":"EUR" , "amount": -1250, "items":[{"b":null,"a":true},[],{}] } "#,
                br#"{"amount":-1250,"currency":"EUR","items":[{"a":true,"b":null},[],{}],"table":7}"#,
            ),
            (br#""x""#, br#""x""#),
            (b"0", b"0"),
            (br#"{"a!":1,"a":2}"#, br#"{"a":2,"a!":1}"#),
        ] {
            assert_eq!(fast(body).as_deref(), Some(want));
            assert_eq!(general(body).as_deref(), Some(want));
        }
    }

    #[test]
    fn the_rest_takes_the_general_path() {
        for body in [
            &b"1.5"[..],
            b"1e3",
            b"-0",
            b"01",
            b"1234567890123456789",
            br#""a\"b""#,
            br#""a\u0041""#,
            br#"{"a":1,"a":2}"#,
            br#"{"b":1,"a":2,"b":3}"#,
            br#"{"a":1,}"#,
            b"[1,]",
            b"[1] x",
            b"tru",
            b"\"\x01\"",
            b"\"\xff\"",
        ] {
            assert_eq!(fast(body), None, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(fast(deep.as_bytes()), None);
    }

    proptest! {
        #[test]
        fn same_bytes_as_the_general_path(v in arb_json(), spaced in any::<bool>()) {
            let mut body = String::new();
            emit(&v, spaced, &mut body);
            let want = general(body.as_bytes());
            prop_assert!(want.is_some());
            if let Some(got) = fast(body.as_bytes()) {
                prop_assert_eq!(Some(got), want);
            }
        }

        #[test]
        fn never_accepts_what_the_general_path_rejects(body in "[\\[\\]{}\",: 0-9a-z.eE\\\\-]{0,24}") {
            if let Some(got) = fast(body.as_bytes()) {
                prop_assert_eq!(Some(got), general(body.as_bytes()));
            }
        }
    }
}
