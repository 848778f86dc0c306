//! Configs (function code; immutable, so one per code version) and secrets.

use std::collections::HashMap;

use base64::Engine;
use bollard::models::{Config, ConfigSpec, Secret, SecretSpec};
use bollard::query_parameters::{ListConfigsOptionsBuilder, ListSecretsOptionsBuilder};

use super::{Swarm, SwarmError, labels};

impl Swarm {
    /// Creates config `name` holding `data`, or returns the id of the config of that name when
    /// it exists already (configs are immutable: a name is only ever used for one content, so
    /// an existing one is the same, e.g. made by a reconcile that was interrupted).
    pub async fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<String, SwarmError> {
        let object = format!("config {name}");
        let spec = ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.docker.create_config(spec).await {
            Ok(r) => Ok(r.id),
            Err(e) => {
                let e = SwarmError::from_bollard("create", &object, e);
                if !e.is_conflict() {
                    return Err(e);
                }
                self.find_config(name).await?.ok_or(e)
            }
        }
    }

    /// The id of the config named exactly `name`.
    pub async fn find_config(&self, name: &str) -> Result<Option<String>, SwarmError> {
        let f = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListConfigsOptionsBuilder::default().filters(&f).build();
        let found = self
            .docker
            .list_configs(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", &format!("config {name}"), e))?;
        // The name filter matches prefixes; keep the exact match.
        Ok(found
            .into_iter()
            .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|c| c.id))
    }

    /// Configs whose labels include all of `labels`.
    pub async fn list_configs(&self, labels: &[(&str, &str)]) -> Result<Vec<Config>, SwarmError> {
        let opts = ListConfigsOptionsBuilder::default()
            .filters(&labels::filters(labels))
            .build();
        self.docker
            .list_configs(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", "configs", e))
    }

    /// Removes a config; absent is fine, one still used by a service is
    /// [`SwarmError::Conflict`].
    pub async fn remove_config(&self, id: &str) -> Result<(), SwarmError> {
        match self.docker.delete_config(id).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard("remove", &format!("config {id}"), e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Creates secret `name` holding `data`, or returns the id of the secret of that name when
    /// it exists (the platform names secrets after their content's hash, as configs).
    pub async fn ensure_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<String, SwarmError> {
        let object = format!("secret {name}");
        let spec = SecretSpec {
            name: Some(name.to_string()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.docker.create_secret(spec).await {
            Ok(r) => Ok(r.id),
            Err(e) => {
                let e = SwarmError::from_bollard("create", &object, e);
                if !e.is_conflict() {
                    return Err(e);
                }
                self.find_secret(name).await?.ok_or(e)
            }
        }
    }

    /// Secrets whose labels include all of `labels`.
    pub async fn list_secrets(&self, labels: &[(&str, &str)]) -> Result<Vec<Secret>, SwarmError> {
        let opts = ListSecretsOptionsBuilder::default()
            .filters(&labels::filters(labels))
            .build();
        self.docker
            .list_secrets(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", "secrets", e))
    }

    /// The id of the secret named exactly `name`.
    pub async fn find_secret(&self, name: &str) -> Result<Option<String>, SwarmError> {
        let f = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let opts = ListSecretsOptionsBuilder::default().filters(&f).build();
        let found = self
            .docker
            .list_secrets(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", &format!("secret {name}"), e))?;
        Ok(found
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name))
            .and_then(|s| s.id))
    }

    /// Removes a secret; absent is fine.
    pub async fn remove_secret(&self, id: &str) -> Result<(), SwarmError> {
        match self.docker.delete_secret(id).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard("remove", &format!("secret {id}"), e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }
}
