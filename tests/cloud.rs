//! `lambda cloud` end to end over its HTTP API: servers are real Docker engines in network
//! namespaces; user-data runs inside them; createImage bakes their Docker images into a Glance
//! image that later servers boot with; a restart re-adopts every engine; deletion leaks nothing;
//! a server whose user-data joins the Swarm becomes a Ready worker.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

mod common;
use common::cloud::CloudProc;

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(cloud: &CloudProc, file: &str) -> Api {
        let env = cloud.openrc(file);
        let http = reqwest::Client::new();
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": env["OS_USERNAME"], "domain": {"name": "Default"}, "password": env["OS_PASSWORD"]}}},
            "scope": {"project": {"name": env["OS_PROJECT_NAME"], "domain": {"name": "Default"}}}}});
        let r = http
            .post(format!("{}/auth/tokens", env["OS_AUTH_URL"]))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
        let v: Value = r.json().await.unwrap();
        let compute = v["token"]["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["type"] == "compute")
            .unwrap();
        let url = compute["endpoints"][0]["url"].as_str().unwrap();
        Api {
            http,
            base: url.trim_end_matches("/compute/v2.1").to_string(),
            token,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-auth-token", &self.token)
            .header("openstack-api-version", "compute 2.90");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        assert!(
            resp.headers().contains_key("x-openstack-request-id"),
            "{path}: request id missing"
        );
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn image_id(&self, name: &str) -> String {
        let (_, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/image/v2/images?name={name}"),
                None,
            )
            .await;
        v["images"][0]["id"].as_str().expect("image").to_string()
    }

    async fn create(
        &self,
        name: &str,
        image: &str,
        user_data: Option<&str>,
        tags: &[&str],
    ) -> (u16, Value) {
        let mut server = json!({"name": name, "flavorRef": "m1.small", "imageRef": image, "networks": [{"uuid": "lambda-net"}],
            "metadata": {"lambda.cluster": "test"}, "tags": tags});
        if let Some(ud) = user_data {
            server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(ud));
        }
        self.call(
            reqwest::Method::POST,
            "/compute/v2.1/servers",
            Some(json!({"server": server})),
        )
        .await
    }

    async fn wait_status(&self, id: &str, want: &str) -> Value {
        let t = Instant::now();
        loop {
            let (code, v) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/compute/v2.1/servers/{id}"),
                    None,
                )
                .await;
            assert_eq!(code, 200, "{v}");
            if v["server"]["status"] == want {
                return v["server"].clone();
            }
            assert_ne!(v["server"]["status"], "ERROR", "{v}");
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server {id} never reached {want}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete_and_wait(&self, id: &str) {
        let (code, _) = self
            .call(
                reqwest::Method::DELETE,
                &format!("/compute/v2.1/servers/{id}"),
                None,
            )
            .await;
        assert_eq!(code, 204);
        let t = Instant::now();
        loop {
            let (code, _) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/compute/v2.1/servers/{id}"),
                    None,
                )
                .await;
            if code == 404 {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "server {id} not gone"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn netns_list() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn servers_are_engines_with_user_data_snapshots_restart_and_no_leaks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cloud = CloudProc::start(&dir, "lct0", "10.253.7.1/24", 10);
    let api = Api::login(&cloud, "openrc").await;
    let base = api.image_id("debian-12").await;

    // Create with user-data that builds a Docker image inside the server.
    let script = "#!/bin/sh\nset -e\necho \"booted $(hostname)\"\nmkdir -p /tmp/ctx.$$ && echo hi > /tmp/ctx.$$/x\nprintf 'FROM scratch\\nCOPY x /x\\n' > /tmp/ctx.$$/Dockerfile\ndocker build -q -t baked/thing:1 /tmp/ctx.$$ >/dev/null\necho user-data-done\n";
    let (code, v) = api
        .create("Worker-1", &base, Some(script), &["lambda", "pool-a"])
        .await;
    assert_eq!(code, 202, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    let s = api.wait_status(&id, "ACTIVE").await;
    assert_eq!(s["addresses"]["lambda-net"][0]["addr"], "10.253.7.10");
    assert_eq!(s["metadata"]["lambda.cluster"], "test");
    assert_eq!(s["flavor"]["ram"], 2048);
    let console = dir.join("servers").join(&id[..8]).join("console.log");
    let t = Instant::now();
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("user-data-done")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "user-data did not finish: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_to_string(&console)
            .unwrap()
            .contains("booted worker-1")
    );

    // List by tag.
    let (_, v) = api
        .call(
            reqwest::Method::GET,
            "/compute/v2.1/servers/detail?tags=pool-a",
            None,
        )
        .await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 1);
    let (_, v) = api
        .call(
            reqwest::Method::GET,
            "/compute/v2.1/servers/detail?tags=pool-b",
            None,
        )
        .await;
    assert!(v["servers"].as_array().unwrap().is_empty());

    // createImage → active image holding the baked Docker image; a server booted from it has it.
    let (code, v) = api
        .call(
            reqwest::Method::POST,
            &format!("/compute/v2.1/servers/{id}/action"),
            Some(json!({"createImage": {"name": "snap"}})),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let image = v["image_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let (_, img) = api
            .call(
                reqwest::Method::GET,
                &format!("/image/v2/images/{image}"),
                None,
            )
            .await;
        if img["status"] == "active" {
            assert!(
                img["docker_images"]
                    .as_str()
                    .unwrap()
                    .contains("baked/thing:1"),
                "{img}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "image never active: {img}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, v) = api.create("from-snap", &image, None, &[]).await;
    assert_eq!(code, 202, "{v}");
    let id2 = v["server"]["id"].as_str().unwrap().to_string();
    api.wait_status(&id2, "ACTIVE").await;
    let sock2 = format!(
        "unix://{}",
        dir.join("servers")
            .join(&id2[..8])
            .join("docker.sock")
            .display()
    );
    assert!(
        docker(&sock2, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains("baked/thing:1")
    );

    // Error shapes.
    let (code, v) = api.call(reqwest::Method::POST, "/compute/v2.1/servers", Some(json!({"server": {"name": "x", "flavorRef": "nope", "imageRef": base, "networks": "none"}}))).await;
    assert_eq!(
        (code, v["badRequest"]["message"].as_str().unwrap()),
        (400, "Flavor nope could not be found.")
    );
    let quota = Api::login(&cloud, "openrc-quota-test").await;
    let (code, v) = quota.create("q1", &base, None, &[]).await;
    assert_eq!(code, 202, "{v}");
    let q1 = v["server"]["id"].as_str().unwrap().to_string();
    let (code, v) = quota.create("q2", &base, None, &[]).await;
    assert_eq!(code, 403);
    assert!(
        v["forbidden"]["message"]
            .as_str()
            .unwrap()
            .contains("Quota exceeded for instances"),
        "{v}"
    );

    // Restart the emulator: engines keep running and are re-adopted; none is started twice.
    quota.wait_status(&q1, "ACTIVE").await;
    let pattern = format!("^dockerd --config-file {}", dir.display());
    let engines = || {
        Command::new("pgrep")
            .args(["-fc", &pattern])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let before = engines();
    cloud.stop();
    cloud.spawn();
    let api = Api::login(&cloud, "openrc").await;
    api.wait_status(&id, "ACTIVE").await;
    api.wait_status(&id2, "ACTIVE").await;
    assert_eq!(before, "3", "three engines before the restart");
    assert_eq!(engines(), before, "the same engines after it");

    // Delete → 404, and nothing is left: no namespace, no engine, no directory.
    for sid in [&id, &id2] {
        api.delete_and_wait(sid).await;
    }
    let quota = Api::login(&cloud, "openrc-quota-test").await;
    quota.delete_and_wait(&q1).await;
    let (code, v) = api
        .call(
            reqwest::Method::GET,
            &format!("/compute/v2.1/servers/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 404);
    assert!(
        v["itemNotFound"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be found")
    );
    for sid in [&id, &id2, &q1] {
        assert!(!netns_list().contains(&format!("lc-{}", &sid[..8])));
        assert!(!dir.join("servers").join(&sid[..8]).exists());
    }
    cloud.stop();
    let _ = Command::new("ip").args(["link", "del", "lct0"]).status();
}

#[tokio::test]
async fn a_server_whose_user_data_joins_the_swarm_becomes_a_worker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = Command::new(root.join("scripts/swarm.sh"))
        .arg("env")
        .output()
        .unwrap();
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    let var = |k: &str| {
        env.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    let manager = var("DOCKER_HOST").expect("scripts/swarm.sh env gives DOCKER_HOST");
    let join_addr = var("LAMBDA_SWARM_JOIN_ADDR").expect("join address");
    let token = docker(&manager, &["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_string();
    assert!(
        !token.is_empty(),
        "the Swarm manager is not running: run scripts/swarm.sh up (scripts/test.sh does)"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cloud = CloudProc::start(&dir, "lambda0", "10.251.0.1/24", 200);
    let api = Api::login(&cloud, "openrc").await;
    let base = api.image_id("debian-12").await;
    // A cloud-init style script, unchanged from what a real VM would run.
    let script = format!(
        "#!/bin/sh\nset -e\naddr=$(ip -4 -o addr show eth0 | awk '{{print $4}}' | cut -d/ -f1)\ndocker swarm join --token {token} --advertise-addr $addr {join_addr}\necho joined\n"
    );
    let (code, v) = api
        .create("swarm-worker-t", &base, Some(&script), &[])
        .await;
    assert_eq!(code, 202, "{v}");
    let id = v["server"]["id"].as_str().unwrap().to_string();
    api.wait_status(&id, "ACTIVE").await;
    let t = Instant::now();
    let mut ls = String::new();
    while t.elapsed() < Duration::from_secs(30) {
        ls = docker(
            &manager,
            &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        );
        if ls.lines().any(|l| l == "swarm-worker-t Ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let console = std::fs::read_to_string(dir.join("servers").join(&id[..8]).join("console.log"))
        .unwrap_or_default();
    let ready = ls.lines().any(|l| l == "swarm-worker-t Ready");
    // Honest capacity: Swarm sees the flavor (m1.small: 2048 MiB, 1 vCPU), not the host.
    let resources = docker(
        &manager,
        &[
            "node",
            "inspect",
            "swarm-worker-t",
            "--format",
            "{{.Description.Resources.MemoryBytes}} {{.Description.Resources.NanoCPUs}}",
        ],
    );
    let cgroup = Path::new("/sys/fs/cgroup/memory/lambda-cloud").join(&id[..8]);
    let limited = cgroup.join("memory.limit_in_bytes").exists();
    api.delete_and_wait(&id).await;
    let cgroup_left = cgroup.exists();
    // Remove the departed worker from the Swarm.
    for line in docker(
        &manager,
        &["node", "ls", "--format", "{{.ID}} {{.Hostname}}"],
    )
    .lines()
    {
        if let Some((nid, "swarm-worker-t")) = line.split_once(' ') {
            docker(&manager, &["node", "rm", "--force", nid]);
        }
    }
    cloud.stop();
    assert!(
        ready,
        "worker never Ready in `docker node ls`:\n{ls}\nconsole:\n{console}"
    );
    let mut parts = resources
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    let (mem, cpus) = (parts.next().unwrap_or(0.0), parts.next().unwrap_or(0.0));
    let flavor_mem = 2048.0 * 1024.0 * 1024.0;
    assert!(
        (mem - flavor_mem).abs() / flavor_mem <= 0.03,
        "Swarm reports {mem} bytes for an m1.small (2048 MiB): {resources}"
    );
    assert_eq!(cpus, 1e9, "Swarm reports {cpus} nano-CPUs for 1 vCPU");
    assert!(
        limited,
        "the server's engine runs in its flavor's memory cgroup"
    );
    assert!(!cgroup_left, "the deleted server's cgroup is removed");
}
