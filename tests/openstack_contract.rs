//! Contract tests of the OpenStack client against a real cloud: the test OpenStack of
//! `scripts/openstack/up.sh` (Keystone, Nova with the fake driver, Glance, Neutron), and later
//! the project's own emulator (`lambda cloud`) — the same functions against either target.
//!
//! The target comes from the environment (see [`Target::load`]):
//! - `LAMBDA_OS_ENV`: a file of `export LAMBDA_OS_...=...` lines (scripts/openstack/up.sh
//!   writes `$LAMBDA_HOME/openstack/env`); variables set in the process override it.
//! - `LAMBDA_OS_OPENRC` (alias `LAMBDA_OPENSTACK_OPENRC`): openrc of the platform's project
//!   (required); `LAMBDA_OS_OPENRC_APPCRED`: openrc of an application credential (required);
//!   `LAMBDA_OS_OPENRC_QUOTA_TEST` (or `LAMBDA_OS_OPENRC_QUOTA`): openrc of a project whose
//!   instance quota is `LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA` (default 1) (required); `LAMBDA_OS_CLOUDS_YAML` +
//!   `LAMBDA_OS_CLOUD`: clouds.yaml and the cloud in it (required);
//!   `LAMBDA_OS_FLAVOR`, `LAMBDA_OS_IMAGE` (required), `LAMBDA_OS_NETWORK`,
//!   `LAMBDA_OS_KEYPAIR` (optional: servers are created without network / key pair if unset),
//!   `LAMBDA_OS_OPENRC_ADMIN` (optional: an admin reads back the stored user data).
//!
//! Gate: without any of `LAMBDA_OS_ENV` / `LAMBDA_OS_OPENRC` / `LAMBDA_OPENSTACK_OPENRC` the
//! tests say so on stderr and pass, so that a plain `cargo test` on a laptop works — unless
//! `LAMBDA_OPENSTACK_CONTRACT=1` (set by CI), which makes a missing target a failure. With a
//! target configured, an unreachable cloud always fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use lambda::openstack::config::parse_openrc;
use lambda::openstack::{
    CloudConfig, Compute, Error, ImageStatus, NetworkSpec, OpenStack, ServerFilter, ServerSpec,
    ServerStatus, Session, SessionOptions,
};

/// Where the cloud under test is and what it is seeded with.
#[derive(Debug, Clone)]
struct Target {
    openrc: PathBuf,
    openrc_appcred: PathBuf,
    openrc_quota: PathBuf,
    openrc_admin: Option<PathBuf>,
    quota_instances: usize,
    clouds_yaml: PathBuf,
    cloud: String,
    flavor: String,
    image: String,
    network: Option<String>,
    keypair: Option<String>,
    /// The notification bus (`LAMBDA_OS_NOTIFICATION_URL`, an `amqp://` URL), if the target
    /// sends Nova's notifications.
    notification_url: Option<String>,
}

const GATE: &str = "LAMBDA_OPENSTACK_CONTRACT";

impl Target {
    /// The target, `None` when none is configured and the gate is off; panics with what is
    /// missing otherwise.
    fn load() -> Option<Target> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let env_file = std::env::var("LAMBDA_OS_ENV")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(f) = &env_file {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| {
                panic!("LAMBDA_OS_ENV={f}: cannot read it ({e}); is the test OpenStack up (scripts/openstack/up.sh)?")
            });
            vars.extend(parse_openrc(&text));
        }
        for (k, v) in std::env::vars() {
            if k.starts_with("LAMBDA_OS_") || k == "LAMBDA_OPENSTACK_OPENRC" {
                vars.insert(k, v);
            }
        }
        if let Some(v) = vars.get("LAMBDA_OPENSTACK_OPENRC").cloned() {
            vars.entry("LAMBDA_OS_OPENRC".into()).or_insert(v);
        }
        let gate = std::env::var(GATE).is_ok_and(|v| !v.is_empty() && v != "0");
        if !vars.contains_key("LAMBDA_OS_OPENRC") {
            if gate {
                panic!(
                    "{GATE} is set but no OpenStack target is configured: set LAMBDA_OS_ENV to the env file written by scripts/openstack/up.sh (e.g. $LAMBDA_HOME/openstack/env), or LAMBDA_OS_OPENRC and friends (see tests/openstack_contract.rs)"
                );
            }
            eprintln!(
                "SKIPPED: OpenStack contract test: no target (set LAMBDA_OS_ENV=$LAMBDA_HOME/openstack/env, or {GATE}=1 to make this a failure)"
            );
            return None;
        }
        let need = |k: &str| -> String {
            vars.get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "OpenStack contract target: {k} is not set (env file: {})",
                        env_file.as_deref().unwrap_or("none")
                    )
                })
        };
        let opt = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        // names of the quota project's variables: scripts/openstack/up.sh writes *_QUOTA_TEST*
        let alias = |k: &str, alt: &str| -> String {
            opt(k).or_else(|| opt(alt)).unwrap_or_else(|| {
                panic!(
                    "OpenStack contract target: {k} (or {alt}) is not set (env file: {})",
                    env_file.as_deref().unwrap_or("none")
                )
            })
        };
        Some(Target {
            openrc: need("LAMBDA_OS_OPENRC").into(),
            openrc_appcred: need("LAMBDA_OS_OPENRC_APPCRED").into(),
            openrc_quota: alias("LAMBDA_OS_OPENRC_QUOTA_TEST", "LAMBDA_OS_OPENRC_QUOTA").into(),
            quota_instances: opt("LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA")
                .or_else(|| opt("LAMBDA_OS_QUOTA_INSTANCES"))
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("LAMBDA_OS_QUOTA_INSTANCES={v:?}"))
                })
                .unwrap_or(1),
            openrc_admin: opt("LAMBDA_OS_OPENRC_ADMIN").map(PathBuf::from),
            clouds_yaml: need("LAMBDA_OS_CLOUDS_YAML").into(),
            cloud: need("LAMBDA_OS_CLOUD"),
            flavor: need("LAMBDA_OS_FLAVOR"),
            image: need("LAMBDA_OS_IMAGE"),
            network: opt("LAMBDA_OS_NETWORK"),
            keypair: opt("LAMBDA_OS_KEYPAIR"),
            notification_url: opt("LAMBDA_OS_NOTIFICATION_URL"),
        })
    }

    fn config(&self) -> CloudConfig {
        CloudConfig::from_openrc_file(&self.openrc)
            .unwrap_or_else(|e| panic!("openrc {}: {e}", self.openrc.display()))
    }

    async fn connect(&self) -> OpenStack {
        connect(self.config()).await
    }
}

async fn connect(config: CloudConfig) -> OpenStack {
    let source = config.source.clone();
    OpenStack::connect(config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the OpenStack of {source}: {e}"))
}

/// A tag unique to this test run and test, so parallel tests and old runs never collide.
fn run_tag(test: &str) -> String {
    format!("contract-{test}-{}", std::process::id())
}

/// Delete every server carrying `tag` and wait until they are gone.
async fn cleanup(os: &OpenStack, tag: &str) {
    let filter = ServerFilter {
        tags: vec![tag.to_owned()],
        ..Default::default()
    };
    let Ok(servers) = os.compute().list_servers(&filter).await else {
        return;
    };
    for s in &servers {
        let _ = os.compute().delete_server(&s.id).await;
    }
    for s in &servers {
        let _ = os
            .compute()
            .wait_for_server_gone(&s.id, Duration::from_secs(60))
            .await;
    }
}

fn timed(name: &str, start: Instant) {
    eprintln!("[contract] {name}: {:.2}s", start.elapsed().as_secs_f64());
}

#[tokio::test]
async fn auth_from_openrc_password() {
    let Some(t) = Target::load() else { return };
    let start = Instant::now();
    let os = t.connect().await;
    let token = os.session().token().await.expect("token");
    assert!(token.project_id.is_some(), "a project-scoped token");
    assert!(token.expires_at > chrono::Utc::now());
    assert_eq!(os.session().auth_count(), 1, "one token for connect");
    // the token is cached: more calls, no more tokens
    os.compute().list_flavors().await.expect("flavors");
    os.image().find_image(&t.image).await.expect("image");
    assert_eq!(os.session().auth_count(), 1);
    timed("auth_from_openrc_password", start);
}

#[tokio::test]
async fn auth_from_clouds_yaml() {
    let Some(t) = Target::load() else { return };
    let start = Instant::now();
    let vars: BTreeMap<&str, String> = [
        ("OS_CLOUD", t.cloud.clone()),
        ("OS_CLIENT_CONFIG_FILE", t.clouds_yaml.display().to_string()),
    ]
    .into_iter()
    .collect();
    let config = CloudConfig::from_vars(&|k| vars.get(k).cloned(), "test").expect("clouds.yaml");
    assert!(config.source.contains(&t.cloud), "{}", config.source);
    let os = connect(config).await;
    let flavors = os.compute().list_flavors().await.expect("flavors");
    assert!(flavors.iter().any(|f| f.name == t.flavor), "{flavors:?}");
    // same project as the openrc
    let a = os.session().token().await.unwrap().project_id.clone();
    let b = t
        .connect()
        .await
        .session()
        .token()
        .await
        .unwrap()
        .project_id
        .clone();
    assert_eq!(a, b);
    timed("auth_from_clouds_yaml", start);
}

#[tokio::test]
async fn auth_with_application_credential() {
    let Some(t) = Target::load() else { return };
    let start = Instant::now();
    let config = CloudConfig::from_openrc_file(&t.openrc_appcred).expect("appcred openrc");
    assert!(matches!(
        config.auth,
        lambda::openstack::AuthMethod::ApplicationCredential { .. }
    ));
    let os = connect(config).await;
    os.compute()
        .find_flavor(&t.flavor)
        .await
        .expect("flavor via appcred");
    timed("auth_with_application_credential", start);
}

#[tokio::test]
async fn wrong_password_is_unauthorized_with_request_id() {
    let Some(t) = Target::load() else { return };
    let mut config = t.config();
    if let lambda::openstack::AuthMethod::Password { password, .. } = &mut config.auth {
        *password = lambda::openstack::Secret::new("definitely-wrong");
    }
    let e = OpenStack::connect(config)
        .await
        .expect_err("wrong password");
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    assert!(e.request_id().is_some(), "request id in {e}");
    assert!(e.to_string().contains("identity POST"), "{e}");
}

#[tokio::test]
async fn token_refresh_on_401_and_before_expiry() {
    let Some(t) = Target::load() else { return };
    let start = Instant::now();
    // a session whose token dies behind its back before any service has cached it (services
    // cache validated tokens for minutes): the next call gets a 401, re-authenticates once
    // and succeeds
    let session = Arc::new(Session::new(t.config(), SessionOptions::default()).expect("session"));
    let first = session.token().await.expect("token");
    session.revoke(&first).await.expect("revoke");
    let compute = Compute::connect(session.clone()).await.expect("compute");
    let flavors = compute
        .list_flavors()
        .await
        .expect("flavors after revocation");
    assert!(!flavors.is_empty());
    assert_eq!(session.auth_count(), 2, "exactly one re-authentication");
    let second = session.token().await.unwrap();
    assert_ne!(first.refresh_at, second.refresh_at);
    compute.list_flavors().await.expect("cached again");
    assert_eq!(session.auth_count(), 2);

    // refresh before expiry: the token is due `refresh_margin` (at most half its lifetime)
    // before Keystone's expires_at, measured on the monotonic clock
    let lifetime = (second.expires_at - second.issued_at.expect("issued_at"))
        .to_std()
        .unwrap();
    let due_in = second
        .refresh_at
        .saturating_duration_since(tokio::time::Instant::now());
    let margin = SessionOptions::default().refresh_margin.min(lifetime / 2);
    assert!(
        due_in <= lifetime - margin && due_in + Duration::from_secs(30) >= lifetime - margin,
        "refresh due in {due_in:?}, lifetime {lifetime:?}"
    );
    // logout revokes and forgets: the next call gets a fresh token without a 401
    session.logout().await.expect("logout");
    compute.list_flavors().await.expect("after logout");
    assert_eq!(session.auth_count(), 3);
    timed("token_refresh", start);
}

#[tokio::test]
async fn catalog_lookup() {
    let Some(t) = Target::load() else { return };
    let os = t.connect().await;
    let token = os.session().token().await.unwrap();
    let config = os.session().config();
    for ty in ["compute", "image", "identity"] {
        let url = token
            .catalog
            .endpoint(ty, &config.interface, config.region.as_deref())
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert!(url.scheme().starts_with("http"), "{url}");
    }
    if t.network.is_some() {
        os.network().expect("network endpoint");
    }
    let e = token
        .catalog
        .endpoint("no-such-service", "public", None)
        .unwrap_err();
    assert!(matches!(e, Error::NoEndpoint { .. }), "{e}");
    let e = token
        .catalog
        .endpoint("compute", "public", Some("NoSuchRegion"))
        .unwrap_err();
    assert!(e.to_string().contains("compute ("), "{e}");
    // the pinned microversion was checked against the version document
    let max = os.compute().api_version().version.clone();
    assert!(
        lambda::openstack::compute::Microversion::parse(&max)
            >= lambda::openstack::compute::Microversion::parse(
                lambda::openstack::COMPUTE_MICROVERSION
            ),
        "max {max}"
    );
}

#[tokio::test]
async fn lookup_by_name_and_id() {
    let Some(t) = Target::load() else { return };
    let start = Instant::now();
    let os = t.connect().await;
    let c = os.compute();
    let f = c.find_flavor(&t.flavor).await.expect("flavor by name");
    assert_eq!(f.name, t.flavor);
    assert_eq!(c.find_flavor(&f.id).await.expect("flavor by id"), f);
    let i = os
        .image()
        .find_image(&t.image)
        .await
        .expect("image by name");
    assert_eq!(i.status, ImageStatus::Active);
    assert_eq!(os.image().find_image(&i.id).await.expect("by id").id, i.id);
    if let Some(n) = &t.network {
        let net = os
            .network()
            .unwrap()
            .find_network(n)
            .await
            .expect("network");
        assert_eq!(&net.name, n);
        let again = os.network().unwrap().find_network(&net.id).await.unwrap();
        assert_eq!(again.id, net.id);
    }
    if let Some(k) = &t.keypair {
        let kp = c.get_keypair(k).await.expect("key pair");
        assert_eq!(&kp.name, k);
        assert!(!kp.public_key.is_empty());
    }
    let zones = c.list_availability_zones().await.expect("zones");
    let first = zones.first().expect("at least one availability zone");
    assert_eq!(
        c.find_availability_zone(&first.name).await.unwrap().name,
        first.name
    );
    timed("lookup_by_name_and_id", start);
}

#[tokio::test]
async fn unknown_flavor_image_network_keypair() {
    let Some(t) = Target::load() else { return };
    let os = t.connect().await;
    let spec = |f: &str, i: &str| ServerSpec {
        name: "never-created".into(),
        flavor: f.into(),
        image: i.into(),
        ..Default::default()
    };
    let e = os
        .resolve(&spec("no-such-flavor", &t.image))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSuchResource {
                resource: "flavor",
                ..
            }
        ),
        "{e}"
    );
    let e = os
        .resolve(&spec(&t.flavor, "no-such-image"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSuchResource {
                resource: "image",
                ..
            }
        ),
        "{e}"
    );
    let e = os
        .resolve(&spec(&t.flavor, "00000000-0000-4000-8000-000000000000"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSuchResource {
                resource: "image",
                ..
            }
        ),
        "{e}"
    );
    let mut s = spec(&t.flavor, &t.image);
    s.key_name = Some("no-such-key".into());
    let e = os.resolve(&s).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSuchResource {
                resource: "key pair",
                ..
            }
        ),
        "{e}"
    );
    if t.network.is_some() {
        let mut s = spec(&t.flavor, &t.image);
        s.networks = NetworkSpec::Named(vec!["no-such-net".into()]);
        let e = os.resolve(&s).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::NoSuchResource {
                    resource: "network",
                    ..
                }
            ),
            "{e}"
        );
    }
    // straight to Nova with an unknown flavor id: Nova's own 400
    let mut req = os.resolve(&spec(&t.flavor, &t.image)).await.unwrap();
    req.flavor_id = "no-such-flavor-id".into();
    let e = os.compute().create_server(&req).await.unwrap_err();
    assert!(matches!(e, Error::BadRequest(_)), "{e}");
    assert!(e.request_id().is_some(), "{e}");
}

#[tokio::test]
async fn bad_request_from_nova() {
    let Some(t) = Target::load() else { return };
    let os = t.connect().await;
    let tag = run_tag("badreq");
    let mut spec = ServerSpec {
        name: "contract-bad".into(),
        flavor: t.flavor.clone(),
        image: t.image.clone(),
        tags: vec![tag.clone()],
        ..Default::default()
    };
    // metadata values are limited to 255 characters (keys to `^[a-zA-Z0-9-_:. ]{1,255}$`)
    spec.metadata.insert("k".into(), "x".repeat(300));
    let e = os.create_server(&spec).await.unwrap_err();
    cleanup(&os, &tag).await;
    match &e {
        Error::BadRequest(ctx) => {
            assert_eq!(ctx.status.as_u16(), 400);
            assert_eq!(ctx.service, "compute");
            assert_eq!(ctx.method, "POST");
            assert!(
                ctx.request_id
                    .as_deref()
                    .is_some_and(|r| r.starts_with("req-")),
                "{e}"
            );
            assert!(!ctx.message.is_empty(), "{e}");
        }
        other => panic!("expected BadRequest, got {other}"),
    }
}

#[tokio::test]
async fn not_found_is_typed_with_request_id() {
    let Some(t) = Target::load() else { return };
    let os = t.connect().await;
    let missing = "00000000-0000-4000-8000-000000000001";
    let e = os.compute().get_server(missing).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let ctx = e.api_context().unwrap();
    assert!(ctx.message.contains(missing), "{e}");
    assert!(ctx.request_id.is_some(), "{e}");
    let e = os.compute().delete_server(missing).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = os.image().get_image(missing).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        !e.api_context().unwrap().message.contains('<'),
        "HTML stripped: {e}"
    );
    if t.network.is_some() {
        let e = os
            .network()
            .unwrap()
            .get_network(missing)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}

#[tokio::test]
async fn server_lifecycle() {
    let Some(t) = Target::load() else { return };
    let os = t.connect().await;
    let tag = run_tag("lifecycle");
    let result = lifecycle(&t, &os, &tag).await;
    cleanup(&os, &tag).await;
    if let Err(e) = result {
        panic!("server lifecycle: {e}");
    }
}

async fn lifecycle(t: &Target, os: &OpenStack, tag: &str) -> Result<(), Error> {
    let c = os.compute();
    let mut metadata = BTreeMap::new();
    metadata.insert("lambda:pool".to_owned(), "workers".to_owned());
    metadata.insert("lambda:node".to_owned(), tag.to_owned());
    let user_data = b"#cloud-config\nruncmd:\n  - echo hello\n".to_vec();
    let sent_user_data = user_data.clone();
    let spec = ServerSpec {
        name: format!("{tag}-vm"),
        flavor: t.flavor.clone(),
        image: t.image.clone(),
        networks: match &t.network {
            Some(n) => NetworkSpec::Named(vec![n.clone()]),
            None => NetworkSpec::None,
        },
        key_name: t.keypair.clone(),
        user_data: Some(user_data),
        metadata: metadata.clone(),
        tags: vec![tag.to_owned(), "lambda-contract".to_owned()],
        ..Default::default()
    };
    let start = Instant::now();
    let id = os.create_server(&spec).await?;
    let s = c
        .wait_for_server(&id, ServerStatus::Active, Duration::from_secs(120))
        .await?;
    timed("create -> ACTIVE", start);
    assert_eq!(s.name, spec.name);
    for (k, v) in &metadata {
        assert_eq!(s.metadata.get(k), Some(v), "metadata {k}");
    }
    let mut tags = s.tags.clone();
    tags.sort();
    let mut want = spec.tags.clone();
    want.sort();
    assert_eq!(tags, want);
    let image = os.image().find_image(&t.image).await?;
    assert_eq!(s.image_id(), Some(image.id.as_str()));
    assert_eq!(s.flavor_name(), Some(t.flavor.as_str()));
    assert_eq!(s.key_name, t.keypair);
    if let Some(n) = &t.network {
        assert!(s.addresses.contains_key(n), "addresses {:?}", s.addresses);
    }

    // the user data arrived intact (only admins may read it back)
    if let Some(admin) = &t.openrc_admin {
        let admin = connect(CloudConfig::from_openrc_file(admin).expect("admin openrc")).await;
        let stored = admin.compute().get_server(&id).await?.user_data;
        let stored = stored.expect("user data visible to the admin");
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(stored.as_bytes())
            .expect("base64 user data");
        assert_eq!(decoded, sent_user_data);
    }

    // list by tag: exactly ours; by anchored name: ours
    let listed = c
        .list_servers(&ServerFilter {
            tags: vec![tag.to_owned()],
            ..Default::default()
        })
        .await?;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let listed = c
        .list_servers(&ServerFilter {
            name: Some(format!("^{}$", spec.name)),
            ..Default::default()
        })
        .await?;
    assert_eq!(listed.len(), 1);
    let none = c
        .list_servers(&ServerFilter {
            tags: vec![format!("{tag}-other")],
            ..Default::default()
        })
        .await?;
    assert!(none.is_empty());

    // createImage -> active image
    let start = Instant::now();
    let mut snap_meta = BTreeMap::new();
    snap_meta.insert("lambda:from".to_owned(), tag.to_owned());
    let image_id = c
        .create_image(&id, &format!("{tag}-snap"), &snap_meta)
        .await?;
    let img = os
        .image()
        .wait_for_active(&image_id, Duration::from_secs(120))
        .await;
    timed("createImage -> active", start);
    let img = match img {
        Ok(i) => i,
        Err(e) => {
            let _ = os.image().delete_image(&image_id).await;
            return Err(e);
        }
    };
    assert_eq!(img.name.as_deref(), Some(format!("{tag}-snap").as_str()));
    assert_eq!(
        img.properties.get("lambda:from").and_then(|v| v.as_str()),
        Some(tag)
    );
    let found = os.image().find_image(&format!("{tag}-snap")).await?;
    assert_eq!(found.id, image_id);
    // the server finishes its image task before it can be deleted cleanly
    c.wait_for_server(&id, ServerStatus::Active, Duration::from_secs(60))
        .await?;

    // delete -> gone -> 404 with request id
    let start = Instant::now();
    c.delete_server(&id).await?;
    c.wait_for_server_gone(&id, Duration::from_secs(60)).await?;
    timed("delete -> gone", start);
    let e = c.get_server(&id).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.request_id().is_some(), "{e}");
    os.image().delete_image(&image_id).await?;
    let e = os.image().get_image(&image_id).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    Ok(())
}

#[tokio::test]
async fn quota_exceeded() {
    let Some(t) = Target::load() else { return };
    let config = CloudConfig::from_openrc_file(&t.openrc_quota).expect("quota openrc");
    let os = connect(config).await;
    // a dedicated project: whatever runs there is a leftover of an earlier run
    let leftovers = os
        .compute()
        .list_servers(&ServerFilter::default())
        .await
        .expect("list");
    for s in &leftovers {
        let _ = os.compute().delete_server(&s.id).await;
    }
    for s in &leftovers {
        let _ = os
            .compute()
            .wait_for_server_gone(&s.id, Duration::from_secs(60))
            .await;
    }
    let tag = run_tag("quota");
    let result = async {
        let mut created = Vec::new();
        for i in 0..t.quota_instances {
            let spec = ServerSpec {
                name: format!("{tag}-{i}"),
                flavor: t.flavor.clone(),
                image: t.image.clone(),
                tags: vec![tag.clone()],
                ..Default::default()
            };
            let id = os.create_server(&spec).await?;
            // Nova counts instances at the API from the cell database, where a server lands
            // only once scheduled: a second create racing the first can pass the API check
            // (the conductor's recheck then puts it in ERROR). Wait, so the refusal is certain.
            os.compute()
                .wait_for_server(&id, ServerStatus::Active, Duration::from_secs(120))
                .await?;
            created.push(id);
        }
        let spec = ServerSpec {
            name: format!("{tag}-over"),
            flavor: t.flavor.clone(),
            image: t.image.clone(),
            tags: vec![tag.clone()],
            ..Default::default()
        };
        Ok::<_, Error>(os.create_server(&spec).await)
    }
    .await;
    cleanup(&os, &tag).await;
    let over = result.unwrap_or_else(|e| panic!("servers within the quota: {e}"));
    let e = over.expect_err("the server over the quota was created");
    match &e {
        Error::QuotaExceeded(ctx) => {
            assert!(ctx.message.to_lowercase().contains("quota"), "{e}");
            assert!(ctx.request_id.is_some(), "{e}");
        }
        other => panic!("expected QuotaExceeded, got {other}"),
    }
}

/// Nova's own notification bus starts a function: an `EventSource` consuming
/// `versioned_notifications.info` on exchange `nova`, a function subscribed to
/// `instance.create.end`; servers created through Nova run it with their id in the payload.
/// Prints notification (as seen on the bus) → function start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nova_notifications_start_a_function() {
    use lambda::api::{ConditionStatus, EventSourceSpec};
    use lambda::events::broker::Broker;
    use lapin::options::QueueDeclareOptions;

    let Some(t) = Target::load() else { return };
    let Some(url) = t.notification_url.clone() else {
        panic!(
            "the target sends no notifications: set LAMBDA_OS_NOTIFICATION_URL (scripts/openstack/up.sh and lambda cloud --notification-url write it)"
        );
    };
    let os = t.connect().await;
    let tag = run_tag("notifications");
    let etcd = common::Etcd::start();
    let rabbit = common::rabbitmq::RabbitMq::start();
    let store = etcd.store().await;
    let stop = tokio_util::sync::CancellationToken::new();
    common::rabbitmq::spawn_listener(&store, rabbit.url(), stop.clone());
    let replica = common::replica::replica(Arc::new(std::sync::atomic::AtomicUsize::new(0))).await;
    common::replica::function_on(
        &store,
        "ops",
        "onvm",
        "runtime: shell\ncode: {inline: cat}\ntriggers:\n  events:\n    - {sourcePrefix: openstack/, type: instance.create.end}\n",
        replica,
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url_file = dir.path().join("transport-url");
    std::fs::write(&url_file, &url).expect("url file");
    let spec: EventSourceSpec = serde_saphyr::from_str(&format!(
        "openstack: {{transportUrlFile: {}, exchange: nova, topic: versioned_notifications.info, eventTypes: [instance.create.end]}}\n",
        url_file.display()
    ))
    .expect("spec");
    store
        .create(&lambda::api::EventSource::new("ops", "nova", spec))
        .await
        .expect("create the EventSource");
    let controllers = lambda::reconcilers::ControllersConfig::default();
    tokio::spawn({
        let (store, stop, cfg) = (store.clone(), stop.clone(), controllers.clone());
        let es = lambda::reconcilers::eventsource::EventSourcesConfig {
            amqp_url: rabbit.url(),
        };
        async move {
            lambda::reconcilers::eventsource::run(
                store,
                lambda::runtime::Metrics::new(),
                &cfg,
                es,
                stop,
            )
            .await
        }
    });
    common::eventually(
        "the EventSource consumes the bus",
        Duration::from_secs(30),
        async || {
            let es = store.get::<EventSourceSpec>("ops", "nova").await.ok()?;
            es.status?
                .conditions
                .iter()
                .find(|c| c.type_ == "Connected" && c.status == ConditionStatus::True)
                .cloned()
        },
    )
    .await;
    // When each instance.create.end reaches the bus, by a queue of the test's own.
    let bus = Broker::connect(&url).await.expect("the notification bus");
    let probe = format!("{tag}-probe");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    bus.declare_queue_with(&probe, exclusive, Default::default())
        .await
        .expect("probe queue");
    bus.bind(&probe, "nova", "versioned_notifications.info")
        .await
        .expect("bind probe");
    let mut consumer = bus
        .consume(&probe, "probe", 16)
        .await
        .expect("consume probe");
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::<
        String,
        chrono::DateTime<chrono::Utc>,
    >::new()));
    tokio::spawn({
        let seen = seen.clone();
        async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = consumer.next().await {
                let at = chrono::Utc::now();
                if let Ok(ev) = lambda::events::broker::event_of(&d) {
                    let uuid = match &ev.data {
                        Some(lambda::events::cloudevent::Data::Json(v)) => {
                            v["nova_object.data"]["uuid"].as_str().map(str::to_string)
                        }
                        _ => None,
                    };
                    if let (Some(u), "instance.create.end") = (uuid, ev.type_.as_str()) {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).insert(u, at);
                    }
                }
                let _ = d.ack(Default::default()).await;
            }
        }
    });

    let result = async {
        let mut ids = Vec::new();
        for i in 0..5 {
            let spec = ServerSpec {
                name: format!("{tag}-{i}"),
                flavor: t.flavor.clone(),
                image: t.image.clone(),
                networks: match &t.network {
                    Some(n) => NetworkSpec::Named(vec![n.clone()]),
                    None => NetworkSpec::None,
                },
                tags: vec![tag.clone()],
                ..Default::default()
            };
            ids.push(os.create_server(&spec).await?);
        }
        Ok::<_, Error>(ids)
    }
    .await;
    let ids = match result {
        Ok(ids) => ids,
        Err(e) => {
            cleanup(&os, &tag).await;
            panic!("creating servers: {e}");
        }
    };
    // Other tests of this suite create servers in the same project at the same time: their
    // notifications start the function too. Only the runs of this test's servers count.
    let server_of = |e: &lambda::events::execution::Execution| -> Option<String> {
        let r: serde_json::Value = serde_json::from_str(e.result.as_deref()?).ok()?;
        r["echo"]["nova_object.data"]["uuid"]
            .as_str()
            .map(str::to_string)
    };
    let runs = common::eventually(
        "a run per server created",
        Duration::from_secs(120),
        async || {
            let page =
                lambda::events::execution::store::list(&store, "ops", "onvm", None, 100, None)
                    .await
                    .ok()?;
            let mine: Vec<_> = page
                .items
                .into_iter()
                .filter(|e| {
                    e.status.is_terminal() && server_of(e).is_some_and(|s| ids.contains(&s))
                })
                .collect();
            (mine.len() >= ids.len()).then_some(mine)
        },
    )
    .await;
    cleanup(&os, &tag).await;
    stop.cancel();
    let mut latency = Vec::new();
    for id in &ids {
        let run = runs
            .iter()
            .find(|e| server_of(e).as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no run with server {id} in its payload: {runs:?}"));
        let ev = run.event.as_ref().expect("event");
        assert_eq!(ev.type_, "instance.create.end");
        assert!(
            ev.source.starts_with("openstack/nova-compute:"),
            "{}",
            ev.source
        );
        if let Some(at) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            let start = run.attempts.first().expect("attempt").started_at;
            latency.push((start - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    latency.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "[contract] notification -> function start over {} servers: {latency:?} ms",
        latency.len()
    );
    assert_eq!(runs.len(), ids.len(), "one run per server: {runs:?}");
}
