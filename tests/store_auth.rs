//! Connection options against a real etcd: user/password auth, and mutual TLS with a CA and a
//! client certificate generated for the test.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Etcd, function};
use lambda::api::FunctionSpec;
use lambda::store::{Store, StoreConfig};

#[tokio::test]
async fn user_and_password() {
    let etcd = Etcd::start();
    etcd.etcdctl(&["user", "add", "root:s3cret"]).unwrap();
    etcd.etcdctl(&["auth", "enable"]).unwrap();
    let mut cfg = etcd.config();
    cfg.user = Some("root".into());
    cfg.password = Some("s3cret".into());
    let store = Store::connect(&cfg).await.unwrap();
    store.create(&function("authed")).await.unwrap();
    assert_eq!(
        store
            .get::<FunctionSpec>("default", "authed")
            .await
            .unwrap()
            .metadata
            .name,
        "authed"
    );

    cfg.password = Some("wrong".into());
    let err = Store::connect(&cfg)
        .await
        .err()
        .expect("wrong password must fail")
        .to_string();
    assert!(err.contains("unreachable") || err.contains("auth"), "{err}");
    // Without credentials, reads are refused with a clear error.
    let anon = Store::connect(&etcd.config()).await.unwrap();
    let err = anon
        .get::<FunctionSpec>("default", "authed")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/lambda/registry/functions/default/authed"),
        "{err}"
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

struct TlsEtcd(Child);
impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    );
    for who in ["server", "client"] {
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "1",
                "-extfile",
                "san.cnf",
            ],
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _etcd = TlsEtcd(
        Command::new("etcd")
            .args(["--name", "tls", "--data-dir"])
            .arg(d.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .arg("--cert-file")
            .arg(d.join("server.pem"))
            .arg("--key-file")
            .arg(d.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(d.join("ca.pem"))
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd"),
    );
    let mut cfg = StoreConfig::from_endpoints(&url);
    cfg.ca_cert = Some(d.join("ca.pem"));
    cfg.client_cert = Some(d.join("client.pem"));
    cfg.client_key = Some(d.join("client.key"));
    let mut store = None;
    for _ in 0..100 {
        match Store::connect(&cfg).await {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let store = store.expect("TLS connect");
    store.create(&function("over-tls")).await.unwrap();
    assert!(store.list::<FunctionSpec>(None).await.unwrap().items.len() == 1);

    // Without the client certificate the server refuses us, clearly and quickly.
    let mut no_cert = cfg.clone();
    no_cert.client_cert = None;
    no_cert.client_key = None;
    no_cert.request_timeout = Duration::from_secs(2);
    assert!(Store::connect(&no_cert).await.is_err());
    // A missing CA file names the path.
    let mut bad = cfg.clone();
    bad.ca_cert = Some(d.join("nope.pem"));
    let err = Store::connect(&bad).await.err().unwrap().to_string();
    assert!(err.contains("nope.pem"), "{err}");
}
