-- One atomic step: check every guard, then write, log, publish and record.
-- It knows nothing of users or rooms: the node sends a small program of
-- guards and writes (see src/redis/step.rs) built from the Rust domain rules.
-- ARGV is a flat list of opcodes, each followed by its arguments; a key
-- argument is an index into KEYS. Guards come before any write, so a failed
-- guard leaves nothing behind.
local ids, oids = {}, {}
-- Whether stream id a ("ms-seq") comes after b.
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
-- On a Redis Cluster channels are sharded (in the step's slot): 'sharded' says so first.
local publish = 'PUBLISH'
while more() do
  local op = arg()
  if op == 'sharded' then
    publish = 'SPUBLISH'
  elseif op == 'once' then
    -- A relayed outbox entry of shard src: applied only past the last entry
    -- relayed from src (entries are relayed in order), so a second relay of
    -- one does nothing. One field per shard: bounded.
    local k, src, id = key(), arg(), arg()
    local last = redis.call('HGET', k, src)
    if last and not after(id, last) then return {'ok', ids, oids} end
    redis.call('HSET', k, src, id)
  elseif op == 'outbox' then
    -- Writes for another shard: kept here, in this step, until relayed.
    local k, target, prog = key(), arg(), arg()
    oids[#oids + 1] = redis.call('XADD', k, '*', 't', target, 'p', prog)
  elseif op == 'fresh' then
    local k, idx, f, ms = key(), key(), arg(), tonumber(arg())
    local v = kept(k, idx, f, ms)
    if v then return {'recorded', v} end
  elseif op == 'feq' then
    local k, f, want = key(), arg(), arg()
    local v = redis.call('HGET', k, f) or '0'
    if v ~= want then return {'conflict'} end
  elseif op == 'open' then
    local k = key()
    local v = redis.call('HGET', k, 'open')
    if not v then
      if redis.call('EXISTS', k) == 0 then return {'missing'} end
      return {'closed'}
    end
  elseif op == 'len' then
    local k, n = key(), tonumber(arg())
    if redis.call('HLEN', k) ~= n then return {'conflict'} end
  elseif op == 'canshow' then
    local k, f, max = key(), arg(), tonumber(arg())
    if redis.call('HEXISTS', k, f) == 1 or redis.call('HLEN', k) >= max then return {'conflict'} end
  elseif op == 'alive' then
    local k, n = key(), tonumber(arg())
    if alive(k) ~= n then return {'conflict'} end
  elseif op == 'created' then
    -- A new meeting joins its creator's set (its own writes date it next);
    -- the gone ones leave it, so the set stays within
    -- limits.max_meetings_per_user + 1.
    local k, m = key(), arg()
    if not dated(k) then redis.call('DEL', k) end
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now_ms())
    redis.call('ZADD', k, '+inf', m)
  elseif op == 'gone' then
    -- When a meeting is gone (now + ms), or '' while it has members: as its key expires.
    local k, m, ms = key(), arg(), arg()
    local at = '+inf'
    if ms ~= '' then at = now_ms() + tonumber(ms) end
    if dated(k) then redis.call('ZADD', k, 'XX', at, m) end
  elseif op == 'has' then
    local k, f = key(), arg()
    if redis.call('HEXISTS', k, f) == 0 then return {'conflict'} end
  elseif op == 'hset' then
    local k, n = key(), tonumber(arg())
    for _ = 1, n do redis.call('HSET', k, arg(), arg()) end
  elseif op == 'hdel' then
    redis.call('HDEL', key(), arg())
  elseif op == 'hincr' then
    redis.call('HINCRBY', key(), arg(), 1)
  elseif op == 'pexpire' then
    redis.call('PEXPIRE', key(), arg())
  elseif op == 'persist' then
    redis.call('PERSIST', key())
  elseif op == 'zadd' then
    local k, score, m = key(), arg(), arg()
    redis.call('ZADD', k, score, m)
  elseif op == 'zaddxx' then
    local k, score, m = key(), arg(), arg()
    redis.call('ZADD', k, 'XX', score, m)
  elseif op == 'touch' then
    -- A room's last activity, by Redis's clock (ICE commits without a read).
    local k, z, r = key(), key(), arg()
    local now = now_ms()
    redis.call('HSET', k, 't', now)
    redis.call('ZADD', z, 'XX', now, r)
  elseif op == 'zrem' then
    redis.call('ZREM', key(), arg())
  elseif op == 'sadd' then
    redis.call('SADD', key(), arg())
  elseif op == 'srem' then
    redis.call('SREM', key(), arg())
  elseif op == 'keep' then
    -- An idempotent answer in the user's hash, dated in their index: those
    -- older than ms go, and past `max` the oldest go first.
    local k, idx, f, v, ms, max = key(), key(), arg(), arg(), tonumber(arg()), tonumber(arg())
    local now = now_ms()
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', now - ms)) do redis.call('HDEL', k, old) end
    redis.call('ZREMRANGEBYSCORE', idx, '-inf', now - ms)
    redis.call('HSET', k, f, v)
    redis.call('ZADD', idx, now, f)
    redis.call('PEXPIRE', idx, ms)
    redis.call('PEXPIRE', k, ms)
    local over = redis.call('ZCARD', idx) - max
    if over > 0 then
      local old = redis.call('ZPOPMIN', idx, over)
      for i = 1, #old, 2 do redis.call('HDEL', k, old[i]) end
    end
  elseif op == 'log' then
    local log, chan, action, accepted, json, keep_max, keep_ms = key(), key(), arg(), arg(), arg(), tonumber(arg()), tonumber(arg())
    log_ensure(log, keep_ms)
    local id = redis.call('XADD', log, '*', 'a', action, 't', accepted, 'e', json)
    log_trim_count(log, keep_max)
    redis.call(publish, chan, id .. '\n' .. action .. '\n' .. accepted .. '\n' .. json)
    ids[#ids + 1] = id
  elseif op == 'plog' then
    -- update_user: kept in one capped stream for catching up, then published
    -- to everyone's channel and to the user's own (for the nodes that only
    -- watch some users).
    local log, chan, mine, accepted, json, keep_max = key(), key(), key(), arg(), arg(), arg()
    local id = redis.call('XADD', log, 'MAXLEN', '~', keep_max, '*', 't', accepted, 'e', json)
    local msg = id .. '\n' .. accepted .. '\n' .. json
    redis.call(publish, chan, msg)
    redis.call(publish, mine, msg)
  elseif op == 'hook' then
    -- A webhook, recorded with its change (crate::webhooks delivers it).
    local k, subject, body, max = key(), arg(), arg(), arg()
    redis.call('XADD', k, 'MAXLEN', '~', max, '*', 'u', subject, 'b', body)
  elseif op == 'count' then
    local k, f, d = key(), arg(), arg()
    redis.call('HINCRBY', k, f, d)
  elseif op == 'del' then
    redis.call('DEL', key())
  else
    return redis.error_reply('commit: unknown op ' .. tostring(op))
  end
end
return {'ok', ids, oids}
