//! One conformance suite, run unchanged against every journal backend.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use counterfoil_fiscal::{
    Document, Error, Evidence, InMemoryJournal, Job, JobState, Journal, Money, NotPrinted, Outcome,
    ReportKind, Snapshot,
};

fn snap(doc: u64) -> Snapshot {
    Snapshot {
        last_doc_no: doc,
        z_no: 2,
        open: None,
        last_receipt: None,
    }
}

fn printed(doc: u64, amount: i64) -> Outcome {
    Outcome::Printed(Document {
        doc_no: doc,
        amount: Money(amount),
        at: None,
        z_no: None,
        recovered: false,
        fm_serial: None,
        serial: None,
    })
}

async fn conformance(j: &dyn Journal) {
    let r1 = Job::Receipt(common::receipt("AB000001-0001-0000001", 2));
    let r2 = Job::Receipt(common::receipt("AB000001-0001-0000002", 1));
    assert!(j.get("a").await.unwrap().is_none());

    // Intent before the first frame.
    j.record_intent("p1", "a", &r1, 1, &snap(10), 1000)
        .await
        .unwrap();
    let rec = j.get("a").await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Pending);
    assert_eq!(rec.attempt, 1);
    assert_eq!(rec.baseline, Some(snap(10)));
    assert_eq!(rec.job, r1);
    assert_eq!((rec.created_at, rec.updated_at), (1000, 1000));
    assert_eq!(j.in_state("p1", JobState::Pending).await.unwrap().len(), 1);
    assert!(
        j.in_state("p2", JobState::Pending)
            .await
            .unwrap()
            .is_empty()
    );

    // The same id for another job or printer is a conflict.
    let e = j
        .record_intent("p1", "a", &r2, 1, &snap(10), 1001)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    let e = j
        .record_intent("p2", "a", &r1, 1, &snap(10), 1001)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");

    // Not printed, then a second attempt with a new baseline, then printed.
    let np = Outcome::NotPrinted(NotPrinted {
        code: Some("E101".into()),
        reason: "offline".into(),
    });
    j.record_outcome("a", &np, 1100).await.unwrap();
    assert_eq!(
        j.get("a").await.unwrap().unwrap().state,
        JobState::NotPrinted
    );
    j.record_intent("p1", "a", &r1, 2, &snap(11), 1200)
        .await
        .unwrap();
    let rec = j.get("a").await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.outcome.clone()),
        (JobState::Pending, 2, None)
    );
    assert_eq!(rec.baseline, Some(snap(11)));
    assert_eq!(rec.created_at, 1000);
    j.record_outcome("a", &printed(12, 990), 1300)
        .await
        .unwrap();
    let rec = j.get("a").await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Printed);
    assert_eq!(rec.outcome, Some(printed(12, 990)));
    assert_eq!(rec.updated_at, 1300);

    // Unknown, and other kinds, and totals over printed receipts only.
    j.record_intent("p1", "b", &r2, 1, &snap(12), 1400)
        .await
        .unwrap();
    let unknown = Outcome::Unknown(Evidence {
        baseline: Some(snap(12)),
        observed: Some(snap(14)),
        note: "two documents".into(),
    });
    j.record_outcome("b", &unknown, 1500).await.unwrap();
    assert_eq!(
        j.in_state("p1", JobState::Unknown).await.unwrap()[0].job_id,
        "b"
    );
    j.record_intent("p1", "z", &Job::Report(ReportKind::Z), 1, &snap(14), 1600)
        .await
        .unwrap();
    j.record_outcome("z", &printed(15, 0), 1700).await.unwrap();
    j.record_intent("p2", "c", &r2, 1, &snap(1), 1800)
        .await
        .unwrap();
    j.record_outcome("c", &printed(2, 555), 1900).await.unwrap();
    let t = j.totals("p1").await.unwrap();
    assert_eq!((t.receipts, t.receipts_amount, t.reversals), (1, 990, 0));
    assert_eq!(j.totals("p2").await.unwrap().receipts_amount, 555);
    assert!(
        j.in_state("p1", JobState::Pending)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn in_memory() {
    conformance(&InMemoryJournal::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_file_and_concurrent_migrations() {
    use counterfoil_fiscal::SqliteJournal;
    let dir = common::temp_dir("journal");
    let url = format!("sqlite://{}", dir.join("j.db").display());
    // Many processes (here: tasks) migrating at once is safe.
    let (a, b, c) = tokio::join!(
        SqliteJournal::connect(&url),
        SqliteJournal::connect(&url),
        SqliteJournal::connect(&url)
    );
    let j = a.unwrap();
    b.unwrap();
    c.unwrap();
    j.migrate().await.unwrap();
    conformance(&j).await;
    std::fs::remove_dir_all(dir).ok();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_memory() {
    let j = counterfoil_fiscal::SqliteJournal::connect("sqlite::memory:")
        .await
        .unwrap();
    conformance(&j).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;
    let Some(url) = common::pg_url() else { return };
    let schema = format!(
        "fiscal_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let opts = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap();
    let j = counterfoil_fiscal::PgJournal::new(pool);
    let (a, b) = tokio::join!(j.migrate(), j.migrate());
    a.unwrap();
    b.unwrap();
    conformance(&j).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
