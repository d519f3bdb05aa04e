//! Campaigns as files: loading `letters/<slug>/campaign.toml` and its templates, checking them
//! strictly, and rendering one signer's letter to one target.
//!
//! Depends only on `domain`. Everything that can be wrong with a campaign is found when it is
//! loaded (`Registry::load`), reported with the file and line, so a typo stops the deploy instead
//! of sending "Dear ," to a minister.

mod campaign;
mod render;

pub use campaign::{Campaign, CampaignText, LetterLanguage, Organisation, Target};
pub use render::{format_date, ConfirmationDraft, RenderInput};

use crate::domain::{AddressPolicy, CampaignSlug};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem found in a campaign's files, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file at fault.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, and where possible what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LettersError {
    #[error("cannot read the campaigns folder {dir}: {source}")]
    Folder {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in campaign files:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
    #[error("no campaign `{0}` (hint: `missive check` lists the campaigns found under letters/)")]
    UnknownCampaign(String),
    #[error("campaign `{campaign}` has no target `{target}` (hint: its targets are {known})")]
    UnknownTarget {
        campaign: String,
        target: String,
        known: String,
    },
    #[error("rendering {file}: {message}")]
    Render { file: String, message: String },
}

/// Every campaign found under the letters folder, loaded and checked.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    campaigns: BTreeMap<CampaignSlug, Arc<Campaign>>,
}

impl Registry {
    /// Loads every sub-folder of `dir` that holds a `campaign.toml`, their addresses checked
    /// against `addresses`. Any problem in any campaign is an error listing all of them: a
    /// half-loaded registry would silently drop a campaign.
    pub fn load(dir: &Path, addresses: AddressPolicy) -> Result<Registry, LettersError> {
        let entries = std::fs::read_dir(dir).map_err(|source| LettersError::Folder {
            dir: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("campaign.toml").is_file())
            .collect();
        paths.sort();
        let mut campaigns = BTreeMap::new();
        let mut problems = Vec::new();
        for path in paths {
            match Campaign::load(&path, addresses) {
                Ok(c) => {
                    campaigns.insert(c.slug.clone(), Arc::new(c));
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if problems.is_empty() {
            Ok(Registry { campaigns })
        } else {
            Err(LettersError::Problems(problems))
        }
    }

    /// A registry over campaigns already loaded (tests, embedding).
    pub fn from_campaigns(list: impl IntoIterator<Item = Campaign>) -> Registry {
        Registry {
            campaigns: list
                .into_iter()
                .map(|c| (c.slug.clone(), Arc::new(c)))
                .collect(),
        }
    }

    /// The campaign with this slug.
    pub fn get(&self, slug: &str) -> Result<Arc<Campaign>, LettersError> {
        CampaignSlug::parse(slug)
            .ok()
            .and_then(|s| self.campaigns.get(&s).cloned())
            .ok_or_else(|| LettersError::UnknownCampaign(slug.to_owned()))
    }

    /// All campaigns, by slug.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Campaign>> {
        self.campaigns.values()
    }

    /// How many campaigns there are.
    pub fn len(&self) -> usize {
        self.campaigns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.campaigns.is_empty()
    }
}
