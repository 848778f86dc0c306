//! Function → Swarm mapping: names, runtime images, the code config and the service spec.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ServiceSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets};
use sha2::{Digest, Sha256};

use crate::api::{Function, FunctionSpec, Resource, Runtime};
use crate::reconcilers::workload;
pub use crate::reconcilers::workload::{ServiceTuning, label_of, spec_hash};
use crate::swarm::labels::Owner;

/// Where the agent finds the code (the config's mount point).
pub const CODE_PATH: &str = "/var/lambda/code";
/// The port the agent listens on inside the container.
pub const AGENT_PORT: u16 = 8080;
/// The unprivileged user functions run as (the runtime images' `lambda` user).
pub const FUNCTION_UID: &str = "10001";
/// Longest Swarm object name used (a DNS label).
pub(crate) const MAX_NAME: usize = 63;

/// The runtime → image map of the controller's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeImages(pub HashMap<Runtime, String>);

/// Errors loading the runtime image configuration.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid --runtime-image {value:?}: {why}")]
    Flag { value: String, why: String },
}

impl RuntimeImages {
    /// Parses `versions.env` lines `LAMBDA_IMAGE_SHELL=ref` (also `PYTHON3`, `NODE`; optional
    /// `export ` and quotes); other lines are ignored.
    pub fn parse_env(text: &str) -> RuntimeImages {
        let mut m = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            let rt = match k.trim() {
                "LAMBDA_IMAGE_SHELL" => Runtime::Shell,
                "LAMBDA_IMAGE_PYTHON3" => Runtime::Python3,
                "LAMBDA_IMAGE_NODE" => Runtime::Node,
                _ => continue,
            };
            if !v.is_empty() {
                m.insert(rt, v.to_string());
            }
        }
        RuntimeImages(m)
    }

    /// Reads `path` (e.g. `$LAMBDA_HOME/images/versions.env`).
    pub fn from_env_file(path: &Path) -> Result<RuntimeImages, ImagesError> {
        let text = std::fs::read_to_string(path).map_err(|source| ImagesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse_env(&text))
    }

    /// Applies a `--runtime-image runtime=ref` flag (overrides the file).
    pub fn set_flag(&mut self, flag: &str) -> Result<(), ImagesError> {
        let err = |why: &str| ImagesError::Flag {
            value: flag.to_string(),
            why: why.to_string(),
        };
        let (rt, image) = flag
            .split_once('=')
            .ok_or_else(|| err("expected runtime=image"))?;
        let rt = match rt {
            "shell" => Runtime::Shell,
            "python3" => Runtime::Python3,
            "node" => Runtime::Node,
            _ => return Err(err("runtime must be shell, python3 or node")),
        };
        if image.is_empty() {
            return Err(err("empty image"));
        }
        self.0.insert(rt, image.to_string());
        Ok(())
    }

    /// The image a function runs: `spec.image` for `runtime: image`, else the configured one.
    pub fn image_for(&self, spec: &FunctionSpec) -> Option<String> {
        match spec.runtime {
            Runtime::Image => spec.image.clone(),
            rt => self.0.get(&rt).cloned(),
        }
    }
}

/// Hex SHA-256 of the parts, each followed by a NUL (so `["ab","c"]` and `["a","bc"]` differ).
pub(crate) fn hex_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// `s` if it fits in `max` characters, else its head and a hash of the whole (still unique).
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let hash = &hex_hash(&[s.as_bytes()])[..8];
    let head: String = s.chars().take(max - 9).collect();
    format!("{}-{hash}", head.trim_end_matches('-'))
}

/// The service name of a function: `lambda-<ns>-<name>`, shortened with a hash past 63 chars.
pub fn service_name(namespace: &str, name: &str) -> String {
    shorten(&format!("lambda-{namespace}-{name}"), MAX_NAME)
}

/// The first 8 hex digits of the code's SHA-256.
pub fn code_hash(code: &str) -> String {
    hex_hash(&[code.as_bytes()])[..8].to_string()
}

/// The Swarm secret holding one version of a platform secret for one function:
/// `lambda-<ns>-<name>-<secret>-<hash8>` (per function, so the function's cleanup and the sweep
/// remove it with the function's other objects).
pub fn secret_object_name(namespace: &str, name: &str, secret: &str, sha256: &str) -> String {
    let hash = sha256.get(..8).unwrap_or(sha256);
    format!(
        "{}-{hash}",
        shorten(&format!("lambda-{namespace}-{name}-{secret}"), MAX_NAME - 9)
    )
}

/// The config holding one version of a function's code: `lambda-<ns>-<name>-<hash8>`.
pub fn config_name(namespace: &str, name: &str, code_hash: &str) -> String {
    format!(
        "{}-{code_hash}",
        shorten(&format!("lambda-{namespace}-{name}"), MAX_NAME - 9)
    )
}

/// The owner labels of a function's Swarm objects.
pub fn owner(f: &Function, instance: &str) -> Owner {
    Owner {
        instance: instance.to_string(),
        kind: FunctionSpec::KIND.to_string(),
        namespace: f.metadata.namespace().to_string(),
        name: f.metadata.name.clone(),
        uid: f.metadata.uid.clone().unwrap_or_default(),
    }
}

/// A Swarm secret a function mounts, resolved to its id.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSecret {
    /// The Swarm secret's name.
    pub name: String,
    pub id: String,
    /// File name under `/run/secrets/` (the name in `spec.secrets`).
    pub target: String,
    /// Variable that receives the file's path.
    pub env: Option<String>,
}

/// A code config, resolved to its id.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    pub name: String,
    pub id: String,
}

/// Everything the service spec is made of.
#[derive(Debug, Clone)]
pub struct ServiceInputs<'a> {
    pub function: &'a Function,
    pub image: &'a str,
    pub code: Option<&'a ResolvedConfig>,
    pub secrets: &'a [ResolvedSecret],
    pub replicas: u32,
    pub instance: &'a str,
    pub tuning: &'a ServiceTuning,
    /// Swarm placement constraints of every function (e.g. `node.role==worker`).
    pub constraints: &'a [String],
}

/// The agent's environment, then the user's (validation keeps users out of `LAMBDA_`).
pub fn function_env(f: &Function, secrets: &[ResolvedSecret]) -> Vec<String> {
    let s = &f.spec;
    let mut env = vec![
        format!("LAMBDA_RUNTIME={}", s.runtime.as_str()),
        format!("LAMBDA_CODE={CODE_PATH}"),
        format!("LAMBDA_TIMEOUT_MS={}", u64::from(s.timeout_seconds) * 1000),
        format!("LAMBDA_MAX_PAYLOAD_BYTES={}", s.max_payload_bytes),
        format!("LAMBDA_CONCURRENCY={}", s.concurrency),
        format!(
            "LAMBDA_FUNCTION={}/{}",
            f.metadata.namespace(),
            f.metadata.name
        ),
        format!("LAMBDA_MEMORY_MB={}", s.resources.memory_mb),
        format!("LAMBDA_PORT={AGENT_PORT}"),
    ];
    if let Some(h) = s.handler() {
        env.push(format!("LAMBDA_HANDLER={h}"));
    }
    env.extend(s.env.iter().map(|v| format!("{}={}", v.name, v.value)));
    for sec in secrets {
        if let Some(var) = &sec.env {
            env.push(format!("{var}=/run/secrets/{}", sec.target));
        }
    }
    env
}

/// The service spec of a function (see the module docs of `reconcilers::function`): its agent
/// container hardened as every platform workload is ([`workload`]), with its code config and
/// secrets, labelled with its owner, its generation and the spec's hash.
pub fn service_spec(i: &ServiceInputs<'_>) -> ServiceSpec {
    let f = i.function;
    let owner = owner(f, i.instance);
    workload::service_spec(&workload::Workload {
        name: service_name(f.metadata.namespace(), &f.metadata.name),
        owner: &owner,
        generation: f.generation(),
        image: i.image,
        env: function_env(f, i.secrets),
        configs: i
            .code
            .map(|c| workload::file_config(&c.id, &c.name, CODE_PATH, 0o444))
            .into_iter()
            .collect(),
        secrets: i
            .secrets
            .iter()
            .map(|s| TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(s.target.clone()),
                    uid: Some(FUNCTION_UID.into()),
                    gid: Some(FUNCTION_UID.into()),
                    mode: Some(0o400),
                }),
                secret_id: Some(s.id.clone()),
                secret_name: Some(s.name.clone()),
            })
            .collect(),
        tmpfs: Vec::new(),
        memory_mb: f.spec.resources.memory_mb,
        cpu_millis: f.spec.resources.cpu_millis,
        replicas: i.replicas,
        tuning: i.tuning,
        constraints: i.constraints,
    })
}

/// Labels as a `HashMap` reference, empty when absent.
pub fn labels_or_empty(l: &Option<HashMap<String, String>>) -> HashMap<String, String> {
    l.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Object;
    use crate::swarm::labels;
    use bollard::models::{EndpointPortConfigPublishModeEnum, ServiceSpecUpdateConfigOrderEnum};

    fn function(yaml: &str) -> Function {
        let spec: FunctionSpec = serde_saphyr::from_str(yaml).expect("spec");
        let mut f = Object::new("team-a", "hello", spec);
        f.metadata.uid = Some("uid-1".into());
        f.metadata.generation = Some(42);
        f
    }

    #[test]
    fn names_fit_swarm_limits() {
        assert_eq!(service_name("default", "hello"), "lambda-default-hello");
        let long = "n".repeat(63);
        let s = service_name(&long, &long);
        assert_eq!(s.len(), 63);
        assert_ne!(
            s,
            service_name(&long, &"m".repeat(63)),
            "hash keeps them apart"
        );
        let c = config_name(&long, &long, "abcd1234");
        assert!(c.len() <= 63 && c.ends_with("-abcd1234"), "{c}");
        assert_eq!(
            config_name("default", "hello", "abcd1234"),
            "lambda-default-hello-abcd1234"
        );
        assert_eq!(code_hash("print(1)").len(), 8);
    }

    #[test]
    fn runtime_images_from_env_file_and_flags() {
        let mut im = RuntimeImages::parse_env(
            "# comment\nLAMBDA_IMAGE_SHELL=lambda/runtime-shell:1\nexport LAMBDA_IMAGE_PYTHON3=\"lambda/runtime-python3:2\"\nOTHER=x\n",
        );
        assert_eq!(im.0.len(), 2);
        im.set_flag("node=lambda/runtime-node:3").unwrap();
        im.set_flag("python3=mine:1").unwrap();
        assert!(im.set_flag("ruby=x").is_err());
        assert!(im.set_flag("nonsense").is_err());
        let f = function("runtime: python3\ncode:\n  inline: x\n");
        assert_eq!(im.image_for(&f.spec).as_deref(), Some("mine:1"));
        let f = function("runtime: image\nimage: custom:7\n");
        assert_eq!(im.image_for(&f.spec).as_deref(), Some("custom:7"));
        assert_eq!(
            RuntimeImages::default()
                .image_for(&function("runtime: shell\ncode:\n  inline: cat\n").spec),
            None
        );
    }

    #[test]
    fn service_spec_from_function() {
        let f = function(
            "runtime: python3\ncode:\n  inline: x\nenv:\n- name: GREETING\n  value: hi\nsecrets:\n- name: db\n  env: DB_FILE\nresources:\n  memoryMb: 256\n  cpuMillis: 250\ntimeoutSeconds: 5\nconcurrency: 3\n",
        );
        let code = ResolvedConfig {
            name: "lambda-team-a-hello-abcd1234".into(),
            id: "cfg1".into(),
        };
        let secrets = [ResolvedSecret {
            name: "db".into(),
            id: "sec1".into(),
            target: "db".into(),
            env: Some("DB_FILE".into()),
        }];
        let tuning = ServiceTuning::default();
        let inputs = ServiceInputs {
            function: &f,
            image: "lambda/runtime-python3:1",
            code: Some(&code),
            secrets: &secrets,
            replicas: 2,
            instance: "inst",
            tuning: &tuning,
            constraints: &[],
        };
        let s = service_spec(&inputs);
        assert_eq!(s.name.as_deref(), Some("lambda-team-a-hello"));
        let l = s.labels.as_ref().unwrap();
        assert_eq!(l[labels::MANAGED], "true");
        assert_eq!(l[labels::UID], "uid-1");
        assert_eq!(l[labels::GENERATION], "42");
        assert_eq!(l[labels::NAMESPACE], "team-a");
        assert_eq!(
            s.mode
                .as_ref()
                .unwrap()
                .replicated
                .as_ref()
                .unwrap()
                .replicas,
            Some(2)
        );
        let t = s.task_template.as_ref().unwrap();
        let c = t.container_spec.as_ref().unwrap();
        assert_eq!(c.init, Some(true));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.user.as_deref(), Some("10001"));
        assert_eq!(c.stop_grace_period, Some(2_000_000_000));
        assert!(!c.labels.as_ref().unwrap().contains_key(labels::GENERATION));
        let env = c.env.as_ref().unwrap();
        for want in [
            "LAMBDA_RUNTIME=python3",
            "LAMBDA_HANDLER=main.handler",
            "LAMBDA_CODE=/var/lambda/code",
            "LAMBDA_TIMEOUT_MS=5000",
            "LAMBDA_CONCURRENCY=3",
            "LAMBDA_FUNCTION=team-a/hello",
            "LAMBDA_MEMORY_MB=256",
            "LAMBDA_PORT=8080",
            "GREETING=hi",
            "DB_FILE=/run/secrets/db",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} missing from {env:?}");
        }
        let cfg = &c.configs.as_ref().unwrap()[0];
        assert_eq!(cfg.config_id.as_deref(), Some("cfg1"));
        let file = cfg.file.as_ref().unwrap();
        assert_eq!(
            (file.name.as_deref(), file.uid.as_deref(), file.mode),
            (Some("/var/lambda/code"), Some("10001"), Some(0o444))
        );
        assert_eq!(
            c.secrets.as_ref().unwrap()[0].secret_id.as_deref(),
            Some("sec1")
        );
        let r = t.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap().memory_bytes, Some(256 << 20));
        assert_eq!(r.limits.as_ref().unwrap().nano_cpus, Some(250_000_000));
        assert_eq!(
            r.reservations.as_ref().unwrap().memory_bytes,
            Some(256 << 20)
        );
        assert_eq!(
            t.restart_policy.as_ref().unwrap().delay,
            Some(1_000_000_000)
        );
        let u = s.update_config.as_ref().unwrap();
        assert_eq!(u.order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        assert_eq!(u.parallelism, Some(1));
        let p = &s.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            p.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!((p.target_port, p.published_port), (Some(8080), None));

        // The hash is stable, ignores the generation, and follows real changes.
        let again = service_spec(&inputs);
        assert_eq!(
            label_of(Some(&s), labels::SPEC_HASH),
            label_of(Some(&again), labels::SPEC_HASH)
        );
        let mut g = f.clone();
        g.metadata.generation = Some(43);
        let s43 = service_spec(&ServiceInputs {
            function: &g,
            ..inputs.clone()
        });
        assert_eq!(
            label_of(Some(&s), labels::SPEC_HASH),
            label_of(Some(&s43), labels::SPEC_HASH)
        );
        let s3 = service_spec(&ServiceInputs {
            replicas: 3,
            ..inputs
        });
        assert_ne!(
            label_of(Some(&s), labels::SPEC_HASH),
            label_of(Some(&s3), labels::SPEC_HASH)
        );
    }

    #[test]
    fn shell_has_no_handler_and_image_runtime_no_code() {
        let f = function("runtime: shell\ncode:\n  inline: cat\n");
        let env = function_env(&f, &[]);
        assert!(!env.iter().any(|e| e.starts_with("LAMBDA_HANDLER")));
        let tuning = ServiceTuning::default();
        let f = function("runtime: image\nimage: custom:1\n");
        let s = service_spec(&ServiceInputs {
            function: &f,
            image: "custom:1",
            code: None,
            secrets: &[],
            replicas: 1,
            instance: "i",
            tuning: &tuning,
            constraints: &[],
        });
        let c = s.task_template.unwrap().container_spec.unwrap();
        assert!(c.configs.is_none() && c.secrets.is_none());
    }
}
