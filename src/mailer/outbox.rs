//! The outbox transport: each letter becomes one `.eml` file in a folder, written atomically
//! (temporary file, then rename), so an organiser can read exactly what would have been sent
//! and nothing leaves the machine.

use super::{Delivery, Stage, Verdict};
use std::path::{Path, PathBuf};

/// A folder that receives letters as files.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// An outbox writing into `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Outbox {
        Outbox { dir }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `message` as `<file_stem>.eml`.
    pub async fn write(&self, file_stem: &str, message: &[u8]) -> Delivery {
        let path = self.dir.join(format!("{file_stem}.eml"));
        let tmp = self.dir.join(format!(".{file_stem}.eml.tmp"));
        let result = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&tmp, message).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        match result {
            Ok(()) => Delivery {
                verdict: Verdict::Accepted,
                stage: Stage::Outbox,
                code: None,
                enhanced_code: None,
                reply: format!("written to {}", path.display()),
                throttled: false,
            },
            Err(e) => Delivery {
                verdict: Verdict::Transient,
                stage: Stage::Outbox,
                code: None,
                enhanced_code: None,
                reply: format!("cannot write {}: {e}", path.display()),
                throttled: false,
            },
        }
    }
}
