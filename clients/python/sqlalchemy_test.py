"""SQLAlchemy 2 (over psycopg 3) against eon: the ORM's create_all with a
foreign key, relationships, CRUD through a Session, and the inspector."""

import enum
import sys

from sqlalchemy import Enum, ForeignKey, Numeric, String, create_engine, delete, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from common import check


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "sqlalchemy_author"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list["Book"]] = relationship(back_populates="author", order_by="Book.id")


class Book(Base):
    __tablename__ = "sqlalchemy_book"
    # SERIAL: the ids come back from INSERT … RETURNING.
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    price: Mapped[float] = mapped_column(Numeric(8, 2))
    author_id: Mapped[int] = mapped_column(ForeignKey("sqlalchemy_author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Mood(enum.Enum):
    sad = "sad"
    ok = "ok"
    happy = "happy"


class Reader(Base):
    # An Enum column: create_all makes the type (CREATE TYPE … AS ENUM)
    # before the table, drop_all drops it after.
    __tablename__ = "sqlalchemy_reader"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    mood: Mapped[Mood] = mapped_column(Enum(Mood, name="sqlalchemy_mood"))


engine = create_engine(sys.argv[1].replace("postgresql://", "postgresql+psycopg://"))
Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)

with Session(engine) as s:
    s.add(
        Author(
            id=1,
            name="Ursula",
            books=[Book(title="Earthsea", price=9.5), Book(title="Lathe", price=7)],
        )
    )
    s.add(Author(id=2, name="Iain", books=[Book(title="Excession", price=11)]))
    s.commit()
    check(
        "serial ids assigned in order",
        [b.id for b in s.scalars(select(Book).order_by(Book.id))],
        [1, 2, 3],
    )

with Session(engine) as s:
    ursula = s.scalars(select(Author).where(Author.name == "Ursula")).one()
    check("relationship loads", [b.title for b in ursula.books], ["Earthsea", "Lathe"])
    book = s.get(Book, 3)
    check("many-to-one loads", book.author.name, "Iain")
    book.price = 12
    s.delete(s.get(Book, 2))
    s.commit()
    counts = s.execute(
        select(Author.name, func.count(Book.id))
        .join(Book)
        .group_by(Author.name)
        .order_by(Author.name)
    ).all()
    check("join and aggregate", [tuple(r) for r in counts], [("Iain", 1), ("Ursula", 1)])
    check("update persisted", float(s.get(Book, 3).price), 12.0)

with Session(engine) as s:
    s.add_all([Reader(id=1, mood=Mood.happy), Reader(id=2, mood=Mood.sad), Reader(id=3, mood=Mood.ok)])
    s.commit()
    check(
        "enum ordered by its labels",
        [r.mood for r in s.scalars(select(Reader).order_by(Reader.mood))],
        [Mood.sad, Mood.ok, Mood.happy],
    )
    check("enum compared", [r.id for r in s.scalars(select(Reader).where(Reader.mood > Mood.ok))], [1])

inspector = inspect(engine)
check(
    "reflected tables",
    sorted(t for t in inspector.get_table_names() if t.startswith("sqlalchemy_")),
    ["sqlalchemy_author", "sqlalchemy_book", "sqlalchemy_reader"],
)
check(
    "reflected enum",
    [(e["name"], e["labels"]) for e in inspector.get_enums() if e["name"] == "sqlalchemy_mood"],
    [("sqlalchemy_mood", ["sad", "ok", "happy"])],
)
mood_type = inspector.get_columns("sqlalchemy_reader")[1]["type"]
check("reflected enum column", (type(mood_type).__name__, list(mood_type.enums)), ("ENUM", ["sad", "ok", "happy"]))
# The foreign key is enforced: a book of no author, or deleting an author
# who still has books, fails with 23503.
for bad in (
    lambda s: s.add(Book(id=9, title="Orphan", price=1, author_id=99)),
    lambda s: s.execute(delete(Author).where(Author.id == 1)),
):
    with Session(engine) as s:
        try:
            bad(s)
            s.commit()
            check("foreign key enforced", "committed", "IntegrityError")
        except IntegrityError as e:
            check("foreign key enforced", e.orig.sqlstate, "23503")
columns = inspector.get_columns("sqlalchemy_book")
check(
    "reflected columns",
    [(c["name"], str(c["type"]), c["nullable"]) for c in columns],
    [
        ("id", "INTEGER", False),
        ("title", "VARCHAR", False),
        ("price", "NUMERIC(8, 2)", False),
        ("author_id", "INTEGER", False),
    ],
)
check(
    "reflected primary key",
    inspector.get_pk_constraint("sqlalchemy_book"),
    {
        "constrained_columns": ["id"],
        "name": "sqlalchemy_book_pkey",
        "comment": None,
        "dialect_options": {"postgresql_include": []},
    },
)
check(
    "reflected foreign key",
    [
        (f["constrained_columns"], f["referred_table"], f["referred_columns"])
        for f in inspector.get_foreign_keys("sqlalchemy_book")
    ],
    [(["author_id"], "sqlalchemy_author", ["id"])],
)
check("reflected indexes", inspector.get_indexes("sqlalchemy_book"), [])
# A Table reflected from the live catalog works like a declared one.
from sqlalchemy import MetaData, Table

books = Table("sqlalchemy_book", MetaData(), autoload_with=engine)
check("reflected table's key", [c.name for c in books.primary_key], ["id"])
with engine.connect() as conn:
    titles = conn.execute(select(books.c.title).order_by(books.c.id)).scalars().all()
    check("select through the reflected table", titles, ["Earthsea", "Excession"])
    # stream_results: rows through a server-side cursor, a partition at a time.
    streamed = conn.execution_options(stream_results=True, max_row_buffer=1).execute(
        select(books.c.title).order_by(books.c.id)
    )
    check("stream_results", [[r[0] for r in p] for p in streamed.partitions(1)], [["Earthsea"], ["Excession"]])
print("sqlalchemy: all checks passed")
