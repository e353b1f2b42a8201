"""psycopg 3 against eon: connect, DDL, parameterized CRUD, transactions,
every type in text and binary, errors with SQLSTATE, type introspection."""

import datetime
import decimal
import sys

import psycopg
from psycopg.types import TypeInfo
from psycopg.types.enum import EnumInfo, register_enum

from common import TYPES, check, check_row, columns_ddl

url = sys.argv[1]

with psycopg.connect(url, autocommit=True) as conn:
    check("server_version reported", conn.info.parameter_status("server_version").startswith("15"), True)
    conn.execute("DROP TABLE IF EXISTS psycopg3_types")
    conn.execute(f"CREATE TABLE psycopg3_types (id int PRIMARY KEY, {columns_ddl()})")
    placeholders = ", ".join(["%s"] * (len(TYPES) + 1))
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            key = int(binary)
            cur.execute(
                f"INSERT INTO psycopg3_types VALUES ({placeholders})",
                [key] + [v for _, v in TYPES],
            )
            cur.execute("SELECT * FROM psycopg3_types WHERE id = %s", (key,))
            row = cur.fetchone()
            check_row(f"{'binary' if binary else 'text'} round trip", row[1:])

    # Array columns, in text and binary: NULL elements, quoting, element
    # type modifiers, and the element type's errors.
    conn.execute("DROP TABLE IF EXISTS psycopg3_arrays")
    conn.execute(
        "CREATE TABLE psycopg3_arrays (id int PRIMARY KEY, xs bigint[], ts text[], "
        "ns numeric(6,2)[], ds date[], vs varchar(3)[])"
    )
    arrays = [
        [1, None, 2**40],
        ["a", "b c", 'q"r', "", None],
        [decimal.Decimal("1.50"), decimal.Decimal("-2.25")],
        [datetime.date(2024, 2, 29)],
        ["abc", "d"],
    ]
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            key = int(binary)
            cur.execute("INSERT INTO psycopg3_arrays VALUES (%s, %s, %s, %s, %s, %s)", [key] + arrays)
            cur.execute("SELECT xs, ts, ns, ds, vs FROM psycopg3_arrays WHERE id = %s", (key,))
            check(f"arrays in {'binary' if binary else 'text'}", list(cur.fetchone()), arrays)
    check(
        "array functions and subscripts",
        conn.execute("SELECT cardinality(ts), xs[3] FROM psycopg3_arrays WHERE id = 0").fetchone(),
        (5, 2**40),
    )
    try:
        conn.execute("INSERT INTO psycopg3_arrays (id, vs) VALUES (9, '{abcd}')")
        check("varchar(3)[] element too long", "no error", "22001")
    except psycopg.Error as e:
        check("varchar(3)[] element too long", e.sqlstate, "22001")

    # An enum type: looked up as psycopg looks it up, its values Python
    # enum members in text and binary, ordered by the labels' order.
    conn.execute("DROP TABLE IF EXISTS psycopg3_moods")
    conn.execute("DROP TYPE IF EXISTS psycopg3_mood")
    conn.execute("CREATE TYPE psycopg3_mood AS ENUM ('sad', 'ok', 'happy')")
    conn.execute("CREATE TABLE psycopg3_moods (id int PRIMARY KEY, m psycopg3_mood)")
    info = EnumInfo.fetch(conn, "psycopg3_mood")
    check("enum labels", info.labels if info else None, ["sad", "ok", "happy"])
    register_enum(info, conn)
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            key = 10 * int(binary)
            cur.execute(
                "INSERT INTO psycopg3_moods VALUES (%s, %s), (%s, %s)",
                (key, info.enum.happy, key + 1, "sad"),
            )
            cur.execute("SELECT m FROM psycopg3_moods WHERE id >= %s AND id < %s ORDER BY m", (key, key + 10))
            check(
                f"enum in {'binary' if binary else 'text'}",
                [r[0] for r in cur.fetchall()],
                [info.enum.sad, info.enum.happy],
            )
    try:
        conn.execute("INSERT INTO psycopg3_moods VALUES (99, 'angry')")
        check("enum label checked", "no error", "22P02")
    except psycopg.Error as e:
        check("enum label checked", e.sqlstate, "22P02")

    # CRUD with parameters, and rowcount.
    conn.execute("DROP TABLE IF EXISTS psycopg3_items")
    conn.execute("CREATE TABLE psycopg3_items (id int PRIMARY KEY, name text NOT NULL, qty int)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO psycopg3_items VALUES (%s, %s, %s)",
            [(i, f"item{i}", i * 10) for i in range(1, 6)],
        )
        cur.execute("UPDATE psycopg3_items SET qty = qty + %s WHERE id >= %s", (1, 4))
        check("update rowcount", cur.rowcount, 2)
        cur.execute("DELETE FROM psycopg3_items WHERE id = %s", (1,))
        check("delete rowcount", cur.rowcount, 1)
        cur.execute("SELECT id, qty FROM psycopg3_items ORDER BY id")
        check("rows after CRUD", cur.fetchall(), [(2, 20), (3, 30), (4, 41), (5, 51)])

    # Transactions: commit keeps, rollback (an exception in the block) undoes.
    with conn.transaction():
        conn.execute("INSERT INTO psycopg3_items VALUES (10, 'kept', 1)")
    try:
        with conn.transaction():
            conn.execute("INSERT INTO psycopg3_items VALUES (11, 'undone', 1)")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    ids = [r[0] for r in conn.execute("SELECT id FROM psycopg3_items WHERE id >= 10 ORDER BY id")]
    check("commit kept, rollback undone", ids, [10])

    # Errors carry SQLSTATE, and the session goes on.
    for sql, state in [
        ("INSERT INTO psycopg3_items VALUES (2, 'dup', 0)", "23505"),
        ("INSERT INTO psycopg3_items (id) VALUES (99)", "23502"),
        ("SELECT * FROM psycopg3_nothing", "42P01"),
        ("SELECT 1/0", "22012"),
        ("SELEC 1", "42601"),
    ]:
        try:
            conn.execute(sql)
            check(f"error for {sql}", "no error", state)
        except psycopg.Error as e:
            check(f"SQLSTATE of {sql}", e.sqlstate, state)

    # A failed statement inside a transaction block poisons the block (25P02).
    conn.autocommit = False
    try:
        conn.execute("SELECT * FROM psycopg3_nothing")
    except psycopg.Error:
        pass
    try:
        conn.execute("SELECT 1")
        check("aborted block", "no error", "25P02")
    except psycopg.Error as e:
        check("statement in an aborted block", e.sqlstate, "25P02")
    conn.rollback()

    # A server-side cursor: DECLARE with a parameter, Describe of the
    # cursor's portal, FETCH FORWARD itersize rows at a time; scroll back.
    with conn.cursor(name="psycopg3_stream", scrollable=True) as named:
        named.itersize = 2
        named.execute("SELECT id, name FROM psycopg3_items WHERE id >= %s ORDER BY id", (2,))
        check("server cursor columns", [d.name for d in named.description], ["id", "name"])
        first = named.fetchmany(2)
        named.scroll(-1)
        again = named.fetchone()
        check("server cursor rows", (len(first), again == first[1]), (2, True))
    conn.rollback()
    conn.autocommit = True

    # Introspection the driver does itself (TypeInfo reads pg_type).
    info = TypeInfo.fetch(conn, "numeric")
    check("TypeInfo numeric oid", info.oid, 1700)
    check("TypeInfo of a missing type", TypeInfo.fetch(conn, "no_such_type"), None)
    cols = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'psycopg3_items' ORDER BY ordinal_position"
    ).fetchall()
    check("information_schema.columns", cols, [("id", "integer"), ("name", "text"), ("qty", "integer")])

# COPY: rows in and out through psycopg's copy API (text format), CSV with a
# header, one statement that is all or nothing; TRUNCATE.
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("DROP TABLE IF EXISTS psycopg3_copy")
    conn.execute("CREATE TABLE psycopg3_copy (id int PRIMARY KEY, name text, at date)")
    with conn.cursor() as cur:
        with cur.copy("COPY psycopg3_copy (id, name, at) FROM STDIN") as copy:
            for i in range(1, 1001):
                copy.write_row((i, None if i % 10 == 0 else f"tab\there {i}", f"2024-01-{i % 28 + 1:02d}"))
        check("COPY FROM STDIN row count", cur.rowcount, 1000)
        with cur.copy("COPY (SELECT id, name FROM psycopg3_copy WHERE id IN (9, 10) ORDER BY id) TO STDOUT") as copy:
            check("COPY TO STDOUT rows", [tuple(r) for r in copy.rows()], [("9", "tab\there 9"), ("10", None)])
        with cur.copy("COPY psycopg3_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            copy.write('id,name,at\n2001,"quoted, ""name""",2024-02-29\n2002,,\n')
        cur.execute("SELECT name, at IS NULL FROM psycopg3_copy WHERE id > 2000 ORDER BY id")
        check("COPY CSV with header, NULL vs quoted", cur.fetchall(), [('quoted, "name"', False), (None, True)])
        try:
            with cur.copy("COPY psycopg3_copy FROM STDIN") as copy:
                copy.write("3001\tok\t2024-01-01\n3002\tbad date\tnot-a-date\n")
            check("bad COPY row", "accepted", "rejected")
        except psycopg.Error as e:
            check("bad COPY row SQLSTATE", e.sqlstate, "22007")
        cur.execute("SELECT count(*) FROM psycopg3_copy")
        check("a failed COPY writes nothing", cur.fetchone()[0], 1002)
        cur.execute("TRUNCATE psycopg3_copy")
        cur.execute("SELECT count(*) FROM psycopg3_copy")
        check("TRUNCATE empties the table", cur.fetchone()[0], 0)

print("psycopg3: all checks passed")
