-- A user's log position and (ARGV[3] == '1') its entries after ARGV[1]: all
-- of them, or (ARGV[5] > 0) the oldest whose fields fit in ARGV[5] bytes, at
-- least one, so a long poll's answer is bounded here, not after the transfer.
-- Returns {last_generated_id, max_deleted_entry_id, entries}. Creates the log
-- (at a marker) when there is none, so the id handed out is a real position.
local log, since, keep_ms, want, keep_max = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5]) or 0
log_ensure(log, keep_ms)
log_trim_count(log, keep_max)
log_trim_age(log, keep_ms)
local info = redis.call('XINFO', 'STREAM', log)
local last, maxdel = '0-0', '0-0'
for j = 1, #info, 2 do
  if info[j] == 'last-generated-id' then last = info[j + 1] end
  if info[j] == 'max-deleted-entry-id' then maxdel = info[j + 1] end
end
local entries = {}
if want == '1' and max_bytes <= 0 then
  entries = redis.call('XRANGE', log, '(' .. since, '+')
elseif want == '1' then
  local from, bytes = '(' .. since, 0
  while true do
    local batch = redis.call('XRANGE', log, from, '+', 'COUNT', 16)
    if #batch == 0 then break end
    for _, e in ipairs(batch) do
      local size = 0
      for j = 2, #e[2], 2 do size = size + #e[2][j] end
      if #entries > 0 and bytes + size > max_bytes then return {last, maxdel, entries} end
      bytes = bytes + size
      entries[#entries + 1] = e
    end
    from = '(' .. batch[#batch][1]
  end
end
return {last, maxdel, entries}
