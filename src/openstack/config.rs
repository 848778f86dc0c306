//! Where to find the cloud and how to authenticate: the `OS_*` variables of an openrc file, or
//! a cloud of a `clouds.yaml` chosen by `OS_CLOUD` (searched where openstacksdk searches).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{Error, Result};

/// A secret string (password, application credential secret, token): never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A project to scope a password token to: by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectScope {
    /// `OS_PROJECT_ID` / `OS_TENANT_ID`.
    pub id: Option<String>,
    /// `OS_PROJECT_NAME` / `OS_TENANT_NAME`.
    pub name: Option<String>,
    /// `OS_PROJECT_DOMAIN_ID`.
    pub domain_id: Option<String>,
    /// `OS_PROJECT_DOMAIN_NAME`.
    pub domain_name: Option<String>,
}

/// A user: by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRef {
    /// `OS_USER_ID`.
    pub id: Option<String>,
    /// `OS_USERNAME`.
    pub name: Option<String>,
    /// `OS_USER_DOMAIN_ID`.
    pub domain_id: Option<String>,
    /// `OS_USER_DOMAIN_NAME`.
    pub domain_name: Option<String>,
}

/// How to get a Keystone v3 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// `password`: a user's password, scoped to a project.
    Password {
        /// The user.
        user: UserRef,
        /// Its password.
        password: Secret,
        /// The project the token is for.
        project: ProjectScope,
    },
    /// `v3applicationcredential`: an application credential (already scoped to its project).
    ApplicationCredential {
        /// `OS_APPLICATION_CREDENTIAL_ID`.
        id: Option<String>,
        /// `OS_APPLICATION_CREDENTIAL_NAME` (then the user must be given too).
        name: Option<String>,
        /// `OS_APPLICATION_CREDENTIAL_SECRET`.
        secret: Secret,
        /// The owner, needed only with a name.
        user: UserRef,
    },
}

/// A cloud to talk to: Keystone, credentials, and which endpoints of the catalog to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Keystone's URL as given (`OS_AUTH_URL`), with or without `/v3`.
    pub auth_url: String,
    /// Credentials.
    pub auth: AuthMethod,
    /// `OS_REGION_NAME`: the catalog region (any region when unset).
    pub region: Option<String>,
    /// `OS_INTERFACE`: `public` (default), `internal` or `admin`.
    pub interface: String,
    /// `OS_CACERT`: a PEM bundle of CAs to trust in addition to the system's.
    pub cacert: Option<PathBuf>,
    /// `verify: false` in clouds.yaml / `OS_INSECURE=true`: do not check TLS certificates.
    pub insecure: bool,
    /// Where this came from, for messages (`openrc /path`, `clouds.yaml /path cloud x`, `environment`).
    pub source: String,
}

impl CloudConfig {
    /// Keystone v3 base URL (ending in `/v3`, no trailing slash).
    pub fn identity_v3_url(&self) -> Result<String> {
        let url = self.auth_url.trim().trim_end_matches('/');
        if url.is_empty() {
            return Err(Error::Config(format!(
                "{}: OS_AUTH_URL is empty",
                self.source
            )));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "{}: OS_AUTH_URL {url:?} is not an http(s) URL",
                self.source
            )));
        }
        if url.ends_with("/v2.0") {
            return Err(Error::Config(format!(
                "{}: OS_AUTH_URL {url:?} is Keystone v2.0, which is gone: use the v3 URL",
                self.source
            )));
        }
        if url.ends_with("/v3") {
            Ok(url.to_owned())
        } else {
            Ok(format!("{url}/v3"))
        }
    }

    /// From the process environment: `OS_CLOUD` (clouds.yaml) when set, else the `OS_*`
    /// variables of a sourced openrc.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(&|k| std::env::var(k).ok(), "environment")
    }

    /// From an openrc file (`export OS_...=...` lines), without touching the process
    /// environment. An openrc that sets `OS_CLOUD` selects a cloud of clouds.yaml.
    pub fn from_openrc_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::ConfigFile {
            path: path.to_owned(),
            error,
        })?;
        let vars = parse_openrc(&text);
        Self::from_vars(
            &|k| vars.get(k).cloned(),
            &format!("openrc {}", path.display()),
        )
    }

    /// From `OS_*` variables given by a lookup function (the environment, a parsed openrc).
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>, source: &str) -> Result<Self> {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(cloud) = var("OS_CLOUD") {
            let path = find_clouds_yaml(var("OS_CLIENT_CONFIG_FILE").as_deref(), get)?;
            return Self::from_clouds_yaml(&path, &cloud);
        }
        let auth_url = var("OS_AUTH_URL").ok_or_else(|| {
            Error::Config(format!(
                "{source}: neither OS_CLOUD nor OS_AUTH_URL is set (source an openrc file, or set OS_CLOUD to a cloud of clouds.yaml)"
            ))
        })?;
        let user = UserRef {
            id: var("OS_USER_ID"),
            name: var("OS_USERNAME"),
            domain_id: var("OS_USER_DOMAIN_ID"),
            domain_name: var("OS_USER_DOMAIN_NAME"),
        };
        let auth_type = var("OS_AUTH_TYPE").unwrap_or_default();
        let appcred = matches!(
            auth_type.as_str(),
            "v3applicationcredential" | "applicationcredential" | "application_credential"
        ) || (auth_type.is_empty()
            && (var("OS_APPLICATION_CREDENTIAL_ID").is_some()
                || var("OS_APPLICATION_CREDENTIAL_NAME").is_some()));
        let auth = if appcred {
            AuthMethod::ApplicationCredential {
                id: var("OS_APPLICATION_CREDENTIAL_ID"),
                name: var("OS_APPLICATION_CREDENTIAL_NAME"),
                secret: Secret::new(var("OS_APPLICATION_CREDENTIAL_SECRET").unwrap_or_default()),
                user,
            }
        } else if matches!(auth_type.as_str(), "" | "password" | "v3password") {
            AuthMethod::Password {
                user,
                password: Secret::new(var("OS_PASSWORD").unwrap_or_default()),
                project: ProjectScope {
                    id: var("OS_PROJECT_ID").or_else(|| var("OS_TENANT_ID")),
                    name: var("OS_PROJECT_NAME").or_else(|| var("OS_TENANT_NAME")),
                    domain_id: var("OS_PROJECT_DOMAIN_ID"),
                    domain_name: var("OS_PROJECT_DOMAIN_NAME"),
                },
            }
        } else {
            return Err(Error::Config(format!(
                "{source}: OS_AUTH_TYPE {auth_type:?} is not supported (use password or v3applicationcredential)"
            )));
        };
        let config = CloudConfig {
            auth_url,
            auth,
            region: var("OS_REGION_NAME"),
            interface: normalize_interface(var("OS_INTERFACE").or_else(|| var("OS_ENDPOINT_TYPE"))),
            cacert: var("OS_CACERT").map(PathBuf::from),
            insecure: var("OS_INSECURE").is_some_and(|v| is_true(&v)),
            source: source.to_owned(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The cloud `cloud` of the clouds.yaml at `path`.
    pub fn from_clouds_yaml(path: &Path, cloud: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::ConfigFile {
            path: path.to_owned(),
            error,
        })?;
        Self::from_clouds_yaml_str(&text, path, cloud)
    }

    /// The cloud `cloud` of clouds.yaml text (`path` is for messages and relative `cacert`).
    pub fn from_clouds_yaml_str(text: &str, path: &Path, cloud: &str) -> Result<Self> {
        let file: CloudsFile = serde_saphyr::from_str(text).map_err(|e| Error::ConfigParse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let Some(entry) = file.clouds.get(cloud) else {
            return Err(Error::Config(format!(
                "{}: no cloud {cloud:?} (it has: {})",
                path.display(),
                file.clouds.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let source = format!("clouds.yaml {} cloud {cloud}", path.display());
        let a = &entry.auth;
        let auth_url = a
            .auth_url
            .clone()
            .ok_or_else(|| Error::Config(format!("{source}: auth.auth_url is missing")))?;
        let user = UserRef {
            id: a.user_id.clone(),
            name: a.username.clone(),
            domain_id: a.user_domain_id.clone().or_else(|| a.domain_id.clone()),
            domain_name: a.user_domain_name.clone().or_else(|| a.domain_name.clone()),
        };
        let auth_type = entry.auth_type.clone().unwrap_or_default();
        let appcred = matches!(
            auth_type.as_str(),
            "v3applicationcredential" | "applicationcredential" | "application_credential"
        ) || (auth_type.is_empty()
            && (a.application_credential_id.is_some() || a.application_credential_name.is_some()));
        let auth = if appcred {
            AuthMethod::ApplicationCredential {
                id: a.application_credential_id.clone(),
                name: a.application_credential_name.clone(),
                secret: Secret::new(a.application_credential_secret.clone().unwrap_or_default()),
                user,
            }
        } else if matches!(auth_type.as_str(), "" | "password" | "v3password") {
            AuthMethod::Password {
                user,
                password: Secret::new(a.password.clone().unwrap_or_default()),
                project: ProjectScope {
                    id: a.project_id.clone().or_else(|| a.tenant_id.clone()),
                    name: a.project_name.clone().or_else(|| a.tenant_name.clone()),
                    domain_id: a.project_domain_id.clone().or_else(|| a.domain_id.clone()),
                    domain_name: a
                        .project_domain_name
                        .clone()
                        .or_else(|| a.domain_name.clone()),
                },
            }
        } else {
            return Err(Error::Config(format!(
                "{source}: auth_type {auth_type:?} is not supported (use password or v3applicationcredential)"
            )));
        };
        let cacert = entry.cacert.as_ref().map(|c| {
            let p = PathBuf::from(c);
            if p.is_relative() {
                path.parent().map(|d| d.join(&p)).unwrap_or(p)
            } else {
                p
            }
        });
        let config = CloudConfig {
            auth_url,
            auth,
            region: entry.region_name.clone(),
            interface: normalize_interface(entry.interface.clone()),
            cacert,
            insecure: entry.verify == Some(false),
            source,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let src = &self.source;
        self.identity_v3_url()?;
        if !matches!(self.interface.as_str(), "public" | "internal" | "admin") {
            return Err(Error::Config(format!(
                "{src}: interface {:?} is not one of public, internal, admin",
                self.interface
            )));
        }
        match &self.auth {
            AuthMethod::Password {
                user,
                password,
                project,
            } => {
                if user.id.is_none() && user.name.is_none() {
                    return Err(Error::Config(format!(
                        "{src}: password auth needs OS_USERNAME (or OS_USER_ID)"
                    )));
                }
                if user.id.is_none() && user.domain_id.is_none() && user.domain_name.is_none() {
                    return Err(Error::Config(format!(
                        "{src}: a user given by name needs its domain: OS_USER_DOMAIN_NAME (e.g. Default) or OS_USER_DOMAIN_ID"
                    )));
                }
                if password.expose().is_empty() {
                    return Err(Error::Config(format!("{src}: OS_PASSWORD is not set")));
                }
                if project.id.is_none() && project.name.is_none() {
                    return Err(Error::Config(format!(
                        "{src}: the token needs a project: set OS_PROJECT_NAME or OS_PROJECT_ID"
                    )));
                }
                if project.id.is_none()
                    && project.domain_id.is_none()
                    && project.domain_name.is_none()
                {
                    return Err(Error::Config(format!(
                        "{src}: a project given by name needs its domain: OS_PROJECT_DOMAIN_NAME (e.g. Default) or OS_PROJECT_DOMAIN_ID"
                    )));
                }
            }
            AuthMethod::ApplicationCredential {
                id,
                name,
                secret,
                user,
            } => {
                if secret.expose().is_empty() {
                    return Err(Error::Config(format!(
                        "{src}: OS_APPLICATION_CREDENTIAL_SECRET is not set"
                    )));
                }
                if id.is_none() {
                    if name.is_none() {
                        return Err(Error::Config(format!(
                            "{src}: application credential auth needs OS_APPLICATION_CREDENTIAL_ID (or _NAME with the user)"
                        )));
                    }
                    if user.id.is_none() && user.name.is_none() {
                        return Err(Error::Config(format!(
                            "{src}: an application credential given by name needs its user (OS_USERNAME or OS_USER_ID)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_true(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

fn normalize_interface(i: Option<String>) -> String {
    let i = i.unwrap_or_else(|| "public".into()).to_ascii_lowercase();
    i.strip_suffix("url").map(str::to_owned).unwrap_or(i)
}

/// The clouds.yaml files openstacksdk looks at, in order: `OS_CLIENT_CONFIG_FILE`, then
/// `./clouds.yaml`, `$XDG_CONFIG_HOME/openstack/clouds.yaml` (`~/.config/openstack`),
/// `/etc/openstack/clouds.yaml`.
pub fn clouds_yaml_search_paths(
    explicit: Option<&str>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = explicit {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    if let Some(xdg) = get("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        paths.push(PathBuf::from(xdg).join("openstack/clouds.yaml"));
    } else if let Some(home) = get("HOME").filter(|s| !s.is_empty()) {
        paths.push(PathBuf::from(home).join(".config/openstack/clouds.yaml"));
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

fn find_clouds_yaml(
    explicit: Option<&str>,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        // an explicit file must exist: falling back silently would pick another cloud
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::Config(format!(
                "OS_CLIENT_CONFIG_FILE={} does not exist",
                p.display()
            )));
        }
        return Ok(p);
    }
    let paths = clouds_yaml_search_paths(None, get);
    paths.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Config(format!(
            "OS_CLOUD is set but no clouds.yaml was found (looked at {}; set OS_CLIENT_CONFIG_FILE)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Deserialize, Default)]
struct CloudEntry {
    #[serde(default)]
    auth_type: Option<String>,
    #[serde(default)]
    auth: CloudAuth,
    #[serde(default)]
    region_name: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    verify: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
struct CloudAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    tenant_name: Option<String>,
    tenant_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<String>,
}

/// The variables an openrc file sets: `export K=V` / `K=V` lines, with single or double
/// quotes; `$X` / `${X}` expand to variables set earlier in the file. Comments, `unset`
/// and other shell lines are ignored.
pub fn parse_openrc(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = unquote(value.trim(), &vars);
        vars.insert(key.to_owned(), value);
    }
    vars
}

fn unquote(v: &str, vars: &BTreeMap<String, String>) -> String {
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let (inner, expand) = match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => (inner, true),
        None => (v.split(" #").next().unwrap_or(v).trim(), true),
    };
    if !expand || !inner.contains('$') {
        return inner.to_owned();
    }
    // minimal $X / ${X} expansion from earlier lines of the file
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else if let Some(val) = vars.get(&name) {
            out.push_str(val);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENRC: &str = r#"# project "lambda"
unset OS_CLOUD OS_TOKEN
export OS_AUTH_URL=http://127.0.0.1:15000/v3
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME="RegionOne"
export OS_INTERFACE=public
export OS_USERNAME='lambda'
export OS_PASSWORD=lambda-secret
export OS_PROJECT_NAME=lambda
export OS_USER_DOMAIN_NAME=Default
OS_PROJECT_DOMAIN_NAME=Default
"#;

    fn from_map(m: &BTreeMap<String, String>) -> Result<CloudConfig> {
        CloudConfig::from_vars(&|k| m.get(k).cloned(), "test")
    }

    #[test]
    fn openrc_password() {
        let vars = parse_openrc(OPENRC);
        assert_eq!(vars["OS_REGION_NAME"], "RegionOne");
        assert_eq!(vars["OS_USERNAME"], "lambda");
        let c = from_map(&vars).unwrap();
        assert_eq!(c.identity_v3_url().unwrap(), "http://127.0.0.1:15000/v3");
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, "public");
        match &c.auth {
            AuthMethod::Password {
                user,
                password,
                project,
            } => {
                assert_eq!(user.name.as_deref(), Some("lambda"));
                assert_eq!(user.domain_name.as_deref(), Some("Default"));
                assert_eq!(password.expose(), "lambda-secret");
                assert_eq!(project.name.as_deref(), Some("lambda"));
            }
            other => panic!("{other:?}"),
        }
        // the password never shows in Debug
        assert!(!format!("{c:?}").contains("lambda-secret"));
    }

    #[test]
    fn openrc_appcred_and_expansion() {
        let vars = parse_openrc(
            "export OS_AUTH_URL=https://keystone.example:5000\nS=s3cr3t\nexport OS_APPLICATION_CREDENTIAL_ID=abc\nexport OS_APPLICATION_CREDENTIAL_SECRET=\"$S\"\nexport OS_INTERFACE=internalURL\n",
        );
        let c = from_map(&vars).unwrap();
        assert_eq!(
            c.identity_v3_url().unwrap(),
            "https://keystone.example:5000/v3"
        );
        assert_eq!(c.interface, "internal");
        match &c.auth {
            AuthMethod::ApplicationCredential { id, secret, .. } => {
                assert_eq!(id.as_deref(), Some("abc"));
                assert_eq!(secret.expose(), "s3cr3t");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_pieces_are_clear_errors() {
        let mut vars = parse_openrc(OPENRC);
        vars.remove("OS_PASSWORD");
        let e = from_map(&vars).unwrap_err().to_string();
        assert!(e.contains("OS_PASSWORD"), "{e}");
        let mut vars = parse_openrc(OPENRC);
        vars.remove("OS_PROJECT_DOMAIN_NAME");
        let e = from_map(&vars).unwrap_err().to_string();
        assert!(e.contains("OS_PROJECT_DOMAIN_NAME"), "{e}");
        let e = from_map(&BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("OS_AUTH_URL") && e.contains("OS_CLOUD"), "{e}");
        let mut vars = parse_openrc(OPENRC);
        vars.insert("OS_AUTH_URL".into(), "http://k:5000/v2.0".into());
        assert!(from_map(&vars).unwrap_err().to_string().contains("v2.0"));
        let mut vars = parse_openrc(OPENRC);
        vars.insert("OS_AUTH_TYPE".into(), "token".into());
        assert!(from_map(&vars).unwrap_err().to_string().contains("token"));
    }

    const CLOUDS: &str = r#"
clouds:
  lambda-test:
    auth_type: "password"
    auth:
      auth_url: "http://127.0.0.1:15000/v3"
      username: "lambda"
      password: "lambda-secret"
      project_name: "lambda"
      user_domain_name: "Default"
      project_domain_name: "Default"
    region_name: "RegionOne"
    interface: "public"
    identity_api_version: 3
    cacert: ca.pem
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://k/identity
      application_credential_id: "id1"
      application_credential_secret: "sec"
    verify: false
"#;

    #[test]
    fn clouds_yaml() {
        let p = Path::new("/etc/openstack/clouds.yaml");
        let c = CloudConfig::from_clouds_yaml_str(CLOUDS, p, "lambda-test").unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(
            c.cacert.as_deref(),
            Some(Path::new("/etc/openstack/ca.pem"))
        );
        assert!(!c.insecure);
        assert!(matches!(c.auth, AuthMethod::Password { .. }));
        let c = CloudConfig::from_clouds_yaml_str(CLOUDS, p, "appcred").unwrap();
        assert!(c.insecure);
        assert_eq!(c.identity_v3_url().unwrap(), "https://k/identity/v3");
        assert!(matches!(c.auth, AuthMethod::ApplicationCredential { .. }));
        let e = CloudConfig::from_clouds_yaml_str(CLOUDS, p, "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("appcred, lambda-test"), "{e}");
        let e = CloudConfig::from_clouds_yaml_str("clouds: [1, 2", p, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("clouds.yaml"), "{e}");
    }

    #[test]
    fn os_cloud_uses_client_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("OS_CLOUD".to_owned(), "appcred".to_owned());
        vars.insert(
            "OS_CLIENT_CONFIG_FILE".to_owned(),
            path.display().to_string(),
        );
        let c = from_map(&vars).unwrap();
        assert!(c.source.contains("cloud appcred"));
        vars.insert(
            "OS_CLIENT_CONFIG_FILE".to_owned(),
            "/nonexistent.yaml".into(),
        );
        assert!(
            from_map(&vars)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        // standard search paths
        let paths = clouds_yaml_search_paths(None, &|k| (k == "HOME").then(|| "/home/u".into()));
        assert_eq!(
            paths,
            vec![
                PathBuf::from("clouds.yaml"),
                PathBuf::from("/home/u/.config/openstack/clouds.yaml"),
                PathBuf::from("/etc/openstack/clouds.yaml")
            ]
        );
    }
}
