"""The use cases, one service per topic; vault/bootstrap.py composes them."""
