-- Claims members of a sorted set scored at most ARGV[1] (ms): each is
-- re-scored to ARGV[2], so it goes to one caller now, and comes due again if
-- that caller dies before finishing (the finishing step removes it).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 500)
for j = 1, #due, 2 do redis.call('ZADD', KEYS[1], ARGV[2], due[j]) end
return due
