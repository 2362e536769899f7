"""A small PostgREST-style handler answering supabase-py's real HTTP requests from a real PostgreSQL.

No PostgREST or Supabase server can be obtained on these machines, so this handler stands at the
HTTP boundary (an `httpx.MockTransport`): it checks the `apikey` and `Authorization` headers,
verifies the JWT, runs each request as the JWT's role with `request.jwt.claims` set (so row-level
security applies exactly as on Supabase), and supports the subset supabase-py sends here:
`select` with one level of embedding through a foreign key, `eq.`/`gt.` filters, `order`, `limit`,
`Prefer: count=exact`, insert/upsert (POST) and update (PATCH). `max_rows` caps every answer the way
PostgREST's `db-max-rows` does (Supabase's default is 1,000): silently. Every request is recorded for the contract assertions.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg
from psycopg import sql

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
ROLES = ("anon", "authenticated", "service_role")


def make_jwt(secret: str, *, role: str, **claims: Any) -> str:
    """A Supabase-style API key: an HS256 JWT whose `role` claim PostgREST switches to."""
    now = int(time.time())
    return jwt.encode({"role": role, "iss": "supabase", "iat": now, "exp": now + 3600, **claims}, secret, algorithm="HS256")


def _ident(name: str) -> sql.Identifier:
    if not _IDENT.match(name):
        raise _Reject(400, "PGRST100", f"invalid identifier {name!r}")
    return sql.Identifier(name)


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _split_top(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return [p.strip() for p in out if p.strip()]


@dataclass
class Project:
    """One Supabase project: a database and the secret its API keys are signed with."""

    dsn: str
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def key(self, role: str = "service_role", **claims: Any) -> str:
        return make_jwt(self.jwt_secret, role=role, **claims)


class PostgrestHandler:
    """Routes by host: each project answers at its own `http://<host>` base URL."""

    def __init__(self, projects: dict[str, Project]) -> None:
        self.projects = projects
        self.requests: list[httpx.Request] = []
        self.down: set[str] = set()  # hosts that refuse connections
        self.slow: set[str] = set()  # hosts that time out
        self.fail_with: dict[str, list[int]] = {}  # host -> statuses to answer next, in order
        self.max_rows: int | None = None  # PostgREST's db-max-rows: a silent cap on every answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if host in self.slow:
            raise httpx.ReadTimeout("timed out", request=request)
        if self.fail_with.get(host):
            return httpx.Response(self.fail_with[host].pop(0), text="upstream unavailable", request=request)
        project = self.projects.get(host)
        if project is None:
            raise httpx.ConnectError(f"unknown host {host}", request=request)
        try:
            claims = self._auth(request, project)
            return self._serve(request, project, claims)
        except _Reject as r:
            return httpx.Response(r.status, json={"code": r.code, "message": r.message, "details": None, "hint": None}, request=request)

    def for_host(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]

    # -- what the Supabase gateway and PostgREST check ---------------------------------------

    @staticmethod
    def _auth(request: httpx.Request, project: Project) -> dict[str, Any]:
        apikey = request.headers.get("apikey")
        if not apikey:
            raise _Reject(401, "PGRST000", "No API key found in request")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise _Reject(401, "PGRST301", "missing bearer token")
        try:
            jwt.decode(apikey, project.jwt_secret, algorithms=["HS256"])
            claims = jwt.decode(auth.removeprefix("Bearer "), project.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise _Reject(401, "PGRST301", "JWSError JWSInvalidSignature") from None
        if claims.get("role") not in ROLES:
            raise _Reject(401, "PGRST301", "unknown role")
        return claims

    def _serve(self, request: httpx.Request, project: Project, claims: dict[str, Any]) -> httpx.Response:
        m = re.fullmatch(r"/rest/v1/([a-z_][a-z0-9_]*)", request.url.path)
        if not m:
            raise _Reject(404, "PGRST125", f"invalid path {request.url.path}")
        table = m.group(1)
        params = list(request.url.params.multi_items())
        try:
            with psycopg.connect(project.dsn) as conn:
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(claims["role"])))
                conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                if request.method == "GET":
                    rows, total = self._select(conn, table, params, max_rows=self.max_rows,
                                               count="count=exact" in request.headers.get("prefer", ""))
                elif request.method == "POST":
                    rows, total = self._insert(conn, table, params, request)
                elif request.method == "PATCH":
                    rows, total = self._update(conn, table, params, request)
                else:
                    raise _Reject(405, "PGRST117", f"unsupported method {request.method}")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _Reject(401 if claims["role"] == "anon" else 403, "42501", str(exc).splitlines()[0]) from None
        except psycopg.Error as exc:
            raise _Reject(400, exc.sqlstate or "XX000", str(exc).splitlines()[0]) from None
        body = rows if "return=representation" in request.headers.get("prefer", "") or request.method == "GET" else []
        return httpx.Response(
            200 if request.method == "GET" else 201 if request.method == "POST" else 200,
            json=body, headers={"Content-Range": f"0-{max(len(rows) - 1, 0)}/{'*' if total is None else total}"}, request=request,
        )

    # -- the SQL ---------------------------------------------------------------------------

    @staticmethod
    def _filters(table: str, params: list[tuple[str, str]]) -> tuple[sql.Composable, list[Any], int | None, list[sql.Composable]]:
        conds: list[sql.Composable] = []
        args: list[Any] = []
        limit: int | None = None
        order: list[sql.Composable] = []
        for key, value in params:
            if key in ("select", "on_conflict", "columns"):
                continue
            if key == "limit":
                limit = int(value)
            elif key == "order":
                for part in value.split(","):
                    col, _, direction = part.partition(".")
                    order.append(sql.SQL("t.{} {}").format(_ident(col), sql.SQL("desc" if direction.startswith("desc") else "asc")))
            else:
                op, _, operand = value.partition(".")
                if op not in ("eq", "gt"):
                    raise _Reject(400, "PGRST100", f"unsupported operator {op!r}")
                conds.append(sql.SQL("t.{} {} %s").format(_ident(key), sql.SQL("=" if op == "eq" else ">")))
                args.append(operand)
        where = sql.SQL(" and ").join(conds) if conds else sql.SQL("true")
        return where, args, limit, order

    def _select(
        self, conn: psycopg.Connection[Any], table: str, params: list[tuple[str, str]], *, max_rows: int | None, count: bool
    ) -> tuple[list[Any], int | None]:
        select = dict(params).get("select", "*")
        cols: list[sql.Composable] = []
        for item in _split_top(select):
            em = re.fullmatch(r"([a-z_][a-z0-9_]*)\((.*)\)", item)
            if em:
                cols.append(self._embed(conn, table, em.group(1), em.group(2)))
            elif item == "*":
                cols.append(sql.SQL("t.*"))
            else:
                cols.append(sql.SQL("t.{}").format(_ident(item)))
        where, args, limit, order = self._filters(table, params)
        if max_rows is not None:
            limit = max_rows if limit is None else min(limit, max_rows)
        total = conn.execute(sql.SQL("select count(*) from {} t where {}").format(_ident(table), where), args).fetchone()[0] if count else None
        query = sql.SQL("select row_to_json(r) from (select {cols} from {table} t where {where}{order}{limit}) r").format(
            cols=sql.SQL(", ").join(cols), table=_ident(table), where=where,
            order=sql.SQL(" order by ") + sql.SQL(", ").join(order) if order else sql.SQL(""),
            limit=sql.SQL(" limit {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""),
        )
        return [row[0] for row in conn.execute(query, args).fetchall()], total

    @staticmethod
    def _embed(conn: psycopg.Connection[Any], table: str, rel: str, inner: str) -> sql.Composable:
        """PostgREST's resource embedding: a related table through its foreign key to `table` (to-many: an array)."""
        fk = conn.execute(
            """select array(select a.attname from unnest(c.conkey) with ordinality k(n, i) join pg_attribute a
                              on a.attrelid = c.conrelid and a.attnum = k.n order by k.i),
                      array(select a.attname from unnest(c.confkey) with ordinality k(n, i) join pg_attribute a
                              on a.attrelid = c.confrelid and a.attnum = k.n order by k.i)
                 from pg_constraint c
                where c.contype = 'f' and c.conrelid = %s::regclass and c.confrelid = %s::regclass""",
            (f"public.{rel}", f"public.{table}"),
        ).fetchone()
        if fk is None:
            raise _Reject(400, "PGRST200", f"Could not find a relationship between '{table}' and '{rel}'")
        inner_cols = sql.SQL("e.*") if inner.strip() == "*" else sql.SQL(", ").join(
            sql.SQL("e.{}").format(_ident(c)) for c in _split_top(inner)
        )
        join = sql.SQL(" and ").join(
            sql.SQL("e.{} = t.{}").format(_ident(a), _ident(b)) for a, b in zip(fk[0], fk[1], strict=True)
        )
        return sql.SQL("coalesce((select json_agg(x) from (select {cols} from {rel} e where {join}) x), '[]'::json) as {alias}").format(
            cols=inner_cols, rel=_ident(rel), join=join, alias=_ident(rel)
        )

    def _insert(self, conn: psycopg.Connection[Any], table: str, params: list[tuple[str, str]], request: httpx.Request) -> tuple[list[Any], None]:
        body = json.loads(request.content)
        rows = body if isinstance(body, list) else [body]
        upsert = "resolution=merge-duplicates" in request.headers.get("prefer", "")
        conflict = [c for c in dict(params).get("on_conflict", "").split(",") if c]
        out: list[Any] = []
        for row in rows:
            cols = list(row)
            stmt = sql.SQL("insert into {table} as t ({cols}) values ({vals})").format(
                table=_ident(table), cols=sql.SQL(", ").join(map(_ident, cols)), vals=sql.SQL(", ").join(sql.Placeholder() * len(cols))
            )
            if upsert:
                stmt += sql.SQL(" on conflict ({keys}) do update set {sets}").format(
                    keys=sql.SQL(", ").join(map(_ident, conflict or ["id"])),
                    sets=sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=_ident(c)) for c in cols),
                )
            stmt += sql.SQL(" returning row_to_json(t)")
            out.extend(r[0] for r in conn.execute(stmt, [row[c] for c in cols]).fetchall())
        return out, None

    def _update(self, conn: psycopg.Connection[Any], table: str, params: list[tuple[str, str]], request: httpx.Request) -> tuple[list[Any], None]:
        body = json.loads(request.content)
        where, args, _, _ = self._filters(table, params)
        stmt = sql.SQL("update {table} as t set {sets} where {where} returning row_to_json(t)").format(
            table=_ident(table), sets=sql.SQL(", ").join(sql.SQL("{} = %s").format(_ident(c)) for c in body), where=where
        )
        return [r[0] for r in conn.execute(stmt, [*body.values(), *args]).fetchall()], None
