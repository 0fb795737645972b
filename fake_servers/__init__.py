"""The lab's mail servers: the mail store, the IMAP server and the SMTP listeners with their delivery pipeline."""
