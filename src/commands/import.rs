//! `missive import`: signers from a CSV file. Every invalid row is listed with its line; unless
//! `--skip-invalid`, nothing is imported when any row is invalid (exit 1).

use super::{progress_bar, Outcome};
use crate::cli::ImportArgs;
use crate::config::Settings;
use crate::intake::{import_csv, ImportError, ImportOptions, ImportReport};
use crate::startup::App;

fn print_problems(report: &ImportReport, file: &std::path::Path) {
    for p in &report.invalid {
        println!("{}:{}: {}", file.display(), p.line, p.reason);
    }
}

pub(super) async fn run(args: ImportArgs, settings: Settings) -> anyhow::Result<Outcome> {
    let app = App::build(settings).await?;
    let campaign = app.registry.get(&args.campaign)?;
    let bar = progress_bar(None, "importing");
    let result = import_csv(
        &app.queue,
        &campaign,
        &args.file,
        &ImportOptions {
            skip_invalid: args.skip_invalid,
            addresses: app.settings.smtp.address_policy(),
        },
        |r| bar.set_position(r.imported + r.duplicates),
    )
    .await;
    bar.finish_and_clear();
    app.queue.close().await;
    let report = match result {
        Ok(report) => report,
        Err(ImportError::InvalidRows { path, report }) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&*report)?);
            } else {
                print_problems(&report, &path);
            }
            eprintln!(
                "error: {} of {} row(s) are invalid; nothing was imported",
                report.invalid.len(),
                report.rows
            );
            eprintln!("hint: fix those rows, or pass --skip-invalid to import the others");
            return Ok(Outcome::Problems);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_problems(&report, &args.file);
    }
    if !report.ignored_columns.is_empty() {
        eprintln!(
            "note: ignored column(s): {}",
            report.ignored_columns.join(", ")
        );
    }
    eprintln!(
        "imported {} signer(s) into {}: {} letter(s) queued, {} duplicate(s), {} invalid row(s) skipped",
        report.imported,
        campaign.slug,
        report.letters,
        report.duplicates,
        report.invalid.len()
    );
    Ok(if report.invalid.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Problems
    })
}
