-- Webhook delivery's own atomic steps (see src/webhooks): ARGV[1] names one.
local op = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if op == 'hold' then
  -- KEYS[1] holder key: taken or renewed by ARGV[2] for ARGV[3] ms, unless another holds it.
  local h = redis.call('GET', KEYS[1])
  if h and h ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
elseif op == 'release' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
  return 1
elseif op == 'bury' then
  -- KEYS[1] the shard's stream, KEYS[2] its dead letters: the entry goes
  -- to the dead letters and leaves its group's pending list at once.
  local group, id, subject, body, url, err, attempts, max = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', max, '*', 'u', subject, 'b', body, 'url', url, 'g', group, 'err', err, 'n', attempts, 'at', now_ms())
  redis.call('XACK', KEYS[1], group, id)
  return 1
elseif op == 'replay' then
  -- A dead letter back into the stream, for its one receiver group.
  local got = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2])
  if #got == 0 then return 0 end
  local f, h = got[1][2], {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'u', h['u'], 'b', h['b'], 'o', h['g'])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return 1
end
return redis.error_reply('hooks: unknown op ' .. tostring(op))
