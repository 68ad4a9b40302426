"""The match rule and the inverted index that evaluates it without scanning subscribers.

A subscriber matches a case update when all of these hold:

* geography: they follow the world, the case's region or the case's country;
* topic: one of their interests is among the case's issues, or one of their brands is
  among the case's brands;
* status: they want updates of the case's new status;
* they confirmed their address.

Every posting list is a Roaring bitmap of dense integer ids, so a match is a handful of
compressed-set unions and one intersection: its cost follows the sizes of the touched
posting lists in compressed form and the size of the result, not the number of subscribers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyroaring import BitMap

from schemas import CaseStatus, MatchReason, PublicCase, Region, Subscription, brand_key

__all__ = ["SubscriberIndex", "matches_naively", "reason_for"]


_NOBODY = BitMap()


def _case_brand_keys(case: PublicCase) -> dict[str, str]:
    return {brand_key(b): b for b in case.brands}


def reason_for(subscription: Subscription, case: PublicCase) -> MatchReason | None:
    """Explain why ``subscription`` matches ``case``, or return None when it does not.

    This is the match rule written out directly; the index must agree with it.
    """
    if not subscription.confirmed or case.status not in subscription.statuses:
        return None
    worldwide = subscription.worldwide
    region = case.region if case.region in subscription.regions else None
    country = case.country if case.country in subscription.countries else None
    if not (worldwide or region or country):
        return None
    interests = tuple(i for i in case.issues if i in subscription.interests)
    wanted = {brand_key(b) for b in subscription.brands}
    brands = tuple(name for key, name in _case_brand_keys(case).items() if key in wanted)
    if not (interests or brands):
        return None
    return MatchReason(
        worldwide=worldwide, region=region, country=country, interests=interests, brands=brands
    )


def matches_naively(subscriptions: Iterable[Subscription], case: PublicCase) -> set[str]:
    """Reference matcher: test every subscription. For tests and benchmarks only."""
    return {s.subscriber_id for s in subscriptions if reason_for(s, case) is not None}


@dataclass(slots=True)
class _Postings:
    worldwide: BitMap
    regions: defaultdict[Region, BitMap]
    countries: defaultdict[str, BitMap]
    interests: defaultdict[str, BitMap]
    brands: defaultdict[str, BitMap]
    statuses: defaultdict[CaseStatus, BitMap]

    @classmethod
    def empty(cls) -> _Postings:
        return cls(
            BitMap(),
            defaultdict(BitMap),
            defaultdict(BitMap),
            defaultdict(BitMap),
            defaultdict(BitMap),
            defaultdict(BitMap),
        )

    def lists_of(self, s: Subscription) -> Iterator[BitMap]:
        if s.worldwide:
            yield self.worldwide
        yield from (self.regions[r] for r in set(s.regions))
        yield from (self.countries[c] for c in set(s.countries))
        yield from (self.interests[i] for i in set(s.interests))
        yield from (self.brands[b] for b in {brand_key(b) for b in s.brands})
        yield from (self.statuses[st] for st in set(s.statuses))


class SubscriberIndex:
    """The subscribers of one shard and their posting lists.

    Unconfirmed subscriptions are kept (they may be confirmed later) but are in no
    posting list, so they can never match.
    """

    def __init__(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}
        self._dense: dict[str, int] = {}
        self._sparse: dict[int, str] = {}
        self._next = 0
        self._postings = _Postings.empty()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def __contains__(self, subscriber_id: object) -> bool:
        return subscriber_id in self._subscriptions

    def get(self, subscriber_id: str) -> Subscription | None:
        """The stored subscription, or None."""
        return self._subscriptions.get(subscriber_id)

    def upsert(self, subscription: Subscription) -> None:
        """Add a subscription or replace the one with the same subscriber_id."""
        self.remove(subscription.subscriber_id)
        sid = subscription.subscriber_id
        self._subscriptions[sid] = subscription
        if not subscription.confirmed:
            return
        dense = self._next
        self._next += 1
        self._dense[sid] = dense
        self._sparse[dense] = sid
        for posting in self._postings.lists_of(subscription):
            posting.add(dense)

    def remove(self, subscriber_id: str) -> Subscription | None:
        """Forget a subscriber entirely; return what was stored, if anything."""
        old = self._subscriptions.pop(subscriber_id, None)
        dense = self._dense.pop(subscriber_id, None)
        if old is not None and dense is not None:
            del self._sparse[dense]
            for posting in self._postings.lists_of(old):
                posting.discard(dense)
        return old

    def match_ids(self, case: PublicCase) -> BitMap:
        """Dense ids of every matching subscriber (the matching set, before explanation)."""
        p = self._postings
        geography = BitMap.union(
            p.worldwide, p.regions.get(case.region, BitMap()), p.countries.get(case.country, BitMap())
        )
        topical = [p.interests[i] for i in case.issues if i in p.interests]
        topical += [p.brands[k] for k in _case_brand_keys(case) if k in p.brands]
        if not topical or not geography:
            return BitMap()
        wanted = p.statuses.get(case.status)
        if wanted is None:
            return BitMap()
        return BitMap.union(*topical) & geography & wanted

    def match(self, case: PublicCase) -> list[tuple[Subscription, MatchReason]]:
        """Every matching subscription with the reason it matched.

        The reason is read off the posting lists the subscriber is in, which says the
        same as :func:`reason_for` (a property test holds them to it) at a fraction of
        the cost: this runs once per matched person of a case update.
        """
        p = self._postings
        ids = self.match_ids(case)
        if not ids:
            return []
        region = p.regions.get(case.region, _NOBODY)
        country = p.countries.get(case.country, _NOBODY)
        interests = [(i, p.interests[i]) for i in case.issues if i in p.interests]
        brands = [(name, p.brands[k]) for k, name in _case_brand_keys(case).items() if k in p.brands]
        # Reasons repeat (a case has few issues and brands): one frozen instance per combination.
        reasons: dict[tuple[bool, bool, bool, tuple[str, ...], tuple[str, ...]], MatchReason] = {}
        found = []
        for dense in ids:
            key = (
                dense in p.worldwide,
                dense in region,
                dense in country,
                tuple(i for i, posting in interests if dense in posting),
                tuple(name for name, posting in brands if dense in posting),
            )
            reason = reasons.get(key)
            if reason is None:
                # Values are the case's own, already validated: construct without re-checking.
                reason = reasons[key] = MatchReason.model_construct(
                    worldwide=key[0],
                    region=case.region if key[1] else None,
                    country=case.country if key[2] else None,
                    interests=key[3],
                    brands=key[4],
                )
            found.append((self._subscriptions[self._sparse[dense]], reason))
        return found
