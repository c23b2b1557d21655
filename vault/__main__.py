"""`python -m vault` runs the CLI."""

from vault.entry import main

main()
