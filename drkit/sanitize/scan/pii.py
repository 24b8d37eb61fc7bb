"""Guessing personal data from a column's name and type (for ``check`` warnings and ``init``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from drkit.sanitize.schema import Column, Table

_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# name token -> kind
_TOKENS: dict[str, str] = {
    "email": "email",
    "mail": "email",
    "e-mail": "email",
    "phone": "phone",
    "mobile": "phone",
    "tel": "phone",
    "telephone": "phone",
    "fax": "phone",
    "name": "name",
    "firstname": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "fullname": "name",
    "username": "username",
    "login": "username",
    "address": "address",
    "street": "address",
    "city": "city",
    "zip": "postcode",
    "postcode": "postcode",
    "postal": "postcode",
    "password": "password",
    "passwd": "password",
    "pwd": "password",
    "token": "secret",
    "secret": "secret",
    "key": "secret",
    "apikey": "secret",
    "ip": "ip",
    "ssn": "national_id",
    "iban": "iban",
    "birth": "birth",
    "dob": "birth",
    "birthday": "birth",
}
_FREE_TEXT = {"message", "details", "description", "comment", "comments", "notes", "note", "body"}


def tokens(name: str) -> list[str]:
    parts = [p.lower() for p in _SPLIT.split(name) if p]
    joined = ["".join(parts[i : i + 2]) for i in range(len(parts) - 1)]
    return parts + joined


def pii_kind(column: Column) -> str | None:
    """The kind of personal data a column probably holds, or None."""
    toks = tokens(column.name)
    if toks and toks[-1] == "id" and len(toks) > 1:
        return None  # user_id, organization_id: references, not personal data
    if column.typname in ("inet", "cidr", "macaddr", "macaddr8"):
        return "ip"
    for tok in reversed(toks):  # the last word is the noun: smtp_password, webhook_url
        kind = _TOKENS.get(tok)
        if kind is not None:
            return kind
    if "url" in toks and column.category == "S":
        return "url"
    return None


def is_free_text(column: Column) -> bool:
    return column.is_json or (column.category == "S" and column.name.lower() in _FREE_TEXT)


@dataclass(frozen=True)
class Guess:
    strategy: Any  # YAML-ready value
    comment: str | None


def guess_strategy(table: Table, column: Column) -> Guess:
    """A sensible strategy for ``init``, with a comment where it guessed."""
    kind = pii_kind(column)
    unique = column.name in table.unique_columns()
    nullable = not column.not_null
    text = column.category == "S"
    if column.name in table.primary_key:
        return Guess("keep", None)
    if kind == "email" and text:
        return Guess({"strategy": "email"}, "guessed: e-mail address")
    if kind == "phone" and text:
        return Guess(
            {
                "strategy": "fake",
                "provider": "phone_number",
                **({"unique": True} if unique else {}),
            },
            "guessed: phone number",
        )
    if kind in ("name", "first_name", "last_name") and text:
        if kind == "name" and column.name.lower() == "name":
            return Guess("keep", "check: 'name' may be a person's name")
        provider = {"name": "name", "first_name": "first_name", "last_name": "last_name"}[kind]
        return Guess(
            {"strategy": "fake", "provider": provider, **({"unique": True} if unique else {})},
            "guessed: person's name",
        )
    if kind == "username" and text:
        return Guess(
            {"strategy": "fake", "provider": "user_name", "unique": True}
            if unique
            else {"strategy": "fake", "provider": "user_name"},
            "guessed: login name",
        )
    if kind in ("address", "city", "postcode") and text:
        provider = {"address": "street_address", "city": "city", "postcode": "postcode"}[kind]
        return Guess({"strategy": "fake", "provider": provider}, f"guessed: {kind}")
    if kind in ("password", "secret", "national_id", "iban") and text:
        if unique:
            return Guess({"strategy": "hash"}, f"guessed: {kind} (unique, so hashed)")
        return Guess({"strategy": "constant", "value": "REDACTED"}, f"guessed: {kind}")
    if kind == "url" and text:
        return Guess(
            {"strategy": "constant", "value": "https://example.com"},
            "guessed: URL (may hold tokens)",
        )
    if kind == "ip":
        if nullable:
            return Guess("nullify", "guessed: IP address")
        return Guess({"strategy": "fake", "provider": "ipv4"}, "guessed: IP address")
    if kind == "birth" and nullable:
        return Guess("nullify", "guessed: date of birth")
    if is_free_text(column):
        return Guess(
            {"strategy": "replace_pii", "kinds": ["email", "phone", "ip"]},
            "guessed: free text or JSON that may quote personal data",
        )
    return Guess("keep", None)
