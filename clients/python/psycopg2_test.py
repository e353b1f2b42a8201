"""psycopg2 against eon. psycopg2 opens a transaction block before the
first statement and keeps it until commit() or rollback(), so DDL and
everything else here runs inside blocks, as in most psycopg2 programs."""

import sys

import psycopg2
import psycopg2.extras

from common import TYPES, check, check_row, columns_ddl

conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
check("server_version", conn.server_version >= 150000, True)

cur.execute("DROP TABLE IF EXISTS psycopg2_types")
cur.execute(f"CREATE TABLE psycopg2_types (id int PRIMARY KEY, {columns_ddl()})")
conn.commit()
psycopg2.extras.register_uuid()
cur.execute(
    f"INSERT INTO psycopg2_types VALUES ({', '.join(['%s'] * (len(TYPES) + 1))})",
    [1] + [psycopg2.Binary(v) if isinstance(v, bytes) else v for _, v in TYPES],
)
conn.commit()
cur.execute("SELECT * FROM psycopg2_types WHERE id = %s", (1,))
check_row("text round trip", cur.fetchone()[1:], lambda v: bytes(v) if isinstance(v, memoryview) else v)

# CRUD with parameters; a rolled back block leaves nothing behind.
cur.execute("DROP TABLE IF EXISTS psycopg2_items")
cur.execute("CREATE TABLE psycopg2_items (id int PRIMARY KEY, name text NOT NULL, qty int)")
conn.commit()
psycopg2.extras.execute_values(
    cur, "INSERT INTO psycopg2_items VALUES %s", [(i, f"item{i}", i) for i in range(1, 101)]
)
cur.execute("UPDATE psycopg2_items SET qty = qty * 2 WHERE id <= %(n)s", {"n": 10})
check("update rowcount", cur.rowcount, 10)
conn.commit()
cur.execute("DELETE FROM psycopg2_items WHERE id > %s", (50,))
conn.rollback()
cur.execute("SELECT count(*), sum(qty) FROM psycopg2_items")
check("rollback undid the delete", cur.fetchone(), (100, 5050 + 55))
conn.commit()

# A table created in a block that rolls back is gone.
cur.execute("CREATE TABLE psycopg2_gone (id int PRIMARY KEY)")
cur.execute("INSERT INTO psycopg2_gone VALUES (1)")
conn.rollback()
try:
    cur.execute("SELECT * FROM psycopg2_gone")
    check("table created in a rolled back block", "exists", "gone")
except psycopg2.Error as e:
    check("table created in a rolled back block is gone", e.pgcode, "42P01")
    conn.rollback()

# Errors carry SQLSTATE; the block must be rolled back, then work goes on.
try:
    cur.execute("INSERT INTO psycopg2_items VALUES (1, 'dup', 0)")
    check("duplicate key", "no error", "23505")
except psycopg2.errors.UniqueViolation as e:
    check("duplicate key SQLSTATE", e.pgcode, "23505")
try:
    cur.execute("SELECT 1")
except psycopg2.Error as e:
    check("statement in an aborted block", e.pgcode, "25P02")
conn.rollback()
cur.execute("SELECT name FROM psycopg2_items WHERE id = %s", (7,))
check("session goes on", cur.fetchone(), ("item7",))

# A named (server-side) cursor: DECLARE … CURSOR, then FETCH FORWARD
# itersize rows at a time; a scrollable one goes back.
named = conn.cursor("psycopg2_stream")
named.itersize = 30
named.execute("SELECT id, name FROM psycopg2_items WHERE id > %s ORDER BY id", (10,))
streamed = [row for row in named]
check("named cursor rows", (len(streamed), streamed[0], streamed[-1]), (90, (11, "item11"), (100, "item100")))
named.close()
scroll = conn.cursor("psycopg2_scroll", scrollable=True)
scroll.execute("SELECT id FROM psycopg2_items ORDER BY id")
scroll.fetchmany(5)
scroll.scroll(-3)
check("scrollable cursor goes back", scroll.fetchone(), (3,))
scroll.scroll(10, mode="absolute")
check("scrollable cursor absolute", scroll.fetchone(), (11,))
scroll.close()
conn.commit()

conn.commit()
conn.autocommit = True
cur.execute(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
    "AND table_name LIKE 'psycopg2%%' ORDER BY 1"
)
check("information_schema.tables", [r[0] for r in cur.fetchall()], ["psycopg2_items", "psycopg2_types"])
conn.close()
print("psycopg2: all checks passed")
