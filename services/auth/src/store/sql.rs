//! SQL text with its values, for the batch statements of code checks
//! (`lockout`, `accept`): one `WITH v (...) AS (VALUES ...)` row per
//! request, joined to the table it updates. Both SQLite and PostgreSQL
//! take a `WITH` before an `UPDATE ... FROM v`.

use padlock_runtime::db;
use sea_orm::{DbBackend, QueryResult, Statement};

/// SQL text with its values, numbered the way `backend` numbers them.
pub(super) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<sea_orm::Value>,
}

impl Sql {
    pub(super) fn new(backend: DbBackend) -> Self {
        Sql {
            backend,
            text: String::with_capacity(1024),
            values: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub(super) fn bind(&mut self, value: impl Into<sea_orm::Value>) {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            _ => self.text.push('?'),
        }
    }

    /// `value` bound as a BIGINT (a bound value in `VALUES` has no type of
    /// its own); NULL for `None`.
    pub(super) fn bind_bigint(&mut self, value: Option<i64>) {
        self.push("CAST(");
        self.bind(value);
        self.push(" AS BIGINT)");
    }

    /// `value` bound as TEXT; NULL for `None`.
    pub(super) fn bind_text(&mut self, value: Option<&str>) {
        self.push("CAST(");
        self.bind(value.map(str::to_owned));
        self.push(" AS TEXT)");
    }

    /// `WITH v (columns) AS (VALUES ...)`: one parenthesised row per item,
    /// written by `row`, the last repeated up to one of a few statement
    /// shapes (`db::padded_shape`), so that each statement is prepared
    /// once per shape. A repeated row joins the same target row again
    /// with the same values; SQLite and PostgreSQL update a row once, from
    /// one of the rows it joins, so the repeat changes nothing, and
    /// RETURNING names the row once.
    pub(super) fn values<T>(&mut self, columns: &str, items: &[T], row: impl Fn(&mut Sql, &T)) {
        self.push("WITH v (");
        self.push(columns);
        self.push(") AS (VALUES ");
        let extra = db::padded_shape(items.len()) - items.len();
        let padded = items
            .iter()
            .chain(items.last().into_iter().cycle().take(extra));
        for (n, item) in padded.enumerate() {
            self.push(if n == 0 { "(" } else { ", (" });
            row(self, item);
            self.push(")");
        }
        self.push(")");
    }

    pub(super) fn into_statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// The text column `name` of every row.
pub(super) fn texts(rows: &[QueryResult], name: &str) -> Result<Vec<String>, sea_orm::DbErr> {
    rows.iter().map(|r| r.try_get::<String>("", name)).collect()
}
