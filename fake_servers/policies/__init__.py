"""Delivery policies that plug into the pipeline (fake_servers/pipeline.py).

Every module of this package is imported by `load_policy_modules()` before a lab starts, so a module only has
to call `register_policy(...)` at import time to become available to the lab config. Modules: recall (cloud and
legacy recall processing, the policy itself lives in fake_servers/recall/policy.py), retention (purging Trash),
legal_hold (owns the domain's recoverable-items area: what every removal leaves behind, holds, the purge; the
area and its rules live in fake_servers/recall/recoverable.py), delayed_send.

Dependencies run one way: this package imports recall_lab.fake_servers.recall (the recall policy, the recall format, the
legal-hold rule), never the other way round; a policy finds a sibling through `services.policy(name)`.
"""
