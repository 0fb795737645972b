"""Recalls: the wire format (format.py), the server-side processing as delivery policies (policy.py) and the
hidden recoverable-items area that legal hold keeps recalled messages in (recoverable.py)."""
