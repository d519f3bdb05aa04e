//! `missive import`: signers from a CSV file (UTF-8, header row, BOM and CRLF tolerated, quoted
//! multi-line fields). The file is read twice, streaming: first every row is checked and every
//! bad row reported with its line, and only if all are good (or `skip_invalid`) is it read again
//! and recorded in batches, each written while the next is rendered. Memory stays flat whatever
//! the file's size.

use super::prepare;
use crate::domain::{AddressPolicy, NewSigner, Signer};
use crate::letters::{Campaign, LettersError};
use crate::queue::{Queue, QueueError, Recorded, Source};
use std::path::{Path, PathBuf};

/// Signatures recorded per transaction.
const BATCH: usize = 250;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Import the good rows even if some are bad (the bad ones are still reported).
    pub skip_invalid: bool,
    /// Which addresses are good (`smtp.smtputf8`).
    pub addresses: AddressPolicy,
}

/// A bad row: its line in the file (1 is the header) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowProblem {
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// New signatures recorded.
    pub imported: u64,
    /// Rows whose signer had already signed (in an earlier import or earlier in this file).
    pub duplicates: u64,
    /// Letters queued.
    pub letters: u64,
    /// Bad rows (skipped when `skip_invalid`, else nothing was imported).
    pub invalid: Vec<RowProblem>,
    /// Header columns Missive does not use.
    pub ignored_columns: Vec<String>,
}

/// Errors that stop an import as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Header { path: PathBuf, message: String },
    #[error("{path}: {} invalid row(s); nothing was imported (hint: fix them, or pass --skip-invalid to import the others)", .report.invalid.len())]
    InvalidRows {
        path: PathBuf,
        report: Box<ImportReport>,
    },
    #[error(transparent)]
    Letters(#[from] LettersError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Where each known column is in the file.
#[derive(Debug, Default)]
struct Columns {
    first_name: Option<usize>,
    last_name: Option<usize>,
    name: Option<usize>,
    email: Option<usize>,
    city: Option<usize>,
    postal_code: Option<usize>,
    country: Option<usize>,
    language: Option<usize>,
    message: Option<usize>,
    count: usize,
}

fn columns(
    headers: &csv::StringRecord,
    path: &Path,
) -> Result<(Columns, Vec<String>), ImportError> {
    let mut c = Columns {
        count: headers.len(),
        ..Columns::default()
    };
    let mut ignored = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let key = h
            .trim()
            .trim_start_matches('\u{feff}')
            .to_lowercase()
            .replace([' ', '-'], "_");
        let slot = match key.as_str() {
            "first_name" => &mut c.first_name,
            "last_name" => &mut c.last_name,
            "name" => &mut c.name,
            "email" => &mut c.email,
            "city" => &mut c.city,
            "postal_code" => &mut c.postal_code,
            "country" => &mut c.country,
            "language" => &mut c.language,
            "message" => &mut c.message,
            _ => {
                ignored.push(h.to_owned());
                continue;
            }
        };
        if slot.is_some() {
            return Err(ImportError::Header {
                path: path.to_owned(),
                message: format!("line 1: column `{key}` appears twice"),
            });
        }
        *slot = Some(i);
    }
    let header_err = |message: String| {
        ImportError::Header {
        path: path.to_owned(),
        message: format!("line 1: {message} (the first row must name the columns: first_name,last_name,email,city,postal_code,country,language,message)"),
    }
    };
    if c.email.is_none() {
        return Err(header_err("no `email` column".into()));
    }
    let has_split = c.first_name.is_some() && c.last_name.is_some();
    if !has_split && c.name.is_none() {
        return Err(header_err(
            "needs `first_name` and `last_name` columns, or a single `name` column".into(),
        ));
    }
    if has_split && c.name.is_some() {
        return Err(header_err(
            "has both `name` and `first_name`/`last_name`; keep one or the other".into(),
        ));
    }
    Ok((c, ignored))
}

fn row_to_signer(c: &Columns, record: &csv::StringRecord) -> Result<NewSigner, String> {
    if record.len() != c.count {
        return Err(format!(
            "has {} fields but the header has {}",
            record.len(),
            c.count
        ));
    }
    let get = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::to_owned);
    let (first_name, last_name) = match c.name {
        Some(i) => {
            let full = record.get(i).unwrap_or_default().trim();
            match full.split_once(char::is_whitespace) {
                Some((f, l)) => (f.to_owned(), l.trim().to_owned()),
                None if full.is_empty() => (String::new(), String::new()),
                None => return Err("name: needs a first and a last name".into()),
            }
        }
        None => (
            get(c.first_name).unwrap_or_default(),
            get(c.last_name).unwrap_or_default(),
        ),
    };
    Ok(NewSigner {
        first_name,
        last_name,
        email: get(c.email).unwrap_or_default(),
        city: get(c.city),
        postal_code: get(c.postal_code),
        country: get(c.country),
        language: get(c.language),
        message: get(c.message),
    })
}

fn open(path: &Path) -> Result<csv::Reader<std::io::BufReader<std::fs::File>>, ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 16, file)))
}

/// The rows of a CSV file, one at a time: the line each starts on, and the parsed signer or
/// the reason the row is bad.
struct Rows {
    reader: csv::Reader<std::io::BufReader<std::fs::File>>,
    cols: Columns,
    addresses: AddressPolicy,
    record: csv::StringRecord,
    done: bool,
}

impl Rows {
    fn open(path: &Path, addresses: AddressPolicy) -> Result<(Rows, Vec<String>), ImportError> {
        let mut reader = open(path)?;
        let headers = reader.headers().map_err(|e| ImportError::Header {
            path: path.to_owned(),
            message: format!("line 1: {}", csv_reason(&e)),
        })?;
        let (cols, ignored) = columns(headers, path)?;
        Ok((
            Rows {
                reader,
                cols,
                addresses,
                record: csv::StringRecord::new(),
                done: false,
            },
            ignored,
        ))
    }
}

impl Iterator for Rows {
    type Item = (u64, Result<Signer, String>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let line = self.reader.position().line() + 1;
            match self.reader.read_record(&mut self.record) {
                Ok(false) => self.done = true,
                Ok(true) => {
                    let line = self.record.position().map(|p| p.line()).unwrap_or(line);
                    if self.record.iter().all(|f| f.trim().is_empty()) {
                        continue; // a blank line, e.g. at the end of the file
                    }
                    let parsed = row_to_signer(&self.cols, &self.record).and_then(|input| {
                        Signer::parse(&input, self.addresses).map_err(|e| e.to_string())
                    });
                    return Some((line, parsed));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(line);
                    // The reader resynchronises after bad UTF-8, not after other errors.
                    self.done = !matches!(e.kind(), csv::ErrorKind::Utf8 { .. });
                    return Some((line, Err(csv_reason(&e))));
                }
            }
        }
        None
    }
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8 (hint: save the file as UTF-8)".into(),
        csv::ErrorKind::Io(io) => format!("cannot be read: {io}"),
        _ => format!("is not valid CSV: {e}"),
    }
}

/// Imports `path` into `campaign`. See the module doc for the guarantees.
#[tracing::instrument(skip_all, fields(campaign = %campaign.slug, path = %path.display()), err(level = "debug"))]
pub async fn import_csv(
    queue: &Queue,
    campaign: &Campaign,
    path: &Path,
    opts: &ImportOptions,
    mut progress: impl FnMut(&ImportReport),
) -> Result<ImportReport, ImportError> {
    // Pass 1: check every row, keep only the problems.
    let mut report = ImportReport::default();
    let (rows, ignored) = Rows::open(path, opts.addresses)?;
    report.ignored_columns = ignored;
    for (line, parsed) in rows {
        report.rows += 1;
        if let Err(reason) = parsed {
            report.invalid.push(RowProblem { line, reason });
        }
    }
    if !report.invalid.is_empty() && !opts.skip_invalid {
        return Err(ImportError::InvalidRows {
            path: path.to_owned(),
            report: Box::new(report),
        });
    }
    // Pass 2: render and record the good rows in batches, streaming. A batch is written while
    // the next one is rendered (two cores busy, not one), and at most one write is in flight.
    let today = chrono::Local::now().date_naive();
    let (rows, _) = Rows::open(path, opts.addresses)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut writing: Option<tokio::task::JoinHandle<Result<Vec<Recorded>, QueueError>>> = None;
    let mut rows = rows.peekable();
    while let Some((_, parsed)) = rows.next() {
        if let Ok(signer) = parsed {
            match prepare(campaign, signer, Source::Csv, today) {
                Ok(sig) => batch.push(sig),
                Err(e) => {
                    // What was rendered before the bad row is recorded, as it always was.
                    finish_write(writing.take(), &mut report, &mut progress).await?;
                    return Err(e.into());
                }
            }
        }
        if batch.len() == BATCH || (rows.peek().is_none() && !batch.is_empty()) {
            finish_write(writing.take(), &mut report, &mut progress).await?;
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let queue = queue.clone();
            writing = Some(tokio::spawn(async move {
                queue.record_signatures(&full, queue.now()).await
            }));
        }
    }
    finish_write(writing, &mut report, &mut progress).await?;
    Ok(report)
}

/// Waits for a batch's write (if any) and counts what it recorded.
async fn finish_write(
    writing: Option<tokio::task::JoinHandle<Result<Vec<Recorded>, QueueError>>>,
    report: &mut ImportReport,
    progress: &mut impl FnMut(&ImportReport),
) -> Result<(), ImportError> {
    let Some(handle) = writing else {
        return Ok(());
    };
    let recorded = match handle.await {
        Ok(recorded) => recorded?,
        // The write panicked: let the panic go on, as it would have without the task.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    for r in recorded {
        match r {
            Recorded::Created { letters, .. } => {
                report.imported += 1;
                report.letters += letters as u64;
            }
            Recorded::Duplicate { .. } => report.duplicates += 1,
        }
    }
    progress(report);
    Ok(())
}
