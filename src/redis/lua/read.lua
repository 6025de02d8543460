-- One round trip of reads. ARGV: opcodes with arguments, key arguments are
-- indexes into KEYS; one result per opcode, in order.
--   hash k            HGETALL
--   kept k idx f ms   a kept answer (field f of k, if idx dates it within ms), or ''
--   alive k           how many members of sorted set k are dated later than now
--   hlen k            HLEN
--   index k prefix    HGETALL of an index (field -> id), then HGETALL prefix..id of each
--   pair k field prefix   {HLEN k, HGETALL prefix..HGET(k, field) or {}}
--   time              Redis's clock: {seconds, microseconds}
local out = {}
while more() do
  local op = arg()
  if op == 'time' then
    out[#out + 1] = redis.call('TIME')
  elseif op == 'hash' then
    out[#out + 1] = redis.call('HGETALL', key())
  elseif op == 'kept' then
    local k, idx, f, ms = key(), key(), arg(), tonumber(arg())
    out[#out + 1] = kept(k, idx, f, ms) or ''
  elseif op == 'hlen' then
    out[#out + 1] = redis.call('HLEN', key())
  elseif op == 'index' then
    local k, prefix = key(), arg()
    local ix = redis.call('HGETALL', k)
    local rooms = {}
    for j = 2, #ix, 2 do rooms[#rooms + 1] = redis.call('HGETALL', prefix .. ix[j]) end
    out[#out + 1] = rooms
  elseif op == 'pair' then
    local k, f, prefix = key(), arg(), arg()
    local id = redis.call('HGET', k, f)
    local room = {}
    if id then room = redis.call('HGETALL', prefix .. id) end
    out[#out + 1] = {redis.call('HLEN', k), room}
  elseif op == 'alive' then
    out[#out + 1] = alive(key())
  else
    return redis.error_reply('read: unknown op ' .. tostring(op))
  end
end
return out
