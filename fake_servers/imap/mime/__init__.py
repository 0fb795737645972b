"""MIME rendering for IMAP: a stored message's structure (tree.py, bounded by MimeLimits), its structured
header values (rfc822.py), decoded text for SEARCH (text.py), the answers FETCH asks of one message
(view.py: ENVELOPE, BODYSTRUCTURE, BODY[section]) and the cache of those views (cache.py).

Why a subpackage: it is a fifth of the IMAP server's code and needs nothing of the session or the commands;
the delivery check (fake_servers/mime_limits.py) reads messages with the same scanner.
"""
