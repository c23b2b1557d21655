"""Everything vault shows or hands out, in one place: terminal lines (text.py), tables (tables.py),
JSON and CSV (machine.py), report pages (html.py), the Prometheus file (prometheus.py), token
formats (tokens.py) and alert messages (alerts.py). Each module imports what it needs lazily."""
