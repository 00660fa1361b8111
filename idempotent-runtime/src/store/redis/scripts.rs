//! The Lua scripts of the Redis store: each compares the owner and writes
//! in one atomic step.

// The byte layout the scripts read (see `record.rs`): format version 1, tag
// 1 = in progress, 32 bytes of fingerprint, then 16 bytes of owner; 50 bytes.
pub(super) const IS_OWNED_BY: &str = r"
local function owned(v, owner)
  return v and string.len(v) == 50 and string.byte(v, 1) == 1
    and string.byte(v, 2) == 1 and string.sub(v, 35, 50) == owner
end
";

/// Claim: create the in-progress record unless one exists; else return it.
/// Only for Redis before 7.0, which lacks `SET … NX GET`.
pub(super) const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
";

/// Renew: extend the lease, only for the owner.
pub(super) const RENEW: &str = r"
if owned(redis.call('GET', KEYS[1]), ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Complete: write the completed record, for the owner or where no record is
/// left (the lease ran out and nobody took over). Like release and delete, it
/// publishes the change only when a duplicate in another process waits for
/// it (its `watching` key, KEYS[2], exists): a PUBLISH wakes the subscriber
/// of every process, which for every request cost half the throughput.
pub(super) const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if (not v) or owned(v, ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PUBLISH', ARGV[4], ARGV[5])
  end
  return 1
end
return 0
";

/// Watch: mark that a duplicate waits for the record, for at least ARGV[1]
/// ms. Never shortens the mark: a waiter with a short wait must not end the
/// publishing another, longer waiter still relies on.
pub(super) const WATCH: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// Delete (operators): delete whatever is there, and wake waiters.
pub(super) const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
if n == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return n
";

/// Release: delete the claim, only for the owner.
pub(super) const RELEASE: &str = r"
if owned(redis.call('GET', KEYS[1]), ARGV[1]) then
  redis.call('DEL', KEYS[1])
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PUBLISH', ARGV[2], ARGV[3])
  end
  return 1
end
return 0
";
