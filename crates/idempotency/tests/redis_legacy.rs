//! Records written by earlier versions of the Redis store (one hash per key,
//! fields fp, tok, lu, done, exp, ph, ps, resp) are honoured by the current
//! one: replayed, reported in flight or mismatched, taken over, and then
//! checkpointed, renewed, completed, released and reaped, fenced as before.
//! Earlier versions' scripts fail on the current string records without
//! writing anything. Needs a real Redis (`TEST_REDIS_URL`).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use counterfoil_idempotency::{
    Begin, BeginOptions, Error, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock,
    RecoveryPoint, RedisIdempotencyStore, Scope, StoredResponse,
};
use redis::aio::MultiplexedConnection;

const NOW: i64 = 1_700_000_000_000;

/// The earlier version's `begin` script, as it was deployed.
const OLD_BEGIN: &str = r"
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

/// The earlier version's `complete` script.
const OLD_COMPLETE: &str = r"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'tok', 'done', 'ph')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) or r[2] == '1' then return 0 end
if r[3] then redis.call('HDEL', k, 'ph', 'ps') end
redis.call('HSET', k, 'done', '1', 'resp', ARGV[2], 'lu', '0', 'exp', ARGV[3])
redis.call('PEXPIRE', k, ARGV[4])
return 1
";

/// The earlier version's `renew` script.
const OLD_RENEW: &str = r"
local k = KEYS[1]
local r = redis.call('HMGET', k, 'tok', 'done', 'exp')
if not r[1] or tonumber(r[1]) ~= tonumber(ARGV[1]) or r[2] == '1' then return 0 end
redis.call('HSET', k, 'lu', ARGV[2])
if tonumber(ARGV[2]) > tonumber(r[3]) then
  redis.call('HSET', k, 'exp', ARGV[2])
  redis.call('PEXPIRE', k, ARGV[3])
end
return 1
";

/// The earlier version's `release` script.
const OLD_RELEASE: &str = r"
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

/// The earlier version's reaper script.
const OLD_REAP: &str = r"
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

struct Env {
    store: RedisIdempotencyStore,
    clock: Arc<ManualClock>,
    conn: MultiplexedConnection,
    prefix: String,
}

impl Env {
    async fn new(test: &str) -> Option<Self> {
        let url = common::service_url("TEST_REDIS_URL")?;
        let prefix = format!(
            "idem_legacy_{test}_{}_{}:",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000
        );
        let clock = Arc::new(ManualClock::new(NOW));
        let store = RedisIdempotencyStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(prefix.clone())
            .with_clock(clock.clone());
        let conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Some(Self {
            store,
            clock,
            conn,
            prefix,
        })
    }

    fn redis_key(&self, k: &IdempotencyKey) -> String {
        format!("{}{}", self.prefix, k.storage_key())
    }

    /// Writes `fields` as one hash, as the earlier version stored a record,
    /// with a Redis expiry of an hour.
    async fn seed(&mut self, k: &IdempotencyKey, fields: &[(&str, Vec<u8>)]) {
        let key = self.redis_key(k);
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&key);
        for (f, v) in fields {
            cmd.arg(*f).arg(v.as_slice());
        }
        let _: i64 = cmd.query_async(&mut self.conn).await.unwrap();
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(3_600_000)
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    async fn key_type(&mut self, k: &IdempotencyKey) -> String {
        let key = self.redis_key(k);
        redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut self.conn)
            .await
            .unwrap()
    }

    async fn field(&mut self, k: &IdempotencyKey, f: &str) -> Option<Vec<u8>> {
        let key = self.redis_key(k);
        redis::cmd("HGET")
            .arg(key)
            .arg(f)
            .query_async(&mut self.conn)
            .await
            .unwrap()
    }

    async fn num_field(&mut self, k: &IdempotencyKey, f: &str) -> Option<i64> {
        let v = self.field(k, f).await?;
        std::str::from_utf8(&v).ok()?.parse().ok()
    }

    async fn cleanup(mut self) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut self.conn)
                .await;
        }
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(Scope::new("tenant-1", "principal-1", "pay").unwrap(), k).unwrap()
}

fn fp() -> Fingerprint {
    Fingerprint::of_bytes(b"amount=1250")
}

fn other_fp() -> Fingerprint {
    Fingerprint::of_bytes(b"amount=9999")
}

fn opts() -> BeginOptions {
    BeginOptions::with_lease(Duration::from_secs(30))
}

fn response() -> StoredResponse {
    StoredResponse::json(201, &serde_json::json!({"id": "pay_1"})).unwrap()
}

fn n(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// A pending legacy record held until `lu`, with an optional recovery point.
fn pending(
    tok: i64,
    lu: i64,
    exp: i64,
    point: Option<(&str, &[u8])>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut f = vec![
        ("fp", fp().as_bytes().to_vec()),
        ("tok", n(tok)),
        ("lu", n(lu)),
        ("done", b"0".to_vec()),
        ("exp", n(exp)),
    ];
    if let Some((ph, ps)) = point {
        f.push(("ph", ph.as_bytes().to_vec()));
        f.push(("ps", ps.to_vec()));
    }
    f
}

#[tokio::test]
async fn legacy_done_record_is_replayed_and_mismatched() {
    let Some(mut env) = Env::new("done").await else {
        return;
    };
    let k = key("done-1");
    env.seed(
        &k,
        &[
            ("fp", fp().as_bytes().to_vec()),
            ("tok", n(NOW - 5_000)),
            ("lu", b"0".to_vec()),
            ("done", b"1".to_vec()),
            ("exp", n(NOW + 3_600_000)),
            ("resp", response().encode()),
        ],
    )
    .await;
    match env.store.begin(&k, &fp(), &opts()).await.unwrap() {
        Begin::Replay(r) => assert_eq!(r, response()),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        env.store.begin(&k, &other_fp(), &opts()).await.unwrap(),
        Begin::Mismatch
    ));
    assert_eq!(env.key_type(&k).await, "hash");
    env.cleanup().await;
}

#[tokio::test]
async fn legacy_pending_record_is_in_flight() {
    let Some(mut env) = Env::new("inflight").await else {
        return;
    };
    let k = key("inflight-1");
    env.seed(
        &k,
        &pending(NOW - 1_000, NOW + 20_000, NOW + 3_600_000, None),
    )
    .await;
    match env.store.begin(&k, &fp(), &opts()).await.unwrap() {
        Begin::InFlight { retry_after } => assert_eq!(retry_after, Duration::from_secs(20)),
        other => panic!("expected in flight, got {other:?}"),
    }
    assert!(matches!(
        env.store.begin(&k, &other_fp(), &opts()).await.unwrap(),
        Begin::Mismatch
    ));
    // Nothing was written.
    assert_eq!(env.num_field(&k, "lu").await, Some(NOW + 20_000));
    env.cleanup().await;
}

#[tokio::test]
async fn legacy_record_taken_over_then_checkpointed_renewed_completed() {
    let Some(mut env) = Env::new("takeover").await else {
        return;
    };
    let k = key("takeover-1");
    let old_tok = NOW - 60_000;
    env.seed(
        &k,
        &pending(
            old_tok,
            NOW - 1,
            NOW + 3_600_000,
            Some(("charged", b"\x00\x01ch_1")),
        ),
    )
    .await;
    let Begin::Execute(mut a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a takeover");
    };
    assert!(a.is_takeover());
    assert!(a.token() > old_tok);
    assert_eq!(
        a.recovery_point(),
        Some(&RecoveryPoint {
            phase: "charged".to_owned(),
            state: b"\x00\x01ch_1".to_vec(),
        })
    );
    assert_eq!(env.key_type(&k).await, "hash");
    // A retry while the new holder's lease runs is in flight.
    env.clock.advance(Duration::from_secs(10));
    assert!(matches!(
        env.store.begin(&k, &fp(), &opts()).await.unwrap(),
        Begin::InFlight { .. }
    ));
    env.store.renew(&mut a).await.unwrap();
    // Written zero-padded; the earlier scripts read it with `tonumber` too.
    assert_eq!(env.num_field(&k, "lu").await, Some(NOW + 40_000));
    let point = RecoveryPoint {
        phase: "shipped".to_owned(),
        state: b"sh_9".to_vec(),
    };
    env.store.checkpoint(&mut a, &point).await.unwrap();
    assert_eq!(env.field(&k, "ph").await, Some(b"shipped".to_vec()));
    assert_eq!(env.field(&k, "ps").await, Some(b"sh_9".to_vec()));

    // The lease runs out and a second worker takes over: the first is fenced.
    env.clock.advance(Duration::from_secs(31));
    let Begin::Execute(mut b) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a second takeover");
    };
    assert!(b.token() > a.token());
    assert_eq!(b.recovery_point(), Some(&point));
    assert!(matches!(
        env.store.renew(&mut a).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        env.store.checkpoint(&mut a, &point).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        env.store
            .complete(&a, &response(), Duration::from_secs(3600))
            .await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(env.store.release(&a).await, Err(Error::LeaseLost)));

    env.store.renew(&mut b).await.unwrap();
    env.store
        .complete(&b, &response(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(env.field(&k, "done").await, Some(b"1".to_vec()));
    assert_eq!(env.field(&k, "ph").await, None);
    match env.store.begin(&k, &fp(), &opts()).await.unwrap() {
        Begin::Replay(r) => assert_eq!(r, response()),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        env.store
            .complete(&b, &response(), Duration::from_secs(3600))
            .await,
        Err(Error::LeaseLost)
    ));
    env.cleanup().await;
}

#[tokio::test]
async fn legacy_record_released() {
    let Some(mut env) = Env::new("release").await else {
        return;
    };
    // Without a recovery point the record goes.
    let k = key("release-1");
    env.seed(&k, &pending(NOW - 60_000, NOW - 1, NOW + 3_600_000, None))
        .await;
    let Begin::Execute(a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a takeover");
    };
    env.store.release(&a).await.unwrap();
    assert_eq!(env.key_type(&k).await, "none");

    // With one it stays, its lease ended, and the retry resumes from it.
    let k = key("release-2");
    env.seed(
        &k,
        &pending(
            NOW - 60_000,
            NOW - 1,
            NOW + 3_600_000,
            Some(("charged", b"ch_1")),
        ),
    )
    .await;
    let Begin::Execute(a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a takeover");
    };
    env.store.release(&a).await.unwrap();
    assert_eq!(env.key_type(&k).await, "hash");
    let Begin::Execute(b) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a takeover after release");
    };
    assert!(b.is_takeover());
    assert!(b.token() > a.token());
    assert_eq!(
        b.recovery_point().map(|p| p.phase.as_str()),
        Some("charged")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn legacy_record_past_its_expiry_is_claimed_afresh_or_reaped() {
    let Some(mut env) = Env::new("expired").await else {
        return;
    };
    let k = key("expired-1");
    let old_tok = NOW - 90_000_000;
    env.seed(
        &k,
        &pending(old_tok, NOW - 1_000, NOW - 1, Some(("charged", b"ch_1"))),
    )
    .await;
    let Begin::Execute(a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a fresh claim");
    };
    assert!(!a.is_takeover());
    assert!(a.recovery_point().is_none());
    assert!(a.token() > old_tok);
    env.store
        .complete(&a, &response(), Duration::from_secs(3600))
        .await
        .unwrap();

    let gone = key("expired-2");
    env.seed(&gone, &pending(old_tok, NOW - 1_000, NOW - 1, None))
        .await;
    assert_eq!(env.store.reap_expired(100).await.unwrap(), 1);
    assert_eq!(env.key_type(&gone).await, "none");
    assert_eq!(env.key_type(&k).await, "hash");
    env.cleanup().await;
}

#[tokio::test]
async fn new_records_are_strings_and_current_reaper_handles_them() {
    let Some(mut env) = Env::new("strings").await else {
        return;
    };
    let k = key("string-1");
    let Begin::Execute(a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
        panic!("expected a claim");
    };
    assert_eq!(env.key_type(&k).await, "string");
    env.store
        .complete(&a, &response(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(env.store.reap_expired(100).await.unwrap(), 0);
    env.clock.advance(Duration::from_secs(61));
    assert_eq!(env.store.reap_expired(100).await.unwrap(), 1);
    assert_eq!(env.key_type(&k).await, "none");
    env.cleanup().await;
}

async fn get_raw(conn: &mut MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

/// During a rolling upgrade an instance still running the earlier version
/// may meet a record written by the current one: its scripts fail with
/// `WRONGTYPE` before writing, so it neither executes the request again nor
/// corrupts the record.
#[tokio::test]
async fn earlier_scripts_fail_on_new_records_without_writing() {
    let Some(mut env) = Env::new("old_on_new").await else {
        return;
    };
    let now = NOW.to_string();
    for (i, done) in [false, true].into_iter().enumerate() {
        let k = key(&format!("new-{i}"));
        let rk = env.redis_key(&k);
        let Begin::Execute(a) = env.store.begin(&k, &fp(), &opts()).await.unwrap() else {
            panic!("expected a claim");
        };
        if done {
            env.store
                .complete(&a, &response(), Duration::from_secs(3600))
                .await
                .unwrap();
        }
        let before = get_raw(&mut env.conn, &rk).await;
        let token = a.token().to_string();
        let far = (NOW + 1_000_000_000).to_string();
        let calls: Vec<redis::RedisResult<redis::Value>> = vec![
            redis::Script::new(OLD_BEGIN)
                .key(&rk)
                .arg(&fp().as_bytes()[..])
                .arg(&far)
                .arg(&far)
                .arg(&far)
                .arg(&far)
                .arg(1000)
                .invoke_async(&mut env.conn)
                .await,
            redis::Script::new(OLD_COMPLETE)
                .key(&rk)
                .arg(&token)
                .arg(response().encode())
                .arg(&far)
                .arg(1000)
                .invoke_async(&mut env.conn)
                .await,
            redis::Script::new(OLD_RENEW)
                .key(&rk)
                .arg(&token)
                .arg(&far)
                .arg(1000)
                .invoke_async(&mut env.conn)
                .await,
            redis::Script::new(OLD_RELEASE)
                .key(&rk)
                .arg(&token)
                .arg(&now)
                .invoke_async(&mut env.conn)
                .await,
            redis::Script::new(OLD_REAP)
                .key(&rk)
                .arg(&far)
                .invoke_async(&mut env.conn)
                .await,
        ];
        for (j, r) in calls.into_iter().enumerate() {
            let err = r.expect_err(&format!("earlier script {j} should fail"));
            assert!(
                err.to_string().contains("WRONGTYPE"),
                "script {j}: unexpected error {err}"
            );
        }
        assert_eq!(get_raw(&mut env.conn, &rk).await, before);
        // The current version still reads the record.
        let r = env.store.begin(&k, &fp(), &opts()).await.unwrap();
        if done {
            assert!(matches!(r, Begin::Replay(_)));
        } else {
            assert!(matches!(r, Begin::InFlight { .. }));
        }
    }
    env.cleanup().await;
}

/// A record written by an instance still on the earlier version (through its
/// own script) is replayed by the current one.
#[tokio::test]
async fn record_written_by_earlier_script_is_honoured() {
    let Some(mut env) = Env::new("old_writes").await else {
        return;
    };
    let k = key("old-1");
    let rk = env.redis_key(&k);
    let lu = NOW + 30_000;
    let exp = NOW + 3_600_000;
    let v: redis::Value = redis::Script::new(OLD_BEGIN)
        .key(&rk)
        .arg(&fp().as_bytes()[..])
        .arg(NOW)
        .arg(lu)
        .arg(exp)
        .arg(NOW)
        .arg(exp - NOW)
        .invoke_async(&mut env.conn)
        .await
        .unwrap();
    assert!(matches!(v, redis::Value::Array(_)));
    assert!(matches!(
        env.store.begin(&k, &fp(), &opts()).await.unwrap(),
        Begin::InFlight { .. }
    ));
    let done: i64 = redis::Script::new(OLD_COMPLETE)
        .key(&rk)
        .arg(NOW)
        .arg(response().encode())
        .arg(exp)
        .arg(exp - NOW)
        .invoke_async(&mut env.conn)
        .await
        .unwrap();
    assert_eq!(done, 1);
    match env.store.begin(&k, &fp(), &opts()).await.unwrap() {
        Begin::Replay(r) => assert_eq!(r, response()),
        other => panic!("expected a replay, got {other:?}"),
    }
    env.cleanup().await;
}
