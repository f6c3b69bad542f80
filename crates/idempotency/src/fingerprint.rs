//! Request fingerprints: SHA-256 over method, route, target and canonical JSON.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{BuildError, Error};

/// A SHA-256 digest identifying a request's content.
///
/// The same key with a different fingerprint is a [`Mismatch`](crate::Begin::Mismatch),
/// never a replay.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Wraps a raw digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of arbitrary bytes, for jobs and messages that have no HTTP shape.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        field(&mut h, b"counterfoil-idempotency/bytes/v1");
        field(&mut h, bytes);
        Self(h.finalize().into())
    }

    /// SHA-256 of the canonical form (sorted keys) of a JSON value.
    pub fn of_json(value: &Value) -> Self {
        let mut h = Sha256::new();
        field(&mut h, b"counterfoil-idempotency/json/v1");
        let mut buf = Vec::with_capacity(128);
        canonical_json(value, &mut buf);
        field(&mut h, &buf);
        Self(h.finalize().into())
    }

    /// Reads a stored digest.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] unless `b` is 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Result<Self, Error> {
        <[u8; 32]>::try_from(b)
            .map(Self)
            .map_err(|_| Error::Corrupt(format!("fingerprint of {} bytes", b.len())))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(self.0))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Length-prefixed field, so that no two field lists hash the same.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// Writes `v` as JSON with object keys sorted by their UTF-8 bytes, whatever
/// the map type `serde_json` was built with.
pub(crate) fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if serde_json::to_writer(&mut *out, n).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                canonical_json(x, out);
            }
            out.push(b'}');
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is canonical (shortest escapes); writing
    // to a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Computes request fingerprints with optional JSON pointer selection.
///
/// With no `include` pointers the whole body counts; with some, only the
/// values at those pointers (a missing value counts as absent, which differs
/// from `null`). `exclude` pointers are removed first (e.g. a client-side
/// timestamp or trace id).
///
/// # Examples
///
/// ```
/// use counterfoil_idempotency::Fingerprinter;
///
/// let fp = Fingerprinter::builder().exclude("/sent_at").build()?;
/// let a = fp.request("POST", "/v1/payments", "/v1/payments", br#"{"amount":1250,"currency":"EUR","sent_at":1}"#)?;
/// let b = fp.request("POST", "/v1/payments", "/v1/payments", br#"{"currency":"EUR","sent_at":2,"amount":1250}"#)?;
/// assert_eq!(a, b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fingerprinter {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// Builds a [`Fingerprinter`].
#[derive(Debug, Clone, Default)]
pub struct FingerprinterBuilder {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl FingerprinterBuilder {
    /// Counts only the value at this RFC 6901 pointer (repeatable). Default: whole body.
    pub fn include(mut self, pointer: impl Into<String>) -> Self {
        self.include.push(pointer.into());
        self
    }

    /// Ignores the value at this RFC 6901 pointer (repeatable). Default: none.
    pub fn exclude(mut self, pointer: impl Into<String>) -> Self {
        self.exclude.push(pointer.into());
        self
    }

    /// The fingerprinter.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidPointer`] for a pointer not starting with `/`.
    pub fn build(self) -> Result<Fingerprinter, BuildError> {
        for p in self.include.iter().chain(&self.exclude) {
            if !p.starts_with('/') {
                return Err(BuildError::InvalidPointer(p.clone()));
            }
        }
        Ok(Fingerprinter {
            include: self.include,
            exclude: self.exclude,
        })
    }
}

fn remove_pointer(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

impl Fingerprinter {
    /// A builder.
    pub fn builder() -> FingerprinterBuilder {
        FingerprinterBuilder::default()
    }

    /// The canonical bytes of a JSON value after applying the pointers.
    pub fn canonical(&self, mut value: Value) -> Vec<u8> {
        for p in &self.exclude {
            remove_pointer(&mut value, p);
        }
        let mut out = Vec::with_capacity(128);
        if self.include.is_empty() {
            canonical_json(&value, &mut out);
        } else {
            out.push(b'[');
            for (i, p) in self.include.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match value.pointer(p) {
                    Some(x) => canonical_json(x, &mut out),
                    // Not valid JSON, so it never equals a present value.
                    None => out.push(b'_'),
                }
            }
            out.push(b']');
        }
        out
    }

    /// The fingerprint of a request with a JSON body (an empty body counts as no body).
    ///
    /// `route` is the route template (`/v1/payments/{id}/refunds`), `target`
    /// the concrete path and query, so that the same key on two resources
    /// never replays one for the other.
    ///
    /// # Errors
    ///
    /// [`Error::MalformedBody`] when the body is not JSON.
    pub fn request(
        &self,
        method: &str,
        route: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Fingerprint, Error> {
        let canonical = if body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            let mut out = Vec::with_capacity(body.len());
            if self.include.is_empty()
                && self.exclude.is_empty()
                && crate::fast_json::canonical(body, &mut out).is_some()
            {
                out
            } else {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| Error::MalformedBody(e.to_string()))?;
                self.canonical(value)
            }
        };
        Ok(self.digest(method, route, target, b"json", &canonical))
    }

    /// The fingerprint of a request whose body is not JSON: hashed as raw bytes.
    pub fn request_raw(&self, method: &str, route: &str, target: &str, body: &[u8]) -> Fingerprint {
        self.digest(method, route, target, b"raw", body)
    }

    fn digest(
        &self,
        method: &str,
        route: &str,
        target: &str,
        kind: &[u8],
        body: &[u8],
    ) -> Fingerprint {
        let mut h = Sha256::new();
        field(&mut h, b"counterfoil-idempotency/request/v1");
        field(&mut h, method.as_bytes());
        field(&mut h, route.as_bytes());
        field(&mut h, target.as_bytes());
        field(&mut h, kind);
        field(&mut h, body);
        Fingerprint(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fp() -> Fingerprinter {
        Fingerprinter::default()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = fp().request("POST", "/r", "/r", br#"{"a":1,"b":{"y":2,"x":[1,2]}}"#);
        let b = fp().request(
            "POST",
            "/r",
            "/r",
            b"{ \"b\": {\"x\": [1, 2], \"y\": 2}, \"a\": 1 }",
        );
        assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn method_route_target_and_values_matter() {
        let body = br#"{"amount":100}"#;
        let base = fp().request("POST", "/r/{id}", "/r/1", body).ok();
        assert_ne!(base, fp().request("PUT", "/r/{id}", "/r/1", body).ok());
        assert_ne!(base, fp().request("POST", "/s/{id}", "/r/1", body).ok());
        assert_ne!(base, fp().request("POST", "/r/{id}", "/r/2", body).ok());
        assert_ne!(
            base,
            fp().request("POST", "/r/{id}", "/r/1", br#"{"amount":101}"#)
                .ok()
        );
        assert_ne!(
            base,
            fp().request("POST", "/r/{id}", "/r/1", br#"[{"amount":100}]"#)
                .ok()
        );
        assert_ne!(
            fp().request_raw("POST", "/r", "/r", b"{}"),
            fp().request("POST", "/r", "/r", b"{}")
                .unwrap_or(Fingerprint([0; 32]))
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(matches!(
            fp().request("POST", "/r", "/r", b"{\"a\":"),
            Err(Error::MalformedBody(_))
        ));
        assert!(fp().request("POST", "/r", "/r", b"  ").is_ok());
    }

    #[test]
    fn include_and_exclude_pointers() {
        let f = Fingerprinter::builder()
            .include("/amount")
            .include("/currency")
            .build()
            .expect("valid");
        let a = f.canonical(json!({"amount": 5, "currency": "EUR", "note": "x"}));
        let b = f.canonical(json!({"currency": "EUR", "amount": 5, "note": "y"}));
        assert_eq!(a, b);
        let missing = f.canonical(json!({"amount": 5}));
        let null = f.canonical(json!({"amount": 5, "currency": null}));
        assert_ne!(missing, null);

        let f = Fingerprinter::builder()
            .exclude("/meta/trace")
            .exclude("/items/0")
            .exclude("/a~1b")
            .build()
            .expect("valid");
        assert_eq!(
            f.canonical(json!({"meta": {"trace": 1, "k": 2}, "items": [9, 8], "a/b": 1})),
            f.canonical(json!({"meta": {"trace": 7, "k": 2}, "items": [3, 8]}))
        );
        assert!(matches!(
            Fingerprinter::builder().include("amount").build(),
            Err(BuildError::InvalidPointer(_))
        ));
    }

    #[test]
    fn canonical_form_is_plain_sorted_json() {
        let mut out = Vec::new();
        canonical_json(&json!({"b": "é\"", "a": [true, null, 1.5]}), &mut out);
        assert_eq!(
            String::from_utf8(out).ok().as_deref(),
            Some(r#"{"a":[true,null,1.5],"b":"é\""}"#)
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\"\\\\é]{0,5}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{0,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_json_parses_back_to_the_same_value(v in arb_json()) {
            let mut out = Vec::new();
            canonical_json(&v, &mut out);
            let back: Value = serde_json::from_slice(&out).expect("valid json");
            prop_assert_eq!(&back, &v);
            // Re-serializing a reparsed value gives the same bytes.
            let mut again = Vec::new();
            canonical_json(&back, &mut again);
            prop_assert_eq!(out, again);
        }
    }
}
