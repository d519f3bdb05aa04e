//! The tests' own databases (`db_helpers`): with `MISSIVE_TEST_DATABASE_URL`, that each test
//! gets a PostgreSQL database of its own which is gone after it, even when it panics, and that
//! a killed run's leftovers are swept; on either backend, that the SQL forms the suite relies on
//! to be portable (`$n` placeholders, a boolean read as 0 or 1, a cast SUM) read the same.
//! The PostgreSQL ones print a note and pass when the variable is unset.

use crate::db_helpers::{
    admin_url, connect, database_exists, name_made_at, sweep_leftovers, Backend, TestDatabase,
};
use sqlx::{Connection as _, Executor as _};
use std::time::{Duration, SystemTime};

/// The admin URL, or None after a note saying the test needs one.
fn postgres_or_note(test: &str) -> Option<String> {
    let url = admin_url();
    if url.is_none() {
        eprintln!("note: {test} needs MISSIVE_TEST_DATABASE_URL (a PostgreSQL admin URL); skipped");
    }
    url
}

#[tokio::test]
async fn each_test_database_on_postgres_is_its_own_and_is_dropped_with_its_test() {
    let Some(admin) = postgres_or_note("the PostgreSQL test database check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = TestDatabase::create(dir.path()).await;
    let second = TestDatabase::create(dir.path()).await;
    let name = first.postgres_name().unwrap().to_owned();
    let other = second.postgres_name().unwrap().to_owned();
    assert_ne!(name, other);
    assert!(name.starts_with("missive_test_"), "{name}");
    assert_eq!(first.backend(), Backend::Postgres);

    // Arrange: a pool left open on it, as the app's pool is when a test ends.
    let pool = first.connect().await;
    let current: String = sqlx::query_scalar("SELECT CAST(current_database() AS TEXT)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, name);
    assert!(database_exists(&admin, &name).await);

    // Act
    drop(first);

    // Assert
    assert!(!database_exists(&admin, &name).await, "{name} is dropped");
    assert!(database_exists(&admin, &other).await, "{other} is not");
    drop(second);
    assert!(!database_exists(&admin, &other).await, "{other} is dropped");
}

#[tokio::test]
async fn a_test_that_panics_still_drops_its_postgres_database() {
    let Some(admin) = postgres_or_note("the PostgreSQL panic clean-up check") else {
        return;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();

    let test = tokio::spawn(async move {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create(dir.path()).await;
        tx.send(db.postgres_name().unwrap().to_owned()).unwrap();
        panic!("a failing assertion, on purpose");
    });

    assert!(test.await.unwrap_err().is_panic());
    let name = rx.await.unwrap();
    assert!(!database_exists(&admin, &name).await, "{name} is dropped");
}

#[tokio::test]
async fn leftover_test_databases_older_than_an_hour_are_swept_and_younger_ones_kept() {
    let Some(admin) = postgres_or_note("the PostgreSQL leftover sweep check") else {
        return;
    };
    let now = SystemTime::now();
    let old = name_made_at(now - Duration::from_secs(2 * 3600));
    let young = name_made_at(now - Duration::from_secs(600));
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    for name in [&old, &young] {
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap();
    }

    sweep_leftovers(&admin).await;

    assert!(!database_exists(&admin, &old).await, "{old} is swept");
    assert!(database_exists(&admin, &young).await, "{young} is kept");
    conn.execute(format!(r#"DROP DATABASE "{young}" WITH (FORCE)"#).as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn the_suites_portable_sql_reads_the_same_on_either_backend() {
    // Arrange: a table shaped as each backend's schema has it (consent is 0 or 1 in an INTEGER
    // on SQLite, a BOOLEAN on PostgreSQL; integers are BIGINT there).
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create(dir.path()).await;
    let (url, table) = match db.backend() {
        Backend::Sqlite => (
            format!("{}?mode=rwc", db.url()),
            "CREATE TABLE signatures (id INTEGER PRIMARY KEY, email TEXT NOT NULL,
               consent_contact INTEGER NOT NULL DEFAULT 0 CHECK (consent_contact IN (0, 1)),
               attempts INTEGER NOT NULL)",
        ),
        Backend::Postgres => (
            db.url().to_owned(),
            "CREATE TABLE signatures (id BIGINT PRIMARY KEY, email TEXT NOT NULL,
               consent_contact BOOLEAN NOT NULL DEFAULT FALSE, attempts BIGINT NOT NULL)",
        ),
    };
    let pool = connect(&url).await;
    sqlx::query(table).execute(&pool).await.unwrap();
    // TRUE and FALSE are 1 and 0 to SQLite.
    sqlx::query(
        "INSERT INTO signatures (id, email, consent_contact, attempts)
           VALUES ($1, $2, TRUE, $3), ($4, $5, FALSE, $6)",
    )
    .bind(1_i64)
    .bind("ana@example.net")
    .bind(3_i64)
    .bind(2_i64)
    .bind("jose@example.net")
    .bind(4_i64)
    .execute(&pool)
    .await
    .unwrap();

    // Act
    let consent: Vec<(String, i64)> = sqlx::query_as(
        "SELECT email, CASE WHEN consent_contact THEN 1 ELSE 0 END FROM signatures ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let spent: i64 = sqlx::query_scalar("SELECT CAST(SUM(attempts) AS BIGINT) FROM signatures")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Numbered, not positional: $2 comes first in the text and is still the second value.
    let by_number: String =
        sqlx::query_scalar("SELECT email FROM signatures WHERE attempts = $2 AND id = $1")
            .bind(2_i64)
            .bind(4_i64)
            .fetch_one(&pool)
            .await
            .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signatures WHERE attempts > $1")
        .bind(0_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;

    // Assert
    assert_eq!(
        consent,
        vec![
            ("ana@example.net".to_owned(), 1),
            ("jose@example.net".to_owned(), 0)
        ]
    );
    assert_eq!(spent, 7);
    assert_eq!(by_number, "jose@example.net");
    assert_eq!(count, 2);
}
