"""vault: the application layer (use cases, projections, audit) and the `vault` CLI."""
