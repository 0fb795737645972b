"""Subcommands of `recall-lab`; each module defines `register(app)`."""
