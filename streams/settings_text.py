"""Long descriptions of settings (``streams.settings``), kept apart from the fields."""

RECENT = (
    "Share of the visual score taken by the closest of the user's recent_items latest items, "
    "each also retrieving its own candidates (models/recent.py). 0 = off."
)
CO_SHARE = (
    "Co-occurrence scores are weighed by the contributing item's share of the user's interest "
    "to this power (0 = every contributor alike)."
)
CO_SUM = "An item's co-occurrence score sums over the user's contributors (false: the largest)."
CO_NORM = "Each contributor's co-occurrence counts over its list's strongest, before weighing."
CO_POP = "Co-occurrence counts over the neighbour's popularity ** this (0 = off; reads it if > 0)."
SHORT_WEIGHT = "Session interest's weight just after an event; fades with half_life_short_s."
POP_PRIOR = "popularity_weight x (1 + this / n) for a user with n items: a prior (0 = off)."
POP_IDLE = (
    "Popularity's weight also grows by up to 1 + this while a user is idle, for their list "
    "ranked again (interest.stale_after_s): their tastes are older than what is popular now."
)
POP_IDLE_H = "Idle time at which popularity_idle_boost has reached half its effect."
FRESH = (
    "Weight of freshness, 2^(-age / fresh_half_life_s) since the item's arrival, in the "
    "blended score; > 0 also adds the newest arrivals to every pool. 0 = off."
)
STALE_AFTER = (
    "Rank a user's list again once it is this old (event time) while they are idle, so a "
    "returning shopper finds today's popularity and new arrivals: checked by the batches that "
    "re-read the popularity list, for their partitions' users. 0 = off."
)
STALE_ACTIVE = "Idle users are ranked again only while their last event is newer than this."
STALE_PER_BATCH = "Most idle users whose lists one batch ranks again (oldest lists first)."
HALF_LIFE_CO = (
    "Half-life of co-occurrence counts. Which items go together changes more slowly than "
    "which are in demand: validation chose 90 days (bench/results/eval/tuning_co_half_life.json)"
    "; the default stays popularity's 7 days, what stored pairs were counted with. Stored "
    "scores only mean something under the half-life they were written with: to change it on "
    "a running shop, stop the interest workers and run `visrec signals rescale` (a worker "
    "configured otherwise refuses to start)."
)
HALF_LIFE_POP = (
    "Half-life of popularity counts. Changing it on a running shop: stop the interest "
    "workers, then `visrec signals rescale`."
)
CO_NEIGHBOURS = (
    "Neighbours kept per item (its strongest; ~41 bytes each in Redis). A set trimmed short "
    "stops learning once full (a new pair enters at the bottom and is cut again); 100 keeps "
    "more of the signal but costs 1.13x the Redis command time per event (bench/RESULTS.md)."
)
