"""The stream processors: fan-out, subscriber shards, matching and delivery on Faust.

Read the modules in the order of the data flow: ``topics``, ``fanout``, ``shards`` and
``matching``, ``alerting``, ``delivery``; ``app`` wires them into a Faust app and
``worker`` runs it.
"""
