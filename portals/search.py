"""The oVirt-style search box of the VM and host list pages.

Grammar (case-insensitive keywords, values compared without regard to case)::

    search  := [prefix] term ("and" term)*
    prefix  := "Vms:" | "Hosts:"          (optional, as oVirt writes it; ignored)
    term    := field "=" value | word
    field   := name | status | cluster | datacenter | host | os
    value   := a run of characters without spaces; a trailing "*" makes it a prefix match

Examples::

    status=up and cluster=Default
    name=web* and datacenter=DC1
    Vms: os=rhel* and host=host-01
    web                                (a bare word: the name contains "web")

Fields of the VM search: name, status, cluster, datacenter, host (the host the VM runs
on), os (the OS type code, e.g. rhel_9x64). The host search takes name, status, cluster
and datacenter. `status` takes a status code (up, down, maintenance, ...). Terms joined
by `and` must all hold; `or`, parentheses and other operators are not supported and are
reported as errors, never guessed at.

`parse_search` is pure: it turns the text into `Term`s or raises `SearchError` whose
message is shown under the search box. `search_q` turns terms into a `Q` for one of the
field maps below.
"""

import re
from dataclasses import dataclass

from django.db.models import Q

from compute.choices import OsType, VmStatus
from inventory.choices import HostStatus

WILDCARD = "*"
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(vms|hosts)\s*:\s*", re.IGNORECASE)
_TERM = re.compile(r"^(?P<field>[A-Za-z_]+)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*)$")
_WORD = re.compile(r"^[^\s=<>!~()]+$")


class SearchError(ValueError):
    """The search text does not follow the grammar; the message says where and why."""


EXACT, PREFIX, CONTAINS = "exact", "prefix", "contains"


@dataclass(frozen=True)
class Term:
    field: str
    value: str
    match: str = EXACT  # EXACT, PREFIX (value ended with "*") or CONTAINS (a bare word)


@dataclass(frozen=True)
class SearchField:
    lookup: str  # ORM path of the compared column
    choices: tuple[str, ...] = ()  # allowed codes, when the column has fixed choices


VM_FIELDS: dict[str, SearchField] = {
    "name": SearchField("name"),
    "status": SearchField("status", tuple(VmStatus.values)),
    "cluster": SearchField("cluster__name"),
    "datacenter": SearchField("data_center__name"),
    "host": SearchField("run_on_host__name"),
    "os": SearchField("os_type", tuple(OsType.values)),
}

HOST_FIELDS: dict[str, SearchField] = {
    "name": SearchField("name"),
    "status": SearchField("status", tuple(HostStatus.values)),
    "cluster": SearchField("cluster__name"),
    "datacenter": SearchField("cluster__data_center__name"),
}


def parse_search(text: str, fields: dict[str, SearchField]) -> list[Term]:
    """Parse `text` into terms over `fields`; raise SearchError with a readable reason."""
    text = _PREFIX.sub("", text.strip(), count=1).strip()
    if not text:
        return []
    if "(" in text or ")" in text:
        raise SearchError("Parentheses are not supported: join terms with 'and'.")
    terms = []
    for raw in _AND.split(f" {text} "):
        raw = raw.strip()
        if not raw:
            raise SearchError("'and' must join two terms, e.g. status=up and cluster=Default.")
        terms.append(_parse_term(raw, fields))
    return terms


def _parse_term(raw: str, fields: dict[str, SearchField]) -> Term:
    match = _TERM.match(raw)
    if match is None:
        if re.search(r"\s+or\s+", f" {raw} ", re.IGNORECASE):
            raise SearchError("Only 'and' can join terms; 'or' is not supported.")
        if not _WORD.match(raw):
            raise SearchError(f"Cannot read '{raw}': write field=value terms joined by 'and'.")
        if raw.endswith(WILDCARD):
            return Term("name", _bare(raw, raw), PREFIX)
        if WILDCARD in raw:
            raise SearchError(f"'*' is a wildcard only at the end of a value (in '{raw}').")
        return Term("name", raw, CONTAINS)
    field, op, value = match["field"].lower(), match["op"], match["value"].strip()
    if field not in fields:
        known = ", ".join(fields)
        raise SearchError(f"Unknown field '{field}'. Fields: {known}.")
    if op != "=":
        raise SearchError(f"Only '=' is supported, not '{op}' (in '{raw}').")
    if not value:
        raise SearchError(f"'{field}=' needs a value.")
    if re.search(r"\s", value):
        if re.search(r"\s+or\s+", f" {value} ", re.IGNORECASE):
            raise SearchError("Only 'and' can join terms; 'or' is not supported.")
        raise SearchError(f"The value of '{field}' cannot contain spaces: '{value}'.")
    if "=" in value:
        raise SearchError(f"Cannot read '{raw}': one '=' per term; join terms with 'and'.")
    wildcard = value.endswith(WILDCARD)
    bare = _bare(value, raw)
    choices = fields[field].choices
    if choices:
        if wildcard:
            if not any(code.startswith(bare.lower()) for code in choices):
                raise SearchError(f"No {field} starts with '{bare}'. Values: {', '.join(choices)}.")
        elif bare.lower() not in choices:
            raise SearchError(f"Unknown {field} '{bare}'. Values: {', '.join(choices)}.")
    return Term(field, bare, PREFIX if wildcard else EXACT)


def _bare(value: str, raw: str) -> str:
    bare = value[:-1] if value.endswith(WILDCARD) else value
    if WILDCARD in bare:
        raise SearchError(f"'*' is a wildcard only at the end of a value (in '{raw}').")
    return bare


def search_q(terms: list[Term], fields: dict[str, SearchField]) -> Q:
    """The filter for `terms`: every term must hold."""
    q = Q()
    for term in terms:
        lookup = fields[term.field].lookup
        if term.match == CONTAINS:
            q &= Q(**{f"{lookup}__icontains": term.value})
        elif term.match == PREFIX:
            q &= Q(**{f"{lookup}__istartswith": term.value}) if term.value else Q()
        else:
            q &= Q(**{f"{lookup}__iexact": term.value})
    return q
