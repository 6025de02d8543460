-- Members of sorted set KEYS[1] scored ARGV[1] ms or more before Redis's
-- clock (rooms with no activity for that long), at most 100.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 100)
