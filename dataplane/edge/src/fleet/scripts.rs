//! The store's Lua scripts: each is one atomic round trip, timed by the store's own clock
//! (`TIME`), so pods whose clocks differ still agree on leases and seconds.
//!
//! Each script touches only the KEYS it is given, and those share one Redis Cluster slot (the
//! layout is `redis_store::FleetKeys` and [`super::TrunkKeys`]): a cluster runs a script on the
//! one master of its slot, atomically there, and refuses keys of other slots.

/// KEYS: concurrent set, set-up set, per-second hash. ARGV: member, lease ms, max concurrent,
/// max per second, max in set-up (-1: no limit). Returns 0 granted, 1 concurrent, 2 per
/// second, 3 in set-up. Expired places (their pod stopped renewing them) are dropped first.
pub const CLAIM: &str = r#"
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local maxc, maxr, maxs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if maxc >= 0 and redis.call('ZCARD', KEYS[1]) >= maxc then return 1 end
if maxs >= 0 and redis.call('ZCARD', KEYS[2]) >= maxs then return 3 end
if maxr >= 0 then
  local n = tonumber(redis.call('HGET', KEYS[3], sec) or '0')
  if n >= maxr then return 2 end
end
redis.call('HINCRBY', KEYS[3], sec, 1)
redis.call('HDEL', KEYS[3], sec - 2, sec - 3, sec - 4, sec - 5)
redis.call('PEXPIRE', KEYS[3], 5000)
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return 0
"#;

/// KEYS: a set of places. ARGV: lease ms, "XX" (renew only places still there) or "" (also
/// write back places the store lost), members... Returns how many places were missing.
pub const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local missing = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    missing = missing + 1
    if ARGV[2] ~= 'XX' then redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return missing
"#;

/// KEYS: the set of live pods, the hash of each identity's last heartbeat. ARGV: this pod,
/// lease ms, this pod's identity. Returns {live pods, 1 if this pod was missing (the store
/// lost its data, or our lease lapsed)}.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[3], now)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {redis.call('ZCARD', KEYS[1]), added}
"#;

/// KEYS: a registration trunk's holder. ARGV: this pod, lease ms. Returns 1 when this pod holds
/// it (renewed, or taken because nobody did), 0 when another pod does.
pub const ELECT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: the hash of each identity's last heartbeat. ARGV: this identity, orphan ms. Returns
/// the identities not heard of for longer (not this one).
pub const SILENT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and now - tonumber(all[i + 1]) > tonumber(ARGV[2]) then
    table.insert(out, all[i])
  end
end
return out
"#;

/// KEYS: a silent identity's calls, its adoption lock (one slot: the lock is tagged with the
/// calls' key). ARGV: this pod. Takes the calls (once, by one pod): returns them as a flat
/// key/value list, or nothing when another pod took them or there are none. The identity is
/// forgotten by FORGET afterwards, a step of its own: the heartbeat hash lives in another slot.
pub const ADOPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', 60000) then return {} end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
"#;

/// KEYS: this edge's calls, its adoption lock (ADOPT's). ARGV: this edge's run, lock ms (a
/// lease: its heartbeats say it is alive by then). A starting edge takes its own calls back
/// holding the lock, so a pod that found it silent a moment ago cannot also adopt them (the
/// calls restored twice, two records). Returns the calls as a flat key/value list, or nothing
/// when another pod is taking them.
pub const LOAD: &str = r#"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"#;

/// KEYS: the hash of each identity's last heartbeat. ARGV: a silent identity, orphan ms.
/// Forgets the identity after ADOPT, unless it was heard of again meanwhile (restarted
/// between the two steps): then it stays, and is not silent any more. Returns 1 if forgotten.
pub const FORGET: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen and now - tonumber(seen) <= tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"#;

/// KEYS: the address's failure count, its block flag. ARGV: window ms, max failures, block ms,
/// channel, address. Counts one digest failure for the fleet, starts the block at the limit,
/// and tells every pod the count (PUBLISH has no key: a cluster carries it to every node).
/// Returns the count.
pub const AUTH_FAILED: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. n)
return n
"#;

/// KEYS: the address's failure count, its block flag. A right answer clears the count unless a
/// block runs.
pub const AUTH_SUCCEEDED: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
return 0
"#;
