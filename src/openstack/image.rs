//! Glance v2: images by id or name, their status, deletion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::auth::{Request, Session};
use super::compute::{join, looks_like_uuid, unique};
use super::error::{Error, Result};

/// An image's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ImageStatus {
    Queued,
    Saving,
    Uploading,
    Importing,
    Active,
    Deactivated,
    Killed,
    Deleted,
    PendingDelete,
    /// Anything newer.
    #[serde(other)]
    Other,
}

/// A Glance image (unknown properties kept in `properties`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Image {
    /// Id.
    pub id: String,
    /// Name (may be absent).
    #[serde(default)]
    pub name: Option<String>,
    /// Status.
    pub status: ImageStatus,
    /// Size in bytes, once uploaded.
    #[serde(default)]
    pub size: Option<u64>,
    /// `public`, `private`, `shared`, `community`.
    #[serde(default)]
    pub visibility: Option<String>,
    /// `raw`, `qcow2`, ...
    #[serde(default)]
    pub disk_format: Option<String>,
    /// `bare`, ...
    #[serde(default)]
    pub container_format: Option<String>,
    /// Owner project.
    #[serde(default)]
    pub owner: Option<String>,
    /// Minimum disk (GiB).
    #[serde(default)]
    pub min_disk: Option<u64>,
    /// Minimum RAM (MiB).
    #[serde(default)]
    pub min_ram: Option<u64>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Created.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Updated.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Every other property (snapshot metadata, `image_type`, `instance_uuid`, ...).
    #[serde(flatten)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// The Glance client of a session.
#[derive(Debug, Clone)]
pub struct ImageService {
    session: Arc<Session>,
    /// `.../v2/`
    base: Url,
}

/// `<endpoint>/v2/` unless the endpoint already names the version.
pub(crate) fn versioned(mut endpoint: Url, version: &str) -> Url {
    let path = endpoint.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with(&format!("/{version}")) {
        format!("{path}/")
    } else {
        format!("{path}/{version}/")
    };
    endpoint.set_path(&path);
    endpoint
}

impl ImageService {
    /// The image service of the catalog.
    pub async fn connect(session: Arc<Session>) -> Result<Self> {
        let base = versioned(session.endpoint("image").await?, "v2");
        Ok(ImageService { session, base })
    }

    /// The `.../v2/` URL.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// An image by id.
    pub async fn get_image(&self, id: &str) -> Result<Image> {
        let url = join(&self.base, &["images", id])?;
        self.session
            .send(Request::new("image", Method::GET, url))
            .await?
            .json()
    }

    /// Images with exactly this name (all pages).
    pub async fn list_images_by_name(&self, name: &str) -> Result<Vec<Image>> {
        self.list(&[("name", name)]).await
    }

    /// Every image the project sees (all pages).
    pub async fn list_images(&self) -> Result<Vec<Image>> {
        self.list(&[]).await
    }

    /// Images matching Glance's `filters` (query parameters), all pages.
    async fn list(&self, filters: &[(&str, &str)]) -> Result<Vec<Image>> {
        #[derive(Deserialize)]
        struct Page {
            images: Vec<Image>,
            #[serde(default)]
            next: Option<String>,
        }
        let mut url = join(&self.base, &["images"])?;
        if !filters.is_empty() {
            url.query_pairs_mut().extend_pairs(filters);
        }
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let page: Page = self
                .session
                .send(Request::new("image", Method::GET, url.clone()))
                .await?
                .json()?;
            let empty = page.images.is_empty();
            out.extend(page.images);
            match page.next {
                // "next": "/v2/images?marker=...&name=..." — relative to the service root
                Some(next) if !empty => {
                    let q = next.split_once('?').map(|(_, q)| q.to_owned());
                    url.set_query(q.as_deref());
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// An image by id (when the string is a uuid), else by exact name.
    pub async fn find_image(&self, name_or_id: &str) -> Result<Image> {
        if looks_like_uuid(name_or_id) {
            match self.get_image(name_or_id).await {
                Ok(i) => return Ok(i),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let matches = self.list_images_by_name(name_or_id).await?;
        unique("image", name_or_id, matches, |i| i.id.clone())
    }

    /// Delete an image.
    pub async fn delete_image(&self, id: &str) -> Result<()> {
        let url = join(&self.base, &["images", id])?;
        self.session
            .send(Request::new("image", Method::DELETE, url))
            .await?;
        Ok(())
    }

    /// Poll an image until it is `active`; `killed`/`deleted` fail.
    pub async fn wait_for_active(&self, id: &str, timeout: Duration) -> Result<Image> {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let i = self.get_image(id).await?;
            match i.status {
                ImageStatus::Active => return Ok(i),
                ImageStatus::Killed | ImageStatus::Deleted | ImageStatus::PendingDelete => {
                    return Err(Error::Failed {
                        what: format!("image {id}"),
                        message: format!("status {:?}", i.status),
                    });
                }
                _ => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimeout {
                    what: format!("image {id} to be active"),
                    waited: timeout,
                    last: format!("{:?}", i.status),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_urls() {
        let v = |s: &str| versioned(Url::parse(s).unwrap(), "v2").to_string();
        assert_eq!(v("http://glance:9292"), "http://glance:9292/v2/");
        assert_eq!(v("http://glance:9292/"), "http://glance:9292/v2/");
        assert_eq!(v("https://cloud/image"), "https://cloud/image/v2/");
        assert_eq!(v("https://cloud/image/v2"), "https://cloud/image/v2/");
        assert_eq!(v("https://cloud/image/v2/"), "https://cloud/image/v2/");
    }

    #[test]
    fn image_parsing() {
        let i: Image = serde_json::from_value(serde_json::json!({
            "id": "x", "name": "snap", "status": "active", "size": 65536, "visibility": "private",
            "image_type": "snapshot", "instance_uuid": "s", "from": "probe", "tags": []
        }))
        .unwrap();
        assert_eq!(i.status, ImageStatus::Active);
        assert_eq!(i.properties["image_type"], "snapshot");
        let i: Image =
            serde_json::from_value(serde_json::json!({"id": "x", "status": "weird", "name": null}))
                .unwrap();
        assert_eq!(i.status, ImageStatus::Other);
    }
}
