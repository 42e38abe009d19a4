-- Multiply every score of one sorted set by a factor, in one step (visrec signals rescale).
-- KEYS[1]: the sorted set. ARGV[1]: the factor. Returns the members rescaled.
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local factor = tonumber(ARGV[1])
for i = 1, #rows, 2 do
  redis.call('ZADD', KEYS[1], tonumber(rows[i + 1]) * factor, rows[i])
end
return #rows / 2
