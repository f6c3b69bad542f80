//! Scoped idempotency keys and their validation.

use std::fmt;

/// The longest client key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// The longest tenant, principal or operation accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 255;

/// Why a key or scope was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The client key is empty.
    #[error("idempotency key is empty")]
    Empty,
    /// The client key is longer than allowed.
    #[error("idempotency key is {len} characters long, at most {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The client key is shorter than the configured minimum.
    #[error("idempotency key is {len} characters long, at least {min} required")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The client key holds a character outside printable ASCII.
    #[error("idempotency key holds a non-printable character at byte {at}")]
    BadChar {
        /// Byte offset of the first bad character.
        at: usize,
    },
    /// The client key starts or ends with a space.
    #[error("idempotency key starts or ends with a space")]
    Padded,
    /// The `Idempotency-Key` header is not a valid structured-field string.
    #[error("idempotency key header is not a valid string")]
    Syntax,
    /// A tenant, principal or operation is too long or holds a control character.
    #[error("invalid {0} in idempotency scope")]
    Scope(&'static str),
}

/// Who a key belongs to and what it is for: keys from different scopes never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    tenant: String,
    principal: String,
    operation: String,
}

fn check_scope_part(s: &str, what: &'static str, allow_empty: bool) -> Result<(), KeyError> {
    if (!allow_empty && s.is_empty()) || s.len() > MAX_SCOPE_LEN || s.chars().any(char::is_control)
    {
        return Err(KeyError::Scope(what));
    }
    Ok(())
}

impl Scope {
    /// A scope for `operation` by `principal` within `tenant`.
    ///
    /// Tenant and principal may be empty (no tenancy, anonymous); the
    /// operation may not. Each is at most [`MAX_SCOPE_LEN`] bytes without
    /// control characters.
    ///
    /// # Errors
    ///
    /// [`KeyError::Scope`] when a part is invalid.
    pub fn new(
        tenant: impl Into<String>,
        principal: impl Into<String>,
        operation: impl Into<String>,
    ) -> Result<Self, KeyError> {
        let (tenant, principal, operation) = (tenant.into(), principal.into(), operation.into());
        check_scope_part(&tenant, "tenant", true)?;
        check_scope_part(&principal, "principal", true)?;
        check_scope_part(&operation, "operation", false)?;
        Ok(Self {
            tenant,
            principal,
            operation,
        })
    }

    /// The tenant, e.g. a restaurant id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The principal, e.g. an API key id or a user id.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The operation, e.g. `create_payment`.
    pub fn operation(&self) -> &str {
        &self.operation
    }
}

/// A client's idempotency key within its [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey {
    scope: Scope,
    key: String,
}

/// Checks a client key: 1 to [`MAX_KEY_LEN`] printable ASCII characters
/// (space allowed inside), at least `min_len` long.
///
/// # Errors
///
/// The [`KeyError`] naming the first problem found.
pub fn validate_client_key(key: &str, min_len: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if let Some(at) = key.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(KeyError::BadChar { at });
    }
    if key.starts_with(' ') || key.ends_with(' ') {
        return Err(KeyError::Padded);
    }
    if key.len() < min_len {
        return Err(KeyError::TooShort {
            len: key.len(),
            min: min_len,
        });
    }
    Ok(())
}

impl IdempotencyKey {
    /// A validated key.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] when `key` is not 1 to 255 printable ASCII characters.
    ///
    /// # Examples
    ///
    /// ```
    /// use counterfoil_idempotency::{IdempotencyKey, Scope};
    ///
    /// let scope = Scope::new("restaurant-7", "api-key-3", "create_payment")?;
    /// let key = IdempotencyKey::new(scope, "8e03978e-40d5-43e8-bc93-6894a57f9324")?;
    /// assert_eq!(key.key(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
    /// assert!(IdempotencyKey::new(key.scope().clone(), "").is_err());
    /// # Ok::<(), counterfoil_idempotency::KeyError>(())
    /// ```
    pub fn new(scope: Scope, key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        validate_client_key(&key, 1)?;
        Ok(Self { scope, key })
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// An unambiguous single-string form (length-prefixed parts), used as the
    /// Redis key and in logs.
    pub fn storage_key(&self) -> String {
        let s = &self.scope;
        format!(
            "{}:{}{}:{}{}:{}{}:{}",
            s.tenant.len(),
            s.tenant,
            s.principal.len(),
            s.principal,
            s.operation.len(),
            s.operation,
            self.key.len(),
            self.key
        )
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.storage_key())
    }
}

/// Parses an `Idempotency-Key` header value: an RFC 8941 string
/// (`"..."`, with `\"` and `\\` escapes) as the IETF draft specifies, or,
/// for clients following Stripe, the bare key.
///
/// # Errors
///
/// [`KeyError::Syntax`] for a broken quoted string, otherwise the errors of
/// [`validate_client_key`].
pub fn parse_header_value(raw: &[u8], min_len: usize) -> Result<String, KeyError> {
    let key = if raw.first() == Some(&b'"') {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 1;
        let mut closed = false;
        while i < raw.len() {
            match raw[i] {
                b'\\' => {
                    let next = *raw.get(i + 1).ok_or(KeyError::Syntax)?;
                    if next != b'"' && next != b'\\' {
                        return Err(KeyError::Syntax);
                    }
                    out.push(next);
                    i += 2;
                }
                b'"' => {
                    closed = true;
                    i += 1;
                    break;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if !closed || i != raw.len() {
            return Err(KeyError::Syntax);
        }
        out
    } else {
        raw.to_vec()
    };
    let key = match String::from_utf8(key) {
        Ok(k) => k,
        Err(e) => {
            return Err(KeyError::BadChar {
                at: e.utf8_error().valid_up_to(),
            });
        }
    };
    validate_client_key(&key, min_len)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope() -> Scope {
        Scope::new("t", "p", "op").expect("valid")
    }

    #[test]
    fn validation() {
        assert_eq!(IdempotencyKey::new(scope(), ""), Err(KeyError::Empty));
        assert!(matches!(
            IdempotencyKey::new(scope(), "x".repeat(256)),
            Err(KeyError::TooLong { len: 256, .. })
        ));
        assert!(IdempotencyKey::new(scope(), "x".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::new(scope(), "ab\ncd"),
            Err(KeyError::BadChar { at: 2 })
        );
        assert_eq!(
            IdempotencyKey::new(scope(), "ключ"),
            Err(KeyError::BadChar { at: 0 })
        );
        assert_eq!(IdempotencyKey::new(scope(), " a"), Err(KeyError::Padded));
        assert!(IdempotencyKey::new(scope(), "a b").is_ok());
        assert_eq!(
            validate_client_key("abc", 16),
            Err(KeyError::TooShort { len: 3, min: 16 })
        );
        assert!(Scope::new("t", "p", "").is_err());
        assert!(Scope::new("t\u{0}", "p", "op").is_err());
        assert!(Scope::new("", "", "op").is_ok());
    }

    #[test]
    fn header_parsing() {
        assert_eq!(parse_header_value(b"\"abc\"", 1).as_deref(), Ok("abc"));
        assert_eq!(parse_header_value(b"abc", 1).as_deref(), Ok("abc"));
        assert_eq!(
            parse_header_value(br#""a\"b\\c""#, 1).as_deref(),
            Ok(r#"a"b\c"#)
        );
        assert_eq!(parse_header_value(b"\"abc", 1), Err(KeyError::Syntax));
        assert_eq!(parse_header_value(b"\"a\"b", 1), Err(KeyError::Syntax));
        assert_eq!(parse_header_value(b"\"a\\nb\"", 1), Err(KeyError::Syntax));
        assert_eq!(parse_header_value(b"\"\"", 1), Err(KeyError::Empty));
        assert!(matches!(
            parse_header_value(&[0x61, 0xff], 1),
            Err(KeyError::BadChar { at: 1 })
        ));
    }

    proptest! {
        #[test]
        fn storage_keys_are_injective(
            a in proptest::collection::vec("[a-z:0-9]{0,6}", 4),
            b in proptest::collection::vec("[a-z:0-9]{0,6}", 4),
        ) {
            let mk = |v: &Vec<String>| -> Option<IdempotencyKey> {
                let s = Scope::new(v[0].clone(), v[1].clone(), v[2].clone()).ok()?;
                IdempotencyKey::new(s, v[3].clone()).ok()
            };
            if let (Some(ka), Some(kb)) = (mk(&a), mk(&b)) {
                prop_assert_eq!(ka == kb, ka.storage_key() == kb.storage_key());
            }
        }

        #[test]
        fn quoted_keys_round_trip(k in "[ -~]{1,60}") {
            prop_assume!(!k.starts_with(' ') && !k.ends_with(' '));
            let quoted = format!("\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""));
            prop_assert_eq!(parse_header_value(quoted.as_bytes(), 1), Ok(k));
        }
    }
}
