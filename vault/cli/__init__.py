"""The click CLI: thin commands over the application."""
