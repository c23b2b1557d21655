"""`python -m vault` runs the CLI."""

from vault.cli.main import main

main()
