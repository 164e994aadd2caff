//! The id of a durable job.

use std::fmt;
use std::str::FromStr;

/// The id of a stored job: a ULID, shown and parsed as its 26-character text.
///
/// # Examples
///
/// ```
/// use background_tasks_apalis::JobId;
///
/// let id: JobId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
/// assert_eq!(id.to_string(), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
/// assert!("not-an-id".parse::<JobId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(ulid::Ulid);

impl JobId {
    pub(crate) fn generate() -> Self {
        Self(ulid::Ulid::generate())
    }

    pub(crate) fn from_ulid(id: ulid::Ulid) -> Self {
        Self(id)
    }

    pub(crate) fn ulid(&self) -> ulid::Ulid {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(text)
            .map(Self)
            .map_err(|_| ParseJobIdError {
                text: text.chars().take(64).collect(),
            })
    }
}

/// A job id that is not a ULID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a job id: expected the 26-character ULID that enqueueing returned")]
#[non_exhaustive]
pub struct ParseJobIdError {
    text: String,
}
