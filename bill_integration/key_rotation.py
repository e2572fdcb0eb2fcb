"""Key rotation: re-encrypt every stored secret with the first key of ``FIELD_ENCRYPTION_KEY``.

The procedure (README, "Rotating the encryption key"):

1. put a new key first in ``FIELD_ENCRYPTION_KEY`` and keep the old ones after it; restart;
2. ``python manage.py bill_rotate_keys`` re-encrypts, in batches, every secret still on an old key;
3. ``python manage.py bill_rotate_keys --check`` exits 0 once no row needs an old key: only then
   remove the old key from the list.

How it stays safe (the "rewrap" model of HashiCorp Vault's transit engine):

* ciphertext is read raw (a ``Cast`` to plain text, so the field never decrypts it) and
  re-encrypted with ``MultiFernet.rotate``: the plaintext never leaves the crypto library;
* each row is written by one conditional UPDATE: ``WHERE id = %s AND version = %s`` and every
  secret column still holding the ciphertext that was read (``IS NULL`` where it was NULL). A
  session refresh or relink that wrote the row in between wins, and the row is read again and
  retried. Never ``bulk_update()`` (it would write every row whatever changed meanwhile);
* rotation does **not** bump ``version``: ``version`` fences the *session* (a new login bumps
  it), and the session is the same one after its ciphertext is rewrapped. Bumping it would make
  a ``BillSession`` handed out before the rotation look stale, so its "BILL ended the session:
  log in again once and replay" recovery and its recorded uses would be fenced out;
* a row is idempotent to rotate (a token already on the first key is left alone), so a run
  that is killed midway is finished by running the command again; no row is ever half
  written, because one row is one statement;
* a value that no configured key decrypts is reported with its connection id and its row is
  never written (fail closed): restore the missing key, or relink that tenant.

Connections whose secrets no key decrypts are set aside by the service layer
(:func:`bill_integration.services.undecryptable.mark_undecryptable`), and return to service on
their own once a configured key reads them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Field, TextField
from django.db.models.functions import Cast

from .conf import now
from .fields import get_crypter
from .models import SECRET_FIELDS, AuditEvent, BillConnection

logger = logging.getLogger("bill_integration.key_rotation")

#: Outcomes of one row, as :func:`rotate_row` returns them.
ROTATED = "rotated"
CURRENT = "current"
UNDECRYPTABLE = "undecryptable"
CONFLICT = "conflict"
GONE = "gone"

#: How often one row is re-read and retried when another writer changed it in between.
MAX_ROW_ATTEMPTS = 5

_RAW_PREFIX = "raw_"


def _primary_fernet() -> Fernet:
    """The key new values are encrypted with: the first of ``FIELD_ENCRYPTION_KEY``."""
    keys = settings.FIELD_ENCRYPTION_KEY
    first = keys[0] if isinstance(keys, (list, tuple)) else keys
    return Fernet(first)


def classify_token(token: str, *, primary: Fernet, crypter: MultiFernet) -> str:
    """``CURRENT`` (first key decrypts), ``ROTATED``-able (an older key does) or ``UNDECRYPTABLE``."""
    raw = token.encode("ascii", errors="replace")
    try:
        primary.decrypt(raw)
        return CURRENT
    except InvalidToken:
        pass
    try:
        crypter.decrypt(raw)
        return ROTATED
    except InvalidToken:
        return UNDECRYPTABLE


def _raw_rows(queryset: Any) -> Any:
    """``values()`` of id, version and the secret columns as stored (ciphertext, not decrypted)."""
    casts = {f"{_RAW_PREFIX}{name}": Cast(name, output_field=TextField()) for name in SECRET_FIELDS}
    return queryset.annotate(**casts).values("pk", "version", *casts)


def _tokens(row: dict[str, Any]) -> dict[str, str]:
    return {
        name: row[f"{_RAW_PREFIX}{name}"]
        for name in SECRET_FIELDS
        if row[f"{_RAW_PREFIX}{name}"] is not None
    }


@dataclass
class KeyStatus:
    """Where the stored secrets stand relative to the configured keys."""

    total_rows: int = 0
    #: rows with at least one secret on an older key (still need that key)
    rows_on_old_key: int = 0
    fields_on_old_key: int = 0
    #: connection ids with a secret that no configured key decrypts
    undecryptable_ids: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.rows_on_old_key == 0 and not self.undecryptable_ids


@dataclass
class RotationReport:
    """What one run of :func:`rotate_all` did."""

    rows_seen: int = 0
    rows_rotated: int = 0
    fields_rotated: int = 0
    rows_current: int = 0
    #: rows another writer kept changing (left for the next run; never half written)
    conflict_ids: list[int] = field(default_factory=list)
    undecryptable_ids: list[int] = field(default_factory=list)


def _batches(batch_size: int, using: str) -> Iterator[list[dict[str, Any]]]:
    """Rows in primary-key order, ``batch_size`` at a time (keyset pagination, no OFFSET)."""
    last_pk = 0
    base = BillConnection.objects.using(using).order_by("pk")
    while True:
        batch = list(_raw_rows(base.filter(pk__gt=last_pk))[:batch_size])
        if not batch:
            return
        yield batch
        last_pk = batch[-1]["pk"]


def key_status(*, batch_size: int = 500, using: str | None = None) -> KeyStatus:
    """Count the rows and fields that still need an old key (reads only, decrypts in memory)."""
    using = using or router.db_for_read(BillConnection)
    crypter, primary = get_crypter(), _primary_fernet()
    status = KeyStatus()
    for batch in _batches(batch_size, using):
        for row in batch:
            status.total_rows += 1
            kinds = [
                classify_token(token, primary=primary, crypter=crypter)
                for token in _tokens(row).values()
            ]
            if UNDECRYPTABLE in kinds:
                status.undecryptable_ids.append(row["pk"])
            old = kinds.count(ROTATED)
            if old:
                status.rows_on_old_key += 1
                status.fields_on_old_key += old
    return status


def _write_row(row: dict[str, Any], rewrapped: dict[str, str], using: str) -> bool:
    """One conditional UPDATE of the rewrapped columns; False if the row changed meanwhile.

    The row is written only if it still has the ``version`` and every secret column still has
    the ciphertext in ``row`` (as read): a newer write of any secret, or a new session, wins.
    ``version`` itself is left alone (the session did not change; see the module docstring).

    Raw SQL on purpose: the ORM would hand these tokens to the field, which encrypts whatever
    it is given (the ciphertext would be encrypted again).
    """
    connection = connections[using]
    qn = connection.ops.quote_name
    meta = BillConnection._meta
    assignments = ", ".join(
        f"{qn(cast('Field[Any, Any]', meta.get_field(name)).column)} = %s" for name in rewrapped
    )
    updated_col = qn(meta.get_field("updated_at").column)
    conditions = [f"{qn(meta.pk.column)} = %s", f"{qn(meta.get_field('version').column)} = %s"]
    params: list[Any] = [row["pk"], row["version"]]
    for name in SECRET_FIELDS:
        column = qn(cast("Field[Any, Any]", meta.get_field(name)).column)
        read = row[f"{_RAW_PREFIX}{name}"]
        # NULL-safe comparison written out, so it is the same on every backend.
        if read is None:
            conditions.append(f"{column} IS NULL")
        else:
            conditions.append(f"{column} = %s")
            params.append(read)
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {assignments}, {updated_col} = %s "
        f"WHERE {' AND '.join(conditions)}"
    )
    updated_at = meta.get_field("updated_at").get_db_prep_value(
        now(), connection=connection, prepared=False
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*rewrapped.values(), updated_at, *params])
        return cursor.rowcount == 1


def rotate_row(
    pk: int,
    *,
    using: str | None = None,
    crypter: MultiFernet | None = None,
    primary: Fernet | None = None,
) -> tuple[str, int]:
    """Re-encrypt one connection's secrets on the first key. Returns ``(outcome, fields)``."""
    using = using or router.db_for_write(BillConnection)
    crypter = crypter or get_crypter()
    primary = primary or _primary_fernet()
    for _attempt in range(MAX_ROW_ATTEMPTS):
        row = _raw_rows(BillConnection.objects.using(using).filter(pk=pk)).first()
        if row is None:
            return GONE, 0
        outcome, count = _rotate_loaded_row(row, using=using, crypter=crypter, primary=primary)
        if outcome != CONFLICT:
            return outcome, count
    return CONFLICT, 0


def _rotate_loaded_row(
    row: dict[str, Any], *, using: str, crypter: MultiFernet, primary: Fernet
) -> tuple[str, int]:
    tokens = _tokens(row)
    rewrapped: dict[str, str] = {}
    for name, token in tokens.items():
        kind = classify_token(token, primary=primary, crypter=crypter)
        if kind == UNDECRYPTABLE:
            # Fail closed: the whole row stays byte-identical.
            logger.error(
                "bill key rotation: connection=%s field=%s cannot be decrypted with any "
                "configured key; row left unchanged",
                row["pk"],
                name,
                extra={"connection_id": row["pk"], "bill_field": name},
            )
            return UNDECRYPTABLE, 0
        if kind == ROTATED:
            rewrapped[name] = crypter.rotate(token.encode("ascii")).decode("ascii")
    if not rewrapped:
        return CURRENT, 0
    with transaction.atomic(using=using):
        written = _write_row(row, rewrapped, using)
    return (ROTATED, len(rewrapped)) if written else (CONFLICT, 0)


def rotate_all(
    *,
    batch_size: int = 100,
    using: str | None = None,
    on_row: Callable[[str], None] | None = None,
) -> RotationReport:
    """Re-encrypt every row still on an old key, ``batch_size`` rows per read.

    ``on_row(outcome)`` is called after each row (the command's progress bar). Safe to run
    again at any time, including after being killed: rows already done are skipped.
    """
    using = using or router.db_for_write(BillConnection)
    crypter, primary = get_crypter(), _primary_fernet()
    report = RotationReport()
    for batch in _batches(batch_size, using):
        for row in batch:
            report.rows_seen += 1
            outcome, count = _rotate_loaded_row(row, using=using, crypter=crypter, primary=primary)
            if outcome == CONFLICT:
                outcome, count = rotate_row(
                    row["pk"], using=using, crypter=crypter, primary=primary
                )
            if outcome == ROTATED:
                report.rows_rotated += 1
                report.fields_rotated += count
            elif outcome == CURRENT:
                report.rows_current += 1
            elif outcome == UNDECRYPTABLE:
                report.undecryptable_ids.append(row["pk"])
            elif outcome == CONFLICT:
                report.conflict_ids.append(row["pk"])
            if on_row is not None:
                on_row(outcome)
    if report.rows_rotated:
        AuditEvent.objects.using(using).create(
            connection=None,
            tenant_id="",
            kind=AuditEvent.Kind.KEYS_ROTATED,
            detail={
                "rows_rotated": report.rows_rotated,
                "fields_rotated": report.fields_rotated,
                "undecryptable_ids": report.undecryptable_ids,
                "conflict_ids": report.conflict_ids,
            },
        )
    logger.info(
        "bill key rotation: rows=%d rotated=%d fields=%d current=%d undecryptable=%d conflicts=%d",
        report.rows_seen,
        report.rows_rotated,
        report.fields_rotated,
        report.rows_current,
        len(report.undecryptable_ids),
        len(report.conflict_ids),
    )
    return report
