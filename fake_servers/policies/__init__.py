"""Delivery policies that plug into the pipeline (fake_servers/pipeline.py).

Every module of this package is imported by `load_policy_modules()` before a lab starts, so a module only has
to call `register_policy(...)` at import time to become available to the lab config. Modules: recall (cloud and
legacy recall processing, the policy itself lives in fake_servers/recall/policy.py), retention (purging Trash),
legal_hold (held mailboxes and their recoverable-items area), delayed_send.
"""
