"""recall-lab's IMAP4rev1 server: a sans-I/O protocol core (parser, session) and a thin asyncio adapter."""
