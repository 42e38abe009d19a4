-- One sorted set: ZINCRBY each (member, increment) pair, then keep the ARGV[1] highest.
-- KEYS[1]: the set; ARGV: keep, then member, increment, member, increment, ...
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
return 0
