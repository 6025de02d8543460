-- Shared by commit.lua and log_read.lua: a user's event log is a stream.
-- A new log starts with a marker entry that is deleted at once, so its
-- max-deleted-entry-id says "nothing before here is known": a `since` from an
-- older log (or 0-0) gets resync instead of silently skipping events.
-- Trimming uses XDEL, which (unlike XTRIM) keeps max-deleted-entry-id true.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function log_ensure(log, keep_ms)
  if redis.call('EXISTS', log) == 0 then
    local m = redis.call('XADD', log, '*', 'm', '')
    redis.call('XDEL', log, m)
    redis.call('PEXPIRE', log, keep_ms)
  end
end

local function log_trim(log, keep_max, keep_ms)
  local n = redis.call('XLEN', log)
  if n > keep_max then
    local old = redis.call('XRANGE', log, '-', '+', 'COUNT', n - keep_max)
    for i = 1, #old do redis.call('XDEL', log, old[i][1]) end
  end
  local old = redis.call('XRANGE', log, '-', '(' .. (now_ms() - keep_ms) .. '-0', 'COUNT', 100)
  for i = 1, #old do redis.call('XDEL', log, old[i][1]) end
end
