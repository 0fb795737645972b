"""`python -m harness` runs the `recall-lab` command."""

from recall_lab.harness.cli import main

main()
