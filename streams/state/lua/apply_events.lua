-- Apply one user's events in order, atomically, and return the user's state afterwards.
-- KEYS: the user's state hash, seen set, applied-ids set, signal outbox (one Cluster slot).
-- ARGV: seen_max, applied_max, co_window_ms, co_max_per_event, then per event
-- (event_id, item_id, ts_ms, inc_long, inc_short, inc_popular). Numbers come as strings
-- formatted with %.17g (Lua 5.1 turns a bare number into a string with %.14g, which would
-- round timestamps past 1e14 ms and log weights). The rule is models.interest's; see
-- streams.state.user_state.
-- Each applied event also leaves its popularity and co-occurrence increments in the outbox,
-- in the same atomic step that records its id: "n<TAB>inc<TAB>item<TAB>near..." (n: the
-- user's apply count after it; inc: inc_popular as given, "pop;co" where pairs decay with a
-- half-life of their own). streams.state.signals drains the outbox into the global sets.
-- Reply: per event 0 (already applied) or 1, then the packed state (4 strings), then every
-- entry still in the outbox (this call's and any a crashed worker left undrained).
local state, seen, applied, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seen_max, applied_max = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, co_max = tonumber(ARGV[3]), tonumber(ARGV[4])

-- exactly models.interest.logaddexp
local function lae(a, b)
  local m, d
  if b > a then m, d = b, a - b else m, d = a, b - a end
  return m + math.log(1 + math.exp(d))
end

-- An item's two log weights: 17 bytes, tag 1 then two little-endian doubles (exact, and no
-- text to format or parse); "%.17g %.17g" text written by earlier versions is read too.
local function weights(v)
  if string.byte(v, 1) == 1 then
    local _, l, s = struct.unpack('<Bdd', v)
    return l, s
  end
  local l, s = string.match(v, '^(%S+) (%S+)$')
  return tonumber(l), tonumber(s)
end

local function packed(l, s)
  return struct.pack('<Bdd', 1, l, s)
end

-- The user's event count and latest time, read once and written once per call; so are the
-- sizes of the seen and applied sets (ZADD says whether it added a member).
local head = redis.call('HMGET', state, 'last_ts', 'n')
local last, n = head[1], tonumber(head[2] or '0')
local changed = false
local seen_card = redis.call('ZCARD', seen)
local applied_card = redis.call('ZCARD', applied)
-- What a crashed or failed earlier call left undrained comes first in the reply.
local pending = {}
if redis.call('LLEN', outbox) > 0 then pending = redis.call('LRANGE', outbox, 0, -1) end
local fresh = {}

-- One event: 0 if its id was applied before, else 1 (and its outbox entry queued).
local function apply(eid, item, ts_s, inc_l, inc_s, inc_pop)
  if redis.call('ZSCORE', applied, eid) then
    return 0
  end
  local ts = tonumber(ts_s)
  local field = 'i:' .. item
  local l, s = inc_l, inc_s
  local cur = redis.call('HGET', state, field)
  if cur then
    local cl, cs = weights(cur)
    l = lae(cl, inc_l)
    s = lae(cs, inc_s)
  end
  redis.call('HSET', state, field, packed(l, s))
  if (not last) or tonumber(last) < ts then last = ts_s end
  n = n + 1
  changed = true

  seen_card = seen_card + redis.call('ZADD', seen, 'GT', ts_s, item)
  if seen_card > seen_max then
    local popped = redis.call('ZPOPMIN', seen, seen_card - seen_max)
    local drop = {}
    for i = 1, #popped, 2 do drop[#drop + 1] = 'i:' .. popped[i] end
    redis.call('HDEL', state, unpack(drop))
    seen_card = seen_max
  end

  -- Items touched within the window on either side: a symmetric window makes a pair count
  -- once whichever of its two events is applied second.
  local entry = {string.format('%d', n), inc_pop, item}
  if co_max > 0 then
    local near = redis.call('ZREVRANGEBYSCORE', seen, string.format('%.17g', ts + window),
      string.format('%.17g', ts - window), 'LIMIT', 0, co_max + 1)
    for i = 1, #near do
      if near[i] ~= item and #entry < co_max + 3 then entry[#entry + 1] = near[i] end
    end
  end
  fresh[#fresh + 1] = table.concat(entry, '\t')

  applied_card = applied_card + redis.call('ZADD', applied, string.format('%d', n), eid)
  -- Trimmed after every event, never above applied_max: a set that outgrew Redis's compact
  -- (listpack) encoding limit would stay in the ~8x larger skiplist encoding for good.
  if applied_card > applied_max then
    redis.call('ZREMRANGEBYRANK', applied, 0, applied_card - applied_max - 1)
    applied_card = applied_max
  end
  return 1
end

-- ARGV[5..]: (event_id, item_id, ts_ms, inc_long, inc_short, inc_popular) per event, in order.
local results = {}
for e = 5, #ARGV, 6 do
  results[#results + 1] = apply(ARGV[e], ARGV[e + 1], ARGV[e + 2],
    tonumber(ARGV[e + 3]), tonumber(ARGV[e + 4]), ARGV[e + 5])
end
if #fresh > 0 then redis.call('RPUSH', outbox, unpack(fresh)) end
if changed then
  redis.call('HSET', state, 'last_ts', last, 'n', string.format('%d', n))
end

-- Then the state the refresh reads, packed: item ids joined by newlines (ids hold no control
-- characters) and their 17-byte weights end to end, last_ts, n: two strings, where HGETALL
-- would return two per item. Text weights met here are rewritten in binary, once.
local all = redis.call('HGETALL', state)
local ids, vals = {}, {}
for i = 1, #all, 2 do
  local f = all[i]
  if string.byte(f, 1) == 105 and string.byte(f, 2) == 58 then -- 'i:'
    local v = all[i + 1]
    if string.byte(v, 1) ~= 1 then
      v = packed(weights(v))
      redis.call('HSET', state, f, v)
    end
    ids[#ids + 1] = string.sub(f, 3)
    vals[#vals + 1] = v
  end
end
results[#results + 1] = table.concat(ids, '\n')
results[#results + 1] = table.concat(vals)
results[#results + 1] = last or '0'
results[#results + 1] = string.format('%d', n)
for i = 1, #pending do results[#results + 1] = pending[i] end
for i = 1, #fresh do results[#results + 1] = fresh[i] end
return results
