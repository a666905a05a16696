"""How reminders leave: e-mail over SMTP, SMS through a gateway.

:class:`SmtpSender` speaks SMTP to the configured relay. Each message carries a ``Message-ID`` made from its
outbox key, so the rare resend after a crash (see ``presa.followup.worker``) is recognisable downstream as the
same message.

:class:`SmsGateway` is the interface an SMS provider is put behind: ``send`` takes an idempotency key (the outbox
key) and ``lookup`` says whether a key was already accepted. :class:`FileSmsGateway` is the local implementation:
one JSON file per message in a directory, created atomically and exclusively (``os.link`` of a finished temporary
file), so sending the same key twice leaves one file and returns the first id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import smtplib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as the transports see it."""

    key: str
    recipient: str
    subject: str | None
    body: str


class TransportError(RuntimeError):
    """The transport refused the message; ``permanent`` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class EmailSender(Protocol):
    def send(self, message: Outgoing) -> str:
        """Send one e-mail; return its id (the Message-ID)."""
        ...


class SmsGateway(Protocol):
    def send(self, message: Outgoing) -> str:
        """Send one SMS under ``message.key``; sending a key again must not send it twice. Return the gateway's id."""
        ...

    def lookup(self, key: str) -> str | None:
        """The gateway's id of the message sent under ``key``, or None if it never took it."""
        ...


def message_id(key: str, domain: str) -> str:
    return f"<presa.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


@dataclass(frozen=True, slots=True)
class SmtpSender:
    host: str
    port: int
    sender: str
    domain: str = "presa.local"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 30.0

    def send(self, message: Outgoing) -> str:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject or "Promemoria"
        email["Date"] = format_datetime(datetime.now(UTC))
        email["Message-ID"] = message_id(message.key, self.domain)
        email["X-Presa-Key"] = message.key
        email.set_content(message.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"recipient refused: {exc.recipients}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"SMTP {self.host}:{self.port}: {exc}") from None
        return str(email["Message-ID"])


@dataclass(frozen=True, slots=True)
class FileSmsGateway:
    """SMS written as files: ``<directory>/<sha256 of the key>.json`` with key, recipient, text and time."""

    directory: Path

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def send(self, message: Outgoing) -> str:
        if not message.recipient.lstrip("+").isdigit():
            raise TransportError(f"'{message.recipient}' is not a phone number", permanent=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._path(message.key)
        content = {
            "id": target.stem[:24],
            "key": message.key,
            "to": message.recipient,
            "text": message.body,
            "accepted_at": datetime.now(UTC).isoformat(),
        }
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".sms-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(content, out, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # atomic and exclusive: a second send finds the first
                os.link(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        found = self.lookup(message.key)
        assert found is not None
        return found

    def lookup(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return str(json.loads(path.read_text(encoding="utf-8"))["id"])

    def messages(self) -> list[dict[str, str]]:
        """Every SMS sent, oldest first (for people and tests)."""
        found = [json.loads(p.read_text(encoding="utf-8")) for p in self.directory.glob("*.json")]
        return sorted(found, key=lambda m: (m["accepted_at"], m["key"]))
