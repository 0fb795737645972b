"""`python -m harness` runs the `recall-lab` command."""

from harness.cli import main

main()
