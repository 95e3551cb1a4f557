//! Creates a table in an in-memory SQLite database, fills it and prints a summary, using the
//! system's libsqlite3.

use rusqlite::Connection;

fn main() -> rusqlite::Result<()> {
    let db = Connection::open_in_memory()?;
    db.execute_batch(
        "CREATE TABLE crates (name TEXT NOT NULL, downloads INTEGER NOT NULL);
         INSERT INTO crates VALUES ('serde', 500), ('tokio', 300), ('axum', 100);",
    )?;
    let (rows, total): (i64, i64) = db.query_row(
        "SELECT COUNT(*), SUM(downloads) FROM crates",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    println!("sqlite {}: {rows} rows, {total} downloads", rusqlite::version());
    Ok(())
}
