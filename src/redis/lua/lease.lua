-- Renews lease ARGV[1] in sorted set KEYS[1] for ARGV[2] ms from now, by
-- Redis's clock. Returns {kept, until}: kept is 1 when the lease was still as
-- its node left it (scored ARGV[3]; '' on the first renewal), 0 when a peer
-- swept it or re-scored it to claim it.
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
local kept = 0
if ARGV[3] == '' or (was and tonumber(was) == tonumber(ARGV[3])) then kept = 1 end
return {kept, until_ms}
