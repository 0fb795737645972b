"""Interop tests: real Debian peers (curl, neomutt, mbsync, offlineimap, imapclient's live suite) and a
differential comparison, each run against Dovecot (the reference) and recall-lab's IMAP server."""
