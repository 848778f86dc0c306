//! The snapshot reconciler against the real OpenStack of `scripts/openstack/up.sh`, up to and
//! through createImage. Its fake compute driver never runs user-data, so the test plays the
//! builder: it reads the user-data back as admin (`OS-EXT-SRV-ATTR:user_data`), takes the
//! token from it, exercises the builder endpoint with it and phones home itself.
//!
//! The target is the env file of `LAMBDA_OS_ENV` (or `$LAMBDA_HOME/openstack/env`), as in
//! tests/openstack_contract.rs. Without one the test says so and passes — unless
//! `LAMBDA_OPENSTACK_CONTRACT=1` (CI), which makes a missing target a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use lambda::api::Runtime;
use lambda::openstack::config::parse_openrc;
use lambda::openstack::{CloudConfig, ImageStatus, OpenStack, ServerStatus};
use lambda::reconcilers::cluster::{TAG_MANAGED, instance_tag, owner_tag};
use serde_json::{Value, json};

use crate::harness::{Harness, Target, fast_timings, root};
use crate::{assert_image_gone, image};

const GATE: &str = "LAMBDA_OPENSTACK_CONTRACT";

/// The `LAMBDA_OS_*` facts of the target, `None` (skip) when there is none and CI's gate is off.
fn target() -> Option<BTreeMap<String, String>> {
    let gate = std::env::var(GATE).is_ok_and(|v| !v.is_empty() && v != "0");
    let path = match std::env::var("LAMBDA_OS_ENV") {
        Ok(p) if !p.is_empty() && p != "real" => PathBuf::from(p),
        _ => std::env::var("LAMBDA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join(".lambda"))
            .join("openstack/env"),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if gate => panic!(
            "{GATE} is set but the OpenStack target {} cannot be read ({e}): run scripts/openstack/up.sh, or set LAMBDA_OS_ENV",
            path.display()
        ),
        Err(_) => {
            eprintln!(
                "SKIPPED: snapshot test on the real OpenStack: no {} (run scripts/openstack/up.sh; {GATE}=1 makes this a failure)",
                path.display()
            );
            return None;
        }
    };
    let mut vars = parse_openrc(&text);
    for (k, v) in std::env::vars() {
        if k.starts_with("LAMBDA_OS_") && k != "LAMBDA_OS_ENV" {
            vars.insert(k, v);
        }
    }
    Some(vars)
}

/// A value of the builder's shell script: `NAME='value'`.
fn script_var(script: &str, name: &str) -> String {
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}='")))
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no {name} in the user-data:\n{script}"))
        .to_string()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, bytes::Bytes) {
    let mut r = http.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body"))
}

/// A JSON error body's message (panics when the body is not one).
fn error_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_the_real_openstack_the_builder_is_created_as_specified_and_its_phone_home_makes_the_image()
 {
    let Some(env) = target() else { return };
    let need = |k: &str| {
        env.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| panic!("the OpenStack target has no {k}"))
    };
    let mut h = Harness::start(
        Target::Openrc(need("LAMBDA_OS_OPENRC").into()),
        "127.0.0.1",
        fast_timings(),
    )
    .await;
    let admin_rc = CloudConfig::from_openrc_file(&PathBuf::from(need("LAMBDA_OS_OPENRC_ADMIN")))
        .expect("admin openrc");
    let admin = OpenStack::connect(admin_rc)
        .await
        .expect("connect as admin");
    let flavor = env
        .get("LAMBDA_OS_FLAVOR_TINY")
        .cloned()
        .unwrap_or_else(|| need("LAMBDA_OS_FLAVOR"));
    let (base, network, keypair) = (
        need("LAMBDA_OS_IMAGE"),
        need("LAMBDA_OS_NETWORK"),
        need("LAMBDA_OS_KEYPAIR"),
    );
    let base_id = h
        .cloud
        .image()
        .find_image(&base)
        .await
        .expect("base image")
        .id;
    let shell = image(&h, Runtime::Shell);
    h.apply(
        "real",
        &format!(
            "baseImage: {base}\nflavor: {flavor}\nnetwork: {network}\nkeyPair: {keypair}\nruntimes: [shell]\nsetupScript: echo custom\n"
        ),
    );
    let (building, id) = h.wait_builder("real").await;
    assert_eq!(
        building.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Building")
    );
    let uid = building.metadata.uid.clone().expect("uid");

    // The builder, as an admin sees it.
    let s = admin
        .compute()
        .wait_for_server(&id, ServerStatus::Active, Duration::from_secs(120))
        .await
        .expect("builder ACTIVE");
    assert_eq!(s.name, format!("lambda-build-{}-real", h.ns));
    assert_eq!(s.flavor_name(), Some(flavor.as_str()));
    assert_eq!(s.image_id(), Some(base_id.as_str()));
    assert!(
        s.addresses.contains_key(&network),
        "addresses {:?}",
        s.addresses
    );
    assert_eq!(s.key_name.as_deref(), Some(keypair.as_str()));
    for (k, v) in [
        ("lambda:kind", "SnapshotImage"),
        ("lambda:namespace", h.ns.as_str()),
        ("lambda:name", "real"),
        ("lambda:uid", uid.as_str()),
        ("lambda:instance", h.instance.as_str()),
        ("lambda:generation", &building.generation().to_string()),
    ] {
        assert_eq!(
            s.metadata.get(k).map(String::as_str),
            Some(v),
            "metadata {:?}",
            s.metadata
        );
    }
    for t in [
        TAG_MANAGED.to_string(),
        instance_tag(&h.instance),
        owner_tag(&uid),
    ] {
        assert!(s.tags.contains(&t), "tag {t} missing: {:?}", s.tags);
    }
    let raw = s.user_data.clone().expect("user data visible to the admin");
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .expect("base64 user data"),
    )
    .expect("utf-8 user data");
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    let url = format!("http://{}", h.endpoint);
    assert_eq!(script_var(&script, "LAMBDA_URL"), url);
    assert_eq!(script_var(&script, "LAMBDA_IMAGES"), shell);
    let token = script_var(&script, "LAMBDA_TOKEN");
    assert_eq!(token.len(), 64);

    // The builder endpoint, driven as the builder would (and as it must not be).
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let (tar, phone) = (
        format!("{url}/v1/builds/images.tar"),
        format!("{url}/v1/builds/phone-home"),
    );
    use reqwest::Method;
    let (code, _) = call(&http, Method::GET, &format!("{url}/healthz"), None, None).await;
    assert_eq!(code, 200);
    let (code, body) = call(&http, Method::GET, &tar, None, None).await;
    assert_eq!(code, 401, "{}", error_of(&body));
    let (code, body) = call(&http, Method::GET, &tar, Some("not-the-token"), None).await;
    assert_eq!(code, 401, "{}", error_of(&body));
    let ok_body =
        json!({"ok": true, "images": [shell], "message": "loaded by the test"}).to_string();
    let (code, body) = call(
        &http,
        Method::POST,
        &phone,
        Some("not-the-token"),
        Some(&ok_body),
    )
    .await;
    assert_eq!(code, 401, "{}", error_of(&body));
    let (code, body) = call(
        &http,
        Method::POST,
        &phone,
        Some(&token),
        Some("{\"ok\": 1"),
    )
    .await;
    assert_eq!(code, 400, "{}", error_of(&body));
    let (code, body) = call(&http, Method::GET, &format!("{url}/v1/nothing"), None, None).await;
    assert_eq!(code, 404, "{}", error_of(&body));
    let (code, body) = call(&http, Method::GET, &tar, Some(&token), None).await;
    assert_eq!(
        code,
        200,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    assert!(body.len() > 100_000, "images.tar is {} bytes", body.len());
    assert!(
        body.windows(13).any(|w| w == b"manifest.json"),
        "images.tar is not a docker save archive"
    );
    let (code, body) = call(&http, Method::POST, &phone, Some(&token), Some(&ok_body)).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, body) = call(&http, Method::POST, &phone, Some(&token), Some(&ok_body)).await;
    assert_eq!(code, 409, "{}", error_of(&body));
    let (code, body) = call(&http, Method::GET, &tar, Some(&token), None).await;
    assert_eq!(code, 410, "{}", error_of(&body));

    // The phone-home makes the image (the fake driver uploads data), then the builder goes.
    let ready = h.wait_ready("real", Duration::from_secs(240)).await;
    let st = ready.status.clone().unwrap_or_default();
    let image_id = st.image_id.clone().expect("imageId");
    assert_eq!(
        st.runtime_images,
        BTreeMap::from([("shell".to_string(), shell.clone())])
    );
    let img = h.cloud.image().get_image(&image_id).await.expect("image");
    assert_eq!(img.status, ImageStatus::Active);
    assert_eq!(
        img.name.as_deref(),
        Some(format!("lambda-{}-real-g{}", h.ns, ready.generation()).as_str())
    );
    assert_eq!(img.properties["lambda:runtime:shell"], shell.as_str());
    assert_eq!(img.properties["lambda:uid"], uid.as_str());
    h.wait_server_gone(&id, Duration::from_secs(120)).await;

    // Names the cloud does not know end in InvalidCloudRef naming the field; nothing boots.
    h.apply(
        "bad-flavor",
        &format!(
            "baseImage: {base}\nflavor: no-such-flavor\nnetwork: {network}\nruntimes: [shell]\n"
        ),
    );
    h.apply(
        "bad-image",
        &format!(
            "baseImage: no-such-image\nflavor: {flavor}\nnetwork: {network}\nruntimes: [shell]\n"
        ),
    );
    for (name, field) in [
        ("bad-flavor", "spec.flavor"),
        ("bad-image", "spec.baseImage"),
    ] {
        let o = h
            .wait_reason(name, "InvalidCloudRef", Duration::from_secs(60))
            .await;
        let msg = o.status.and_then(|s| s.last_error).unwrap_or_default();
        assert!(msg.starts_with(field), "{name}: {msg}");
    }

    for name in ["real", "bad-flavor", "bad-image"] {
        h.cli(&["delete", "si", name, "--wait", "--timeout", "120s"]);
    }
    assert_image_gone(&h, &image_id).await;
    h.assert_nothing_left(Duration::from_secs(120)).await;
    h.shutdown().await;
}
