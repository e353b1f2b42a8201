"""What every Python driver program checks, in the driver's own terms.

Each program (psycopg3_test.py, psycopg2_test.py, asyncpg_test.py,
sqlalchemy_test.py) takes the server's postgresql:// URL as its one
argument, works on tables named after itself, prints one line per check
and exits non-zero on the first failure.
"""

import datetime
import decimal
import sys
import uuid

# One value of every type eon supports, and the column type it goes in.
TYPES = [
    ("smallint", 7),
    ("integer", -2147483648),
    ("bigint", 2**40 + 3),
    ("real", 1.5),
    ("double precision", 0.1),
    ("numeric(12,3)", decimal.Decimal("-12345.678")),
    # unconstrained numeric keeps 10 decimal places in eon (Decimal128(38,10))
    ("numeric", decimal.Decimal("1234567.0123456789")),
    ("text", "a'b\"c ünï"),
    ("varchar(10)", "short"),
    ("character(4)", "ab  "),
    ("boolean", True),
    ("date", datetime.date(2024, 2, 29)),
    ("timestamp", datetime.datetime(2024, 2, 29, 13, 14, 15, 123456)),
    (
        "timestamptz",
        datetime.datetime(2024, 2, 29, 13, 14, 15, 500000, tzinfo=datetime.timezone.utc),
    ),
    ("bytea", b"\x00\x01\xfe\xff"),
    ("uuid", uuid.UUID("0b5e3c1c-8a0e-4f6b-9a3e-1c2d3e4f5a6b")),
    ("interval", datetime.timedelta(days=3, hours=-2, microseconds=250)),
    ("time", datetime.time(23, 59, 58, 999999)),
]


def columns_ddl():
    """`c0 smallint, c1 integer, …` for TYPES."""
    return ", ".join(f"c{i} {t}" for i, (t, _) in enumerate(TYPES))


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {what}")


def check_row(what, row, normalize=lambda v: v):
    """The row read back equals TYPES' values (after the driver's own
    conversions, which `normalize` undoes for drivers that return, say,
    memoryview for bytea)."""
    for i, (t, want) in enumerate(TYPES):
        got = normalize(row[i])
        if t == "real":
            got = float(got)
        if got != want:
            print(f"FAIL {what}: column c{i} ({t}): got {got!r}, want {want!r}")
            sys.exit(1)
    print(f"ok   {what}: {len(TYPES)} types round-tripped")
