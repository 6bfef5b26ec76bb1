//! Opening an object store from a lake URL (`s3://`, `gs://`, `az://`) with
//! each cloud's standard environment.

use std::sync::Arc;

use object_store::path::Path as ObjPath;
use url::Url;

use crate::error::ExportError;
use crate::lake::LakeObjectStore;

type Store = Arc<dyn LakeObjectStore>;

/// The store and prefix a URL names, or `None` for a `file://` URL (a local
/// lake).
///
/// Credentials, region and endpoint come from the cloud's standard
/// environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub(crate) fn from_url(dest: &str) -> Result<Option<(Store, ObjPath)>, ExportError> {
    let bad = |why: String| ExportError::InvalidDestination(why);
    let url = Url::parse(dest).map_err(|e| bad(format!("--out `{dest}` is not a valid URL: {e}")))?;
    let store: Store = match url.scheme() {
        "file" => return Ok(None),
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(dest)
                .build()
                .map_err(|e| bad(format!("cannot use {dest}: {e}")))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(dest)
                .build()
                .map_err(|e| bad(format!("cannot use {dest}: {e}")))?,
        ),
        "az" | "azure" | "abfs" | "abfss" | "adl" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(dest)
                .build()
                .map_err(|e| bad(format!("cannot use {dest}: {e}")))?,
        ),
        other => {
            return Err(bad(format!(
                "--out scheme `{other}://` is not supported: use a directory, file:///, s3://, gs:// or az://"
            )));
        }
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("--out `{dest}` names no bucket")));
    }
    let prefix = ObjPath::from_url_path(url.path())
        .map_err(|e| bad(format!("--out `{dest}` has an invalid path: {e}")))?;
    Ok(Some((store, prefix)))
}
