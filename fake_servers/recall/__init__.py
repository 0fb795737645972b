"""Recalls: the wire format (format.py), the recall modes (modes.py), the server-side processing as delivery
policies (policy.py), and legal hold with the hidden recoverable-items area it keeps removed messages in
(recoverable.py). Nothing here imports recall_lab.fake_servers.policies (which depends on this package)."""
