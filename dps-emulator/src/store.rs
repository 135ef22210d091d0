//! Registration records on disk, written atomically (temp file + rename).

use std::collections::HashMap;
use std::path::Path;

use crate::Error;
use crate::service::RegistrationRecord;

pub(crate) fn load(path: &Path) -> Result<HashMap<String, RegistrationRecord>, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(Error::File {
                operation: "read registration store",
                path: path.to_owned(),
                source,
            });
        }
    };
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
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file_err = |operation, source| Error::File {
        operation,
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, text).map_err(|e| file_err("write registration store", e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err("replace registration store", e))
}
