-- Shared by commit.lua and read.lua: ARGV is a program of opcodes, each
-- followed by its arguments; a key argument is an index into KEYS.
local a, i = ARGV, 1
local function more() return i <= #a end
local function arg() local v = a[i]; i = i + 1; return v end
local function key() return KEYS[tonumber(arg())] end
-- Redis's clock in ms: the one clock every node's steps use.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A user's created meetings were a plain set before they were dated: one a
-- rolling upgrade still finds counts as empty, and goes at the next create.
local function dated(k)
  return redis.call('TYPE', k).ok ~= 'set'
end
-- How many members of sorted set k are dated later than now (not gone yet).
local function alive(k)
  if not dated(k) then return 0 end
  return redis.call('ZCOUNT', k, '(' .. now_ms(), '+inf')
end
-- A kept answer: field f of hash k, if index idx dates it within ms.
local function kept(k, idx, f, ms)
  local at = redis.call('ZSCORE', idx, f)
  if not at or tonumber(at) <= now_ms() - ms then return nil end
  return redis.call('HGET', k, f)
end
