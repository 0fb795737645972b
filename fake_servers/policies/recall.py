"""Registers the `recall` policy (fake_servers/recall/policy.py) for organisation domains.

Order 20: early, so a recall is processed the moment it is submitted (a delayed-send hold of the recall itself
would otherwise let the original be read meanwhile); retention (80) and legal hold (90) do not act on deliveries.
"""

from recall_lab.fake_servers.pipeline import register_policy
from recall_lab.fake_servers.recall.policy import SETTINGS, RecallPolicy

register_policy("recall", RecallPolicy, default_roles=("organisation",), order=20, settings=SETTINGS)
