"""mobilise: case updates in, alerts to every matching activist out, through Kafka."""

__version__ = "0.1.0"
