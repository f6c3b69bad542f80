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

/// Claims, replays, reports in flight or mismatch, or takes over; mirrors
/// the in-memory state machine. ARGV: fp, now, lease_until, expires_at,
/// token floor, expires_at - now (at least 1).
///
/// An absent key (the common case) is claimed first, without converting
/// numbers or building the takeover closure: the token is the floor and the
/// record lives until expires_at, as `claim(nil, false)` would write it.
const BEGIN: &str = r"
local k = KEYS[1]
local fp = ARGV[1]
local r = redis.call('HMGET', k, 'fp', 'tok', 'lu', 'done', 'exp')
if not r[1] then
  redis.call('HSET', k, 'fp', fp, 'tok', ARGV[5], 'lu', ARGV[3], 'done', '0', 'exp', ARGV[4])
  redis.call('PEXPIRE', k, ARGV[6])
  return {'E', ARGV[5]}
end
local now, lu, exp, floor = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
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
";

/// The fenced lease extension shared by [`RENEW`] and [`CHECKPOINT`]
/// (a macro, so that `concat!` can join it). ARGV: token, lease_until,
/// lease in ms.
macro_rules! extend_lease_lua {
    () => {
        r"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'tok', 'done', 'exp')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) or r[2] == '1' then return 0 end
redis.call('HSET', k, 'lu', ARGV[2])
if tonumber(ARGV[2]) > tonumber(r[3]) then
  redis.call('HSET', k, 'exp', ARGV[2])
  redis.call('PEXPIRE', k, ARGV[3])
end
"
    };
}

/// Extends the lease, keeping the recovery point. ARGV: token, lease_until,
/// lease in ms.
const RENEW: &str = concat!(extend_lease_lua!(), "return 1\n");

/// Extends the lease and records a recovery point. ARGV: token, lease_until,
/// lease in ms, phase, state.
const CHECKPOINT: &str = concat!(
    extend_lease_lua!(),
    "redis.call('HSET', k, 'ph', ARGV[4], 'ps', ARGV[5])\nreturn 1\n"
);

/// ARGV: token, response, expires_at, ttl in ms.
const COMPLETE: &str = r"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'tok', 'done', 'ph')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) or r[2] == '1' then return 0 end
if r[3] then redis.call('HDEL', k, 'ph', 'ps') end
redis.call('HSET', k, 'done', '1', 'resp', ARGV[2], 'lu', '0', 'exp', ARGV[3])
redis.call('PEXPIRE', k, ARGV[4])
return 1
";

/// ARGV: token, now.
const RELEASE: &str = r"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'tok', 'done', 'ph')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) or r[2] == '1' then return 0 end
if r[3] then
  redis.call('HSET', k, 'lu', ARGV[2])
else
  redis.call('DEL', k)
end
return 1
";

/// Deletes those of KEYS whose logical expiry has passed. ARGV: now.
const REAP: &str = r"
local n = 0
for _, k in ipairs(KEYS) do
  local e = tonumber(redis.call('HGET', k, 'exp'))
  if e and e <= tonumber(ARGV[1]) then
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

/// An [`IdempotencyStore`](crate::IdempotencyStore) in Redis: one hash per key.
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

    /// Runs a script built on `extend_lease_lua!` with ARGV token,
    /// lease_until, lease in ms, then `extra`; updates the lease's expiry.
    async fn extend(
        &self,
        script: &Script,
        lease: &mut Lease,
        extra: &[&[u8]],
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(clock::ms(lease.duration));
        let token = lease.token.to_string();
        let until_s = until.to_string();
        let lease_ms = clock::ms(lease.duration).max(1).to_string();
        let mut args: Vec<&[u8]> = vec![token.as_bytes(), until_s.as_bytes(), lease_ms.as_bytes()];
        args.extend_from_slice(extra);
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
        let mut conn = self.conn.clone();
        let v: Value = self
            .scripts
            .begin
            .key(self.redis_key(key))
            .arg(&fp.as_bytes()[..])
            .arg(now)
            .arg(lease_until)
            .arg(expires_at)
            .arg(now.max(1))
            .arg(expires_at.saturating_sub(now).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(Error::backend)?;
        let Value::Array(items) = v else {
            return Err(corrupt("begin"));
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
        self.extend(
            &self.scripts.checkpoint,
            lease,
            &[point.phase.as_bytes(), &point.state],
        )
        .await?;
        lease.recovery = Some(point.clone());
        Ok(())
    }

    async fn renew(&self, lease: &mut Lease) -> Result<(), Error> {
        self.extend(&self.scripts.renew, lease, &[]).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let ttl_ms = clock::ms(ttl).max(1);
        let token = lease.token.to_string();
        let exp = now.saturating_add(ttl_ms).to_string();
        let ttl_s = ttl_ms.to_string();
        self.fenced(
            &self.scripts.complete,
            &lease.key,
            &[
                token.as_bytes(),
                &response.encode(),
                exp.as_bytes(),
                ttl_s.as_bytes(),
            ],
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now_ms().to_string();
        let token = lease.token.to_string();
        self.fenced(
            &self.scripts.release,
            &lease.key,
            &[token.as_bytes(), now.as_bytes()],
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
