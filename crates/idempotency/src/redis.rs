//! The Redis backend: one Lua script per operation, run with `EVALSHA`.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Script, Value};
use async_trait::async_trait;

use crate::begin::Begin;
use crate::clock::{self, Clock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::response::StoredResponse;

// Record format. A record is one string:
//
//   byte 1        state: `P` pending, `D` done
//   bytes 2-21    fencing token, 20 characters, zero-padded decimal
//   bytes 22-41   lease_until (ms), same encoding; 0 once done
//   bytes 42-61   expires_at (ms), same encoding
//   bytes 62-93   the request fingerprint (32 bytes)
//   bytes 94-     pending: empty, or the recovery point as the phase's length
//                 (10 digits), the phase, then the state; done: the response
//
// The client builds every fixed-width field, so the common operations are a
// string comparison and a `SET` (or `SETRANGE`) inside the script: `begin` on
// an absent key is one `SET NX PX`, `complete` one `GETRANGE` and one `SET`.
//
// Records written by earlier versions are hashes (fields fp, tok, lu, done,
// exp, ph, ps, resp). Every script recognises one by the `WRONGTYPE` answer to
// its first read and then runs the earlier version's logic on the hash,
// unchanged, so records written before an upgrade (or by instances not yet
// upgraded) keep their meaning until they expire. Earlier versions' scripts
// fail with `WRONGTYPE` on a string record before writing anything.

/// Claims, replays, reports in flight or mismatch, or takes over; mirrors
/// the in-memory state machine. ARGV: the fresh record (`P`, token floor,
/// lease_until, expires_at, fingerprint), expires_at - now (at least 1), now.
///
/// An absent key (the common case) is claimed with one `SET NX PX` and
/// answers 1: the token is the floor, no recovery point, not taken over.
const BEGIN: &str = r"
local k, rec = KEYS[1], ARGV[1]
if redis.call('SET', k, rec, 'NX', 'PX', ARGV[2]) then return 1 end
local now, fp = tonumber(ARGV[3]), string.sub(rec, 62, 93)
local v = redis.pcall('GET', k)
if type(v) == 'table' then
  local lu, exp, floor = string.sub(rec, 22, 41), tonumber(string.sub(rec, 42, 61)), tonumber(string.sub(rec, 2, 21))
  local r = redis.call('HMGET', k, 'fp', 'tok', 'lu', 'done', 'exp')
  if not r[1] then
    redis.call('HSET', k, 'fp', fp, 'tok', string.sub(rec, 2, 21), 'lu', lu, 'done', '0', 'exp', string.sub(rec, 42, 61))
    redis.call('PEXPIRE', k, ARGV[2])
    return {'E', string.sub(rec, 2, 21)}
  end
  local function claim(prev, keep)
    local tok = floor
    if prev and prev + 1 > tok then tok = prev + 1 end
    local e = exp
    local ph, ps = false, false
    if prev then
      if keep then
        local old = tonumber(r[5])
        if old > e then e = old end
        local p = redis.call('HMGET', k, 'ph', 'ps')
        ph, ps = p[1], p[2]
        redis.call('HDEL', k, 'resp')
      else
        redis.call('HDEL', k, 'ph', 'ps', 'resp')
      end
    end
    local t = string.format('%.0f', tok)
    redis.call('HSET', k, 'fp', fp, 'tok', t, 'lu', lu, 'done', '0', 'exp', string.format('%.0f', e))
    local px = e - now
    if px < 1 then px = 1 end
    redis.call('PEXPIRE', k, string.format('%.0f', px))
    return {'E', t, ph, ps, keep and 1 or 0}
  end
  if tonumber(r[5]) <= now then return claim(tonumber(r[2]), false) end
  if r[1] ~= fp then return {'M'} end
  if r[4] == '1' then return {'R', redis.call('HGET', k, 'resp')} end
  local held = tonumber(r[3])
  if held > now then return {'I', string.format('%.0f', held - now)} end
  return claim(tonumber(r[2]), true)
end
local st = string.sub(v or '', 1, 1)
if (st ~= 'P' and st ~= 'D') or #v < 93 then return redis.error_reply('corrupt idempotency record') end
local prev, e = tonumber(string.sub(v, 2, 21)), tonumber(string.sub(v, 42, 61))
local function claim(keep)
  local t = tonumber(string.sub(rec, 2, 21))
  if prev + 1 > t then t = prev + 1 end
  local ts = string.format('%020.0f', t)
  local es = string.sub(rec, 42, 61)
  local ex = tonumber(es)
  local tail, ph, ps = '', false, false
  if keep then
    if e > ex then es, ex = string.sub(v, 42, 61), e end
    tail = string.sub(v, 94)
    if #tail > 0 then
      local n = tonumber(string.sub(tail, 1, 10))
      ph, ps = string.sub(tail, 11, 10 + n), string.sub(tail, 11 + n)
    end
  end
  local px = ex - now
  if px < 1 then px = 1 end
  redis.call('SET', k, 'P' .. ts .. string.sub(rec, 22, 41) .. es .. fp .. tail, 'PX', string.format('%.0f', px))
  return {'E', ts, ph, ps, keep and 1 or 0}
end
if e <= now then return claim(false) end
if string.sub(v, 62, 93) ~= fp then return {'M'} end
if st == 'D' then return {'R', string.sub(v, 94)} end
local held = tonumber(string.sub(v, 22, 41))
if held > now then return {'I', string.format('%.0f', held - now)} end
return claim(true)
";

/// The start shared by [`RENEW`] and [`CHECKPOINT`] (a macro, so that
/// `concat!` can join it): reads the header (and fingerprint), and on a
/// legacy hash runs the earlier fenced lease extension. ARGV: `P` and the
/// token, lease_until (20 digits), lease in ms, then for a checkpoint the
/// recovery point as stored.
macro_rules! extend_lease_lua {
    ($legacy_extra:literal) => {
        concat!(
            r"
local k = KEYS[1]
local h = redis.pcall('GETRANGE', k, 0, 92)
if type(h) == 'table' then
  local r = redis.call('HMGET', k, 'tok', 'done', 'exp')
  if not r[1] or tonumber(r[1]) ~= tonumber(string.sub(ARGV[1], 2)) or r[2] == '1' then return 0 end
  redis.call('HSET', k, 'lu', ARGV[2])
  if tonumber(ARGV[2]) > tonumber(r[3]) then
    redis.call('HSET', k, 'exp', ARGV[2])
    redis.call('PEXPIRE', k, ARGV[3])
  end
",
            $legacy_extra,
            r"
  return 1
end
if string.sub(h, 1, 21) ~= ARGV[1] then return 0 end
if #h < 93 then return redis.error_reply('corrupt idempotency record') end
local lu = ARGV[2]
local extend = tonumber(lu) > tonumber(string.sub(h, 42, 61))
"
        )
    };
}

/// Extends the lease, keeping the recovery point: overwrites lease_until
/// (and expires_at when the lease now outlives it) in place.
const RENEW: &str = concat!(
    extend_lease_lua!(""),
    r"
if extend then
  redis.call('SETRANGE', k, 21, lu .. lu)
  redis.call('PEXPIRE', k, ARGV[3])
else
  redis.call('SETRANGE', k, 21, lu)
end
return 1
"
);

/// Extends the lease and records a recovery point (ARGV[4]: the phase's
/// length in 10 digits, the phase, the state).
const CHECKPOINT: &str = concat!(
    extend_lease_lua!(
        r"
  local n = tonumber(string.sub(ARGV[4], 1, 10))
  redis.call('HSET', k, 'ph', string.sub(ARGV[4], 11, 10 + n), 'ps', string.sub(ARGV[4], 11 + n))
"
    ),
    r"
local rec = string.sub(h, 1, 21) .. lu .. (extend and lu or string.sub(h, 42, 61)) .. string.sub(h, 62, 93) .. ARGV[4]
if extend then
  redis.call('SET', k, rec, 'PX', ARGV[3])
else
  redis.call('SET', k, rec, 'KEEPTTL')
end
return 1
"
);

/// ARGV: `P` and the token, the done record's header (`D`, token,
/// lease_until 0, expires_at), the response, ttl in ms.
const COMPLETE: &str = r"
local k = KEYS[1]
local h = redis.pcall('GETRANGE', k, 0, 92)
if type(h) == 'table' then
  local r = redis.call('HMGET', k, 'tok', 'done', 'ph')
  if not r[1] or tonumber(r[1]) ~= tonumber(string.sub(ARGV[1], 2)) or r[2] == '1' then return 0 end
  if r[3] then redis.call('HDEL', k, 'ph', 'ps') end
  redis.call('HSET', k, 'done', '1', 'resp', ARGV[3], 'lu', '0', 'exp', string.sub(ARGV[2], 42, 61))
  redis.call('PEXPIRE', k, ARGV[4])
  return 1
end
if string.sub(h, 1, 21) ~= ARGV[1] then return 0 end
if #h < 93 then return redis.error_reply('corrupt idempotency record') end
redis.call('SET', k, ARGV[2] .. string.sub(h, 62, 93) .. ARGV[3], 'PX', ARGV[4])
return 1
";

/// Deletes a record without a recovery point; keeps one with, its lease
/// ended. ARGV: `P` and the token, now (20 digits).
const RELEASE: &str = r"
local k = KEYS[1]
local h = redis.pcall('GETRANGE', k, 0, 93)
if type(h) == 'table' then
  local r = redis.call('HMGET', k, 'tok', 'done', 'ph')
  if not r[1] or tonumber(r[1]) ~= tonumber(string.sub(ARGV[1], 2)) or r[2] == '1' then return 0 end
  if r[3] then
    redis.call('HSET', k, 'lu', ARGV[2])
  else
    redis.call('DEL', k)
  end
  return 1
end
if string.sub(h, 1, 21) ~= ARGV[1] then return 0 end
if #h > 93 then
  redis.call('SETRANGE', k, 21, ARGV[2])
else
  redis.call('DEL', k)
end
return 1
";

/// Deletes those of KEYS whose logical expiry has passed (string records and
/// legacy hashes). ARGV: now.
const REAP: &str = r"
local n, now = 0, tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  local e = redis.pcall('GETRANGE', k, 41, 60)
  if type(e) == 'table' then e = redis.pcall('HGET', k, 'exp') end
  e = tonumber(e)
  if e and e <= now then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
";

#[derive(Debug)]
struct Scripts {
    begin: Script,
    checkpoint: Script,
    renew: Script,
    complete: Script,
    release: Script,
    reap: Script,
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) in Redis: one string per
/// key (hashes written by earlier versions are still read and honoured).
///
/// Each operation is one Lua script, sent with `EVALSHA` (the script is
/// loaded on the first `NOSCRIPT` answer), so every call is one round trip
/// and atomic. Records carry their logical expiry and a matching `PEXPIRE`,
/// so Redis deletes them itself.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Arc<Scripts>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("prefix", &self.prefix)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn bulk(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(bulk(other)?).ok()?.parse().ok(),
    }
}

/// Appends `n` as 20 characters: zero-padded decimal, a leading `-` when
/// negative (as Lua's `%020.0f` writes it).
fn push_num(buf: &mut Vec<u8>, n: i64) {
    let mut digits = [b'0'; 20];
    let mut m = n.unsigned_abs();
    let mut i = digits.len();
    while m > 0 && i > 0 {
        i -= 1;
        digits[i] = b"0123456789"[(m % 10) as usize];
        m /= 10;
    }
    if n < 0 {
        digits[0] = b'-';
    }
    buf.extend_from_slice(&digits);
}

/// `P` and the token: the start of a pending record held with `token`.
fn held_prefix(token: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(21);
    b.push(b'P');
    push_num(&mut b, token);
    b
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("unexpected script reply: {what}"))
}

impl RedisIdempotencyStore {
    /// Connects to `url` (`redis://host:port/db`); keys are `idem:` plus the
    /// scoped key.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the URL is invalid or Redis is unreachable.
    ///
    /// # Cancel safety
    ///
    /// Safe: nothing is written.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = ::redis::Client::open(url).map_err(Error::backend)?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(Error::backend)?;
        Ok(Self::new(conn))
    }

    /// A store on an existing connection manager.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: "idem:".to_owned(),
            scripts: Arc::new(Scripts {
                begin: Script::new(BEGIN),
                checkpoint: Script::new(CHECKPOINT),
                renew: Script::new(RENEW),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                reap: Script::new(REAP),
            }),
            clock: clock::system(),
        }
    }

    /// Puts every key under `prefix` (default `idem:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses `clock` for leases and expiry.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The connection.
    pub fn get_ref(&self) -> &ConnectionManager {
        &self.conn
    }

    fn redis_key(&self, key: &IdempotencyKey) -> String {
        format!("{}{}", self.prefix, key.storage_key())
    }

    /// Runs a script built on `extend_lease_lua!` with ARGV `P` and the
    /// token, lease_until, lease in ms, then `extra`; updates the lease's
    /// expiry.
    async fn extend(
        &self,
        script: &Script,
        lease: &mut Lease,
        extra: Option<&[u8]>,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(clock::ms(lease.duration));
        let mut until_s = Vec::with_capacity(20);
        push_num(&mut until_s, until);
        let lease_ms = clock::ms(lease.duration).max(1).to_string();
        let prefix = held_prefix(lease.token);
        let mut args: Vec<&[u8]> = vec![&prefix, &until_s, lease_ms.as_bytes()];
        args.extend(extra);
        self.fenced(script, &lease.key, &args).await?;
        lease.expires_at_ms = until;
        Ok(())
    }

    async fn fenced(
        &self,
        script: &Script,
        key: &IdempotencyKey,
        args: &[&[u8]],
    ) -> Result<(), Error> {
        let mut inv = script.key(self.redis_key(key));
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        let v: Value = inv.invoke_async(&mut conn).await.map_err(Error::backend)?;
        match int(&v) {
            Some(1) => Ok(()),
            Some(0) => Err(Error::LeaseLost),
            _ => Err(corrupt("fenced write")),
        }
    }
}

#[async_trait]
impl crate::store::IdempotencyStore for RedisIdempotencyStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        let now = self.clock.now_ms();
        let lease_until = now.saturating_add(clock::ms(opts.lease));
        let expires_at = now.saturating_add(clock::ms(opts.ttl)).max(lease_until);
        let floor = now.max(1);
        let mut rec = Vec::with_capacity(93);
        rec.push(b'P');
        push_num(&mut rec, floor);
        push_num(&mut rec, lease_until);
        push_num(&mut rec, expires_at);
        rec.extend_from_slice(fp.as_bytes());
        let mut conn = self.conn.clone();
        let v: Value = self
            .scripts
            .begin
            .key(self.redis_key(key))
            .arg(rec)
            .arg(expires_at.saturating_sub(now).max(1))
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(Error::backend)?;
        let items = match v {
            Value::Array(items) => items,
            Value::Int(1) => {
                return Ok(Begin::Execute(Lease {
                    key: std::sync::Arc::new(key.clone()),
                    token: floor,
                    expires_at_ms: lease_until,
                    duration: opts.lease,
                    recovery: None,
                    taken_over: false,
                }));
            }
            _ => return Err(corrupt("begin")),
        };
        let tag = items
            .first()
            .and_then(bulk)
            .ok_or_else(|| corrupt("begin tag"))?;
        match tag {
            b"E" => {
                let token = items.get(1).and_then(int).ok_or_else(|| corrupt("token"))?;
                let taken_over = items.get(4).and_then(int) == Some(1);
                let recovery = match items.get(2).and_then(bulk) {
                    Some(phase) => Some(RecoveryPoint {
                        phase: String::from_utf8(phase.to_vec()).map_err(|_| corrupt("phase"))?,
                        state: items
                            .get(3)
                            .and_then(bulk)
                            .map(<[u8]>::to_vec)
                            .unwrap_or_default(),
                    }),
                    None => None,
                };
                Ok(Begin::Execute(Lease {
                    key: std::sync::Arc::new(key.clone()),
                    token,
                    expires_at_ms: lease_until,
                    duration: opts.lease,
                    recovery,
                    taken_over,
                }))
            }
            b"R" => {
                let body = items
                    .get(1)
                    .and_then(bulk)
                    .ok_or_else(|| corrupt("response"))?;
                Ok(Begin::Replay(StoredResponse::decode(body)?))
            }
            b"I" => {
                let ms = items.get(1).and_then(int).ok_or_else(|| corrupt("retry"))?;
                Ok(Begin::InFlight {
                    retry_after: Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1)),
                })
            }
            b"M" => Ok(Begin::Mismatch),
            _ => Err(corrupt("begin tag")),
        }
    }

    async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error> {
        let phase = point.phase.as_bytes();
        let mut tail = Vec::with_capacity(10 + phase.len() + point.state.len());
        tail.extend_from_slice(format!("{:010}", phase.len()).as_bytes());
        tail.extend_from_slice(phase);
        tail.extend_from_slice(&point.state);
        self.extend(&self.scripts.checkpoint, lease, Some(&tail))
            .await?;
        lease.recovery = Some(point.clone());
        Ok(())
    }

    async fn renew(&self, lease: &mut Lease) -> Result<(), Error> {
        self.extend(&self.scripts.renew, lease, None).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let ttl_ms = clock::ms(ttl).max(1);
        let prefix = held_prefix(lease.token);
        let mut head = Vec::with_capacity(61);
        head.push(b'D');
        push_num(&mut head, lease.token);
        push_num(&mut head, 0);
        push_num(&mut head, now.saturating_add(ttl_ms));
        let ttl_s = ttl_ms.to_string();
        self.fenced(
            &self.scripts.complete,
            &lease.key,
            &[&prefix, &head, &response.encode(), ttl_s.as_bytes()],
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let mut now = Vec::with_capacity(20);
        push_num(&mut now, self.clock.now_ms());
        self.fenced(
            &self.scripts.release,
            &lease.key,
            &[&held_prefix(lease.token), &now],
        )
        .await
    }

    /// Redis deletes records itself when their `PEXPIRE` runs out; this
    /// scans the prefix (`SCAN MATCH`, cost proportional to the database
    /// size) and deletes records whose logical expiry has passed, which only
    /// matters when the store's clock runs ahead of Redis's.
    async fn reap_expired(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now_ms();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut reaped = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(batch.max(1000))
                .query_async(&mut conn)
                .await
                .map_err(Error::backend)?;
            for chunk in keys.chunks(batch.max(1) as usize) {
                let left = u64::from(batch).saturating_sub(reaped);
                if left == 0 {
                    return Ok(reaped);
                }
                let chunk = &chunk[..chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX))];
                let mut inv = self.scripts.reap.prepare_invoke();
                for k in chunk {
                    inv.key(k);
                }
                inv.arg(now);
                let n: i64 = inv.invoke_async(&mut conn).await.map_err(Error::backend)?;
                reaped += u64::try_from(n).unwrap_or(0);
            }
            cursor = next;
            if cursor == 0 || reaped >= u64::from(batch) {
                return Ok(reaped);
            }
        }
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
