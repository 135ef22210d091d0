//! Registration records on disk, written atomically (temporary file, fsync, rename, mode 0600).

use std::collections::HashMap;
use std::path::Path;

use crate::service::RegistrationRecord;
use crate::{Error, files};

pub(crate) fn load(path: &Path) -> Result<HashMap<String, RegistrationRecord>, Error> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let text = files::read_at_most(path, files::MAX_STATE_FILE, "read registration store")?;
    let list: Vec<RegistrationRecord> =
        serde_json::from_slice(&text).map_err(|source| Error::Store {
            path: path.to_owned(),
            source,
        })?;
    Ok(list
        .into_iter()
        .map(|r| (r.registration_id.clone(), r))
        .collect())
}

pub(crate) fn save(
    path: &Path,
    records: &HashMap<String, RegistrationRecord>,
) -> Result<(), Error> {
    let mut list: Vec<_> = records.values().collect();
    list.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));
    let text = serde_json::to_vec_pretty(&list).map_err(|source| Error::Store {
        path: path.to_owned(),
        source,
    })?;
    files::write_atomic(path, &text, 0o600, "write registration store")
}
