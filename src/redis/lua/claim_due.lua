-- Claims members of a sorted set that are due by Redis's clock: each is
-- re-scored ARGV[1] ms later, so it goes to one caller now, and comes due
-- again if that caller dies before finishing (the finishing step removes it).
-- Returns member, score pairs (the score: when it was due).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 500)
for j = 1, #due, 2 do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), due[j]) end
return due
