//! API keys, stored as SHA-256 hashes. A key is `rk_` (restaurant) or `ok_`
//! (operator) followed by 32 random bytes in hex; the plain key is shown once
//! when it is created and never stored or logged.

use futures::TryFutureExt;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{Db, on_db};
use crate::domain::now_ms;

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A restaurant's till or console: sees only that restaurant.
    Restaurant(String),
    /// An operator: parked sagas, dead letters, keys, every restaurant.
    Operator,
}

pub(crate) fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh random key with the given prefix.
pub(crate) fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Looks a presented key up.
pub(crate) async fn authenticate(db: &Db, key: &str) -> Result<Option<Principal>, sqlx::Error> {
    let h = hash(key);
    let row: Option<(String, Option<String>)> = on_db!(db, |e| sqlx::query_as(
        "SELECT role, restaurant_id FROM app_api_keys WHERE key_hash = $1"
    )
    .bind(&h)
    .fetch_optional(e))?;
    Ok(match row {
        Some((role, _)) if role == "operator" => Some(Principal::Operator),
        Some((_, Some(r))) => Some(Principal::Restaurant(r)),
        _ => None,
    })
}

/// Stores `key` (hashed) for `principal`; an existing key is left as it is.
pub(crate) async fn insert(
    db: &Db,
    key: &str,
    principal: &Principal,
    label: &str,
) -> Result<(), sqlx::Error> {
    let h = hash(key);
    let (role, restaurant) = match principal {
        Principal::Restaurant(r) => ("restaurant", Some(r.as_str())),
        Principal::Operator => ("operator", None),
    };
    on_db!(db, |e| sqlx::query(
        "INSERT INTO app_api_keys (key_hash, restaurant_id, role, label, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING"
    )
    .bind(&h)
    .bind(restaurant)
    .bind(role)
    .bind(label)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}

/// Creates a restaurant when missing.
pub(crate) async fn ensure_restaurant(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    on_db!(db, |e| sqlx::query(
        "INSERT INTO app_restaurants (id, name, created_at) VALUES ($1, $1, $2) \
         ON CONFLICT (id) DO NOTHING"
    )
    .bind(id)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}
