"""asyncpg against eon. asyncpg speaks only the extended protocol and
binary formats, so every type here goes over the wire in binary both ways."""

import asyncio
import sys

import asyncpg

from common import TYPES, check, check_row, columns_ddl


async def main(url):
    conn = await asyncpg.connect(url)
    check("server_version", conn.get_server_version().major, 15)
    await conn.execute("DROP TABLE IF EXISTS asyncpg_types")
    await conn.execute(f"CREATE TABLE asyncpg_types (id int PRIMARY KEY, {columns_ddl()})")
    args = ", ".join(f"${i}" for i in range(1, len(TYPES) + 2))
    await conn.execute(f"INSERT INTO asyncpg_types VALUES ({args})", 1, *[v for _, v in TYPES])
    row = await conn.fetchrow("SELECT * FROM asyncpg_types WHERE id = $1", 1)
    check_row("binary round trip", list(row.values())[1:])
    check("NULLs", await conn.fetchrow("SELECT NULL::int AS a, NULL::text AS b"), (None, None))

    # An enum type and an array column: asyncpg looks up each type it has
    # no codec for with its own introspection query, then sends both in
    # binary.
    await conn.execute("DROP TABLE IF EXISTS asyncpg_moods")
    await conn.execute("DROP TYPE IF EXISTS asyncpg_mood")
    await conn.execute("CREATE TYPE asyncpg_mood AS ENUM ('sad', 'ok', 'happy')")
    await conn.execute("CREATE TABLE asyncpg_moods (id int PRIMARY KEY, m asyncpg_mood, xs int[])")
    await conn.executemany(
        "INSERT INTO asyncpg_moods VALUES ($1, $2, $3)", [(1, "happy", [1, None, 3]), (2, "sad", [])]
    )
    rows = await conn.fetch("SELECT m, xs FROM asyncpg_moods ORDER BY m")
    check("enum and int[] in binary", [tuple(r) for r in rows], [("sad", []), ("happy", [1, None, 3])])

    # Prepared statements, executemany, CRUD.
    await conn.execute("DROP TABLE IF EXISTS asyncpg_items")
    await conn.execute("CREATE TABLE asyncpg_items (id bigint PRIMARY KEY, name text NOT NULL, qty int)")
    await conn.executemany(
        "INSERT INTO asyncpg_items VALUES ($1, $2, $3)", [(i, f"item{i}", i) for i in range(1, 21)]
    )
    stmt = await conn.prepare("SELECT name FROM asyncpg_items WHERE id = $1")
    check("prepared statement parameter types", [t.name for t in stmt.get_parameters()], ["int8"])
    check("prepared statement reused", [await stmt.fetchval(i) for i in (3, 4)], ["item3", "item4"])
    check("UPDATE status", await conn.execute("UPDATE asyncpg_items SET qty = 0 WHERE id > $1", 15), "UPDATE 5")
    check("DELETE status", await conn.execute("DELETE FROM asyncpg_items WHERE qty = 0"), "DELETE 5")

    # Transactions, nested with savepoints.
    async with conn.transaction():
        await conn.execute("INSERT INTO asyncpg_items VALUES (100, 'outer', 1)")
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO asyncpg_items VALUES (101, 'inner', 1)")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
    got = await conn.fetch("SELECT id FROM asyncpg_items WHERE id >= 100 ORDER BY id")
    check("savepoint rolled back, outer committed", [r["id"] for r in got], [100])

    # Errors carry SQLSTATE.
    try:
        await conn.execute("INSERT INTO asyncpg_items VALUES (1, 'dup', 0)")
        check("duplicate key", "no error", "23505")
    except asyncpg.UniqueViolationError as e:
        check("duplicate key SQLSTATE", e.sqlstate, "23505")
    try:
        await conn.fetch("SELECT * FROM asyncpg_nothing")
    except asyncpg.UndefinedTableError as e:
        check("undefined table SQLSTATE", e.sqlstate, "42P01")
    check("session goes on", await conn.fetchval("SELECT count(*) FROM asyncpg_items"), 16)

    # Introspection: the column types of a result (asyncpg reads them from
    # RowDescription; unknown oids would make it query pg_type).
    stmt = await conn.prepare("SELECT * FROM asyncpg_types")
    check(
        "result column types",
        [a.type.name for a in stmt.get_attributes()][:6],
        ["int4", "int2", "int4", "int8", "float4", "float8"],
    )
    await conn.close()


asyncio.run(main(sys.argv[1]))
print("asyncpg: all checks passed")
