-- Multiply every score of one sorted set by a factor, in one step (visrec signals rescale).
-- KEYS[1]: the sorted set. ARGV[1]: the factor. Returns the members rescaled.
-- The scores are written back with one ZADD per 500 members (not one per member).
local rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local factor = tonumber(ARGV[1])
local args = {}
for i = 1, #rows, 2 do
  args[#args + 1] = tonumber(rows[i + 1]) * factor
  args[#args + 1] = rows[i]
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then
  redis.call('ZADD', KEYS[1], unpack(args))
end
return #rows / 2
