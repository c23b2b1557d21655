"""Everything that touches the world: crypto and keys, stores, HTTP and OAuth, mailbox probes,
notifiers, files (vault's own and other tools')."""
