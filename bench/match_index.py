"""Benchmark of the inverted subscriber index (streams.matching.SubscriberIndex) in one process.

What is measured, and how:

* construction: building N ``Subscription`` objects with ``Subscription.model_construct``
  (no validation; the values are built already in their validated form: upper-case
  country codes, ``Region`` and ``CaseStatus`` members, lower-case interest slugs, an
  explicit ``subscriber_id``). Timed separately from the index because it is not index work.
* index build: N ``SubscriberIndex.upsert`` calls, wall time (``perf_counter``).
* index memory: resident set size (``VmRSS`` from ``/proc/self/status``) after the build
  minus before it, after a ``gc.collect()`` on both sides. tracemalloc is not used: the
  Roaring bitmaps are allocated by CRoaring with ``malloc``, which tracemalloc does not see.
  The subscriptions themselves are not part of this delta (the index only references them);
  the serialized size of all posting lists is reported as well.
* ``match_ids``: wall time of computing the matching set (a Roaring bitmap of dense ids)
  for each update of a stream of random case updates; median, p90, p99.
* ``match``: wall time of ``match`` (matching set, then for each matched subscriber the
  dictionary look-ups and the ``reason_for`` explanation) on the first ``--match-updates``
  updates of the same stream, and its cost per matched subscriber.
* correctness: on an index of the first ``--check-subset`` subscriptions, for
  ``--check-updates`` updates, the ids behind ``match_ids`` and behind ``match`` must equal
  ``matches_naively`` over the same subscriptions.

Synthetic population (seeded): 60 real countries (garment-producing and consumer
countries, spread over 16 UN M49 regions), the 15 base interests and 300 brands
("Brand 001" ...). Countries and brands are drawn with Zipf-like weights (weight of the
k-th most popular item ∝ 1/k), interests uniformly. About 5 % of people follow the
world, 10 % follow 1–2 regions, the rest 1–3 countries; everyone has 1–3 interests and
1–3 brands; 85 % want every status, 15 % a subset of 1–3 statuses. All are confirmed.
Case updates: a uniformly random country among the 60 (its region derived), 1–3 issues
(uniform), 0–3 brands (same Zipf weights), a uniformly random status.

Run: ``python bench/match_index.py [--subscribers 1000000] [--updates 1000] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from schemas import BASE_INTERESTS, CaseStatus, CaseUpdate, PublicCase, Region, Subscription, region_of
from streams.matching import SubscriberIndex, matches_naively

# Garment-producing countries first (they are what most activists follow), then
# consumer countries; the order is the popularity rank used by the Zipf weights.
COUNTRIES: tuple[str, ...] = tuple(
    "BD CN IN VN KH PK ID TR LK MM ET MA TN MX HN GT SV NI HT DO BR PE CO PH TH MY LA JO EG KE "  # noqa: SIM905
    "LS MG MU ZA US GB DE FR NL BE SE DK NO FI ES IT PT IE AT CH PL CZ RO BG AU NZ CA JP KR AR".split()
)
BRANDS: tuple[str, ...] = tuple(f"Brand {i:03d}" for i in range(1, 301))
ALL_STATUSES: tuple[CaseStatus, ...] = tuple(CaseStatus)
LANGUAGES: tuple[str, ...] = ("en", "en", "en", "fr", "es", "de", "bn")
CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)

T = TypeVar("T")


def zipf_cumulative(n: int, exponent: float = 1.0) -> list[float]:
    """Cumulative Zipf-like weights for ranks 1..n (weight of rank k ∝ 1 / k**exponent)."""
    return list(itertools.accumulate(1.0 / (k**exponent) for k in range(1, n + 1)))


def distinct(rng: random.Random, items: Sequence[T], cum_weights: list[float], k: int) -> tuple[T, ...]:
    """``k`` distinct items drawn with ``cum_weights`` (rejection of repeats; k is tiny)."""
    chosen: dict[T, None] = {}
    while len(chosen) < k:
        chosen[rng.choices(items, cum_weights=cum_weights)[0]] = None
    return tuple(chosen)


class Population:
    """Draws subscriptions and case updates from the synthetic distributions."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.country_weights = zipf_cumulative(len(COUNTRIES))
        self.brand_weights = zipf_cumulative(len(BRANDS))
        self.construct_ns = 0
        """Time spent inside ``Subscription.model_construct`` (drawing the values excluded)."""

    def subscription(self, number: int) -> Subscription:
        rng = self.rng
        roll = rng.random()
        worldwide = roll < 0.05
        regions: tuple[Region, ...] = ()
        countries: tuple[str, ...] = ()
        if 0.05 <= roll < 0.15:
            # A region follower picks regions the way country followers pick countries.
            picked = distinct(rng, COUNTRIES, self.country_weights, rng.randint(1, 2))
            regions = tuple(dict.fromkeys(region_of(c) for c in picked))
        elif roll >= 0.15:
            countries = distinct(rng, COUNTRIES, self.country_weights, rng.randint(1, 3))
        statuses = ALL_STATUSES if rng.random() < 0.85 else tuple(rng.sample(ALL_STATUSES, rng.randint(1, 3)))
        start = time.perf_counter_ns()
        subscription = Subscription.model_construct(
            subscriber_id=f"sub-{number:08d}",
            email=f"person{number}@example.org",
            name=None,
            language=rng.choice(LANGUAGES),
            regions=regions,
            countries=countries,
            worldwide=worldwide,
            interests=tuple(rng.sample(BASE_INTERESTS, rng.randint(1, 3))),
            brands=distinct(rng, BRANDS, self.brand_weights, rng.randint(1, 3)),
            statuses=statuses,
            confirmed=True,
            created_at=CREATED_AT,
        )
        self.construct_ns += time.perf_counter_ns() - start
        return subscription

    def case(self, number: int) -> PublicCase:
        rng = self.rng
        brands = distinct(rng, BRANDS, self.brand_weights, rng.randint(0, 3))
        update = CaseUpdate.model_validate_json(
            json.dumps(
                {
                    "case_id": f"case-{number}",
                    "status": rng.choice(ALL_STATUSES).value,
                    "title": {"en": f"Case {number}"},
                    "summary": {"en": "Synthetic case for the matching benchmark."},
                    "country": rng.choice(COUNTRIES),
                    "brands": list(brands),
                    "issues": rng.sample(BASE_INTERESTS, rng.randint(1, 3)),
                    "occurred_at": CREATED_AT.isoformat(),
                    "published_by": "bench",
                }
            )
        )
        return update.public()


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Timings:
    """Per-call wall times in milliseconds."""

    values_ms: list[float]

    def row(self, name: str) -> str:
        ordered = sorted(self.values_ms)
        return (
            f"| {name} | {len(ordered)} | {statistics.median(ordered):.3f} | {percentile(ordered, 0.9):.3f} "
            f"| {percentile(ordered, 0.99):.3f} | {statistics.fmean(ordered):.3f} | {ordered[-1]:.3f} |"
        )


def posting_bytes(index: SubscriberIndex) -> int:
    """Serialized size of every posting list (reaches into the index's private state)."""
    p = index._postings
    lists = [p.worldwide]
    for table in (p.regions, p.countries, p.interests, p.brands, p.statuses):
        lists.extend(table.values())
    return sum(len(b.serialize()) for b in lists)


def check(subscriptions: list[Subscription], cases: list[PublicCase]) -> list[int]:
    """Index vs the naive rule on ``subscriptions``; returns the matching-set sizes compared."""
    index = SubscriberIndex()
    for s in subscriptions:
        index.upsert(s)
    sizes = []
    for case in cases:
        naive = matches_naively(subscriptions, case)
        by_ids = {index._sparse[dense] for dense in index.match_ids(case)}
        by_match = {s.subscriber_id for s, _ in index.match(case)}
        assert by_ids == naive, f"match_ids disagrees with matches_naively for {case.case_id}"
        assert by_match == naive, f"match disagrees with matches_naively for {case.case_id}"
        sizes.append(len(naive))
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=1_000, help="case updates timed with match_ids")
    parser.add_argument(
        "--match-updates", type=int, default=1_000, help="of those, how many are also timed with match"
    )
    parser.add_argument("--check-subset", type=int, default=50_000)
    parser.add_argument("--check-updates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    population = Population(args.seed)
    gc.collect()
    rss_start = rss_bytes()
    start = time.perf_counter()
    subscriptions = [population.subscription(i) for i in range(args.subscribers)]
    construct_s = time.perf_counter() - start
    gc.collect()
    rss_constructed = rss_bytes()

    index = SubscriberIndex()
    start = time.perf_counter()
    for s in subscriptions:
        index.upsert(s)
    build_s = time.perf_counter() - start
    gc.collect()
    rss_indexed = rss_bytes()

    cases = [population.case(i) for i in range(args.updates)]
    id_times = []
    sizes = []
    for case in cases:
        start_ns = time.perf_counter_ns()
        ids = index.match_ids(case)
        id_times.append((time.perf_counter_ns() - start_ns) / 1e6)
        sizes.append(len(ids))
    match_times = []
    matched_total = 0
    for case in cases[: args.match_updates]:
        start_ns = time.perf_counter_ns()
        found = index.match(case)
        match_times.append((time.perf_counter_ns() - start_ns) / 1e6)
        matched_total += len(found)

    checked = check(subscriptions[: args.check_subset], cases[: args.check_updates])

    ordered = sorted(sizes)
    print(f"## SubscriberIndex, {args.subscribers:,} subscriptions (seed {args.seed})\n")
    print(f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}\n")
    print("| step | figure |")
    print("|---|---|")
    print(
        f"| draw values + construct {args.subscribers:,} Subscription | {construct_s:.2f} s "
        f"(of which model_construct {population.construct_ns / 1e9:.2f} s) |"
    )
    print(f"| RSS delta of the subscriptions | {(rss_constructed - rss_start) / 2**20:,.0f} MiB |")
    print(
        f"| index build ({args.subscribers:,} upserts) | {build_s:.2f} s "
        f"({args.subscribers / build_s:,.0f} upserts/s) |"
    )
    print(f"| RSS delta of the index build | {(rss_indexed - rss_constructed) / 2**20:,.0f} MiB |")
    print(f"| serialized size of all posting lists | {posting_bytes(index) / 2**20:,.1f} MiB |")
    print(
        f"| matching-set size over {len(sizes)} updates | mean {statistics.fmean(sizes):,.0f}, "
        f"median {statistics.median(ordered):,.0f}, p90 {percentile(ordered, 0.9):,.0f}, "
        f"max {ordered[-1]:,} ({statistics.fmean(sizes) / args.subscribers:.1%} of subscribers) |"
    )
    per_match_us = sum(match_times) * 1000 / matched_total if matched_total else float("nan")
    print(f"| match cost per matched subscriber | {per_match_us:.2f} µs |")
    print(
        f"| correctness ({len(checked)} updates, {min(args.check_subset, args.subscribers):,}-subscription "
        f"index vs matches_naively) | equal; sizes {min(checked):,}–{max(checked):,} |"
    )
    print()
    print("| call | updates | median ms | p90 ms | p99 ms | mean ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    print(Timings(id_times).row("match_ids (matching set)"))
    print(Timings(match_times).row("match (set + reasons)"))


if __name__ == "__main__":
    main()
