"""What a person can read in a database's catalog: the texts the leak scan searches
besides table data.

Each query yields ``(object, text)``: ``object`` names the kind and the object (never a
value), ``text`` is what a reader of the catalog sees — comments, column and domain
defaults, constraint, index, view and materialized-view definitions, function and
procedure bodies, trigger and rule definitions, RLS policy expressions, enum labels,
foreign-data wrapper, server, user mapping and foreign table options, object names, and
the contents of large objects.  Built-in objects and extension members are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg

from drkit.errors import DatabaseError
from drkit.pg import first_line
from drkit.sanitize.scan.content import kinds_in

_USER_NS = """
  {ns}.nspname NOT IN ('pg_catalog', 'information_schema')
  AND {ns}.nspname NOT LIKE 'pg\\_toast%' AND {ns}.nspname NOT LIKE 'pg\\_temp%'
"""


def _not_extension(classid: str, objid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = {classid} "
        f"AND e.objid = {objid} AND e.deptype = 'e')"
    )


_REL_NS = _USER_NS.format(ns="n") + " AND " + _not_extension("'pg_class'::regclass", "c.oid")

QUERIES: tuple[tuple[str, str], ...] = (
    (
        "comments",
        "SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid),"
        " d.description FROM pg_description d"
        " WHERE (d.objoid >= 16384 OR (d.classoid = 'pg_namespace'::regclass"
        " AND d.objoid IN (SELECT n.oid FROM pg_namespace n WHERE "
        + _USER_NS.format(ns="n")
        + ")))"
        " AND " + _not_extension("d.classoid", "d.objoid"),
    ),
    (
        "database comment",
        "SELECT 'comment on database ' || quote_ident(current_database()), s.description"
        " FROM pg_shdescription s WHERE s.classoid = 'pg_database'::regclass"
        " AND s.objoid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    ),
    (
        "defaults",
        "SELECT format('default of %I.%I.%I', n.nspname, c.relname, a.attname),"
        " pg_get_expr(d.adbin, d.adrelid)"
        " FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE " + _REL_NS,
    ),
    (
        "constraints",
        "SELECT CASE WHEN con.conrelid <> 0"
        " THEN format('constraint %I on %I.%I', con.conname, n.nspname, c.relname)"
        " ELSE format('constraint %I on type %s', con.conname, con.contypid::regtype) END,"
        " pg_get_constraintdef(con.oid)"
        " FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace"
        " LEFT JOIN pg_class c ON c.oid = con.conrelid"
        " WHERE " + _USER_NS.format(ns="n") + " AND con.oid >= 16384",
    ),
    (
        "domain defaults",
        "SELECT format('default of type %I.%I', n.nspname, t.typname), t.typdefault"
        " FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE t.typdefault IS NOT NULL AND " + _USER_NS.format(ns="n"),
    ),
    (
        "views",
        "SELECT format('view %I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('v', 'm') AND " + _REL_NS,
    ),
    (
        "indexes",
        "SELECT format('index %I.%I', n.nspname, c.relname), pg_get_indexdef(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE " + _REL_NS + " AND " + _not_extension("'pg_class'::regclass", "i.indrelid"),
    ),
    (
        "functions",
        "SELECT format('function %I.%I(%s)', n.nspname, p.proname,"
        " pg_get_function_identity_arguments(p.oid)), pg_get_functiondef(p.oid)"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prokind IN ('f', 'p', 'w') AND "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_proc'::regclass", "p.oid"),
    ),
    (
        "aggregates",
        "SELECT format('function %I.%I(%s)', n.nspname, p.proname,"
        " pg_get_function_identity_arguments(p.oid)), concat_ws(' ', a.agginitval, a.aggminitval)"
        " FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_proc'::regclass", "p.oid"),
    ),
    (
        "triggers",
        "SELECT format('trigger %I on %I.%I', t.tgname, n.nspname, c.relname),"
        " pg_get_triggerdef(t.oid)"
        " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT t.tgisinternal AND " + _REL_NS,
    ),
    (
        "event triggers",
        "SELECT format('event-trigger %I', evtname), concat_ws(' ', evtevent, evttags::text)"
        " FROM pg_event_trigger",
    ),
    (
        "rules",
        "SELECT format('rule %I on %I.%I', r.rulename, n.nspname, c.relname),"
        " pg_get_ruledef(r.oid)"
        " FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE r.rulename <> '_RETURN' AND " + _REL_NS,
    ),
    (
        "policies",
        "SELECT format('policy %I on %I.%I', p.polname, n.nspname, c.relname),"
        " concat_ws(' ', pg_get_expr(p.polqual, p.polrelid),"
        " pg_get_expr(p.polwithcheck, p.polrelid))"
        " FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + _REL_NS,
    ),
    (
        "enum labels",
        "SELECT format('enum %I.%I', n.nspname, t.typname),"
        " string_agg(e.enumlabel, E'\\n' ORDER BY e.enumsortorder)"
        " FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_type'::regclass", "t.oid")
        + " GROUP BY n.nspname, t.typname",
    ),
    (
        "foreign-data wrappers",
        "SELECT format('foreign-data-wrapper %I', fdwname), fdwoptions::text"
        " FROM pg_foreign_data_wrapper WHERE fdwoptions IS NOT NULL",
    ),
    (
        "servers",
        "SELECT format('server %I', srvname), concat_ws(' ', srvtype, srvversion,"
        " srvoptions::text) FROM pg_foreign_server",
    ),
    (
        "user mappings",
        "SELECT format('user-mapping for %s on server %I', quote_ident(usename), srvname),"
        " umoptions::text FROM pg_user_mappings WHERE umoptions IS NOT NULL",
    ),
    (
        "foreign tables",
        "SELECT format('foreign-table %I.%I', n.nspname, c.relname), f.ftoptions::text"
        " FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE f.ftoptions IS NOT NULL",
    ),
    (
        "column options",
        "SELECT format('options of %I.%I.%I', n.nspname, c.relname, a.attname),"
        " a.attfdwoptions::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.attfdwoptions IS NOT NULL AND " + _REL_NS,
    ),
    (
        "names",
        "SELECT format('name in schema %I', n.nspname), c.relname"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
        + _REL_NS
        + " UNION ALL SELECT format('column name in %I.%I', n.nspname, c.relname),"
        " string_agg(a.attname, E'\\n') FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.attnum > 0 AND NOT a.attisdropped AND "
        + _REL_NS
        + " GROUP BY n.nspname, c.relname"
        " UNION ALL SELECT 'schema name', n.nspname FROM pg_namespace n"
        " WHERE "
        + _USER_NS.format(ns="n")
        + " UNION ALL SELECT format('name in schema %I', n.nspname), p.proname FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_proc'::regclass", "p.oid")
        + " UNION ALL SELECT format('name in schema %I', n.nspname), t.typname FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_type'::regclass", "t.oid")
        + " UNION ALL SELECT format('constraint name on %I.%I', n.nspname, coalesce(c.relname,"
        " con.contypid::regtype::text)), con.conname FROM pg_constraint con"
        " JOIN pg_namespace n ON n.oid = con.connamespace"
        " LEFT JOIN pg_class c ON c.oid = con.conrelid WHERE "
        + _USER_NS.format(ns="n")
        + " UNION ALL SELECT format('policy name on %I.%I', n.nspname, c.relname), p.polname"
        " FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
        + _REL_NS
        + " UNION ALL SELECT format('trigger name on %I.%I', n.nspname, c.relname), t.tgname"
        " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND "
        + _REL_NS
        + " UNION ALL SELECT format('rule name on %I.%I', n.nspname, c.relname), r.rulename"
        " FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.rulename <> '_RETURN' AND "
        + _REL_NS
        + " UNION ALL SELECT format('statistics name in schema %I', n.nspname), s.stxname"
        " FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE "
        + _USER_NS.format(ns="n")
        + " UNION ALL SELECT 'event-trigger name', evtname FROM pg_event_trigger"
        " UNION ALL SELECT 'server name', srvname FROM pg_foreign_server"
        " UNION ALL SELECT format('name in schema %I', n.nspname), o.oprname FROM pg_operator o"
        " JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE o.oid >= 16384 AND "
        + _USER_NS.format(ns="n")
        + " AND "
        + _not_extension("'pg_operator'::regclass", "o.oid")
        + " UNION ALL SELECT format('name in schema %I', n.nspname), x.collname FROM pg_collation x"
        " JOIN pg_namespace n ON n.oid = x.collnamespace WHERE x.oid >= 16384 AND "
        + _USER_NS.format(ns="n")
        + " UNION ALL SELECT format('name in schema %I', n.nspname), x.cfgname"
        " FROM pg_ts_config x JOIN pg_namespace n ON n.oid = x.cfgnamespace"
        " WHERE x.oid >= 16384 AND " + _USER_NS.format(ns="n"),
    ),
)

#: the catalog texts that run code: a view or function that opens a connection to
#: another server (dblink with a connection string) returns that server's rows, live,
#: to whoever queries the copy
DEFINITIONS = """
SELECT format('view %I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {rel}
UNION ALL
SELECT format('function %I.%I(%s)', n.nspname, p.proname,
              pg_get_function_identity_arguments(p.oid)), p.prosrc
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p', 'w') AND {ns} AND {not_ext}
""".format(
    rel=_REL_NS,
    ns=_USER_NS.format(ns="n"),
    not_ext=_not_extension("'pg_proc'::regclass", "p.oid"),
)

_REMOTE = re.compile(
    r"dblink\w*\s*\(\s*(?:E?'[^']*(?:\b(?:host|hostaddr|dbname|service|port|user)\s*=|://)"
    r"|'[^']*'\s*::\s*text\s*\|\|)",
    re.IGNORECASE,
)


def remote_definitions(conn: psycopg.Connection[Any]) -> list[str]:
    """The views and functions whose definitions carry credentials or open a connection
    to another server (dblink with a connection string), by name (never the text)."""
    try:
        rows = conn.execute(DEFINITIONS.encode()).fetchall()
    except psycopg.Error as exc:
        raise DatabaseError(f"reading view and function definitions: {first_line(exc)}") from None
    found = []
    for name, text in rows:
        if text and (_REMOTE.search(str(text)) or "secret" in kinds_in(str(text), ip=False)):
            found.append(str(name))
    return sorted(found)


#: the personal data a catalog text is searched for, by the kind of object: what a
#: person writes (comments) for every kind but addresses; code and options for secrets
def catalog_kinds(place: str) -> frozenset[str]:
    if place.startswith("comment on"):
        return frozenset({"email", "phone", "iban", "card", "secret", "oversized"})
    if (
        place.startswith(("name", "column name", "schema name"))
        or " name" in place.split(" on ")[0]
    ):
        return frozenset()
    return frozenset({"secret"})


_LO_CHUNK = 1 << 20
_LO_OVERLAP = 256


def catalog_texts(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """Every ``(object, text)`` of the catalog a reader of the database can see.

    Names are schema-qualified whatever the search_path (it is emptied meanwhile)."""
    try:
        row = conn.execute("SELECT current_setting('search_path')").fetchone()
        saved = str(row[0]) if row else ""
        conn.execute("SELECT set_config('search_path', 'pg_catalog', false)")
    except psycopg.Error as exc:
        raise DatabaseError(f"leak scan of the catalog: {first_line(exc)}") from None
    try:
        found: list[tuple[str, str]] = []
        for what, query in QUERIES:
            try:
                rows = conn.execute(query.encode()).fetchall()  # no parameters
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"leak scan of the catalog ({what}): {first_line(exc)}"
                ) from None
            found += [(str(name), str(text)) for name, text in rows if text]
    finally:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", [saved])
    yield from found


def large_objects(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, bytes]]:
    """The contents of every large object, in overlapping chunks: ``(object, bytes)``."""
    try:
        oids = [
            int(oid)
            for (oid,) in conn.execute(
                "SELECT oid FROM pg_largeobject_metadata ORDER BY oid"
            ).fetchall()
        ]
        for oid in oids:
            offset = 0
            while True:
                row = conn.execute(
                    "SELECT lo_get(%s, %s, %s)", [oid, offset, _LO_CHUNK + _LO_OVERLAP]
                ).fetchone()
                data = bytes(row[0]) if row and row[0] is not None else b""
                if data:
                    yield f"large-object {oid}", data
                if len(data) <= _LO_CHUNK:
                    break
                offset += _LO_CHUNK
    except psycopg.Error as exc:
        raise DatabaseError(f"leak scan of large objects: {first_line(exc)}") from None
