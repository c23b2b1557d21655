"""Worker processes for the concurrency tests: `python -m tests.workers rotate ...`."""

from __future__ import annotations

import sys
from pathlib import Path

from adapters.keyslots import read_key_file
from domain.secret_value import SecretValue
from vault.bootstrap import Settings, open_vault


def rotate(home: str, store_url: str, key_file: str, client: str, count: int, tag: str) -> None:
    settings = Settings(home=Path(home), store_url=store_url or None)
    material = read_key_file(key_file)
    with open_vault(settings, lambda header: material) as app:
        for i in range(count):
            app.rotate_secret(client, secret=SecretValue(f"{tag}~rotation-{i:04d}-xyz"),
                              overlap=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "rotate":
        home, store_url, key_file, client, count, tag = args
        rotate(home, store_url, key_file, client, int(count), tag)
    else:
        raise SystemExit(f"unknown worker command {command}")
