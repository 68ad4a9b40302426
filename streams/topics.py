"""Every topic of the pipeline, its key and its settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["TopicNames", "TopicSpec", "topic_specs"]


class TopicSpec(BaseModel):
    """A topic to create: name, partitions and Kafka configs."""

    model_config = ConfigDict(frozen=True)

    name: str
    partitions: int
    configs: dict[str, str] = {}


class TopicNames(BaseModel):
    """The topic names of one pipeline; ``prefix`` lets several share a cluster."""

    model_config = ConfigDict(frozen=True)

    prefix: str = ""

    @property
    def case_updates(self) -> str:
        """Coordinators' case status changes. Key: case_id."""
        return f"{self.prefix}case-updates"

    @property
    def subscriptions(self) -> str:
        """Subscriptions, compacted. Key: subscriber_id; a tombstone erases the person."""
        return f"{self.prefix}subscriptions"

    @property
    def case_fanout(self) -> str:
        """One copy of every valid case update on every partition. Key: case_id."""
        return f"{self.prefix}case-fanout"

    @property
    def alerts(self) -> str:
        """One alert per (update, matching subscriber). Key: subscriber_id."""
        return f"{self.prefix}alerts"

    @property
    def deliveries(self) -> str:
        """What happened to each alert at the sink. Key: subscriber_id."""
        return f"{self.prefix}deliveries"

    @property
    def dead_letters(self) -> str:
        """Records that could not be processed, with the reason. Key: the original key."""
        return f"{self.prefix}dead-letters"

    @property
    def actions_taken(self) -> str:
        """People's "I did this" for action calls. Key: subscriber_id (co-partitioned with subscriptions)."""
        return f"{self.prefix}actions-taken"

    @property
    def wave_cancellations(self) -> str:
        """Coordinators calling off a held wave: one copy per partition. Key: the wave id."""
        return f"{self.prefix}wave-cancellations"

    @property
    def api_tokens(self) -> str:
        """Coordinators' API tokens (hashed), compacted. Key: the token id."""
        return f"{self.prefix}api-tokens"

    @property
    def audit(self) -> str:
        """Who published what and when, through the API or the console. Key: the case id."""
        return f"{self.prefix}audit"

    @property
    def connector_checkpoints(self) -> str:
        """Where each source connector is up to, compacted. Key: the connector's name."""
        return f"{self.prefix}connector-checkpoints"


def topic_specs(names: TopicNames, partitions: int) -> list[TopicSpec]:
    """The topics ``mobilise topics create`` makes.

    Subscriptions, case-fanout and alerts must share ``partitions``: matching is
    co-partitioned, each worker matching its own subscriber shard. The others use the
    same count so that any worker can be given any partition.
    """
    compacted = {"cleanup.policy": "compact"}
    # Alerts carry addresses; a week is enough to redeliver and short enough to forget.
    week = {"retention.ms": str(7 * 24 * 3600 * 1000)}
    return [
        TopicSpec(name=names.case_updates, partitions=partitions),
        TopicSpec(name=names.subscriptions, partitions=partitions, configs=compacted),
        TopicSpec(name=names.case_fanout, partitions=partitions, configs=week),
        TopicSpec(name=names.alerts, partitions=partitions, configs=week),
        TopicSpec(name=names.deliveries, partitions=partitions),
        TopicSpec(name=names.actions_taken, partitions=partitions),
        TopicSpec(name=names.dead_letters, partitions=partitions),
        # As many as the alerts: each worker reads the copy on the partitions whose alerts it holds.
        TopicSpec(name=names.wave_cancellations, partitions=partitions),
        # One partition each: these are few, and read whole by every web process at its start.
        TopicSpec(name=names.api_tokens, partitions=1, configs=compacted),
        TopicSpec(name=names.audit, partitions=1),
        TopicSpec(name=names.connector_checkpoints, partitions=1, configs=compacted),
    ]
