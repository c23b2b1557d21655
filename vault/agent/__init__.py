"""`vault agent`: unlock once, serve tokens from memory (server.py); `vault token` through it
(client.py)."""
