"""The event models: the only contract between the parts of mobilise and its integrators."""

from .action_taken import ActionTaken, taken_id_for
from .alert import (
    Alert,
    AlertBatch,
    DigestEntry,
    MatchReason,
    Recipient,
    alert_id_for,
    alert_ids_for,
    batch_id_for,
    digest_event_id_for,
    reminded_event_id,
    reminder_event_id_for,
)
from .api_token import ApiToken, TokenRole
from .audit import AuditAction, AuditRecord, audit_id_for
from .case_update import (
    ActionCall,
    ActionGoal,
    ActionTarget,
    ActionVariant,
    CaseUpdate,
    Factory,
    PublicCase,
    action_id_for,
)
from .dead_letter import DeadLetter, FieldError
from .delivery import DeliveryEvent, DeliveryOutcome, DeliveryRecords
from .geography import Country, Region, country_name, known_countries, region_of
from .subscription import Subscription, subscriber_id_for
from .suppression import (
    SubscriptionsRecord,
    Suppression,
    SuppressionReason,
    read_subscriptions_record,
)
from .vocabulary import (
    BASE_INTERESTS,
    ActionKind,
    CaseStatus,
    Interest,
    Language,
    brand_key,
    known_interests,
)
from .wave import Wave, WaveCancellation, local_instant, release_at, wave_id_for, zone_for

__all__ = [
    "BASE_INTERESTS",
    "ActionCall",
    "ActionGoal",
    "ActionKind",
    "ActionTaken",
    "ActionTarget",
    "ActionVariant",
    "Alert",
    "AlertBatch",
    "ApiToken",
    "AuditAction",
    "AuditRecord",
    "CaseStatus",
    "CaseUpdate",
    "Country",
    "DeadLetter",
    "DeliveryEvent",
    "DeliveryOutcome",
    "DeliveryRecords",
    "DigestEntry",
    "Factory",
    "FieldError",
    "Interest",
    "Language",
    "MatchReason",
    "PublicCase",
    "Recipient",
    "Region",
    "Subscription",
    "SubscriptionsRecord",
    "Suppression",
    "SuppressionReason",
    "TokenRole",
    "Wave",
    "WaveCancellation",
    "action_id_for",
    "alert_id_for",
    "alert_ids_for",
    "audit_id_for",
    "batch_id_for",
    "brand_key",
    "country_name",
    "digest_event_id_for",
    "known_countries",
    "known_interests",
    "local_instant",
    "read_subscriptions_record",
    "region_of",
    "release_at",
    "reminded_event_id",
    "reminder_event_id_for",
    "subscriber_id_for",
    "taken_id_for",
    "wave_id_for",
    "zone_for",
]
