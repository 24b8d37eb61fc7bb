"""A SentriKat-shaped sample database, sized by a row budget (demo, tests, benchmarks).

Rows are generated server-side with ``generate_series`` so millions load in seconds.
The data carries the personal data a sanitizer must remove: organizations with SMTP
passwords and webhook URLs; users with e-mails, usernames, password hashes, names,
phones and IPs; alert messages that quote e-mail addresses; sync logs whose JSONB
details hold e-mails and IPs; agents with API keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE organization (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    smtp_host     text,
    smtp_user     text,
    smtp_password text,
    webhook_url   text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE "user" (
    id              serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organization(id),
    email           text NOT NULL UNIQUE,
    username        text NOT NULL UNIQUE,
    password_hash   text NOT NULL,
    full_name       text,
    phone           text,
    last_login_ip   inet,
    is_admin        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE product (
    id              serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organization(id),
    vendor          text NOT NULL,
    name            text NOT NULL,
    version         text NOT NULL
);
CREATE TABLE vulnerability (
    id           serial PRIMARY KEY,
    cve_id       text NOT NULL UNIQUE,
    severity     text NOT NULL,
    cvss         numeric(3,1) NOT NULL,
    description  text NOT NULL,
    published_at timestamptz NOT NULL
);
CREATE TABLE product_vulnerability (
    product_id       integer NOT NULL REFERENCES product(id),
    vulnerability_id integer NOT NULL REFERENCES vulnerability(id),
    detected_at      timestamptz NOT NULL,
    PRIMARY KEY (product_id, vulnerability_id)
);
CREATE TABLE alert_log (
    id              bigserial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organization(id),
    user_id         integer REFERENCES "user"(id),
    message         text NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE TABLE sync_log (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL,
    details    jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE agent (
    id              serial PRIMARY KEY,
    organization_id integer NOT NULL REFERENCES organization(id),
    hostname        text NOT NULL,
    api_key         text NOT NULL UNIQUE,
    last_seen_ip    inet
);
CREATE INDEX alert_log_created_at ON alert_log (created_at);
CREATE INDEX sync_log_created_at ON sync_log (created_at);
CREATE INDEX product_vulnerability_vuln ON product_vulnerability (vulnerability_id);
"""

TABLES = (
    "organization",
    "user",
    "product",
    "vulnerability",
    "product_vulnerability",
    "alert_log",
    "sync_log",
    "agent",
)

_FIRST = "{Anna,Marco,Giulia,Luca,Sofia,Matteo,Elena,Paolo,Chiara,Davide,Laura,Stefano}"
_LAST = "{Rossi,Bianchi,Romano,Colombo,Ricci,Marino,Greco,Bruno,Gallo,Conti,Costa,Mancini}"


@dataclass(frozen=True)
class SampleSize:
    organizations: int
    users: int
    products: int
    vulnerabilities: int
    links: int
    alerts: int
    syncs: int
    agents: int

    @classmethod
    def for_rows(cls, rows: int) -> SampleSize:
        """Split a total row budget across the tables the way a real instance looks."""
        rows = max(rows, 200)
        users = max(20, rows // 10)
        products = max(10, rows // 20)
        vulnerabilities = max(10, rows // 10)
        return cls(
            organizations=max(3, users // 50),
            users=users,
            products=products,
            vulnerabilities=vulnerabilities,
            links=min(rows * 3 // 10, products * vulnerabilities),
            alerts=rows // 4,
            syncs=rows * 3 // 20,
            agents=max(5, rows // 20),
        )

    @property
    def total(self) -> int:
        return (
            self.organizations
            + self.users
            + self.products
            + self.vulnerabilities
            + self.links
            + self.alerts
            + self.syncs
            + self.agents
        )


def sample_statements(size: SampleSize) -> list[tuple[str, dict[str, Any]]]:
    p = {
        "orgs": size.organizations,
        "users": size.users,
        "products": size.products,
        "vulns": size.vulnerabilities,
        "links": size.links,
        "alerts": size.alerts,
        "syncs": size.syncs,
        "agents": size.agents,
        "first": _FIRST,
        "last": _LAST,
    }
    return [
        (
            """INSERT INTO organization (name, smtp_host, smtp_user, smtp_password, webhook_url,
                                        created_at)
               SELECT 'Org ' || i, 'smtp' || i || '.example.net', 'mailer' || i,
                      'smtp-secret-' || md5('smtp' || i),
                      'https://hooks.example.net/' || md5('hook' || i),
                      timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'
               FROM generate_series(1, %(orgs)s) AS i""",
            p,
        ),
        (
            """INSERT INTO "user" (organization_id, email, username, password_hash, full_name,
                                  phone, last_login_ip, is_admin, created_at)
               SELECT 1 + (i %% %(orgs)s),
                      lower(f) || '.' || lower(l) || i || '@customer' || (i %% 97) || '.com',
                      lower(left(f, 1) || l) || i,
                      '$2b$12$' || md5('pw' || i) || md5('salt' || i),
                      f || ' ' || l,
                      '+39 3' || lpad(((i::bigint * 7919) %% 1000000000)::text, 9, '0'),
                      ('10.' || (i / 65536) %% 256 || '.' || (i / 256) %% 256 || '.'
                           || i %% 256)::inet,
                      i %% 25 = 0,
                      timestamptz '2024-02-01 00:00:00+00' + i * interval '1 minute'
               FROM generate_series(1, %(users)s) AS i,
                    LATERAL (SELECT (%(first)s::text[])[1 + i %% 12] AS f,
                                    (%(last)s::text[])[1 + (i / 12) %% 12] AS l) AS n""",
            p,
        ),
        (
            """INSERT INTO product (organization_id, vendor, name, version)
               SELECT 1 + (i %% %(orgs)s),
                      (ARRAY['apache','microsoft','oracle','cisco','openssl','nginx'])[1 + i %% 6],
                      'product-' || i, (i %% 9) || '.' || (i %% 13) || '.' || (i %% 5)
               FROM generate_series(1, %(products)s) AS i""",
            p,
        ),
        (
            """INSERT INTO vulnerability (cve_id, severity, cvss, description, published_at)
               SELECT 'CVE-' || (2015 + i %% 11) || '-'
                      || lpad(i::text, greatest(6, length(i::text)), '0'),
                      (ARRAY['LOW','MEDIUM','HIGH','CRITICAL'])[1 + i %% 4],
                      ((i * 37) %% 100) / 10.0,
                      'A flaw in component ' || md5(i::text) || ' allows a remote attacker to '
                      || repeat('craft requests that bypass validation and ', 1 + i %% 6)
                      || 'execute code. Reference ' || md5('ref' || i) || '.',
                      timestamptz '2015-01-01 00:00:00+00' + i * interval '17 minutes'
               FROM generate_series(1, %(vulns)s) AS i""",
            p,
        ),
        (
            """INSERT INTO product_vulnerability (product_id, vulnerability_id, detected_at)
               SELECT 1 + (i %% %(products)s), 1 + (i / %(products)s) %% %(vulns)s,
                      timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second'
               FROM generate_series(0, %(links)s - 1) AS i""",
            p,
        ),
        (
            """INSERT INTO alert_log (organization_id, user_id, message, created_at)
               SELECT u.organization_id, u.id,
                      CASE WHEN i %% 3 = 0
                           THEN 'Alert sent to ' || u.email || ': new CRITICAL vulnerability'
                           ELSE 'Sync finished for product-' || i || ', ' || (i %% 17)
                                || ' new findings' END,
                      now() - (i %% 5000) * interval '5 minutes'
               FROM generate_series(1, %(alerts)s) AS i
               JOIN "user" u ON u.id = 1 + i %% %(users)s""",
            p,
        ),
        (
            """INSERT INTO sync_log (source, details, created_at)
               SELECT (ARRAY['nvd','cisa-kev','vendor-feed'])[1 + i %% 3],
                      jsonb_build_object(
                          'items', i %% 500,
                          'duration_ms', (i * 13) %% 9000,
                          'requested_by', CASE WHEN i %% 4 = 0 THEN u.email END,
                          'client_ip', CASE WHEN i %% 4 = 1 THEN host(u.last_login_ip) END,
                          'status', (ARRAY['ok','partial','failed'])[1 + i %% 3]),
                      now() - (i %% 20000) * interval '1 minute'
               FROM generate_series(1, %(syncs)s) AS i
               JOIN "user" u ON u.id = 1 + (i * 7) %% %(users)s""",
            p,
        ),
        (
            """INSERT INTO agent (organization_id, hostname, api_key, last_seen_ip)
               SELECT 1 + (i %% %(orgs)s), 'host-' || i || '.internal',
                      'sk_live_' || md5('agent' || i) || md5('key' || i),
                      ('192.168.' || (i / 256) %% 256 || '.' || i %% 256)::inet
               FROM generate_series(1, %(agents)s) AS i""",
            p,
        ),
    ]


def load_sample(dsn: str, rows: int = 10_000) -> SampleSize:
    """Create the SentriKat schema in an empty database and fill it with ~``rows`` rows."""
    size = SampleSize.for_rows(rows)
    with psycopg.connect(dsn) as conn:
        conn.execute(SCHEMA)
        for statement, params in sample_statements(size):
            conn.execute(statement, params)
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return size


def table_counts(dsn: str) -> dict[str, int]:
    """Exact row counts of the sample tables (schema-qualified names)."""
    from psycopg import sql

    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table))
            ).fetchone()
            counts[f"public.{table}"] = int(row[0]) if row else 0
    return counts
