//! Opening an object store from a lake URL (`s3://`, `gs://`, `az://`) with
//! each cloud's standard environment.
//!
//! - **S3**: `object_store`'s `AmazonS3Builder::from_env` (`AWS_*`, including
//!   `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`).
//! - **GCS**: every `GOOGLE_*` variable `object_store` knows
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT`,
//!   `GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_BASE_URL`, …) and the emulator
//!   variable `STORAGE_EMULATOR_HOST`, which becomes the base URL and turns
//!   authentication off (no token, no metadata-server lookup).
//! - **Azure**: every `AZURE_*` variable `object_store` knows
//!   (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//!   `AZURE_STORAGE_SAS_TOKEN`, `AZURE_CLIENT_ID`, …), then
//!   `AZURE_STORAGE_CONNECTION_STRING` (`AccountName`, `AccountKey`,
//!   `SharedAccessSignature`, `BlobEndpoint`, `DefaultEndpointsProtocol`,
//!   `EndpointSuffix`, `UseDevelopmentStorage=true`), which wins where it
//!   says something, or else the az CLI's `AZURE_STORAGE_ACCOUNT` and
//!   `AZURE_STORAGE_KEY` where `object_store`'s own names are unset.
//!
//! The environment is read once into a map, and everything below works on the
//! map, so the tests give tables instead of touching the process environment.
//! When no credential is configured, the store asks the cloud's metadata
//! (managed-identity) endpoint at the first request; an error there names the
//! variables to set.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use object_store::azure::{AzureConfigKey, AzureCredential, MicrosoftAzureBuilder};
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{ClientConfigKey, CredentialProvider};
use url::Url;

use crate::error::{DestinationError, ExportError};
use crate::lake::LakeObjectStore;

type Store = Arc<dyn LakeObjectStore>;

/// The process environment (or a test's table): variable name to value.
type Env = BTreeMap<String, String>;

/// The variables that configure an Azure storage account, for messages.
const AZURE_ACCOUNT_HINT: &str = "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and \
     AZURE_STORAGE_KEY (as for the az CLI), or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY; \
     for Azurite, a connection string with UseDevelopmentStorage=true or BlobEndpoint";
/// The variables that give an Azure credential, for messages.
const AZURE_CREDENTIAL_HINT: &str = "set AZURE_STORAGE_KEY (or AccountKey in \
     AZURE_STORAGE_CONNECTION_STRING), AZURE_STORAGE_SAS_TOKEN, or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and \
     AZURE_TENANT_ID for a service principal";
/// The variables that give a Google Cloud credential, for messages.
const GCS_CREDENTIAL_HINT: &str = "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a \
     service-account key file (or GOOGLE_SERVICE_ACCOUNT_KEY to its JSON), or STORAGE_EMULATOR_HOST for an \
     emulator";

/// The store and prefix a URL names, or `None` for a `file://` URL (a local
/// lake).
///
/// Credentials, region and endpoint come from the cloud's standard
/// environment (see the module documentation).
pub(crate) fn from_url(dest: &str) -> Result<Option<(Store, ObjPath)>, ExportError> {
    let env: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    from_url_in(dest, &env)
}

/// [`from_url`] with the environment given as a map.
fn from_url_in(dest: &str, env: &Env) -> Result<Option<(Store, ObjPath)>, ExportError> {
    let url = Url::parse(dest).map_err(|source| DestinationError::Url { url: dest.to_owned(), source })?;
    let failed = |hint| move |source| DestinationError::Store { url: dest.to_owned(), hint, source };
    let store: Store = match url.scheme() {
        "file" => return Ok(None),
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env().with_url(dest).build().map_err(failed(None))?,
        ),
        "gs" => gcs_store(dest, env)?,
        "az" | "azure" | "abfs" | "abfss" | "adl" => azure_store(dest, &url, env)?,
        other => return Err(DestinationError::UnsupportedScheme { scheme: other.to_owned() }.into()),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(DestinationError::NoBucket { url: dest.to_owned() }.into());
    }
    let prefix = ObjPath::from_url_path(url.path())
        .map_err(|source| DestinationError::Path { url: dest.to_owned(), source })?;
    Ok(Some((store, prefix)))
}

// ---------------------------------------------------------------- GCS

/// What `GoogleCloudStorageBuilder::from_env` reads, from the map, plus
/// `STORAGE_EMULATOR_HOST`.
fn gcs_builder(env: &Env) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::new();
    if let Some(path) = env.get("SERVICE_ACCOUNT") {
        builder = builder.with_service_account_path(path);
    }
    for (name, value) in env {
        if name.starts_with("GOOGLE_")
            && let Ok(key) = name.to_ascii_lowercase().parse::<GoogleConfigKey>()
        {
            builder = builder.with_config(key, value);
        }
    }
    if let Some(host) = env.get("STORAGE_EMULATOR_HOST").map(|h| h.trim()).filter(|h| !h.is_empty()) {
        // The emulator convention: `host:port` or a URL; no credentials at all.
        let base = if host.contains("://") { host.to_owned() } else { format!("http://{host}") };
        if builder.get_config_value(&GoogleConfigKey::BaseUrl).is_none() {
            builder = builder.with_base_url(base.trim_end_matches('/'));
        }
        // (object_store allows plain http to GCS already.)
        builder = builder.with_skip_signature(true);
    }
    builder
}

fn gcs_store(dest: &str, env: &Env) -> Result<Store, DestinationError> {
    let builder = gcs_builder(env).with_url(dest);
    let explicit = [
        GoogleConfigKey::ServiceAccount,
        GoogleConfigKey::ServiceAccountKey,
        GoogleConfigKey::ApplicationCredentials,
    ]
    .iter()
    .any(|key| builder.get_config_value(key).is_some());
    let emulated = builder.get_config_value(&GoogleConfigKey::SkipSignature).is_some_and(|v| v == "true");
    let failed =
        |source| DestinationError::Store { url: dest.to_owned(), hint: Some(GCS_CREDENTIAL_HINT), source };
    let store = builder.clone().build().map_err(failed)?;
    if explicit || emulated {
        return Ok(Arc::new(store));
    }
    // Nothing configured: the token comes from an application-default
    // credentials file or the metadata server; say what to set if it fails.
    let hinted = Hinted { inner: Arc::clone(store.credentials()), store: "GCS", hint: GCS_CREDENTIAL_HINT };
    Ok(Arc::new(builder.with_credentials(Arc::new(hinted)).build().map_err(failed)?))
}

// ---------------------------------------------------------------- Azure

/// What `MicrosoftAzureBuilder::from_env` reads, from the map, then the
/// connection string or the az CLI's variables.
fn azure_builder(env: &Env) -> Result<MicrosoftAzureBuilder, DestinationError> {
    let mut builder = MicrosoftAzureBuilder::new();
    for (name, value) in env {
        if name.starts_with("AZURE_")
            && let Ok(key) = name.to_ascii_lowercase().parse::<AzureConfigKey>()
        {
            builder = builder.with_config(key, value);
        }
    }
    if let Some(endpoint) = env.get("IDENTITY_ENDPOINT") {
        builder = builder.with_msi_endpoint(endpoint);
    }
    let set = |name: &str| env.get(name).is_some_and(|v| !v.trim().is_empty());
    if let Some(text) = env.get("AZURE_STORAGE_CONNECTION_STRING").filter(|v| !v.trim().is_empty()) {
        for (key, value) in connection_string(text)? {
            builder = builder.with_config(key, value);
        }
    } else {
        if !set("AZURE_STORAGE_ACCOUNT_NAME")
            && let Some(account) = env.get("AZURE_STORAGE_ACCOUNT").filter(|_| set("AZURE_STORAGE_ACCOUNT"))
        {
            builder = builder.with_account(account.trim());
        }
        let own_key = ["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_MASTER_KEY"];
        if !own_key.iter().any(|name| set(name))
            && let Some(key) = env.get("AZURE_STORAGE_KEY").filter(|_| set("AZURE_STORAGE_KEY"))
        {
            builder = builder.with_access_key(key.trim());
        }
    }
    Ok(builder)
}

/// The settings an Azure storage connection string
/// (`Key=Value;Key=Value…`, keys in any case) gives.
///
/// Values are never echoed in errors: they hold secrets.
fn connection_string(text: &str) -> Result<Vec<(AzureConfigKey, String)>, DestinationError> {
    let bad = |problem: String| DestinationError::ConnectionString { problem };
    let mut fields = BTreeMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(format!(
                "has a part without `=` (expected Key=Value;Key=Value…): the part starting with `{}`",
                part.chars().take(12).collect::<String>()
            )));
        };
        fields.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let mut out = Vec::new();
    if fields.get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        out.push((AzureConfigKey::UseEmulator, "true".to_owned()));
    }
    if let Some(account) = fields.get("accountname") {
        out.push((AzureConfigKey::AccountName, account.clone()));
    }
    if let Some(key) = fields.get("accountkey") {
        out.push((AzureConfigKey::AccessKey, key.clone()));
    }
    if let Some(sas) = fields.get("sharedaccesssignature") {
        out.push((AzureConfigKey::SasKey, sas.clone()));
    }
    let protocol = fields.get("defaultendpointsprotocol").map(String::as_str);
    let endpoint = if let Some(endpoint) = fields.get("blobendpoint") {
        Some(endpoint.trim_end_matches('/').to_owned())
    } else if fields.contains_key("endpointsuffix") || protocol.is_some_and(|p| p != "https") {
        let Some(account) = fields.get("accountname") else {
            return Err(bad(
                "has EndpointSuffix or DefaultEndpointsProtocol but no AccountName or BlobEndpoint"
                    .to_owned(),
            ));
        };
        let suffix = fields.get("endpointsuffix").map_or("core.windows.net", String::as_str);
        Some(format!("{}://{account}.blob.{suffix}", protocol.unwrap_or("https")))
    } else {
        None
    };
    if let Some(endpoint) = endpoint {
        if endpoint.starts_with("http://") {
            out.push((AzureConfigKey::Client(ClientConfigKey::AllowHttp), "true".to_owned()));
        }
        out.push((AzureConfigKey::Endpoint, endpoint));
    }
    Ok(out)
}

fn azure_store(dest: &str, url: &Url, env: &Env) -> Result<Store, DestinationError> {
    let builder = azure_builder(env)?.with_url(dest);
    let value = |key: AzureConfigKey| builder.get_config_value(&key).filter(|v| !v.is_empty());
    let emulated = value(AzureConfigKey::UseEmulator).is_some_and(|v| v == "true");
    // `abfss://container@account.dfs.core.windows.net/` names the account itself.
    let account_in_url = !url.username().is_empty();
    if !emulated && !account_in_url && value(AzureConfigKey::AccountName).is_none() {
        return Err(DestinationError::NoAzureAccount { url: dest.to_owned(), hint: AZURE_ACCOUNT_HINT });
    }
    let failed = |source| DestinationError::Store { url: dest.to_owned(), hint: None, source };
    let store = builder.clone().build().map_err(failed)?;
    let credential_keys = [
        AzureConfigKey::AccessKey,
        AzureConfigKey::SasKey,
        AzureConfigKey::Token,
        AzureConfigKey::ClientSecret,
        AzureConfigKey::FederatedTokenFile,
        AzureConfigKey::CredentialType,
        AzureConfigKey::FabricSessionToken,
    ];
    let use_cli = value(AzureConfigKey::UseAzureCli).is_some_and(|v| v == "true");
    if emulated || use_cli || credential_keys.into_iter().any(|key| value(key).is_some()) {
        return Ok(Arc::new(store));
    }
    // No credential: the store asks the managed-identity endpoint; say what
    // to set if that fails.
    let hinted = Hinted {
        inner: Arc::clone(store.credentials()),
        store: "MicrosoftAzure",
        hint: AZURE_CREDENTIAL_HINT,
    };
    Ok(Arc::new(builder.with_credentials(Arc::new(hinted)).build().map_err(failed)?))
}

// ---------------------------------------------------------------- hints

/// A credential provider whose errors say which variables to set.
#[derive(Debug)]
struct Hinted<T> {
    inner: Arc<dyn CredentialProvider<Credential = T>>,
    /// The store's name in `object_store` errors.
    store: &'static str,
    hint: &'static str,
}

/// No credential could be had; [`Hinted`] wraps the cause in this.
#[derive(Debug, thiserror::Error)]
#[error("no credential found ({hint})")]
struct NoCredential {
    hint: &'static str,
    #[source]
    source: object_store::Error,
}

/// A boxed credential future, as `async_trait` spells it.
type CredentialFuture<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<Arc<T>>> + Send + 'a>>;

impl<T> Hinted<T>
where
    T: std::fmt::Debug + Send + Sync + 'static,
{
    fn credential(&self) -> CredentialFuture<'_, T> {
        Box::pin(async move {
            self.inner.get_credential().await.map_err(|source| object_store::Error::Generic {
                store: self.store,
                source: Box::new(NoCredential { hint: self.hint, source }),
            })
        })
    }
}

// `CredentialProvider` is an `async_trait`; this is its expansion, so the
// crate needs no macro dependency for one method.
impl CredentialProvider for Hinted<GcpCredential> {
    type Credential = GcpCredential;

    fn get_credential<'life0, 'async_trait>(&'life0 self) -> CredentialFuture<'async_trait, GcpCredential>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.credential()
    }
}

impl CredentialProvider for Hinted<AzureCredential> {
    type Credential = AzureCredential;

    fn get_credential<'life0, 'async_trait>(&'life0 self) -> CredentialFuture<'async_trait, AzureCredential>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.credential()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    const AZURITE_CONNECTION: &str = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
        AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
        BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";

    /// (case, environment, expected account, key, endpoint, emulator, allow http)
    type AzureCase = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        bool,
    );

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table, a row a case")]
    fn azure_environment_maps_to_the_builder() {
        let cases: &[AzureCase] = &[
            (
                "object_store's own names",
                &[("AZURE_STORAGE_ACCOUNT_NAME", "acct"), ("AZURE_STORAGE_ACCOUNT_KEY", "k1")],
                Some("acct"),
                Some("k1"),
                None,
                false,
                false,
            ),
            (
                "az CLI names",
                &[("AZURE_STORAGE_ACCOUNT", "cli"), ("AZURE_STORAGE_KEY", "k2")],
                Some("cli"),
                Some("k2"),
                None,
                false,
                false,
            ),
            (
                "own names win over the az CLI's",
                &[
                    ("AZURE_STORAGE_ACCOUNT_NAME", "own"),
                    ("AZURE_STORAGE_ACCOUNT", "cli"),
                    ("AZURE_STORAGE_ACCESS_KEY", "k1"),
                    ("AZURE_STORAGE_KEY", "k2"),
                ],
                Some("own"),
                Some("k1"),
                None,
                false,
                false,
            ),
            (
                "Azurite connection string",
                &[("AZURE_STORAGE_CONNECTION_STRING", AZURITE_CONNECTION)],
                Some("devstoreaccount1"),
                Some(AZURITE_KEY),
                Some("http://127.0.0.1:10000/devstoreaccount1"),
                false,
                true,
            ),
            (
                "the connection string wins over the other names",
                &[
                    ("AZURE_STORAGE_CONNECTION_STRING", "AccountName=cs;AccountKey=k3"),
                    ("AZURE_STORAGE_ACCOUNT", "cli"),
                    ("AZURE_STORAGE_ACCOUNT_NAME", "own"),
                    ("AZURE_STORAGE_KEY", "k2"),
                ],
                Some("cs"),
                Some("k3"),
                None,
                false,
                false,
            ),
            (
                "UseDevelopmentStorage",
                &[("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")],
                None,
                None,
                None,
                true,
                false,
            ),
            (
                "keys in any case, spaces",
                &[("AZURE_STORAGE_CONNECTION_STRING", " accountname = a ; ACCOUNTKEY=k== ")],
                Some("a"),
                Some("k=="),
                None,
                false,
                false,
            ),
            (
                "EndpointSuffix and protocol",
                &[(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;EndpointSuffix=core.chinacloudapi.cn",
                )],
                Some("a"),
                Some("k"),
                Some("https://a.blob.core.chinacloudapi.cn"),
                false,
                false,
            ),
            (
                "the emulator flag of object_store",
                &[("AZURE_STORAGE_USE_EMULATOR", "true")],
                None,
                None,
                None,
                true,
                false,
            ),
            (
                "an empty connection string is no connection string",
                &[("AZURE_STORAGE_CONNECTION_STRING", " "), ("AZURE_STORAGE_ACCOUNT", "cli")],
                Some("cli"),
                None,
                None,
                false,
                false,
            ),
        ];
        for &(case, vars, account, key, endpoint, emulator, http) in cases {
            let builder = azure_builder(&env(vars)).unwrap_or_else(|e| panic!("{case}: {e}"));
            let get = |k: AzureConfigKey| builder.get_config_value(&k);
            assert_eq!(get(AzureConfigKey::AccountName).as_deref(), account, "{case}: account");
            assert_eq!(get(AzureConfigKey::AccessKey).as_deref(), key, "{case}: key");
            assert_eq!(get(AzureConfigKey::Endpoint).as_deref(), endpoint, "{case}: endpoint");
            assert_eq!(
                get(AzureConfigKey::UseEmulator).as_deref() == Some("true"),
                emulator,
                "{case}: emulator"
            );
            let allow_http = get(AzureConfigKey::Client(ClientConfigKey::AllowHttp));
            assert_eq!(allow_http.as_deref() == Some("true"), http, "{case}: allow http");
        }
    }

    #[test]
    fn azure_sas_from_the_connection_string() {
        let vars = env(&[(
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=a;SharedAccessSignature=sv=2024&sig=x%3D",
        )]);
        let builder = azure_builder(&vars).expect("builder");
        assert_eq!(builder.get_config_value(&AzureConfigKey::SasKey).as_deref(), Some("sv=2024&sig=x%3D"));
    }

    #[test]
    fn a_malformed_connection_string_is_named_without_its_secrets() {
        let vars = env(&[("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;Zm9vYmFyc2VjcmV0a2V5")]);
        let err = azure_builder(&vars).expect_err("a part without =").to_string();
        assert!(err.contains("AZURE_STORAGE_CONNECTION_STRING"), "{err}");
        assert!(!err.contains("Zm9vYmFyc2VjcmV0a2V5"), "the whole secret is not echoed: {err}");
        let vars = env(&[("AZURE_STORAGE_CONNECTION_STRING", "EndpointSuffix=core.windows.net")]);
        let err = azure_builder(&vars).expect_err("a suffix without an account").to_string();
        assert!(err.contains("AccountName"), "{err}");
    }

    #[test]
    fn a_missing_azure_account_names_the_variables() {
        for vars in [
            env(&[]),
            env(&[("AZURE_STORAGE_KEY", "k")]),
            env(&[("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=k")]),
        ] {
            let err = from_url_in("az://container/lake", &vars).expect_err("no account");
            let msg = err.to_string();
            for name in ["AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"] {
                assert!(msg.contains(name), "names {name}: {msg}");
            }
        }
    }

    #[test]
    fn azure_stores_open_from_each_kind_of_environment() {
        let azurite = format!(
            "AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1"
        );
        let tables = [
            env(&[("AZURE_STORAGE_CONNECTION_STRING", &azurite)]),
            env(&[("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")]),
            env(&[("AZURE_STORAGE_ACCOUNT", "acct"), ("AZURE_STORAGE_KEY", AZURITE_KEY)]),
            // No credential: builds, and asks the managed-identity endpoint only on first use.
            env(&[("AZURE_STORAGE_ACCOUNT", "acct")]),
        ];
        for vars in tables {
            let (_, prefix) = from_url_in("az://container/exports/calls", &vars)
                .unwrap_or_else(|e| panic!("{vars:?}: {e}"))
                .expect("a store");
            assert_eq!(prefix.as_ref(), "exports/calls");
        }
        // The account in an abfss URL is enough.
        assert!(from_url_in("abfss://fs@acct.dfs.core.windows.net/lake", &env(&[])).is_ok());
    }

    #[test]
    fn gcs_emulator_host_is_the_base_url_without_auth() {
        // (STORAGE_EMULATOR_HOST, GOOGLE_BASE_URL, expected base URL)
        let cases = [
            ("localhost:4443", None, "http://localhost:4443"),
            ("http://127.0.0.1:9023/", None, "http://127.0.0.1:9023"),
            ("https://gcs.test:4443", None, "https://gcs.test:4443"),
            ("localhost:4443", Some("http://other:1"), "http://other:1"),
        ];
        for (host, base, want) in cases {
            let mut vars = env(&[("STORAGE_EMULATOR_HOST", host)]);
            if let Some(base) = base {
                vars.insert("GOOGLE_BASE_URL".into(), base.into());
            }
            let builder = gcs_builder(&vars);
            let get = |k: GoogleConfigKey| builder.get_config_value(&k);
            assert_eq!(get(GoogleConfigKey::BaseUrl).as_deref(), Some(want), "{host}");
            assert_eq!(get(GoogleConfigKey::SkipSignature).as_deref(), Some("true"), "{host}: no auth");
            assert!(from_url_in("gs://bucket/lake", &vars).is_ok(), "{host}: the store opens");
        }
        let plain =
            gcs_builder(&env(&[("GOOGLE_SERVICE_ACCOUNT", "/k.json"), ("SERVICE_ACCOUNT", "/ignored")]));
        assert_eq!(plain.get_config_value(&GoogleConfigKey::ServiceAccount).as_deref(), Some("/k.json"));
        assert_eq!(plain.get_config_value(&GoogleConfigKey::SkipSignature).as_deref(), Some("false"));
        assert_eq!(plain.get_config_value(&GoogleConfigKey::BaseUrl), None);
    }

    #[test]
    fn a_bad_gcs_credential_file_names_the_variables() {
        let vars = env(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/plumline-test-key.json")]);
        let msg = from_url_in("gs://bucket/lake", &vars).expect_err("no such file").to_string();
        assert!(
            msg.contains("GOOGLE_APPLICATION_CREDENTIALS") && msg.contains("GOOGLE_SERVICE_ACCOUNT"),
            "{msg}"
        );
    }

    /// A provider that always fails, as the metadata server does off-cloud.
    #[derive(Debug)]
    struct Failing;

    impl CredentialProvider for Failing {
        type Credential = GcpCredential;

        fn get_credential<'life0, 'async_trait>(&'life0 self) -> CredentialFuture<'async_trait, GcpCredential>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async {
                Err(object_store::Error::Generic {
                    store: "GCS",
                    source: "metadata server unreachable".into(),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_failed_token_lookup_names_the_variables_and_keeps_its_cause() {
        let hinted = Hinted { inner: Arc::new(Failing), store: "GCS", hint: GCS_CREDENTIAL_HINT };
        let err = hinted.get_credential().await.expect_err("fails");
        let msg = err.to_string();
        assert!(
            msg.contains("GOOGLE_APPLICATION_CREDENTIALS") && msg.contains("STORAGE_EMULATOR_HOST"),
            "{msg}"
        );
        let mut chain = Vec::new();
        let mut cur: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        assert!(chain.iter().any(|m| m.contains("metadata server unreachable")), "{chain:?}");
    }
}
