//! The README's "How people use it" block, run verbatim after `lambda up`, as a newcomer would:
//! `lambda` on the PATH, no flags, no `LAMBDA_*`/`DOCKER_HOST` variables — only the context
//! `lambda up` wrote. Then `lambda down`, which removes that context.
//!
//! Before `lambda down` it runs the web console's browser test against the same platform
//! (`scripts/console-test.sh`: Debian's chromium driven by playwright-core).
//!
//! `lambda up` owns the machine's platform ports (etcd 2379, gateway 8080, `lambda cloud` 8780)
//! and `lambda down` stops the Swarm the other tests share, so this binary is not part of
//! `cargo test --all-targets` (`test = false` in Cargo.toml): `scripts/test.sh` runs it on its
//! own, after every other test (`cargo test --test readme`). It fails, never skips, when the
//! platform cannot come up.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the fenced block after the "## How people use it" heading.
fn usage_block(readme: &str) -> Vec<String> {
    let after = readme
        .split_once("## How people use it")
        .expect("README has a \"How people use it\" section")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a ```sh block in that section")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// An environment like a new user's shell: `lambda` (this build) first on the PATH, the config
/// in a fresh home, none of the variables that would stand in for the context.
struct Shell {
    bin: tempfile::TempDir,
    config_home: tempfile::TempDir,
}

impl Shell {
    fn new() -> Shell {
        let bin = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lambda"), bin.path().join("lambda"))
            .expect("symlink lambda");
        Shell {
            bin,
            config_home: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn command(&self, line: &str) -> Command {
        // SIGINT at its default, as in a terminal: a test runner started in the background
        // inherits it ignored, and an ignored signal stays ignored across exec.
        let mut c = Command::new("env");
        c.args(["--default-signal=INT", "bash", "-c", line])
            .current_dir(root());
        for v in [
            "DOCKER_HOST",
            "LAMBDA_TOKEN",
            "LAMBDA_GATEWAY",
            "LAMBDA_ETCD_ENDPOINTS",
            "LAMBDA_NAMESPACE",
            "LAMBDA_CONTEXT",
            "LAMBDA_CONFIG",
            "LAMBDA_OS_ENV",
        ] {
            c.env_remove(v);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", self.bin.path().display()))
            .env("XDG_CONFIG_HOME", self.config_home.path());
        c
    }

    fn config_file(&self) -> PathBuf {
        self.config_home.path().join("lambda/config.yaml")
    }

    /// Runs `line` to completion; (success, stdout, stderr).
    fn run(&self, line: &str) -> (bool, String, String) {
        let out = self
            .command(line)
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a streaming line (`watch`, `logs -f`) for `secs`, then interrupts it as Ctrl-C would;
    /// it must still be running then (no early failure) and have printed something.
    fn run_streaming(&self, line: &str, secs: u64) -> String {
        let mut child = self
            .command(line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_secs(secs));
        let early = child.try_wait().expect("try_wait");
        // SIGINT to the whole group, as the terminal sends Ctrl-C.
        // (`--` first: procps' kill reads a bare `-PGID` as an option.)
        let _ = Command::new("kill")
            .args(["-s", "INT", "--", &format!("-{}", child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stopped = child.try_wait().expect("try_wait").is_some();
        // Whatever is left of the group goes, so that nothing holds the pipes open.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let mut out = String::new();
        let mut err = String::new();
        child.stdout.take().map(|mut s| s.read_to_string(&mut out));
        child.stderr.take().map(|mut s| s.read_to_string(&mut err));
        assert!(
            early.is_none(),
            "`{line}` ended before Ctrl-C ({early:?}): {out}{err}"
        );
        assert!(!out.trim().is_empty(), "`{line}` printed nothing: {err}");
        assert!(
            stopped,
            "`{line}` did not stop within 10 s of Ctrl-C: {out}{err}"
        );
        out
    }
}

use std::os::unix::process::CommandExt;

fn lambda_down(sh: &Shell) {
    let (ok, out, err) = sh.run("lambda down");
    assert!(ok, "lambda down failed:\n{out}\n{err}");
}

/// Brings the platform down even when an assertion failed.
struct Down<'a>(&'a Shell, bool);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let (_, out, err) = self.0.run("lambda down");
            eprintln!("lambda down (after a failure):\n{out}\n{err}");
        }
    }
}

fn logs_hint(dir: &Path) -> String {
    let mut s = String::new();
    for name in ["controller", "gateway", "cloud"] {
        let p = dir.join(format!(".lambda/platform/{name}.log"));
        if let Ok(t) = std::fs::read_to_string(&p) {
            let tail: Vec<&str> = t.lines().rev().take(30).collect();
            s.push_str(&format!(
                "\n--- {} (last lines) ---\n{}",
                p.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    s
}

#[test]
fn the_usage_block_runs_verbatim_after_lambda_up() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = usage_block(&readme);
    assert!(lines.len() >= 10, "the usage block is too short: {lines:?}");
    let sh = Shell::new();

    let t0 = Instant::now();
    let (ok, out, err) = sh.run("lambda up");
    let mut guard = Down(&sh, false);
    assert!(ok, "lambda up failed:\n{out}\n{err}{}", logs_hint(&root()));
    eprintln!("lambda up: {:.1} s", t0.elapsed().as_secs_f64());
    let cfg = sh.config_file();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&cfg)
            .unwrap_or_else(|e| panic!("lambda up wrote no context at {}: {e}", cfg.display()))
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "{}", cfg.display());

    for line in &lines {
        eprintln!("$ {line}");
        if line.contains("Ctrl-C") {
            let out = sh.run_streaming(line, 4);
            eprintln!("{}", out.lines().take(5).collect::<Vec<_>>().join("\n"));
            continue;
        }
        let (ok, out, err) = sh.run(line);
        assert!(
            ok,
            "README line failed: {line}\nstdout: {out}\nstderr: {err}{}",
            logs_hint(&root())
        );
        eprintln!("{}", out.lines().take(8).collect::<Vec<_>>().join("\n"));
        // What each kind of line is for, checked on its output.
        if line.starts_with("lambda invoke hello") && line.contains("--async") {
            let id = out.trim();
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "an async invoke prints its execution id: {out}"
            );
        } else if line.starts_with("lambda invoke hello") {
            assert!(out.contains("hello, x!"), "{out}");
        }
        if line.starts_with("lambda executions hello") {
            assert!(
                out.starts_with("ID") && out.contains("hello") && out.contains("async"),
                "the async invocation's record is listed: {out}"
            );
        }
        if line.starts_with("lambda get functions") {
            assert!(out.contains("hello") && out.contains("echo"), "{out}");
        }
        if line.starts_with("lambda config view") {
            assert!(
                out.contains("local") && out.contains("REDACTED") && !out.contains("lk_"),
                "the view shows the context with its key redacted: {out}"
            );
        }
        if line.starts_with("lambda get es") {
            assert!(out.contains("nova") && out.contains("Ready"), "{out}");
        }
        if line.starts_with("lambda executions on-vm") {
            assert!(
                out.starts_with("ID") && out.contains("on-vm"),
                "the VMs lambda up created started on-vm: {out}"
            );
        }
        if line.starts_with("lambda get np") {
            assert!(out.contains("workers"), "{out}");
        }
    }

    // A command that cannot reach what it needs says what it tried and what to do.
    let (ok, _, err) = sh.run("lambda invoke hello --gateway http://127.0.0.1:9");
    assert!(!ok);
    assert!(
        err.contains("http://127.0.0.1:9")
            && err.contains("--gateway")
            && err.contains("lambda up"),
        "{err}"
    );

    // The web console in a real browser (Debian's chromium through playwright-core) against
    // this platform: scripts/console-test.sh, screenshots under .lambda/console-screenshots/.
    let t = Instant::now();
    let (ok, out, err) = sh.run("scripts/console-test.sh");
    eprintln!("{out}");
    assert!(
        ok,
        "the console's browser test failed (screenshots in .lambda/console-screenshots/):\n{out}\n{err}{}",
        logs_hint(&root())
    );
    eprintln!("console browser test: {:.1} s", t.elapsed().as_secs_f64());

    guard.1 = true;
    lambda_down(&sh);
    let text = std::fs::read_to_string(&cfg).unwrap_or_default();
    assert!(
        !text.contains("local:"),
        "lambda down left the context: {text}"
    );
    let (ok, _, err) = sh.run("lambda get functions");
    assert!(!ok, "etcd is down");
    assert!(
        err.contains("127.0.0.1:2379") && err.contains("lambda up"),
        "the error names etcd and what to do: {err}"
    );
}
