"""The unit's MQTT side: a small paho wrapper (client), the reporter that empties the ledger's outbox and
publishes status/state/telemetry, and remote commands."""
