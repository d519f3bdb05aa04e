//! The database a test app runs on, and the tests' own handle on it. Without
//! `MISSIVE_TEST_DATABASE_URL` that is an SQLite file in the test's folder; with it (an admin
//! connection to a PostgreSQL server, e.g. `postgres://root@127.0.0.1:5432/postgres`) it is a
//! database of the test's own on that server, created for it and dropped with it, even when the
//! test panics. Databases a killed run left behind are dropped by the next run once they are an
//! hour old (the name's UUIDv7 says when it was made). Tests read and write through
//! `sqlx::AnyPool`, so every SQL text in them must run unchanged on both backends.
//!
//! Depends on sqlx (Any for the tests' queries, PgConnection for creating and dropping
//! databases), uuid and url; nothing from the application.

use sqlx::AnyPool;
use sqlx::{Connection as _, Executor as _, PgConnection};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Names the PostgreSQL server (an admin connection able to create databases) the suite runs on.
pub(crate) const ADMIN_URL_VAR: &str = "MISSIVE_TEST_DATABASE_URL";

/// Every database the suite creates is named with this, then a UUIDv7 in simple form.
const PREFIX: &str = "missive_test_";

/// Databases older than this are a killed run's leftovers, dropped at the start of a run.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// The backend the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL from `MISSIVE_TEST_DATABASE_URL`, when the suite runs on PostgreSQL.
pub(crate) fn admin_url() -> Option<String> {
    let url = std::env::var(ADMIN_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())?;
    // Not echoed: it may hold a password.
    assert!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "{ADMIN_URL_VAR} must be a postgres:// URL (an admin connection)"
    );
    Some(url)
}

/// One test's database, dropped with it when it is a PostgreSQL one.
#[derive(Debug)]
pub(crate) struct TestDatabase {
    url: String,
    postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    /// A fresh database for a test whose folder is `dir`: `dir/missive.db` (created by the app
    /// on first connect), or a new PostgreSQL database when `MISSIVE_TEST_DATABASE_URL` is set.
    pub(crate) async fn create(dir: &Path) -> TestDatabase {
        match admin_url() {
            None => TestDatabase {
                url: format!("sqlite://{}", dir.join("missive.db").display()),
                postgres: None,
            },
            Some(admin) => {
                let db = PostgresDatabase::create(&admin).await;
                TestDatabase {
                    url: db.url(),
                    postgres: Some(db),
                }
            }
        }
    }

    /// The URL the app is given as `MISSIVE_DATABASE__URL`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.postgres {
            Some(_) => Backend::Postgres,
            None => Backend::Sqlite,
        }
    }

    /// The PostgreSQL database's name (None on SQLite).
    pub(crate) fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|p| p.name.as_str())
    }

    /// A new pool on this database, for the tests' own queries.
    pub(crate) async fn connect(&self) -> AnyPool {
        connect(&self.url).await
    }
}

/// A pool on `url` (sqlite:// or postgres://) through sqlx's Any driver.
pub(crate) async fn connect(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test database: {e}"))
}

/// A PostgreSQL database made for one test.
#[derive(Debug)]
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    async fn create(admin_url: &str) -> PostgresDatabase {
        sweep_leftovers_once(admin_url).await;
        let name = format!("{PREFIX}{}", uuid::Uuid::now_v7().simple());
        let mut admin = admin_connection(admin_url).await;
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
        admin.close().await.ok();
        PostgresDatabase {
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// The admin URL with this database in place of the admin's.
    fn url(&self) -> String {
        let mut url = url::Url::parse(&self.admin_url).expect("MISSIVE_TEST_DATABASE_URL parses");
        url.set_path(&format!("/{}", self.name));
        url.into()
    }
}

impl Drop for PostgresDatabase {
    /// Drop cannot await, and may run inside a test's runtime, which cannot block on another
    /// future: the database is dropped from a thread of its own with a runtime of its own.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || drop_database_blocking(&admin_url, &name))
            .join()
            .unwrap_or_else(|_| Err("the thread dropping it panicked".into()));
        if let Err(e) = dropped {
            // Panicking while the test already unwinds would abort the whole run.
            if std::thread::panicking() {
                eprintln!(
                    "warning: the test database {} was not dropped: {e}",
                    self.name
                );
            } else {
                panic!("the test database {} was not dropped: {e}", self.name);
            }
        }
    }
}

/// Drops `name` from a runtime of its own (for `Drop`, which cannot await).
fn drop_database_blocking(admin_url: &str, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let drop = async {
            let mut admin = PgConnection::connect(admin_url).await?;
            drop_database(&mut admin, name).await?;
            admin.close().await
        };
        match tokio::time::timeout(Duration::from_secs(30), drop).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("timed out after 30 s".to_owned()),
        }
    })
}

/// Drops `name`, ending the connections to it (the app's pool may still hold some).
async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    admin
        .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await
        .map(drop)
}

/// Whether a database named `name` exists on the server.
pub(crate) async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut admin = admin_connection(admin_url).await;
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    found.is_some()
}

/// The name of a database the suite made at `made` (for the sweep's own test).
pub(crate) fn name_made_at(made: SystemTime) -> String {
    let since = made.duration_since(UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    format!("{PREFIX}{}", uuid::Uuid::new_v7(ts).simple())
}

/// When the suite made the database `name`, if it is one of the suite's.
fn made_at(name: &str) -> Option<SystemTime> {
    let id = uuid::Uuid::try_parse(name.strip_prefix(PREFIX)?).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Drops the suite's databases older than an hour: what runs that were killed left behind.
/// Younger ones may belong to a run still going, and are left alone.
pub(crate) async fn sweep_leftovers(admin_url: &str) {
    let mut admin = admin_connection(admin_url).await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(datname AS TEXT) FROM pg_database WHERE starts_with(datname, $1)",
    )
    .bind(PREFIX)
    .fetch_all(&mut admin)
    .await
    .unwrap_or_else(|e| panic!("list the test databases: {e}"));
    let cutoff = SystemTime::now() - LEFTOVER_AGE;
    for name in names {
        if made_at(&name).is_some_and(|made| made < cutoff) {
            if let Err(e) = drop_database(&mut admin, &name).await {
                eprintln!("warning: a leftover test database {name} was not dropped: {e}");
            }
        }
    }
    admin.close().await.ok();
}

/// The sweep, once per run of the suite, before its first database is made.
async fn sweep_leftovers_once(admin_url: &str) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT.get_or_init(|| sweep_leftovers(admin_url)).await;
}

async fn admin_connection(admin_url: &str) -> PgConnection {
    PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {ADMIN_URL_VAR}: {e}"))
}
