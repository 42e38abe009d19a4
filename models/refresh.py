"""The refresh of a batch of users as pure array functions: states in, ranked lists out.

A batch is refreshed in two steps with one read between them:

1. ``models.profile.profile_batch``: every user's vector, seen items as index rows, and top
   contributing items (whose co-occurrence lists are read next);
2. ``models.ranking.rank_batch``: one search for all users, candidate pools, blended scores,
   filters and reasons as arrays.

``refresh_batch`` runs both with the co-occurrence lists given (tests, offline use). No I/O
here: the worker reads states and lists from Redis and writes the results.

Time is event time: each user's list is computed at ``now_ms``, the time of the event it
answers, so a replay of a log gives the lists it gave live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from models.candidates import CoLists, PopularBlock
from models.index import ItemIndex
from models.interest import InterestParams
from models.profile import CONTRIBUTORS, BatchStates, profile_batch
from models.ranking import RankedLists, RankParams, rank_batch


def refresh_batch(
    states: BatchStates,
    index: ItemIndex,
    co: Mapping[str, tuple[Sequence[str], npt.NDArray[np.float64]]],
    popular: PopularBlock,
    interest: InterestParams,
    ranking: RankParams,
) -> RankedLists:
    """Both steps: the ranked lists of every user of ``states``.

    ``co`` maps an item to its strongest co-occurring items and their (undecayed) scores,
    best first; ``popular`` is the popularity list prepared for ``index``.
    """
    profiles = profile_batch(states, index, interest)
    return rank_batch(profiles, index, CoLists.of(co, index), popular, ranking)


def co_per_contributor(ranking: RankParams) -> int:
    """Neighbours read per contributor.

    The strongest few of each suffice to find a user's ``candidates`` strongest co-occurring
    items.
    """
    return max(ranking.top_k, math.ceil(2 * ranking.candidates / CONTRIBUTORS))
