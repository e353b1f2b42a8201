//! SQL types and their Arrow representation.
//!
//! eon stores and exchanges data as Arrow arrays, so every SQL type has one
//! Arrow type. Where Arrow has no exact counterpart (uuid, jsonb, varchar's
//! length) the Arrow field carries the SQL type in its metadata under
//! [`SQL_TYPE_KEY`], which the wire layers read to report the right
//! PostgreSQL type OID.
//!
//! | SQL                 | Arrow                      | PostgreSQL OID |
//! |---------------------|----------------------------|----------------|
//! | smallint            | Int16                      | 21             |
//! | integer             | Int32                      | 23             |
//! | bigint              | Int64                      | 20             |
//! | real                | Float32                    | 700            |
//! | double precision    | Float64                    | 701            |
//! | numeric(p,s)        | Decimal128(min(p,38),s) ¹  | 1700           |
//! | text                | Utf8                       | 25             |
//! | varchar(n)          | Utf8 (+ metadata)          | 1043           |
//! | boolean             | Boolean                    | 16             |
//! | date                | Date32                     | 1082           |
//! | timestamp           | Timestamp(µs)              | 1114           |
//! | timestamptz         | Timestamp(µs, "+00:00")    | 1184           |
//! | bytea               | Binary                     | 17             |
//! | uuid                | Utf8 (+ metadata)          | 2950           |
//! | jsonb               | Utf8 (+ metadata)          | 3802           |
//! | json                | Utf8 (+ metadata)          | 114            |
//! | interval            | Interval(MonthDayNano) ²   | 1186           |
//! | time                | Time64(µs)                 | 1083           |
//! | T[]                 | List(T's Arrow type)       | T's array type |
//! | an enum type        | Utf8 (+ metadata) ³        | the type's id  |
//! | oid                 | Int32 ⁴                    | 26             |
//! | "char"              | Utf8 (+ metadata) ⁴        | 18             |
//!
//! ¹ At most 38 digits are stored whatever the declared precision (up to
//! PostgreSQL's 1000); NaN and ±Infinity are integers beyond 38 digits
//! (`value::special`).
//!
//! ² DataFusion's own interval type: months, days and nanoseconds, kept
//! apart as PostgreSQL keeps months, days and microseconds apart.
//!
//! ³ A value is one of the type's labels, stored as its text; the field's
//! metadata carries the whole type (labels in order) so that the query
//! engine can check values and order them by their position in the type.
//!
//! ⁴ The catalogs' object identifiers (`pg_type.oid`, `pg_class.relnamespace`,
//! …): datafusion-pg-catalog marks those columns with [`OID_ALIAS_KEY`]
//! metadata, and the wire describes them, and parameters compared with
//! them, as PostgreSQL does — drivers' type lookups bind and read `oid`.
//! `"char"` is the one-byte type of codes such as `pg_type.typtype`.

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use eon_proto::v1 as pb;

/// Field metadata key with which datafusion-pg-catalog marks its oid
/// columns.
pub const OID_ALIAS_KEY: &str = "pg.oid_alias";

/// Field metadata key holding the SQL type name of a column.
pub const SQL_TYPE_KEY: &str = "eon.sql_type";

/// numeric without a precision ("unconstrained"; `SqlType::Numeric` with
/// precision 0) is stored as the widest Decimal128 with a scale that keeps
/// common fractions exact, and printed without trailing zeros.
pub const NUMERIC_DEFAULT_PRECISION: u8 = 38;
/// The most digits a numeric value holds in eon (an Arrow Decimal128).
/// PostgreSQL's numeric is arbitrary-precision; eon accepts its declared
/// precisions up to 1000 but stores at most this many digits, and a value
/// that needs more fails with `22003 numeric field overflow`.
pub const NUMERIC_MAX_DIGITS: u8 = 38;
pub const NUMERIC_DEFAULT_SCALE: i8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// numeric(precision, scale); precision 0: unconstrained `numeric`.
    Numeric {
        precision: u16,
        scale: i8,
    },
    Text,
    Varchar {
        max_length: Option<u32>,
    },
    /// character(n) (bpchar): stored without trailing spaces (PostgreSQL
    /// ignores them in comparisons and `length`), padded to n when sent.
    Char {
        length: u32,
    },
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Bytea,
    Uuid,
    Jsonb,
    /// json: the input text itself, checked to be JSON.
    Json,
    /// interval: months, days and a time (PostgreSQL's three fields).
    Interval,
    /// time without time zone: microseconds since midnight.
    Time,
    /// A one-dimensional array of a base type (`integer[]`). The element
    /// type is interned (see [`SqlType::array_of`]) so that SqlType stays a
    /// small `Copy` value.
    Array(&'static SqlType),
    /// oid: an object identifier of the catalogs.
    Oid,
    /// `"char"`: one byte, the catalogs' codes (`pg_type.typtype`).
    PgChar,
    /// A type made by `CREATE TYPE … AS ENUM`, interned like an array's
    /// element (see [`SqlType::enum_of`]).
    Enum(&'static EnumDef),
}

/// An enum type: its labels in their order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EnumDef {
    /// The PostgreSQL type oid (meta's id of the type).
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub labels: Vec<String>,
}

impl EnumDef {
    /// The label's position (from 1, PostgreSQL's enumsortorder).
    pub fn position(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label).map(|i| i + 1)
    }

    /// The name `format_type` writes: qualified outside `public`.
    pub fn display_name(&self) -> String {
        if self.schema == "public" || self.schema.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }

    /// PostgreSQL's error for text that is not one of the labels.
    pub fn invalid_input(&self, text: &str) -> crate::Error {
        crate::Error::user(
            crate::error::sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input value for enum {}: \"{text}\"", self.name),
        )
    }

    pub fn from_proto(t: &pb::EnumType) -> EnumDef {
        EnumDef {
            oid: t.id as u32,
            schema: t.schema.clone(),
            name: t.name.clone(),
            labels: t.labels.clone(),
        }
    }

    pub fn to_proto(&self) -> pb::EnumType {
        pb::EnumType {
            id: self.oid as u64,
            schema: self.schema.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            owner: String::new(),
        }
    }
}

/// Enum types' oids are this plus meta's catalog id: above every oid
/// PostgreSQL's own types and the catalog tables' rows use.
pub const ENUM_OID_BASE: u32 = 1_950_000_000;

/// Field metadata of enum columns: this prefix, then the type as JSON.
const ENUM_PREFIX: &str = "enum ";

/// Keep one copy of each distinct value for the life of the process:
/// there are only as many as the types tables declare.
fn intern<T: Eq + std::hash::Hash + Send + 'static>(
    set: &std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static T>>>,
    value: T,
) -> &'static T {
    let mut set = set
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match set.get(&value) {
        Some(t) => t,
        None => {
            let t: &'static T = Box::leak(Box::new(value));
            set.insert(t);
            t
        }
    }
}

/// The time zone string of timestamptz arrays: values are UTC instants.
pub const UTC: &str = "+00:00";

impl SqlType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Int2 => DataType::Int16,
            SqlType::Int4 | SqlType::Oid => DataType::Int32,
            SqlType::Int8 => DataType::Int64,
            SqlType::Float4 => DataType::Float32,
            SqlType::Float8 => DataType::Float64,
            SqlType::Numeric { precision: 0, .. } => {
                DataType::Decimal128(NUMERIC_DEFAULT_PRECISION, NUMERIC_DEFAULT_SCALE)
            }
            // Declared precisions above 38 (PostgreSQL allows 1000) are
            // stored at 38 digits: see NUMERIC_MAX_DIGITS.
            // A negative scale rounds to tens, thousands, …: the value
            // is stored at scale 0 with room for the zeros. A scale above
            // the precision (numeric(3,6): below 0.001) is stored at that
            // scale. The declared digits are checked on the way in.
            SqlType::Numeric { precision, scale } if *scale < 0 => DataType::Decimal128(
                (*precision as i32 - *scale as i32).min(NUMERIC_MAX_DIGITS as i32) as u8,
                0,
            ),
            SqlType::Numeric { precision, scale } => DataType::Decimal128(
                (*precision)
                    .max(*scale as u16)
                    .min(NUMERIC_MAX_DIGITS as u16) as u8,
                *scale,
            ),
            SqlType::Text
            | SqlType::Varchar { .. }
            | SqlType::Char { .. }
            | SqlType::Uuid
            | SqlType::Jsonb
            | SqlType::Json
            | SqlType::PgChar
            | SqlType::Enum(_) => DataType::Utf8,
            SqlType::Bool => DataType::Boolean,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            SqlType::Bytea => DataType::Binary,
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            SqlType::Time => DataType::Time64(TimeUnit::Microsecond),
            SqlType::Array(element) => DataType::new_list(element.arrow_type(), true),
        }
    }

    /// The Arrow field for a column of this type.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let mut metadata = HashMap::new();
        metadata.insert(SQL_TYPE_KEY.to_string(), self.tag());
        Field::new(name, self.arrow_type(), nullable).with_metadata(metadata)
    }

    /// The text a field's metadata holds under [`SQL_TYPE_KEY`], which
    /// [`SqlType::parse`] reads back: the type's name, or for an enum the
    /// whole type.
    pub fn tag(&self) -> String {
        match self {
            SqlType::Enum(def) => format!(
                "{ENUM_PREFIX}{}",
                serde_json::to_string(def).expect("an enum type serializes")
            ),
            _ => self.to_string(),
        }
    }

    /// The SQL type recorded in a field's metadata, if any.
    pub fn from_field(field: &Field) -> Option<SqlType> {
        let metadata = field.metadata();
        if let Some(s) = metadata.get(SQL_TYPE_KEY) {
            return SqlType::parse(s);
        }
        (metadata.contains_key(OID_ALIAS_KEY) && field.data_type() == &DataType::Int32)
            .then_some(SqlType::Oid)
    }

    /// The SQL type an Arrow type naturally stands for (results of
    /// expressions carry no metadata).
    pub fn from_arrow(dt: &DataType) -> Option<SqlType> {
        Some(match dt {
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::Int2,
            DataType::Int32 | DataType::UInt16 => SqlType::Int4,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Int8,
            DataType::Float16 | DataType::Float32 => SqlType::Float4,
            DataType::Float64 => SqlType::Float8,
            // The decimal unconstrained numeric is stored as (what a cast
            // to `numeric` gives): written without trailing zeros, as
            // PostgreSQL writes `1.1::numeric` and sums of such values.
            DataType::Decimal128(NUMERIC_DEFAULT_PRECISION, NUMERIC_DEFAULT_SCALE) => {
                SqlType::Numeric {
                    precision: 0,
                    scale: 0,
                }
            }
            DataType::Decimal128(p, s) => SqlType::Numeric {
                precision: *p as u16,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
            DataType::Boolean => SqlType::Bool,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Timestamp(_, None) => SqlType::Timestamp,
            DataType::Timestamp(_, Some(_)) => SqlType::TimestampTz,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
            // A difference of timestamps (a Duration in Arrow) is an
            // interval in PostgreSQL.
            DataType::Interval(_) | DataType::Duration(_) => SqlType::Interval,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
                let element = SqlType::from_field(item)
                    .filter(|t| &t.arrow_type() == item.data_type())
                    .or_else(|| SqlType::from_arrow(item.data_type()))?;
                SqlType::array_of(element)?
            }
            _ => return None,
        })
    }

    /// True for `numeric` without a declared precision.
    pub fn is_unconstrained_numeric(&self) -> bool {
        matches!(self, SqlType::Numeric { precision: 0, .. })
    }

    /// The scale of the Arrow decimal a numeric is stored as.
    pub fn decimal_scale(&self) -> i8 {
        match self.arrow_type() {
            DataType::Decimal128(_, s) => s,
            _ => 0,
        }
    }

    /// PostgreSQL's type OID.
    pub fn pg_oid(&self) -> u32 {
        match self {
            SqlType::Int2 => 21,
            SqlType::Int4 => 23,
            SqlType::Int8 => 20,
            SqlType::Float4 => 700,
            SqlType::Float8 => 701,
            SqlType::Numeric { .. } => 1700,
            SqlType::Text => 25,
            SqlType::Varchar { .. } => 1043,
            SqlType::Char { .. } => 1042,
            SqlType::Bool => 16,
            SqlType::Date => 1082,
            SqlType::Timestamp => 1114,
            SqlType::TimestampTz => 1184,
            SqlType::Bytea => 17,
            SqlType::Uuid => 2950,
            SqlType::Jsonb => 3802,
            SqlType::Json => 114,
            SqlType::Interval => 1186,
            SqlType::Time => 1083,
            SqlType::Array(element) => array_oid(element.pg_oid()).unwrap_or(1009),
            SqlType::Enum(def) => def.oid,
            SqlType::Oid => 26,
            SqlType::PgChar => 18,
        }
    }

    /// The name REST reports as a column's "type".
    pub fn short_name(&self) -> &'static str {
        match self {
            SqlType::Int2 => "int2",
            SqlType::Int4 => "int4",
            SqlType::Int8 => "int8",
            SqlType::Float4 => "float4",
            SqlType::Float8 => "float8",
            SqlType::Numeric { .. } => "numeric",
            SqlType::Text => "text",
            SqlType::Varchar { .. } => "varchar",
            SqlType::Char { .. } => "bpchar",
            SqlType::Bool => "bool",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp",
            SqlType::TimestampTz => "timestamptz",
            SqlType::Bytea => "bytea",
            SqlType::Uuid => "uuid",
            SqlType::Jsonb => "jsonb",
            SqlType::Json => "json",
            SqlType::Interval => "interval",
            SqlType::Time => "time",
            SqlType::Oid => "oid",
            SqlType::PgChar => "char",
            SqlType::Array(element) => match element {
                SqlType::Int2 => "_int2",
                SqlType::Int4 => "_int4",
                SqlType::Int8 => "_int8",
                SqlType::Float4 => "_float4",
                SqlType::Float8 => "_float8",
                SqlType::Numeric { .. } => "_numeric",
                SqlType::Varchar { .. } => "_varchar",
                SqlType::Char { .. } => "_bpchar",
                SqlType::Bool => "_bool",
                SqlType::Date => "_date",
                SqlType::Timestamp => "_timestamp",
                SqlType::TimestampTz => "_timestamptz",
                SqlType::Bytea => "_bytea",
                SqlType::Uuid => "_uuid",
                SqlType::Jsonb => "_jsonb",
                SqlType::Json => "_json",
                SqlType::Interval => "_interval",
                SqlType::Time => "_time",
                SqlType::Oid => "_oid",
                SqlType::PgChar => "_char",
                SqlType::Text | SqlType::Array(_) | SqlType::Enum(_) => "_text",
            },
            SqlType::Enum(def) => def.name.as_str(),
        }
    }

    /// The type of one-dimensional arrays of `element`; None when
    /// `element` is an array itself (eon has no multidimensional arrays).
    pub fn array_of(element: SqlType) -> Option<SqlType> {
        use std::collections::HashSet;
        use std::sync::{Mutex, OnceLock};
        // Arrays of enums would need array types of their own (PostgreSQL
        // makes `_mood` beside `mood`): not yet.
        if matches!(element, SqlType::Array(_) | SqlType::Enum(_)) {
            return None;
        }
        static INTERNED: OnceLock<Mutex<HashSet<&'static SqlType>>> = OnceLock::new();
        Some(SqlType::Array(intern(&INTERNED, element)))
    }

    /// The type of an enum's values.
    pub fn enum_of(def: EnumDef) -> SqlType {
        use std::collections::HashSet;
        use std::sync::{Mutex, OnceLock};
        static INTERNED: OnceLock<Mutex<HashSet<&'static EnumDef>>> = OnceLock::new();
        SqlType::Enum(intern(&INTERNED, def))
    }

    /// The enum type of an enum column.
    pub fn enum_def(&self) -> Option<&'static EnumDef> {
        match self {
            SqlType::Enum(def) => Some(def),
            _ => None,
        }
    }

    /// The element type of an array type.
    pub fn element(&self) -> Option<SqlType> {
        match self {
            SqlType::Array(e) => Some(**e),
            _ => None,
        }
    }

    /// Parse the names [`fmt::Display`] writes (and common aliases).
    pub fn parse(s: &str) -> Option<SqlType> {
        if let Some(json) = s.strip_prefix(ENUM_PREFIX) {
            return serde_json::from_str(json).ok().map(SqlType::enum_of);
        }
        let s = s.trim().to_ascii_lowercase();
        if let Some(element) = s.strip_suffix("[]") {
            return SqlType::array_of(SqlType::parse(element)?);
        }
        let (base, args) = match s.find('(') {
            Some(i) if s.ends_with(')') => {
                let args: Vec<&str> = s[i + 1..s.len() - 1].split(',').map(str::trim).collect();
                (s[..i].trim().to_string(), args)
            }
            _ => (s.clone(), vec![]),
        };
        let num = |i: usize| args.get(i).and_then(|a| a.parse::<u32>().ok());
        Some(match base.as_str() {
            "smallint" | "int2" => SqlType::Int2,
            "integer" | "int" | "int4" => SqlType::Int4,
            "bigint" | "int8" => SqlType::Int8,
            "real" | "float4" => SqlType::Float4,
            "double precision" | "float8" | "double" => SqlType::Float8,
            "numeric" | "decimal" => match (num(0), num(1)) {
                (Some(p), s) => SqlType::Numeric {
                    precision: p as u16,
                    scale: s.unwrap_or(0) as i8,
                },
                _ => SqlType::Numeric {
                    precision: 0,
                    scale: 0,
                },
            },
            "text" => SqlType::Text,
            "varchar" | "character varying" => SqlType::Varchar { max_length: num(0) },
            "char" | "character" | "bpchar" => SqlType::Char {
                length: num(0).unwrap_or(1),
            },
            "boolean" | "bool" => SqlType::Bool,
            "date" => SqlType::Date,
            "timestamp" | "timestamp without time zone" => SqlType::Timestamp,
            "timestamptz" | "timestamp with time zone" => SqlType::TimestampTz,
            "bytea" => SqlType::Bytea,
            "uuid" => SqlType::Uuid,
            "jsonb" => SqlType::Jsonb,
            "json" => SqlType::Json,
            "interval" => SqlType::Interval,
            "time" | "time without time zone" => SqlType::Time,
            "oid" => SqlType::Oid,
            "\"char\"" => SqlType::PgChar,
            _ => return None,
        })
    }

    pub fn to_proto(&self) -> pb::ColumnType {
        use pb::TypeKind as K;
        if let SqlType::Array(element) = self {
            return pb::ColumnType {
                kind: K::Array as i32,
                element: Some(Box::new(element.to_proto())),
                ..Default::default()
            };
        }
        if let SqlType::Enum(def) = self {
            return pb::ColumnType {
                kind: K::Enum as i32,
                enum_type: Some(def.to_proto()),
                ..Default::default()
            };
        }
        let (kind, precision, scale, max_length) = match *self {
            SqlType::Int2 => (K::Int2, 0, 0, 0),
            SqlType::Int4 => (K::Int4, 0, 0, 0),
            SqlType::Int8 => (K::Int8, 0, 0, 0),
            SqlType::Float4 => (K::Float4, 0, 0, 0),
            SqlType::Float8 => (K::Float8, 0, 0, 0),
            SqlType::Numeric { precision, scale } => {
                (K::Numeric, precision as u32, scale as u32, 0)
            }
            SqlType::Text => (K::Text, 0, 0, 0),
            SqlType::Varchar { max_length } => (K::Varchar, 0, 0, max_length.unwrap_or(0)),
            SqlType::Char { length } => (K::Char, 0, 0, length),
            SqlType::Bool => (K::Bool, 0, 0, 0),
            SqlType::Date => (K::Date, 0, 0, 0),
            SqlType::Timestamp => (K::Timestamp, 0, 0, 0),
            SqlType::TimestampTz => (K::Timestamptz, 0, 0, 0),
            SqlType::Bytea => (K::Bytea, 0, 0, 0),
            SqlType::Uuid => (K::Uuid, 0, 0, 0),
            SqlType::Jsonb => (K::Jsonb, 0, 0, 0),
            SqlType::Json => (K::Json, 0, 0, 0),
            SqlType::Interval => (K::Interval, 0, 0, 0),
            SqlType::Time => (K::Time, 0, 0, 0),
            SqlType::Oid => (K::Oid, 0, 0, 0),
            SqlType::PgChar => (K::PgChar, 0, 0, 0),
            SqlType::Array(_) | SqlType::Enum(_) => unreachable!("handled above"),
        };
        pb::ColumnType {
            kind: kind as i32,
            precision,
            scale,
            max_length,
            ..Default::default()
        }
    }

    pub fn from_proto(t: &pb::ColumnType) -> Option<SqlType> {
        use pb::TypeKind as K;
        Some(match K::try_from(t.kind).ok()? {
            K::Unspecified => return None,
            K::Int2 => SqlType::Int2,
            K::Int4 => SqlType::Int4,
            K::Int8 => SqlType::Int8,
            K::Float4 => SqlType::Float4,
            K::Float8 => SqlType::Float8,
            K::Numeric => SqlType::Numeric {
                precision: t.precision as u16,
                scale: t.scale as i8,
            },
            K::Text => SqlType::Text,
            K::Varchar => SqlType::Varchar {
                max_length: (t.max_length > 0).then_some(t.max_length),
            },
            K::Char => SqlType::Char {
                length: t.max_length.max(1),
            },
            K::Bool => SqlType::Bool,
            K::Date => SqlType::Date,
            K::Timestamp => SqlType::Timestamp,
            K::Timestamptz => SqlType::TimestampTz,
            K::Bytea => SqlType::Bytea,
            K::Uuid => SqlType::Uuid,
            K::Jsonb => SqlType::Jsonb,
            K::Json => SqlType::Json,
            K::Interval => SqlType::Interval,
            K::Time => SqlType::Time,
            K::Oid => SqlType::Oid,
            K::PgChar => SqlType::PgChar,
            K::Array => SqlType::array_of(SqlType::from_proto(t.element.as_deref()?)?)?,
            K::Enum => SqlType::enum_of(EnumDef::from_proto(t.enum_type.as_ref()?)),
        })
    }
}

impl SqlType {
    /// The type's SQL name without a modifier (`character varying`,
    /// `numeric`): information_schema's `data_type`, `pg_typeof`'s answer.
    pub fn sql_name(&self) -> &'static str {
        match self {
            SqlType::Int2 => "smallint",
            SqlType::Int4 => "integer",
            SqlType::Int8 => "bigint",
            SqlType::Float4 => "real",
            SqlType::Float8 => "double precision",
            SqlType::Numeric { .. } => "numeric",
            SqlType::Text => "text",
            SqlType::Varchar { .. } => "character varying",
            SqlType::Char { .. } => "character",
            SqlType::Bool => "boolean",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp without time zone",
            SqlType::TimestampTz => "timestamp with time zone",
            SqlType::Bytea => "bytea",
            SqlType::Uuid => "uuid",
            SqlType::Jsonb => "jsonb",
            SqlType::Json => "json",
            SqlType::Interval => "interval",
            SqlType::Time => "time without time zone",
            SqlType::Oid => "oid",
            SqlType::PgChar => "\"char\"",
            SqlType::Array(_) => "ARRAY",
            SqlType::Enum(_) => "USER-DEFINED",
        }
    }

    /// The name `pg_typeof` answers: the type without its modifier
    /// (`integer[]` for an array).
    pub fn type_name(&self) -> String {
        match self {
            SqlType::Array(element) => format!("{}[]", element.sql_name()),
            SqlType::Enum(def) => def.display_name(),
            other => other.sql_name().to_string(),
        }
    }
}

/// The oid of the element type of an array type.
pub fn element_oid(array: u32) -> Option<u32> {
    const ELEMENTS: [u32; 21] = [
        16, 17, 18, 20, 21, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1114, 1184, 1700, 1083,
        1186, 2950, 3802,
    ];
    ELEMENTS.into_iter().find(|&e| array_oid(e) == Some(array))
}

/// The oid of the array type of an element type.
pub fn array_oid(element: u32) -> Option<u32> {
    Some(match element {
        16 => 1000,   // bool
        17 => 1001,   // bytea
        18 => 1002,   // "char"
        20 => 1016,   // int8
        21 => 1005,   // int2
        23 => 1007,   // int4
        25 => 1009,   // text
        26 => 1028,   // oid
        114 => 199,   // json
        700 => 1021,  // float4
        701 => 1022,  // float8
        1042 => 1014, // bpchar
        1043 => 1015, // varchar
        1082 => 1182, // date
        1114 => 1115, // timestamp
        1184 => 1185, // timestamptz
        1700 => 1231, // numeric
        1083 => 1183, // time
        1186 => 1187, // interval
        2950 => 2951, // uuid
        3802 => 3807, // jsonb
        _ => return None,
    })
}

impl fmt::Display for SqlType {
    /// PostgreSQL's `format_type` spelling: the name with its modifier.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.sql_name();
        match self {
            SqlType::Numeric { precision, scale } if *precision > 0 => {
                write!(f, "{name}({precision},{scale})")
            }
            SqlType::Varchar {
                max_length: Some(n),
            } => write!(f, "{name}({n})"),
            SqlType::Char { length } => write!(f, "{name}({length})"),
            SqlType::Array(element) => write!(f, "{element}[]"),
            SqlType::Enum(def) => f.write_str(&def.display_name()),
            _ => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_protos_round_trip() {
        let all = [
            SqlType::Int2,
            SqlType::Int4,
            SqlType::Int8,
            SqlType::Float4,
            SqlType::Float8,
            SqlType::Numeric {
                precision: 12,
                scale: 3,
            },
            SqlType::Numeric {
                precision: 0,
                scale: 0,
            },
            SqlType::Text,
            SqlType::Varchar {
                max_length: Some(20),
            },
            SqlType::Varchar { max_length: None },
            SqlType::Bool,
            SqlType::Date,
            SqlType::Timestamp,
            SqlType::TimestampTz,
            SqlType::Bytea,
            SqlType::Uuid,
            SqlType::Jsonb,
            SqlType::Json,
            SqlType::Interval,
            SqlType::Time,
            SqlType::Oid,
            SqlType::PgChar,
            SqlType::array_of(SqlType::Int4).unwrap(),
            SqlType::array_of(SqlType::Varchar {
                max_length: Some(3),
            })
            .unwrap(),
            SqlType::array_of(SqlType::Numeric {
                precision: 10,
                scale: 2,
            })
            .unwrap(),
        ];
        let mood = SqlType::enum_of(EnumDef {
            oid: 16400,
            schema: "public".into(),
            name: "Mood".into(),
            labels: vec!["sad".into(), "o'k, \"fine\"".into()],
        });
        assert_eq!(SqlType::from_field(&mood.field("c", true)), Some(mood));
        assert_eq!(SqlType::from_proto(&mood.to_proto()), Some(mood));
        assert_eq!((mood.pg_oid(), mood.to_string()), (16400, "Mood".into()));
        assert_eq!(SqlType::array_of(mood), None);
        let ints = SqlType::array_of(SqlType::Int4).unwrap();
        assert_eq!(SqlType::array_of(ints), None);
        assert_eq!(ints.pg_oid(), 1007);
        assert_eq!(ints.to_string(), "integer[]");
        for t in all {
            assert_eq!(SqlType::parse(&t.to_string()), Some(t), "{t}");
            assert_eq!(SqlType::from_proto(&t.to_proto()), Some(t), "{t}");
            assert_eq!(SqlType::from_field(&t.field("c", true)), Some(t));
        }
    }
}
