//! Stored responses and their compact binary encoding.

use bytes::Bytes;

use crate::error::Error;

/// A response kept for replay: status, allow-listed headers and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredResponse {
    /// The status code (`200` for non-HTTP results).
    pub status: u16,
    /// Headers kept for replay, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Bytes,
}

const MAGIC: u8 = b'C';
const VERSION: u8 = 1;

impl StoredResponse {
    /// A response with a status and body and no headers.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON response: `content-type: application/json` and the serialized value.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedBody`] when `value` cannot be serialized.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::MalformedBody(e.to_string()))?;
        Ok(Self {
            status,
            headers: vec![("content-type".to_owned(), b"application/json".to_vec())],
            body: body.into(),
        })
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Encodes to bytes: magic, version, status, headers (length-prefixed), body.
    pub fn encode(&self) -> Vec<u8> {
        let hlen: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(6 + hlen + self.body.len());
        out.push(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.status.to_be_bytes());
        let n = u16::try_from(self.headers.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for (name, value) in self.headers.iter().take(usize::from(n)) {
            let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            let value = &value[..value.len().min(u32::MAX as usize)];
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes bytes made by [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the bytes are truncated or of another format.
    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("stored response: {what}"));
        let mut r = Reader { b, at: 0 };
        if r.take(2).ok_or_else(|| corrupt("too short"))? != [MAGIC, VERSION] {
            return Err(corrupt("unknown format"));
        }
        let status = r.u16().ok_or_else(|| corrupt("no status"))?;
        let n = r.u16().ok_or_else(|| corrupt("no header count"))?;
        let mut headers = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let nl = r.u16().ok_or_else(|| corrupt("truncated header"))?;
            let name = r
                .take(usize::from(nl))
                .ok_or_else(|| corrupt("truncated header"))?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("header name"))?;
            let vl = r.u32().ok_or_else(|| corrupt("truncated header"))?;
            let value = r
                .take(vl as usize)
                .ok_or_else(|| corrupt("truncated header"))?;
            headers.push((name, value.to_vec()));
        }
        let body = Bytes::copy_from_slice(&b[r.at..]);
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(status in any::<u16>(),
                      headers in proptest::collection::vec(("[a-z-]{0,12}", proptest::collection::vec(any::<u8>(), 0..20)), 0..5),
                      body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = StoredResponse { status, headers, body: body.into() };
            prop_assert_eq!(StoredResponse::decode(&r.encode()).ok(), Some(r));
        }

        #[test]
        fn decoding_garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = StoredResponse::decode(&b);
        }
    }

    #[test]
    fn truncated_is_corrupt() {
        let r = StoredResponse::new(201, "x").with_header("Content-Type", "text/plain");
        assert_eq!(r.header("content-type"), Some(&b"text/plain"[..]));
        let e = r.encode();
        assert!(matches!(
            StoredResponse::decode(&e[..10]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            StoredResponse::decode(b"xx"),
            Err(Error::Corrupt(_))
        ));
    }
}
