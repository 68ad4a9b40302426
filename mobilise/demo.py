"""A few realistic subscriptions and case updates, so a newcomer sees alerts appear."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import CaseUpdate, Subscription

__all__ = ["demo_case_updates", "demo_subscriptions"]


def demo_subscriptions(now: datetime | None = None) -> list[Subscription]:
    """Five activists across three languages and several kinds of interest."""
    at = (now or datetime.now(UTC)).isoformat()
    raw: list[dict[str, Any]] = [
        {
            "email": "amina@example.org",
            "name": "Amina",
            "language": "en",
            "regions": ["southern-asia"],
            "interests": ["union_busting", "wages"],
        },
        {
            "email": "lucie@example.org",
            "name": "Lucie",
            "language": "fr",
            "worldwide": True,
            "brands": ["H&M", "Zara"],
        },
        {
            "email": "mateo@example.org",
            "name": "Mateo",
            "language": "es",
            "countries": ["HN", "SV", "GT"],
            "interests": ["health_and_safety", "gender_based_violence"],
        },
        {
            "email": "sophie@example.org",
            "name": "Sophie",
            "language": "en",
            "countries": ["KH"],
            "interests": ["severance"],
            "statuses": ["urgent_action", "remedy_won"],
        },
        {
            "email": "jonas@example.org",
            "name": "Jonas",
            "language": "en",
            "countries": ["BD"],
            "interests": ["wages"],
            "confirmed": False,
        },
    ]
    return [
        Subscription.model_validate_json(json.dumps({"confirmed": True, "created_at": at, **r})) for r in raw
    ]


def demo_case_updates(now: datetime | None = None) -> list[CaseUpdate]:
    """Three updates: an urgent action in Bangladesh, a case opened in Honduras, a win in Cambodia."""
    at = now or datetime.now(UTC)
    raw = [
        {
            "case_id": "bd-2026-dhaka-knit",
            "status": "urgent_action",
            "country": "BD",
            "title": {
                "en": "Union leaders fired at Dhaka Knitwear",
                "fr": "Des dirigeants syndicaux licenciés chez Dhaka Knitwear",
                "es": "Despiden a dirigentes sindicales en Dhaka Knitwear",
            },
            "summary": {
                "en": "Twelve elected union leaders were dismissed days after registering their union. "
                "H&M and Zara source from the factory.",
                "fr": "Douze dirigeants syndicaux élus ont été licenciés quelques jours "
                "après l'enregistrement de leur syndicat. H&M et Zara s'approvisionnent dans cette usine.",
            },
            "brands": ["H&M", "Zara"],
            "factory": {"name": "Dhaka Knitwear Ltd", "city": "Gazipur"},
            "issues": ["union_busting", "freedom_of_association"],
            "action_call": {
                "kind": "email_brand",
                "instructions": {
                    "en": "Email H&M's CEO: demand the reinstatement of the twelve union leaders.",
                    "fr": "Écrivez au PDG de H&M : exigez la réintégration des douze dirigeants syndicaux.",
                },
                "target": {"name": "H&M Group, CEO office", "email": "ceo-office@example.com"},
                "deadline": (at + timedelta(days=5)).isoformat(),
            },
            "occurred_at": at.isoformat(),
            "published_by": "coordinator-asia",
            "internal": {"workers_at_risk": ["R. Akter", "M. Hossain"], "source": "union federation call"},
        },
        {
            "case_id": "hn-2026-choloma",
            "status": "opened",
            "country": "HN",
            "title": {
                "en": "Fainting and blocked exits at a Choloma factory",
                "es": "Desmayos y salidas bloqueadas en una fábrica de Choloma",
            },
            "summary": {
                "en": "Workers report mass fainting from heat and locked emergency exits.",
                "es": "Las trabajadoras denuncian desmayos masivos por el calor "
                "y salidas de emergencia cerradas.",
            },
            "brands": ["Gildan"],
            "factory": {"name": "Choloma Textiles", "city": "Choloma"},
            "issues": ["health_and_safety"],
            "occurred_at": at.isoformat(),
            "published_by": "coordinator-americas",
        },
        {
            "case_id": "kh-2025-severance",
            "status": "remedy_won",
            "country": "KH",
            "title": {"en": "1,200 workers paid the severance they were owed"},
            "summary": {"en": "After a year of pressure, the brands funded USD 3.6 million in severance."},
            "brands": ["Adidas"],
            "issues": ["severance", "wages"],
            "occurred_at": at.isoformat(),
            "published_by": "coordinator-asia",
        },
    ]
    return [CaseUpdate.model_validate_json(json.dumps(r)) for r in raw]
