"""What the server announces in CAPABILITY, per session state (RFC 3501 7.2.1 and the extensions)."""

from __future__ import annotations

#: Extensions always on, in the order they are announced.
EXTENSIONS = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
              "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "CONDSTORE", "QRESYNC", "SORT", "NOTIFY",
              "COMPRESS=DEFLATE", "MULTIAPPEND", "CATENATE", "BINARY", "ESEARCH", "ESORT", "CONTEXT=SEARCH",
              "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "OBJECTID",
              "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "SORT=DISPLAY", "UTF8=ACCEPT")

#: What ENABLE accepts (RFC 5161); anything else is ignored, as the RFC says. IMAP4rev2 (rev2.py) is announced
#: beside IMAP4rev1: a session is rev1 until it enables rev2 (RFC 9051 appendix A).
ENABLEABLE = ("CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT")


def capabilities(authenticated: bool, tls_available: bool, tls_active: bool,
                 login_disabled_without_tls: bool) -> list[str]:
    caps = [c for c in EXTENSIONS if not (authenticated and c == "SASL-IR")]
    if authenticated:
        return caps
    if tls_available and not tls_active:
        caps.append("STARTTLS")
    if login_disabled_without_tls and not tls_active:
        caps.append("LOGINDISABLED")
    else:
        caps += ["AUTH=PLAIN", "AUTH=SCRAM-SHA-256"]  # SCRAM: scram.py (no -PLUS: no channel binding)
    return caps
