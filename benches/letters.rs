//! Micro-benchmarks of the per-letter work, on the example campaign (letters/mexico-deportations):
//! parsing a signer (`Signer::parse`), rendering one letter (`Campaign::render`), building its
//! MIME message (`mailer::build_message`), a CSV row becoming a signature with all its letters
//! (`intake::prepare`), and `intake::import_csv` of a 1,000-row file into a fresh SQLite queue.
//!
//! `cargo bench --bench letters`; `cargo bench --bench letters -- --quick` for a short run.

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use missive::domain::{AddressPolicy, NewSigner, Signer};
use missive::intake::{import_csv, prepare, ImportOptions};
use missive::letters::{Campaign, RenderInput};
use missive::mailer::build_message;
use missive::queue::{Queue, Source};
use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

fn campaign() -> Campaign {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("letters/mexico-deportations");
    Campaign::load(&dir, AddressPolicy::AsciiOnly)
        .unwrap_or_else(|problems| panic!("{}: {problems:?}", dir.display()))
}

fn new_signer() -> NewSigner {
    NewSigner {
        first_name: "José".into(),
        last_name: "Núñez".into(),
        email: "jose.nunez@example.net".into(),
        city: Some("Montréal".into()),
        postal_code: Some("H2X 1Y4".into()),
        country: Some("Canada".into()),
        language: Some("es".into()),
        message: Some(
            "I stand with the people seeking safety.\nPlease stop the deportations.".into(),
        ),
    }
}

const CSV_HEADER: &str = "first_name,last_name,email,city,country,language,message\n";

fn csv_row(i: usize) -> String {
    let lang = ["en", "fr", "es"][i % 3];
    format!(
        "Signer{i},Núñez,signer{i}@example.net,Montréal,Canada,{lang},\"I stand with the people seeking safety.\"\n"
    )
}

fn letters(c: &mut Criterion) {
    let campaign = campaign();
    let today = NaiveDate::from_ymd_opt(2026, 3, 2).expect("a date");
    let input = new_signer();
    let signer = Signer::parse(&input, AddressPolicy::AsciiOnly).expect("a valid signer");
    let target = &campaign.targets[0];
    let letter = campaign
        .render(&RenderInput {
            signer: &signer,
            target,
            today,
        })
        .expect("renders");

    c.bench_function("signer_parse", |b| {
        b.iter(|| Signer::parse(black_box(&input), AddressPolicy::AsciiOnly))
    });
    c.bench_function("campaign_render_one_letter", |b| {
        b.iter(|| {
            campaign.render(black_box(&RenderInput {
                signer: &signer,
                target,
                today,
            }))
        })
    });
    c.bench_function("build_message", |b| {
        b.iter(|| build_message(black_box(&letter), "<0190a1b2c3d4@example.org>"))
    });

    // The path of one CSV row: read the record, parse the signer, render every target's letter.
    // (The importer's own column mapping is private; this mirrors it for the example header.)
    let row = format!("{CSV_HEADER}{}", csv_row(7));
    let mut group = c.benchmark_group("csv_row_to_signature");
    group.throughput(Throughput::Elements(campaign.targets.len() as u64));
    group.bench_function("parse_and_render_all_targets", |b| {
        b.iter(|| {
            let mut reader = csv::Reader::from_reader(black_box(row.as_bytes()));
            let record = reader.records().next().expect("a row").expect("valid CSV");
            let opt = |i: usize| Some(record[i].to_owned()).filter(|s| !s.is_empty());
            let new = NewSigner {
                first_name: record[0].to_owned(),
                last_name: record[1].to_owned(),
                email: record[2].to_owned(),
                city: opt(3),
                postal_code: None,
                country: opt(4),
                language: opt(5),
                message: opt(6),
            };
            let signer = Signer::parse(&new, AddressPolicy::AsciiOnly).expect("a valid signer");
            prepare(&campaign, signer, Source::Csv, today).expect("renders")
        })
    });
    group.finish();
}

/// `import_csv` of ROWS rows, each iteration into a fresh SQLite file (a second import of the
/// same rows would only count duplicates).
fn import(c: &mut Criterion) {
    const ROWS: usize = 1_000;
    let campaign = campaign();
    let dir = tempfile::tempdir().expect("a temp dir");
    let csv_path = dir.path().join("signers.csv");
    let mut f = std::fs::File::create(&csv_path).expect("create the CSV");
    f.write_all(CSV_HEADER.as_bytes()).expect("write");
    for i in 0..ROWS {
        f.write_all(csv_row(i).as_bytes()).expect("write");
    }
    drop(f);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut group = c.benchmark_group("import_csv");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut run = 0;
    group.bench_function("1000_rows_sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                let url = format!(
                    "sqlite://{}",
                    dir.path().join(format!("q{run}.db")).display()
                );
                let queue = rt
                    .block_on(Queue::connect(&url, 4))
                    .expect("the queue opens");
                let start = Instant::now();
                let report = rt
                    .block_on(import_csv(
                        &queue,
                        &campaign,
                        &csv_path,
                        &ImportOptions::default(),
                        |_| {},
                    ))
                    .expect("imports");
                total += start.elapsed();
                assert_eq!(report.imported, ROWS as u64);
                rt.block_on(queue.close());
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.path().join(format!("q{run}.db{suffix}")));
                }
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, letters, import);
criterion_main!(benches);
