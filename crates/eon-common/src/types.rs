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
//!
//! ¹ At most 38 digits are stored whatever the declared precision (up to
//! PostgreSQL's 1000); NaN and ±Infinity are integers beyond 38 digits
//! (`value::special`).

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::{DataType, Field, TimeUnit};
use eon_proto::v1 as pb;

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
}

/// The time zone string of timestamptz arrays: values are UTC instants.
pub const UTC: &str = "+00:00";

impl SqlType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Int2 => DataType::Int16,
            SqlType::Int4 => DataType::Int32,
            SqlType::Int8 => DataType::Int64,
            SqlType::Float4 => DataType::Float32,
            SqlType::Float8 => DataType::Float64,
            SqlType::Numeric { precision: 0, .. } => {
                DataType::Decimal128(NUMERIC_DEFAULT_PRECISION, NUMERIC_DEFAULT_SCALE)
            }
            // Declared precisions above 38 (PostgreSQL allows 1000) are
            // stored at 38 digits: see NUMERIC_MAX_DIGITS.
            SqlType::Numeric { precision, scale } => {
                DataType::Decimal128((*precision).min(NUMERIC_MAX_DIGITS as u16) as u8, *scale)
            }
            SqlType::Text
            | SqlType::Varchar { .. }
            | SqlType::Char { .. }
            | SqlType::Uuid
            | SqlType::Jsonb => DataType::Utf8,
            SqlType::Bool => DataType::Boolean,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            SqlType::Bytea => DataType::Binary,
        }
    }

    /// The Arrow field for a column of this type.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let mut metadata = HashMap::new();
        metadata.insert(SQL_TYPE_KEY.to_string(), self.to_string());
        Field::new(name, self.arrow_type(), nullable).with_metadata(metadata)
    }

    /// The SQL type recorded in a field's metadata, if any.
    pub fn from_field(field: &Field) -> Option<SqlType> {
        field
            .metadata()
            .get(SQL_TYPE_KEY)
            .and_then(|s| SqlType::parse(s))
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
        }
    }

    /// Parse the names [`fmt::Display`] writes (and common aliases).
    pub fn parse(s: &str) -> Option<SqlType> {
        let s = s.trim().to_ascii_lowercase();
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
            _ => return None,
        })
    }

    pub fn to_proto(&self) -> pb::ColumnType {
        use pb::TypeKind as K;
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
        };
        pb::ColumnType {
            kind: kind as i32,
            precision,
            scale,
            max_length,
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
        }
    }
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
        ];
        for t in all {
            assert_eq!(SqlType::parse(&t.to_string()), Some(t), "{t}");
            assert_eq!(SqlType::from_proto(&t.to_proto()), Some(t), "{t}");
            assert_eq!(SqlType::from_field(&t.field("c", true)), Some(t));
        }
    }
}
