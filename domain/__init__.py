"""The vault's domain: aggregates, their events, and pure policies. No I/O, no clock reads."""
