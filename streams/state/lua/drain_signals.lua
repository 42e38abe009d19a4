-- Drain users' signal outboxes into popularity and co-occurrence, atomically: each outbox
-- entry takes effect exactly once, however often a batch is retried or redelivered.
-- KEYS: the outboxes (n_outboxes of them), then every signal key the increments touch.
-- ARGV[1..4]: n_outboxes, how many members the popularity set and each neighbour set keep,
-- and the popularity key's position in KEYS (0: not touched). Then per outbox: how many
-- entries the client read (k), the first and the last entry's sequence number. Then per
-- signal key (KEYS[n_outboxes + 1] on): the number of pairs, the (member, increment) pairs:
-- the client's sums of those entries.
-- If any outbox no longer starts with exactly the entries the client read (another worker
-- drained it meanwhile), nothing is written and the reply is 0: the client reads the outboxes
-- again. Else the increments are added, the k entries removed, and the reply is 1.
local n_out, keep_pop, keep_co = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local pop_at = tonumber(ARGV[4])

local function starts(entry, seq)
  return entry and string.sub(entry, 1, #seq + 1) == seq .. '\t'
end

-- Take each outbox's first k entries; if any is not what the client read, put every taken
-- entry back where it was and write nothing.
local taken = {}
local a = 5
for o = 1, n_out do
  local k, first, last = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  local got = redis.call('LPOP', KEYS[o], k)
  taken[o] = got or {}
  if not (got and #got == k and starts(got[1], first) and starts(got[k], last)) then
    for p = 1, o do
      local back = taken[p]
      for i = #back, 1, -1 do redis.call('LPUSH', KEYS[p], back[i]) end
    end
    return 0
  end
end
local b = a
for key = n_out + 1, #KEYS do
  local n = tonumber(ARGV[b])
  b = b + 1
  for i = 1, n do
    redis.call('ZINCRBY', KEYS[key], ARGV[b + 1], ARGV[b])
    b = b + 2
  end
  local keep = keep_co
  if key == pop_at then keep = keep_pop end
  redis.call('ZREMRANGEBYRANK', KEYS[key], 0, -(keep + 1))
end
return 1
