"""Everything that touches the world: crypto and keys, stores, (later) OAuth, mail, notifiers."""
