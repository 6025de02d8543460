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
-- How many members of set k name a key prefix..member that still exists.
local function live_count(k, prefix)
  local n = 0
  for _, m in ipairs(redis.call('SMEMBERS', k)) do
    if redis.call('EXISTS', prefix .. m) == 1 then n = n + 1 end
  end
  return n
end
