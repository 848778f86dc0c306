//! The builder's user-data: a POSIX shell script (cloud-init runs a user-data that starts with
//! `#!` as root on first boot; `lambda cloud` runs it inside the server's namespace).
//!
//! Steps, each logged to the console: install Docker where `docker` is missing (apt-get, dnf
//! or apk), wait for the engine, download the runtime images from the platform's builder
//! endpoint and `docker load` them, run `spec.setupScript`, check which runtime images the
//! engine holds, `sync`, and phone home with that list. Any failure (`set -eu`) ends in the
//! EXIT trap, which phones home `ok: false` naming the failed step with the end of its output.
//! The token is sent only as `Authorization: Bearer`, never in a URL.
//!
//! The images are downloaded to a file before `docker load` rather than piped: POSIX `sh` has
//! no `pipefail`, and a file lets the script report the endpoint's JSON error on a non-200.

use std::collections::BTreeMap;

use base64::Engine;

/// What the script needs to know.
#[derive(Debug, Clone)]
pub struct BuilderScript<'a> {
    /// `namespace/name`, for the header comment and the log.
    pub object: &'a str,
    pub generation: i64,
    /// Base URL of the builder endpoint, e.g. `http://10.251.0.1:9466`.
    pub url: &'a str,
    /// The build's one-time token.
    pub token: &'a str,
    /// Runtime → image reference to load.
    pub images: &'a BTreeMap<String, String>,
    /// `spec.setupScript`.
    pub setup_script: Option<&'a str>,
}

/// `s` as one single-quoted shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// True for a plausible image reference (`[registry/]repo[:tag][@digest]`): what may go into
/// the script and the JSON the builder writes without quoting trouble.
pub fn valid_image_ref(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

/// The fixed part of the script (functions); the variables are rendered before it.
const BODY: &str = r#"
# /var/tmp: on disk where /tmp may be a small tmpfs (the image archive can be large).
work=$(mktemp -d "${TMPDIR:-/var/tmp}/lambda-build.XXXXXX")
step=start
phoned=
log() { echo "lambda-build: $*"; }

# JSON string content: printable ASCII only, quotes and backslashes escaped, at most 2000 bytes.
json_str() {
  printf '%s' "$1" | tr -c '[:print:]' ' ' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | head -c 2000
}

# phone_home OK MESSAGE IMAGES_JSON — POST the report; retried while the platform is unreachable.
phone_home() {
  body=$(printf '{"ok": %s, "message": "%s", "images": [%s]}' "$1" "$(json_str "$2")" "$3")
  i=0
  while :; do
    code=$(curl -sS --noproxy '*' --connect-timeout 10 --max-time 60 -o "$work/phone-home.out" \
      -w '%{http_code}' -X POST -H "Authorization: Bearer $LAMBDA_TOKEN" \
      -H 'Content-Type: application/json' --data-binary "$body" \
      "$LAMBDA_URL/v1/builds/phone-home") || code=000
    case $code in
      2??|409|410) phoned=1; log "phoned home ($code)"; return 0 ;;
      4??) log "phone home refused ($code): $(cat "$work/phone-home.out" 2>/dev/null)"; return 1 ;;
    esac
    i=$((i + 1))
    if [ "$i" -ge 60 ]; then log "phone home failed ($code)"; return 1; fi
    sleep 5
  done
}

on_exit() {
  rc=$?
  trap - EXIT
  if [ -z "$phoned" ]; then
    cat "$work/step.log" 2>/dev/null || true
    tail=$(tail -c 1500 "$work/step.log" 2>/dev/null || true)
    log "step $step failed (exit $rc)"
    phone_home false "step $step failed (exit $rc): $tail" "" || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# run NAME COMMAND... — one step; its output is shown when it ends (and sent home on failure).
run() {
  step=$1
  shift
  log "step $step"
  "$@" >"$work/step.log" 2>&1
  cat "$work/step.log"
}

install_docker() {
  if command -v docker >/dev/null 2>&1; then
    echo "docker is installed: $(command -v docker)"
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q docker.io
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y docker || dnf install -y moby-engine
  elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache docker
  else
    echo "docker is missing and there is no apt-get, dnf or apk to install it with"
    return 1
  fi
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable --now docker
  elif command -v rc-service >/dev/null 2>&1; then
    rc-update add docker default
    rc-service docker start
  fi
}

wait_engine() {
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 300 ]; then
      echo "the Docker engine did not answer within 300 s:"
      docker info
      return 1
    fi
    sleep 1
  done
  docker version --format 'Docker engine {{.Server.Version}}'
}

fetch_images() {
  code=$(curl -sS --noproxy '*' --connect-timeout 10 --retry 5 --retry-delay 3 \
    --retry-connrefused -o "$work/images.tar" -w '%{http_code}' \
    -H "Authorization: Bearer $LAMBDA_TOKEN" "$LAMBDA_URL/v1/builds/images.tar")
  if [ "$code" != 200 ]; then
    echo "GET $LAMBDA_URL/v1/builds/images.tar answered $code: $(head -c 500 "$work/images.tar")"
    return 1
  fi
  echo "downloaded $(wc -c <"$work/images.tar") bytes"
  docker load -i "$work/images.tar"
  rm -f "$work/images.tar"
}

run_setup() {
  printf '%s' "$LAMBDA_SETUP" | base64 -d >"$work/setup"
  chmod 700 "$work/setup"
  if head -c 2 "$work/setup" | grep -q '^#!'; then
    "$work/setup"
  else
    sh -e "$work/setup"
  fi
}

# Sets $loaded (JSON array items) and $missing (words) from the engine's images.
check_images() {
  loaded=
  missing=
  for ref in $LAMBDA_IMAGES; do
    if docker image inspect "$ref" >/dev/null 2>&1; then
      loaded="$loaded${loaded:+, }\"$ref\""
    else
      missing="$missing $ref"
    fi
  done
}

log "building a snapshot for $LAMBDA_OBJECT (generation $LAMBDA_GENERATION) on $(hostname)"
run install-docker install_docker
run wait-for-docker wait_engine
run load-runtime-images fetch_images
if [ -n "$LAMBDA_SETUP" ]; then
  run setup-script run_setup
fi
step=check-images
check_images
if [ -n "$missing" ]; then
  echo "runtime images missing after the load:$missing" >"$work/step.log"
  exit 1
fi
sync
step=phone-home
phone_home true "loaded $LAMBDA_IMAGES" "$loaded"
log "done: the platform snapshots this server now"
"#;

impl BuilderScript<'_> {
    /// The complete script.
    pub fn render(&self) -> String {
        let refs: Vec<&str> = self.images.values().map(String::as_str).collect();
        let setup = self
            .setup_script
            .filter(|s| !s.trim().is_empty())
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
            .unwrap_or_default();
        let mut out = String::new();
        out.push_str("#!/bin/sh\n");
        out.push_str(&format!(
            "# Lambda on OpenStack: snapshot builder of SnapshotImage {} (generation {}).\n",
            self.object.replace('\n', " "),
            self.generation
        ));
        out.push_str("set -eu\n");
        let vars = [
            ("LAMBDA_OBJECT", shell_quote(self.object)),
            ("LAMBDA_GENERATION", self.generation.to_string()),
            ("LAMBDA_URL", shell_quote(self.url.trim_end_matches('/'))),
            ("LAMBDA_TOKEN", shell_quote(self.token)),
            ("LAMBDA_IMAGES", shell_quote(&refs.join(" "))),
            ("LAMBDA_SETUP", shell_quote(&setup)),
        ];
        for (k, v) in vars {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.push_str(BODY);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("python3".into(), "lambda/runtime-python3:abc".into()),
            ("shell".into(), "lambda/runtime-shell:def".into()),
        ])
    }

    fn script(setup: Option<&str>) -> String {
        let images = images();
        BuilderScript {
            object: "team-a/base",
            generation: 42,
            url: "http://10.251.0.1:9466/",
            token: "t0k3n",
            images: &images,
            setup_script: setup,
        }
        .render()
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert!(valid_image_ref("lambda/runtime-shell:8f4aeb272dc5"));
        assert!(valid_image_ref("reg.example:5000/x/y@sha256:abc"));
        assert!(!valid_image_ref("x y"));
        assert!(!valid_image_ref("x\"y"));
        assert!(!valid_image_ref(""));
    }

    #[test]
    fn renders_variables_and_steps() {
        let s = script(Some("echo 'custom step'\n"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("set -eu\n"));
        assert!(s.contains("LAMBDA_URL='http://10.251.0.1:9466'\n"), "{s}");
        assert!(s.contains("LAMBDA_TOKEN='t0k3n'\n"));
        assert!(
            s.contains("LAMBDA_IMAGES='lambda/runtime-python3:abc lambda/runtime-shell:def'\n")
        );
        assert!(s.contains("LAMBDA_GENERATION=42\n"));
        let b64 = base64::engine::general_purpose::STANDARD.encode("echo 'custom step'\n");
        assert!(s.contains(&format!("LAMBDA_SETUP='{b64}'\n")));
        for step in [
            "run install-docker install_docker",
            "run wait-for-docker wait_engine",
            "run load-runtime-images fetch_images",
            "run setup-script run_setup",
            "phone_home true",
            "trap on_exit EXIT",
            "apt-get install -y -q docker.io",
            "if command -v docker",
        ] {
            assert!(s.contains(step), "missing {step:?}");
        }
        // The token only ever travels in a header.
        assert!(!s.contains("?token"));
        assert_eq!(s.matches("Authorization: Bearer $LAMBDA_TOKEN").count(), 2);
        assert!(script(None).contains("LAMBDA_SETUP=''\n"));
    }

    /// Runs the script with stand-ins for `docker` and `curl` on PATH; returns the phone-home
    /// bodies it sent and its console output.
    fn run_with_fakes(setup: Option<&str>, present: &str) -> (Vec<serde_json::Value>, String) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let sent = dir.path().join("sent");
        let fake = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            let mut perm = std::fs::metadata(&p).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            std::fs::set_permissions(&p, perm).unwrap();
        };
        fake(
            "docker",
            "case \"$1 ${2:-}\" in\n  'image inspect') case \" $FAKE_PRESENT \" in *\" $3 \"*) exit 0;; *) exit 1;; esac;;\n  'version '*) echo 'Docker engine 0';;\nesac\nexit 0\n",
        );
        fake(
            "curl",
            "out=; data=; url=\nwhile [ $# -gt 0 ]; do case $1 in -o) out=$2; shift;; --data-binary) data=$2; shift;; -w|-H|-X|--connect-timeout|--max-time|--retry|--retry-delay|--noproxy) shift;; -*) ;; *) url=$1;; esac; shift; done\ncase $url in\n  */images.tar) echo tar > \"$out\";;\n  */phone-home) printf '%s\\n' \"$data\" >> \"$FAKE_SENT\"; echo '{}' > \"$out\";;\nesac\nprintf 200\n",
        );
        let images = images();
        let script = BuilderScript {
            object: "team-a/base",
            generation: 3,
            url: "http://platform:1",
            token: "tok",
            images: &images,
            setup_script: setup,
        }
        .render();
        let path = dir.path().join("ud.sh");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&path)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("TMPDIR", dir.path())
            .env("FAKE_SENT", &sent)
            .env("FAKE_PRESENT", present)
            .output()
            .unwrap();
        let console = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bodies = std::fs::read_to_string(&sent)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{console}")))
            .collect();
        // The work directory is removed whatever happened.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("lambda-build."))
            .collect();
        assert!(left.is_empty(), "work dir left behind");
        (bodies, console)
    }

    #[test]
    fn phones_home_with_the_loaded_images() {
        let (sent, console) = run_with_fakes(
            Some("echo custom step ran"),
            "lambda/runtime-python3:abc lambda/runtime-shell:def",
        );
        assert_eq!(sent.len(), 1, "{console}");
        assert_eq!(sent[0]["ok"], true, "{console}");
        assert_eq!(
            sent[0]["images"],
            serde_json::json!(["lambda/runtime-python3:abc", "lambda/runtime-shell:def"])
        );
        assert!(console.contains("custom step ran"), "{console}");
    }

    #[test]
    fn a_failing_step_phones_home_its_name_and_output() {
        let (sent, console) = run_with_fakes(
            Some("echo 'bad \"thing\" \\ happened'\nexit 3\n"),
            "lambda/runtime-python3:abc lambda/runtime-shell:def",
        );
        assert_eq!(sent.len(), 1, "{console}");
        assert_eq!(sent[0]["ok"], false);
        let msg = sent[0]["message"].as_str().unwrap();
        assert!(msg.contains("step setup-script failed (exit 3)"), "{msg}");
        assert!(msg.contains("bad \"thing\" \\ happened"), "{msg}");

        let (sent, console) = run_with_fakes(None, "lambda/runtime-shell:def");
        assert_eq!(sent.len(), 1, "{console}");
        assert_eq!(sent[0]["ok"], false);
        let msg = sent[0]["message"].as_str().unwrap();
        assert!(msg.contains("step check-images failed"), "{msg}");
        assert!(msg.contains("lambda/runtime-python3:abc"), "{msg}");
    }

    /// Runs the rendered script with `sh -n` (syntax only) when a shell is there.
    #[test]
    fn is_valid_posix_shell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ud.sh");
        std::fs::write(&path, script(Some("exit 3"))).unwrap();
        for sh in ["sh", "dash", "bash"] {
            let Ok(out) = std::process::Command::new(sh).arg("-n").arg(&path).output() else {
                continue;
            };
            assert!(
                out.status.success(),
                "{sh} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
