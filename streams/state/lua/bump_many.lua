-- Every (key, member, increment) of a batch in one call (keys of one node: not a cluster).
-- ARGV[1], ARGV[2]: how many members the popularity set and each neighbour set keep; then per
-- key: "1" if it is the popularity set else "0", the number of pairs, the (member,
-- increment) pairs.
local keep_pop, keep_co = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
for k = 1, #KEYS do
  local is_pop, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for i = 1, n do
    redis.call('ZINCRBY', KEYS[k], ARGV[a + 1], ARGV[a])
    a = a + 2
  end
  local keep = keep_co
  if is_pop == '1' then keep = keep_pop end
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
end
return 0
