"""A throwaway Dovecot on loopback: the reference IMAP server that tests and benchmarks compare ours with.

Why a launcher of its own: Dovecot is a system daemon that expects root, fixed ports and /etc. Tests need many
small, private instances at once (pytest-xdist), each with its own users, mail and port, started in well under
a second and gone without a trace. This module writes a self-contained config into a directory the caller
owns, starts `dovecot -F` (foreground, so we hold the master process), waits for the real IMAP greeting (not a
sleep), and stops it by the pid in master.pid.

Things that bite, and how they are handled here:

- Dovecot's login process refuses to run as root and mail may not be owned by uid 0. When we are root, mail is
  accessed as a uid of the instance's own (no passwd entry; group nogroup) and the mail tree is chowned to it:
  Linux counts inotify instances (what IDLE and NOTIFY hear changes through) per uid, 128 by default, and
  Dovecots sharing one uid (a test run, a matrix of many labs) ran out: IDLE went quiet and NOTIFY answered
  NOTIFICATIONOVERFLOW. When we are not root, every Dovecot process runs as the current user, nothing is chowned.
- Those unprivileged users must reach the passwd files and the mail, but pytest keeps its tmp tree at mode
  0700 (and resets /tmp/pytest-of-USER to 0700 whenever any pytest session starts). So `root` (the caller's
  dir, e.g. tmp_path) only holds what root reads and writes: dovecot.conf and the logs. Sockets, state,
  passwd files and (by default) the mail live in a private run dir under the system temp dir (mode 0711,
  names unguessable), removed on stop. A caller's `mail_root` must be reachable by others (the mail uid):
  `reachable_temp_dir()` makes such a directory.
- Dovecot cannot listen on port 0, so a free port is found by binding 127.0.0.1:0 and closing; if Dovecot then
  loses the race for it, it is restarted on another port.
- Unix socket paths are limited to 108 bytes, and pytest's tmp paths are long: the run dir's path is short.
- The greeting carries a per-instance token, so "ready" means *our* Dovecot answered, not something else that
  took the port.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

#: Where Debian puts the binary (/usr/sbin is not on a normal user's PATH).
_DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")

#: Where the uids of Dovecots with mail of their own are drawn from (no passwd entry; see DovecotServer).
_PRIVATE_UIDS = 3_000_000
_PRIVATE_UID_SPAN = 1_000_000

#: How long a start may take before we give up (a real start takes ~0.2 s).
START_TIMEOUT = 15.0
#: How long Dovecot gets to exit after SIGTERM (it takes ~1 s) before it is killed.
STOP_TIMEOUT = 10.0
#: How often to retry with a new port when Dovecot lost the race for the one we picked.
PORT_ATTEMPTS = 5

#: The mailboxes every account gets, with their RFC 6154 attributes, matching recall_lab.fake_servers.store's defaults.
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash"}


class DovecotError(RuntimeError):
    """Dovecot could not be started or stopped; the message includes the end of its log."""


class DovecotUnavailable(DovecotError):
    """The dovecot binary is not installed (tests skip on this)."""


def dovecot_binary() -> str | None:
    """The path of the dovecot binary, or None when it is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for candidate in _DOVECOT_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _die_with_parent() -> None:
    """In the child before exec: Linux sends Dovecot's master SIGTERM when the thread that started it ends, so
    a lab killed outright (SIGKILL, a crash) leaves no Dovecot behind; elsewhere nothing happens."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close): Dovecot cannot be given port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _check_account(user: str, password: str) -> None:
    """Refuse what would break the passwd-file format or escape its directory (one file per user)."""
    if any(c in user + password for c in ":\r\n\0") or "/" in user or user.strip() in ("", ".", ".."):
        raise ValueError(f"unusable account for Dovecot's passwd-file: {user!r}")


def _unreachable_ancestor(path: Path) -> Path | None:
    """The first directory on the way to `path` that others may not search (so Dovecot's users cannot pass)."""
    for directory in reversed([path, *path.parents]):
        try:
            if not directory.stat().st_mode & 0o001:
                return directory
        except OSError:
            return directory
    return None


@contextmanager
def reachable_temp_dir(prefix: str = "lab-mail-") -> Iterator[Path]:
    """A fresh directory under the system temp dir that Dovecot's unprivileged users can reach (mode 0711),
    removed afterwards. Use it for a `mail_root` shared with Dovecot: pytest's tmp_path is not reachable."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class DovecotServer:
    """A private Dovecot serving IMAP on 127.0.0.1; its config and logs are written to `root`.

    `users` maps login names (full addresses) to plain-text passwords. `mail_root`, when given, is a directory
    holding one Maildir++ tree per user (`mail_root/<user>/`), as `MaildirStore` writes it; Dovecot then serves
    that mail in place (and chowns it to its mail user). Otherwise the mail lives in the private run dir and is
    gone after `stop()`.

    `tls` = (certificate chain PEM, private key PEM) offers STARTTLS; with `plaintext_login=False` LOGIN and
    AUTHENTICATE are refused (LOGINDISABLED) until the client has started TLS. Dovecot counts a client whose
    address is the server's own as secure anyway: connect from 127.0.0.2 to 127.0.0.1 to see the refusal.

    Use as a context manager (`with DovecotServer(tmp_path, users) as dv: ... dv.port`) or call `start()` and
    `stop()` yourself. `stop()` is idempotent.
    """

    def __init__(
        self,
        root: Path,
        users: Mapping[str, str],
        mail_root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        tls: tuple[Path, Path] | None = None,
        plaintext_login: bool = True,
        lmtp: bool = False,
        lazy_expunge: str | None = None,
        list_index: bool = False,
    ) -> None:
        for user, password in users.items():
            _check_account(user, password)
        self.root = Path(root).resolve()
        self.users = {user.strip().lower(): password for user, password in users.items()}
        self._given_mail_root = Path(mail_root).resolve() if mail_root is not None else None
        self.host = host
        self.tls = (Path(tls[0]).resolve(), Path(tls[1]).resolve()) if tls is not None else None
        self.plaintext_login = plaintext_login
        if not plaintext_login and tls is None:
            raise ValueError("plaintext_login=False needs tls: nobody could log in")
        self.token = secrets.token_hex(6)
        self.lmtp = lmtp
        #: With a prefix such as ".EXPUNGED/": Dovecot's lazy_expunge plugin keeps every message a client expunges
        #: in `<prefix><mailbox>`, a hidden namespace (the lab's Recoverable Items read it from there).
        self.lazy_expunge = lazy_expunge
        #: mailbox_list_index = yes: STATUS (and LIST-STATUS) answered from one index per user instead of opening
        #: every mailbox, which is what a store asking "what changed?" many times a second needs. (Never written
        #: as "no": Dovecot then drops NOTIFY, which needs the list index.)
        self.list_index = list_index
        #: The master user (RFC-less Dovecot feature): `login_as(user)` + this password opens `user`'s mailboxes
        #: for an administrator (the lab's policies) without knowing the user's password.
        self.master_user = "labmaster"
        self.master_password = secrets.token_hex(16)
        self._lmtp_port: int | None = None
        #: Who the mail processes run as when we are root: a uid of this instance's own (see the module docstring).
        self._mail_uid = str(_PRIVATE_UIDS + secrets.randbelow(_PRIVATE_UID_SPAN))
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None  # private: sockets, state, passwd files, default mail

    # --- public ---------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None or self._proc is None:
            raise DovecotError("Dovecot is not running")
        return self._port

    @property
    def lmtp_port(self) -> int:
        """The LMTP port (only with `lmtp=True`): where the lab delivers mail into Dovecot."""
        if self._lmtp_port is None or self._proc is None:
            raise DovecotError("Dovecot is not running with LMTP")
        return self._lmtp_port

    def login_as(self, user: str) -> str:
        """The login name that opens `user`'s mailboxes as the master user (with `master_password`)."""
        return f"{user.strip().lower()}*{self.master_user}"

    @property
    def mail_root(self) -> Path:
        """Where the mail is: `mail_root/<user>/` is each user's Maildir++ (users in lower case)."""
        if self._given_mail_root is not None:
            return self._given_mail_root
        if self._run_dir is None:
            raise DovecotError("Dovecot is not running (its own mail dir exists only while it runs)")
        return self._run_dir / "mail"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> DovecotServer:
        """Write the config, start Dovecot and return once it has greeted a client on its port."""
        if self.running:
            return self
        binary = dovecot_binary()
        if binary is None:
            raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-imapd)")
        self._prepare_dirs()
        last_error = ""
        for _attempt in range(PORT_ATTEMPTS):
            port = free_port(self.host)
            self._lmtp_port = free_port(self.host) if self.lmtp else None
            self._write_config(port)
            stderr_path = self.root / "dovecot.stderr"
            with open(stderr_path, "wb") as stderr:
                proc = subprocess.Popen(
                    [binary, "-F", "-c", str(self.config_path)],
                    env={**os.environ, "TZ": "UTC"},  # dates and date searches must not depend on the host's zone
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,  # a Ctrl-C in the test runner must not race our orderly stop
                    preexec_fn=_die_with_parent,
                )
            self._proc, self._port = proc, port
            if self._await_greeting(proc, port):
                return self
            last_error = self._failure_text()
            self._kill(proc)
            self._proc = self._port = self._lmtp_port = None
            if "in use" not in last_error:
                break
        self._remove_run_dir()
        raise DovecotError(f"Dovecot did not start: {last_error}")

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM to the pid in master.pid, wait for exit) and remove its private run dir."""
        proc, self._proc = self._proc, None
        if proc is not None:
            pid = proc.pid
            pid_file = (self._run_dir / "base" / "master.pid") if self._run_dir else None
            if pid_file is not None and pid_file.exists():
                try:
                    pid = int(pid_file.read_text().strip())
                except ValueError:
                    pass
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill(proc)
        self._remove_run_dir()

    def add_user(self, user: str, password: str) -> None:
        """Add an account while Dovecot runs (it is read at the user's first login).

        Why: a test module can share one Dovecot (a start and stop cost ~1 s) and still give each test
        a fresh account of its own.
        """
        _check_account(user, password)
        self.users[user.strip().lower()] = password
        if self._run_dir is not None:
            self._write_passwd()

    def log(self) -> str:
        """Dovecot's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self.running else "stopped"
        return f"<DovecotServer {where} root={self.root}>"

    # --- internals ------------------------------------------------------------------------------------------

    def _identity(self) -> dict[str, str]:
        """Which OS users Dovecot's processes run as."""
        if os.geteuid() == 0:
            return {
                "internal_user": "dovecot",
                "internal_group": "dovecot",
                "login_user": "dovenull",
                "mail_user": self._mail_uid,
                "mail_group": "nogroup",
            }
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return {
            "internal_user": me,
            "internal_group": group,
            "login_user": me,
            "mail_user": me,
            "mail_group": group,
        }

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="lab-dovecot-"))
        self._run_dir.chmod(0o711)
        (self._run_dir / "state").mkdir()
        mail_root = self.mail_root
        mail_root.mkdir(parents=True, exist_ok=True)
        self._write_passwd()
        if os.geteuid() != 0:
            return
        blocked = _unreachable_ancestor(mail_root)
        while blocked is not None and self._given_mail_root is not None:
            try:  # only the search bit, never read: the names inside stay private
                blocked.chmod((blocked.stat().st_mode & 0o7777) | 0o001)
            except OSError:
                break
            blocked = _unreachable_ancestor(mail_root)
        if blocked is not None:
            self._remove_run_dir()
            raise DovecotError(
                f"Dovecot's mail user cannot reach {mail_root}: {blocked} is not searchable by others "
                "(use recall_lab.harness.dovecot.reachable_temp_dir() for a mail_root, not pytest's tmp_path)"
            )
        ident = self._identity()
        user = ident["mail_user"]
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        _chown_tree(mail_root, uid, grp.getgrnam(ident["mail_group"]).gr_gid)

    def _write_passwd(self) -> None:
        """One passwd-file per user under root/passwd.d, readable by Dovecot's auth process only.

        Why one file per user: Dovecot re-reads a changed passwd-file at most once a second, so a user added
        to a single shared file could be refused for up to a second; a file Dovecot has not opened yet is
        read at the first login. (A login as an unknown user then gets a temporary failure, not NO.)
        """
        directory = self._run_dir / "passwd.d"
        directory.mkdir(exist_ok=True)
        gid = grp.getgrnam(self._identity()["internal_group"]).gr_gid if os.geteuid() == 0 else -1
        if os.geteuid() == 0:
            os.chown(directory, 0, gid)
            directory.chmod(0o750)
        for user, password in self.users.items():
            path = directory / user
            tmp = directory / f".{user}.tmp"
            tmp.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
            if os.geteuid() == 0:
                os.chown(tmp, 0, gid)
                tmp.chmod(0o640)
            os.replace(tmp, path)
        master = self._run_dir / "passwd.master"
        tmp = self._run_dir / ".passwd.master.tmp"
        tmp.write_text(f"{self.master_user}:{{PLAIN}}{self.master_password}\n")
        if os.geteuid() == 0:
            os.chown(tmp, 0, gid)
            tmp.chmod(0o640)
        os.replace(tmp, master)

    def _write_config(self, port: int) -> None:
        ident = self._identity()
        base = self._run_dir / "base"
        root_only = os.geteuid() == 0
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {attr}\n    auto = subscribe\n  }}\n"
            for name, attr in SPECIAL_USE.items()
        )
        chroot = "" if root_only else "  chroot =\n"
        # the config process (root, or us) reads the PEM files: they may stay in the caller's directory
        ssl = f"ssl = {'yes' if self.plaintext_login else 'required'}\nssl_cert = <{self.tls[0]}\nssl_key = <{self.tls[1]}" if self.tls else "ssl = no"
        text = f"""# Written by harness/dovecot.py for one throwaway instance; see that module's docstring.
protocols = imap{" lmtp" if self.lmtp else ""}
listen = {self.host}
base_dir = {base}
state_dir = {self._run_dir}/state
instance_name = lab-ref-{self.token}
log_path = {self.log_path}
{ssl}
disable_plaintext_auth = {"no" if self.plaintext_login else "yes"}
auth_mechanisms = plain login
auth_failure_delay = 0
login_greeting = lab-ref ready {self.token}
default_internal_user = {ident["internal_user"]}
default_internal_group = {ident["internal_group"]}
default_login_user = {ident["login_user"]}
mail_uid = {ident["mail_user"]}
mail_gid = {ident["mail_group"]}
first_valid_uid = 1
mail_location = maildir:{self.mail_root}/%Lu
mail_max_userip_connections = 200
# IDLE learns of changes through inotify; a Linux user has 128 instances by default, shared by every Dovecot
# of the machine. Past that, Dovecot looks every mailbox_idle_check_interval: 1 s instead of 30 s
mailbox_idle_check_interval = 1 secs
{"mailbox_list_index = yes" + chr(10) if self.list_index else ""}auth_master_user_separator = *
passdb {{
  driver = passwd-file
  master = yes
  args = scheme=PLAIN {self._run_dir}/passwd.master
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {self._run_dir}/passwd.d/%Lu
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {self._run_dir}/passwd.d/%Lu
  default_fields = home={self.mail_root}/%Lu
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox INBOX {{
    auto = subscribe
  }}
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{chroot}}}
{self._lmtp_config()}{self._lazy_expunge_config()}service anvil {{
  # no growing delay after failed logins (tests try wrong passwords on purpose): auth cannot open this socket
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        self.config_path.write_text(text)

    def _lazy_expunge_config(self) -> str:
        """lazy_expunge into a hidden namespace of its own (not listed, no LIST "" "*" shows it), under the user's
        home: what a client expunges stays readable there, by mailbox name, until the lab takes it."""
        if not self.lazy_expunge:
            return ""
        return f"""mail_plugins = $mail_plugins lazy_expunge
namespace expunged {{
  prefix = {self.lazy_expunge}
  separator = /
  hidden = yes
  list = no
  location = maildir:{self.mail_root}/.lab-expunged/%Lu
}}
plugin {{
  lazy_expunge = {self.lazy_expunge}
  lazy_expunge_only_last_instance = yes
}}
"""

    def _lmtp_config(self) -> str:
        """The LMTP listener (loopback, our port) when asked for; recipients are looked up as IMAP logins are."""
        if self._lmtp_port is None:
            return ""
        return f"""service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self._lmtp_port}
  }}
}}
lmtp_rcpt_check_quota = no
# the lab writes its own trace fields (Return-Path from MAIL FROM, Delivered-To): Dovecot adds no others
lmtp_add_received_header = no
lmtp_hdr_delivery_address = none
postmaster_address = postmaster@{self.host}
"""

    def _await_greeting(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        """True once our instance greets on `port`; False as soon as the process exits (e.g. port taken)."""
        deadline = time.monotonic() + START_TIMEOUT
        expected = f"lab-ref ready {self.token}".encode()
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.02)  # doubles as the pause between attempts
                return False
            except subprocess.TimeoutExpired:
                pass
            try:
                with socket.create_connection((self.host, port), timeout=2.0) as sock:
                    greeting = b""
                    while not greeting.endswith(b"\r\n"):
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        greeting += chunk
                    if greeting.startswith(b"* OK") and expected in greeting:
                        sock.sendall(b"a LOGOUT\r\n")
                        return True
            except OSError:
                continue
        return False

    def _failure_text(self) -> str:
        parts = []
        for path in (self.root / "dovecot.stderr", self.log_path):
            try:
                parts.append(path.read_text(errors="replace").strip())
            except OSError:
                pass
        text = "\n".join(p for p in parts if p)
        return text[-2000:] or "no output"

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    def _remove_run_dir(self) -> None:
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
