-- Shared by commit.lua and log_read.lua: a user's event log is a stream.
-- A new log starts with a marker entry that is deleted at once, so its
-- max-deleted-entry-id says "nothing before here is known": a `since` from an
-- older log (or 0-0) gets resync instead of silently skipping events.
-- Trimming uses XDEL, which (unlike XTRIM) keeps max-deleted-entry-id true.

-- Refreshes the log's expiry, creating it at a marker when there is none.
local function log_ensure(log, keep_ms)
  if redis.call('PEXPIRE', log, keep_ms) == 0 then
    local m = redis.call('XADD', log, '*', 'm', '')
    redis.call('XDEL', log, m)
    redis.call('PEXPIRE', log, keep_ms)
  end
end

-- Keeps the newest `keep_max` entries.
local function log_trim_count(log, keep_max)
  local n = redis.call('XLEN', log)
  if n > keep_max then
    local old = redis.call('XRANGE', log, '-', '+', 'COUNT', n - keep_max)
    for j = 1, #old do redis.call('XDEL', log, old[j][1]) end
  end
end

-- Drops entries older than `keep_ms` (done when reading; writes only cap the count).
local function log_trim_age(log, keep_ms)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local old = redis.call('XRANGE', log, '-', '(' .. (now_ms - keep_ms) .. '-0', 'COUNT', 100)
  for j = 1, #old do redis.call('XDEL', log, old[j][1]) end
end
