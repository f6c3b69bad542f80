//! The server's SQL, one file per table. Every query that reads tenant data
//! takes the restaurant id, so a key never sees another restaurant's rows.

pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod payments;
pub(crate) mod print_jobs;
pub(crate) mod printers;
pub(crate) mod refunds;

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

/// Column access shared by both backends' rows, so each row type is decoded
/// by one function.
pub(crate) trait Get {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
impl_get!(PgRow);
impl_get!(SqliteRow);

/// A value stored as JSON text that did not parse: a corrupt row is an
/// error, never a panic.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    col: &str,
    text: &str,
) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: Box::new(e),
    })
}
