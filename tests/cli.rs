//! The `lambda` CLI end to end against a real etcd: apply (files, directories, stdin, code
//! files), get/describe/delete/watch/wait, and the corpus of bad manifests (nothing written).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Etcd, lambda, lambda_in};
use lambda::api::{Condition, ConditionStatus, FunctionSpec, FunctionStatus};

fn keys(etcd: &Etcd) -> String {
    etcd.etcdctl(&["get", "--prefix", "/lambda/", "--keys-only"])
        .unwrap()
}

#[tokio::test]
async fn apply_examples_then_get_and_describe() {
    let etcd = Etcd::start();
    let (ok, out, err) = lambda(&etcd, &["apply", "-f", "examples/"], None);
    assert!(ok, "{err}");
    assert!(out.contains("function/hello created"), "{out}");
    assert!(out.contains("nodepool/workers created"), "{out}");
    let (ok, out, _) = lambda(&etcd, &["apply", "-f", "examples/"], None);
    assert!(ok);
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");

    // The shell example's code file was inlined.
    let f = etcd
        .store()
        .await
        .get::<FunctionSpec>("default", "echo")
        .await
        .unwrap();
    assert!(f.spec.code.unwrap().inline.unwrap().contains("printf"));

    // Every short form works.
    for kind in ["function", "functions", "fn", "Function"] {
        let (ok, out, err) = lambda(&etcd, &["get", kind], None);
        assert!(ok, "{err}");
        let header = out.lines().next().unwrap();
        for col in ["NAME", "READY", "STATUS", "AGE"] {
            assert!(header.contains(col), "{out}");
        }
        assert!(out.contains("hello") && out.contains("echo"), "{out}");
    }
    let (ok, out, _) = lambda(&etcd, &["get", "np", "-o", "wide"], None);
    assert!(
        ok && out.contains("FLAVOR") && out.contains("m1.small"),
        "{out}"
    );
    let (ok, out, _) = lambda(&etcd, &["get", "si", "worker", "-o", "json"], None);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["baseImage"], "debian-12");
    let (ok, out, _) = lambda(&etcd, &["get", "fn", "hello", "-o", "yaml"], None);
    assert!(
        ok && out.contains("kind: Function") && out.contains("resourceVersion"),
        "{out}"
    );
    let (ok, out, _) = lambda(&etcd, &["get", "fn", "-o", "name"], None);
    assert!(ok && out.contains("function/hello"), "{out}");

    // A status written by a controller shows in get and describe.
    let store = etcd.store().await;
    let hello = store.get::<FunctionSpec>("default", "hello").await.unwrap();
    let status = FunctionStatus {
        replicas: 2,
        ready_replicas: 1,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ConditionStatus::False,
            reason: "ImageMissing".into(),
            message: "image lambda/runtime-python3 is on no node".into(),
            last_transition_time: chrono::Utc::now(),
            observed_generation: Some(hello.generation()),
        }],
        ..Default::default()
    };
    store.update_status(&hello, &status).await.unwrap();
    let (_, out, _) = lambda(&etcd, &["get", "fn", "hello"], None);
    assert!(out.contains("1/2") && out.contains("ImageMissing"), "{out}");
    let (ok, out, _) = lambda(&etcd, &["describe", "fn", "hello"], None);
    assert!(ok);
    for want in [
        "Name:         hello",
        "Spec:",
        "runtime: python3",
        "Conditions:",
        "ImageMissing",
        "is on no node",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // A spec change is `configured`; the status survives it.
    let changed = std::fs::read_to_string("examples/hello-python.yaml")
        .unwrap()
        .replace("timeoutSeconds: 10", "timeoutSeconds: 12");
    let (ok, out, err) = lambda(&etcd, &["apply", "-f", "-"], Some(&changed));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "function/hello configured");
    let f = store.get::<FunctionSpec>("default", "hello").await.unwrap();
    assert_eq!(f.spec.timeout_seconds, 12);
    assert_eq!(f.status.unwrap().ready_replicas, 1);

    // Namespaces.
    let (ok, _, err) = lambda(
        &etcd,
        &["-n", "team-b", "apply", "-f", "examples/echo-shell.yaml"],
        None,
    );
    assert!(ok, "{err}");
    let (_, out, _) = lambda(&etcd, &["get", "fn", "-A"], None);
    assert!(out.contains("NAMESPACE") && out.contains("team-b"), "{out}");
    let (ok, _, err) = lambda(&etcd, &["get", "pods"], None);
    assert!(!ok && err.contains("unknown kind \"pods\""), "{err}");
    let (ok, _, err) = lambda(&etcd, &["get", "fn", "nope"], None);
    assert!(!ok && err.contains("not found"), "{err}");
}

#[test]
fn every_bad_manifest_is_rejected_with_its_message_and_nothing_written() {
    let etcd = Etcd::start();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<_> = std::fs::read_dir(dir.join("bad-manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("first line `# expect: ...`");
        let rel = format!("bad-manifests/{}", f.file_name().unwrap().to_string_lossy());
        let (ok, out, err) = lambda_in(&etcd, &dir, &["apply", "-f", &rel], None);
        assert!(!ok, "{rel} was accepted: {out}");
        assert!(
            err.contains(expect),
            "{rel}: expected {expect:?} in:\n{err}"
        );
        assert!(err.contains("nothing was applied"), "{rel}: {err}");
        assert_eq!(keys(&etcd).trim(), "", "{rel} wrote something");
    }
}

#[tokio::test]
async fn wait_for_condition_and_timeout() {
    let etcd = Etcd::start();
    let (ok, _, err) = lambda(&etcd, &["apply", "-f", "examples/echo-shell.yaml"], None);
    assert!(ok, "{err}");
    // Times out (non-zero) and says what it waited on.
    let (ok, _, err) = lambda(
        &etcd,
        &[
            "wait",
            "fn/echo",
            "--for",
            "condition=Ready",
            "--timeout",
            "1s",
        ],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("timed out") && err.contains("no Ready condition yet"),
        "{err}"
    );

    let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
        .args([
            "wait",
            "fn/echo",
            "--for",
            "condition=Ready",
            "--timeout",
            "20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = etcd.store().await;
    let f = store.get::<FunctionSpec>("default", "echo").await.unwrap();
    let cond = |s| Condition {
        type_: "Ready".into(),
        status: s,
        reason: "Test".into(),
        message: String::new(),
        last_transition_time: chrono::Utc::now(),
        observed_generation: Some(f.generation()),
    };
    store
        .update_status(
            &f,
            &FunctionStatus {
                conditions: vec![cond(ConditionStatus::False)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .update_status(
            &f,
            &FunctionStatus {
                conditions: vec![cond(ConditionStatus::True)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Ready=False (Test)"),
        "progress shown: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}

#[tokio::test]
async fn delete_with_finalizer_waits_until_released() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let mut f = common::function("held");
    f.metadata.finalizers = vec!["test/hold".into()];
    store.create(&f).await.unwrap();
    let (ok, out, _) = lambda(&etcd, &["delete", "fn", "held"], None);
    assert!(
        ok && out.contains("waiting on finalizers: test/hold"),
        "{out}"
    );
    let (_, out, _) = lambda(&etcd, &["get", "fn"], None);
    assert!(out.contains("Terminating"), "{out}");
    let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
        .args(["delete", "fn", "held", "--wait", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut o = store.get::<FunctionSpec>("default", "held").await.unwrap();
    o.metadata.finalizers.clear();
    store.update(&o).await.unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("function/held deleted"));
    assert_eq!(keys(&etcd).trim(), "");
}

#[tokio::test]
async fn watch_streams_spec_and_status_changes() {
    let etcd = Etcd::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
        .args(["watch", "fn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = etcd.store().await;
    let f = store.create(&common::function("watched")).await.unwrap();
    store
        .update_status(
            &f,
            &FunctionStatus {
                replicas: 3,
                ready_replicas: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // A hand edit with etcdctl is seen too.
    etcd.put("/lambda/registry/functions/default/by-hand", "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata: {name: by-hand}\nspec: {runtime: shell, code: {inline: cat}}\n");
    store
        .delete::<FunctionSpec>("default", "watched")
        .await
        .unwrap();
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
        let all = lines.join("\n");
        if all.contains("DELETED") && all.contains("by-hand") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = lines.join("\n");
    assert!(all.contains("APPLIED") && all.contains("watched"), "{all}");
    assert!(all.contains("3/3"), "status change streamed: {all}");
    assert!(all.contains("by-hand"), "{all}");
    assert!(all.contains("DELETED"), "{all}");
}

#[test]
fn crds_print_and_completions() {
    let etcd = Etcd::start();
    let (ok, out, _) = lambda(&etcd, &["crds"], None);
    assert!(
        ok && out.contains("title: Function") && out.contains("additionalProperties: false"),
        "{out}"
    );
    let (ok, out, _) = lambda(&etcd, &["completions", "bash"], None);
    assert!(ok && out.contains("_lambda"), "{out}");
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let start = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args([
            "--etcd-endpoints",
            "http://127.0.0.1:1",
            "--etcd-timeout",
            "2s",
            "get",
            "fn",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etcd at http://127.0.0.1:1 is unreachable"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_daemon_started_while_etcd_is_down_waits_for_it() {
    // The chaos suite restarted a killed controller while etcd restarted: a daemon must not
    // give up on an etcd that comes back within seconds (CLI commands still fail at once).
    let mut etcd = Etcd::start();
    etcd.kill();
    let port = common::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["--etcd-endpoints", &etcd.endpoint(), "--etcd-timeout", "1s"])
        .args(["gateway", "--insecure-no-auth", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("LAMBDA_LOG")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let waited = std::fs::read_to_string(log.path()).unwrap_or_default();
    let alive = gateway.try_wait().unwrap().is_none();
    etcd.restart();
    let healthz = format!("127.0.0.1:{port}");
    let start = std::time::Instant::now();
    let mut up = false;
    while alive && !up && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        up = std::net::TcpStream::connect(&healthz).is_ok_and(|mut c| {
            use std::io::{Read, Write};
            let mut answer = String::new();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .and_then(|_| c.read_to_string(&mut answer))
                .is_ok_and(|_| answer.starts_with("HTTP/1.1 200"))
        });
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
    let all = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(alive, "the gateway exited while etcd was down:\n{all}");
    assert!(
        waited.contains("etcd does not answer yet"),
        "each failed try is logged:\n{waited}"
    );
    assert!(up, "the gateway did not serve once etcd was back:\n{all}");
}

/// `lambda` with only a config file: no etcd flag or variable, so the context decides.
fn lambda_with_config(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(args)
        .env("LAMBDA_CONFIG", config)
        .env_remove("LAMBDA_ETCD_ENDPOINTS")
        .env_remove("LAMBDA_CONTEXT")
        .env_remove("LAMBDA_NAMESPACE")
        .env_remove("LAMBDA_GATEWAY")
        .env_remove("LAMBDA_TOKEN")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run lambda");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn contexts_point_every_command_at_a_platform_flags_and_variables_win() {
    use std::os::unix::fs::PermissionsExt;
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lambda/config.yaml");
    let run = |args: &[&str]| lambda_with_config(&cfg, args);

    // No context yet: the built-in default, and an error that says what to do.
    let (ok, _, err) = run(&["--etcd-timeout", "2s", "get", "fn"]);
    // (Something may listen on 2379 here; only check the message when it failed.)
    if !ok {
        assert!(
            err.contains("127.0.0.1:2379") && err.contains("lambda up"),
            "{err}"
        );
    }
    let (ok, _, err) = run(&["config", "current-context"]);
    assert!(!ok && err.contains("no current context"), "{err}");

    // A context at this test's etcd, with a namespace and a gateway key.
    let endpoint = etcd.endpoint();
    let (ok, out, err) = run(&[
        "config",
        "set-context",
        "t",
        "--etcd",
        &endpoint,
        "--gateway",
        "http://127.0.0.1:9",
        "--token",
        "lk_abc_secret",
        "--default-namespace",
        "team",
        "--swarm-manager",
        "unix:///nonexistent/manager.sock",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("created"), "{out}");
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The first context becomes current; commands use it with no flags.
    let (ok, out, _) = run(&["config", "current-context"]);
    assert!(ok && out.trim() == "t", "{out}");
    let yaml = "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata: {name: viactx}\nspec: {runtime: shell, code: {inline: cat}}\n";
    let f = dir.path().join("f.yaml");
    std::fs::write(&f, yaml).unwrap();
    let (ok, out, err) = run(&["apply", "-f", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("function/viactx created"), "{out}");
    let store = etcd.store().await;
    assert!(
        store.get::<FunctionSpec>("team", "viactx").await.is_ok(),
        "the context's namespace"
    );
    let (ok, out, _) = run(&["get", "fn"]);
    assert!(ok && out.contains("viactx"), "{out}");
    // A flag beats the context: another namespace, nothing there.
    let (ok, out, _) = run(&["-n", "other", "get", "fn", "-o", "name"]);
    assert!(ok && !out.contains("viactx"), "{out}");

    // view redacts; --raw shows.
    let (ok, out, _) = run(&["config", "view"]);
    assert!(
        ok && out.contains("REDACTED") && !out.contains("lk_abc_secret"),
        "{out}"
    );
    let (ok, out, _) = run(&["config", "view", "--raw"]);
    assert!(ok && out.contains("lk_abc_secret"), "{out}");

    // Unreachable gateway and Swarm: the error names the address and the context it came from.
    let (ok, _, err) = run(&["invoke", "viactx"]);
    assert!(!ok);
    assert!(
        err.contains("http://127.0.0.1:9")
            && err.contains("context \"t\"")
            && err.contains("--gateway"),
        "{err}"
    );
    let (ok, _, err) = run(&["logs", "viactx"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/manager.sock") && err.contains("context \"t\""),
        "{err}"
    );

    // A second context at a dead etcd; use-context switches, --context picks one per command.
    let (ok, _, err) = run(&[
        "config",
        "set-context",
        "dead",
        "--etcd",
        "http://127.0.0.1:9",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["config", "get-contexts"]);
    assert!(ok && out.contains("* ") && out.contains("dead"), "{out}");
    let (ok, _, err) = run(&["config", "use-context", "dead"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["--etcd-timeout", "2s", "get", "fn"]);
    assert!(!ok);
    assert!(
        err.contains("http://127.0.0.1:9")
            && err.contains("context \"dead\"")
            && err.contains("lambda up"),
        "{err}"
    );
    let (ok, out, err) = run(&["--context", "t", "get", "fn"]);
    assert!(ok && out.contains("viactx"), "{err}");
    // The variable beats the context.
    let out = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .args(["-n", "team", "get", "fn"])
        .env("LAMBDA_CONFIG", &cfg)
        .env("LAMBDA_ETCD_ENDPOINTS", &endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("viactx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, err) = run(&["--context", "nope", "get", "fn"]);
    assert!(!ok && err.contains("no context named \"nope\""), "{err}");
    // A hand-broken file is named, with the field.
    std::fs::write(&cfg, "contexts:\n  t:\n    gatway: x\n").unwrap();
    let (ok, _, err) = run(&["get", "fn"]);
    assert!(
        !ok && err.contains("config.yaml") && err.contains("gatway"),
        "{err}"
    );
    let (ok, _, err) = run(&["config", "delete-context", "t"]);
    assert!(!ok && err.contains("gatway"), "{err}");
}
