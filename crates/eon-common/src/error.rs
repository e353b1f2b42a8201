//! Errors, named by what the caller does next.
//!
//! Every error carries a PostgreSQL SQLSTATE, because that is what a user
//! finally sees (on the wire, or in a REST body), and a [`ErrorKind`] that
//! tells code in between what to do:
//!
//! | kind          | caller does                        | SQLSTATE examples  | HTTP |
//! |---------------|------------------------------------|--------------------|------|
//! | `User`        | report it; the input was wrong     | 42601, 42P01, 22P02| 400  |
//! | `Conflict`    | retry the statement, or report it  | 40001, 23505       | 409  |
//! | `Unavailable` | retry later; a component is down   | 57P03              | 503  |
//! | `Internal`    | report a bug                       | XX000              | 500  |
//!
//! Errors cross process boundaries as gRPC statuses; [`Error::to_status`] and
//! [`Error::from_status`] keep the SQLSTATE intact on the way.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input was wrong; retrying the same thing fails the same way.
    User,
    /// The statement lost a race (or hit a uniqueness rule); a write conflict
    /// (40001) may succeed when retried.
    Conflict,
    /// A component needed for the request is down or unreachable.
    Unavailable,
    /// A bug or a local failure (I/O) in eon.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// Five-character PostgreSQL SQLSTATE.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    /// Where in the statement's text the error is (1-based, in
    /// characters): PostgreSQL's error cursor, which psql shows as `LINE n:`
    /// with a caret.
    pub position: Option<u32>,
    /// A suggestion for fixing the problem (PostgreSQL's HINT).
    pub hint: Option<String>,
    /// Where the error is, said in a way that needs the statement's text
    /// to become a [`Error::position`] — for code that sees a parsed
    /// statement, not the text. The front door resolves it.
    pub cursor: Option<Cursor>,
}

/// An error's place in a statement's text, before the text is at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Line and column, both from 1, as sqlparser's spans give them.
    LineColumn(u64, u64),
    /// The last of these pieces of text, each looked for (ignoring ASCII
    /// case; one that begins with a letter, at the start of a word) after
    /// the one before; a piece not
    /// found is passed over. `["max(", "min("]` is the `min(` inside the
    /// first `max(`.
    After(Vec<String>),
}

impl Cursor {
    /// The position (1-based, in characters) in `sql` this cursor names.
    pub fn resolve(&self, sql: &str) -> Option<u32> {
        let byte = match self {
            Cursor::LineColumn(line, column) => {
                let (line, column) = (*line as usize, *column as usize);
                if line == 0 || column == 0 || line > sql.split('\n').count() {
                    return None;
                }
                // Columns count characters, and may stand past the end of
                // their line (sqlparser places "end of input" there).
                let before: usize = sql
                    .split('\n')
                    .take(line - 1)
                    .map(|l| l.chars().count() + 1)
                    .sum();
                return u32::try_from(before + column).ok();
            }
            Cursor::After(pieces) => {
                let lower = sql.to_ascii_lowercase();
                let mut from = 0;
                let mut found = None;
                for piece in pieces {
                    if let Some(at) = word_at(&lower, &piece.to_ascii_lowercase(), from) {
                        found = Some(at);
                        from = at + piece.len();
                    }
                }
                found?
            }
        };
        u32::try_from(sql[..byte].chars().count() + 1).ok()
    }
}

/// Where `piece` first starts a word in `text` at or after byte `from`.
fn word_at(text: &str, piece: &str, from: usize) -> Option<usize> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let starts_word = piece.starts_with(word);
    let mut start = from;
    while let Some(i) = text.get(start..)?.find(piece) {
        let at = start + i;
        if !starts_word || !text[..at].chars().next_back().is_some_and(word) {
            return Some(at);
        }
        start = at + piece.len().max(1);
    }
    None
}

/// How a write conflict with another open transaction's write begins; the
/// holder's transaction id follows (a block retrying its statement reads it
/// back: see the query engine's `Session::undo_for_retry`).
pub const WRITTEN_BY_TRANSACTION: &str = "row is being written by transaction ";

/// SQLSTATEs eon raises, by name (PostgreSQL Appendix A).
pub mod sqlstate {
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const INVALID_OBJECT_DEFINITION: &str = "42P17";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_TABLE_DEFINITION: &str = "42P16";
    pub const DUPLICATE_SCHEMA: &str = "42P06";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const GROUPING_ERROR: &str = "42803";
    pub const WINDOWING_ERROR: &str = "42P20";
    pub const INVALID_PRECEDING_OR_FOLLOWING_SIZE: &str = "22013";
    pub const INVALID_RECURSION: &str = "42P19";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const INVALID_FOREIGN_KEY: &str = "42830";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const CARDINALITY_VIOLATION: &str = "21000";
    pub const INVALID_PARAMETER_COUNT: &str = "08P01";
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    pub const INDETERMINATE_DATATYPE: &str = "42P18";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const QUERY_CANCELED: &str = "57014";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
    pub const INVALID_NAME: &str = "42602";
    pub const RESERVED_NAME: &str = "42939";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
    pub const INVALID_GRANT_OPERATION: &str = "0LP01";
}

impl Error {
    pub fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: code.to_string(),
            message: message.into(),
            detail: None,
            position: None,
            hint: None,
            cursor: None,
        }
    }

    /// A user error with the given SQLSTATE.
    pub fn user(code: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::User, code, message)
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Self::user(sqlstate::SYNTAX_ERROR, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::user(sqlstate::FEATURE_NOT_SUPPORTED, message)
    }

    /// A write-write conflict; the statement may be retried at a new snapshot.
    pub fn write_conflict(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Conflict,
            sqlstate::SERIALIZATION_FAILURE,
            message,
        )
    }

    pub fn unique_violation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, sqlstate::UNIQUE_VIOLATION, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unavailable,
            sqlstate::CANNOT_CONNECT_NOW,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, sqlstate::INTERNAL_ERROR, message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A hint (see [`Error::hint`]).
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error cursor (see [`Error::position`]).
    pub fn with_position(mut self, position: u32) -> Self {
        self.position = Some(position);
        self
    }

    /// The error cursor, to be found in the statement's text (see
    /// [`Error::cursor`]).
    pub fn with_cursor(mut self, cursor: Cursor) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// True for a write conflict that a fresh attempt may not meet.
    pub fn is_retryable_conflict(&self) -> bool {
        self.code == sqlstate::SERIALIZATION_FAILURE
    }

    /// The kind a SQLSTATE implies when only the code is known.
    pub fn kind_of(code: &str) -> ErrorKind {
        match &code[..2.min(code.len())] {
            "40" | "23" => ErrorKind::Conflict,
            "57" | "08" | "53" | "58" => ErrorKind::Unavailable,
            "XX" => ErrorKind::Internal,
            _ => ErrorKind::User,
        }
    }

    /// The HTTP status REST answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            // Not authenticated (a missing or wrong password).
            ErrorKind::User
                if self.code == sqlstate::INVALID_PASSWORD
                    || self.code == sqlstate::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                401
            }
            // Authenticated, but not allowed.
            ErrorKind::User if self.code == sqlstate::INSUFFICIENT_PRIVILEGE => 403,
            ErrorKind::User => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// Encode for a gRPC reply. The SQLSTATE and detail travel as metadata so
    /// that the receiving side rebuilds exactly this error.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.kind {
            ErrorKind::User => tonic::Code::InvalidArgument,
            ErrorKind::Conflict if self.code == sqlstate::UNIQUE_VIOLATION => {
                tonic::Code::AlreadyExists
            }
            ErrorKind::Conflict => tonic::Code::Aborted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, self.message.clone());
        if let Ok(v) = self.code.parse() {
            status.metadata_mut().insert(SQLSTATE_HEADER, v);
        }
        if let Some(detail) = &self.detail {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(escape_header(detail)) {
                status.metadata_mut().insert(DETAIL_HEADER, v);
            }
        }
        status
    }

    /// Decode a gRPC reply. A status without eon's metadata comes from the
    /// transport (peer down, connection refused), so it becomes `Unavailable`.
    pub fn from_status(status: tonic::Status) -> Self {
        let sqlstate = status
            .metadata()
            .get(SQLSTATE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let detail = status
            .metadata()
            .get(DETAIL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(unescape_header);
        match sqlstate {
            Some(code) => Error {
                kind: Self::kind_of(&code),
                code,
                message: status.message().to_string(),
                detail,
                position: None,
                hint: None,
                cursor: None,
            },
            None => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => {
                    Error::unavailable(format!("component unavailable: {}", status.message()))
                }
                tonic::Code::InvalidArgument => {
                    Error::user(sqlstate::DATA_EXCEPTION, status.message())
                }
                _ => Error::internal(format!("{:?}: {}", status.code(), status.message())),
            },
        }
    }
}

const SQLSTATE_HEADER: &str = "eon-sqlstate";
const DETAIL_HEADER: &str = "eon-detail";

/// gRPC metadata values must be visible ASCII; percent-escape everything else.
fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape_header(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(status)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::internal(format!("arrow: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(format!("I/O: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_sqlstate_and_detail() {
        let e =
            Error::unique_violation("duplicate key value violates unique constraint \"t_pkey\"")
                .with_detail("Key (id)=(1) already exists — ünïcode");
        let back = Error::from_status(e.to_status());
        assert_eq!(back, e);
        assert_eq!(back.http_status(), 409);
    }

    #[test]
    fn cursors_resolve_in_the_statement_text() {
        let sql = "select max(min(x)) from t\n  where émin(y) and MIN(z)";
        let at = |c: Cursor| c.resolve(sql);
        assert_eq!(at(Cursor::LineColumn(1, 12)), Some(12));
        assert_eq!(at(Cursor::LineColumn(2, 3)), Some(29));
        assert_eq!(at(Cursor::LineColumn(2, 27)), Some(53));
        // Past the end of the line: where sqlparser puts the end of input.
        assert_eq!(at(Cursor::LineColumn(2, 28)), Some(54));
        assert_eq!(at(Cursor::LineColumn(3, 1)), None);
        let after = |p: &[&str]| Cursor::After(p.iter().map(|s| s.to_string()).collect());
        assert_eq!(at(after(&["max(", "min("])), Some(12));
        // A piece inside a word is not a match; case does not matter.
        assert_eq!(at(after(&["where", "min("])), Some(47));
        assert_eq!(at(after(&["nosuch(", "min("])), Some(12));
        assert_eq!(at(after(&["nosuch("])), None);
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let e = Error::from_status(tonic::Status::unavailable("connection refused"));
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(e.http_status(), 503);
    }
}
