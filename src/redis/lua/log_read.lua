-- A user's log position and (ARGV[3] == '1') its entries after ARGV[1].
-- Returns {last_generated_id, max_deleted_entry_id, entries}. Creates the log
-- (at a marker) when there is none, so the id handed out is a real position.
local log, since, keep_ms, want, keep_max = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
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
if want == '1' then entries = redis.call('XRANGE', log, '(' .. since, '+') end
return {last, maxdel, entries}
