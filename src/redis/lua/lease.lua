-- Renews lease ARGV[1] in sorted set KEYS[1] until ARGV[2] (ms). Returns 1 when
-- it was still as its node left it (scored ARGV[3]; '' on the first renewal),
-- 0 when a peer swept it or re-scored it to claim it.
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[3] == '' then return 1 end
if was and tonumber(was) == tonumber(ARGV[3]) then return 1 end
return 0
