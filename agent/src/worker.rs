//! One warm worker: a long-lived interpreter process that runs the bootstrap for its runtime and answers
//! framed requests (see [`crate::frame`]) over its stdin and stdout pipes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::{Config, Runtime};
use crate::frame::{self, FrameError, Header};

const PYTHON_BOOTSTRAP: &str = include_str!("bootstrap/python3.py");
const NODE_BOOTSTRAP: &str = include_str!("bootstrap/node.js");
const SHELL_BOOTSTRAP: &str = include_str!("bootstrap/shell.sh");

/// Results larger than this are refused (the agent holds each one in memory).
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// What can go wrong with a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The writable work directory could not be prepared.
    #[error("cannot prepare the work directory {path}: {source}")]
    WorkDir {
        /// The directory or file that failed.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The function's code file cannot be read.
    #[error("cannot read the function code at {path}: {source}")]
    Code {
        /// `LAMBDA_CODE`.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The interpreter could not be started.
    #[error("cannot start the {runtime} worker ({interpreter}): {source}")]
    Spawn {
        /// Runtime name.
        runtime: Runtime,
        /// The interpreter path.
        interpreter: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The worker process ended (or closed its protocol pipe).
    #[error("the worker process exited ({0})")]
    Exited(String),
    /// The worker did not say `ready` in time.
    #[error("the worker did not become ready within {0} ms")]
    StartTimeout(u128),
    /// The worker broke the frame protocol.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading or writing the protocol pipes failed.
    #[error("worker pipe: {0}")]
    Pipe(#[from] std::io::Error),
}

/// A worker's answer to one request.
#[derive(Debug)]
pub enum Reply {
    /// `ok`: the result (JSON; raw stdout for shell).
    Ok(Bytes),
    /// `error`: the error JSON the bootstrap built.
    Error(Bytes),
    /// `exit`: a shell script's non-zero status and stderr tail.
    Exit {
        /// Exit status.
        code: i32,
        /// Last stderr lines.
        tail: Bytes,
    },
}

/// Writes the code copy and the bootstrap into the work directory; returns the bootstrap's path.
pub fn prepare(cfg: &Config) -> Result<PathBuf, WorkerError> {
    let code = std::fs::read(&cfg.code).map_err(|source| WorkerError::Code {
        path: cfg.code.clone(),
        source,
    })?;
    let boot = write_bootstrap(cfg.runtime, &cfg.work_dir)?;
    write_code(cfg, &code)?;
    Ok(boot)
}

fn work_dir_error(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + use<> {
    let path = path.to_path_buf();
    move |source| WorkerError::WorkDir { path, source }
}

/// Writes the runtime's bootstrap into `dir` (created if missing); returns its path.
pub fn write_bootstrap(runtime: Runtime, dir: &Path) -> Result<PathBuf, WorkerError> {
    std::fs::create_dir_all(dir).map_err(work_dir_error(dir))?;
    let (name, text) = match runtime {
        Runtime::Python3 => ("bootstrap.py", PYTHON_BOOTSTRAP),
        Runtime::Node => ("bootstrap.js", NODE_BOOTSTRAP),
        Runtime::Shell => ("bootstrap.sh", SHELL_BOOTSTRAP),
    };
    let boot = dir.join(name);
    std::fs::write(&boot, text).map_err(work_dir_error(&boot))?;
    Ok(boot)
}

/// Writes the function's code where its workers import it from (`work_dir/<module>.py`, …).
pub fn write_code(cfg: &Config, code: &[u8]) -> Result<(), WorkerError> {
    let code_path = cfg.work_dir.join(cfg.code_file_name());
    std::fs::write(&code_path, code).map_err(work_dir_error(&code_path))
}

/// The line a bootstrap writes to stderr just before each reply: everything the worker wrote
/// since the previous one belongs to this invocation.
const END_OF_INVOCATION: &[u8] = b"\x1f\x1flambda-invocation-end\n";
/// Most output kept per invocation when it is captured (the last bytes; the front is cut).
pub const MAX_CAPTURED_LOG_BYTES: usize = 16 << 10;
/// How long a reply waits for the stderr forwarder to reach the invocation's end marker (the
/// two pipes are read independently).
const CAPTURE_SETTLE: Duration = Duration::from_millis(200);

/// What the stderr forwarder shares with the worker: the invocation id lines are prefixed with
/// (the latest one, kept after the reply because the forwarder may read a line only after the
/// reply went out; `init` before the first), and the capture of the running invocation.
#[derive(Debug)]
struct LogState {
    /// `namespace/name` of the function (`-` for a generic worker not loaded yet).
    function: Arc<str>,
    label: Arc<str>,
    capture: Option<Capture>,
}

/// One invocation's captured output: its last [`MAX_CAPTURED_LOG_BYTES`], how much was cut
/// before them, and who waits for its end marker.
#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    cut: usize,
    ended: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Capture {
    fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        if self.buf.len() > 2 * MAX_CAPTURED_LOG_BYTES {
            let drop = self.buf.len() - MAX_CAPTURED_LOG_BYTES;
            self.buf.drain(..drop);
            self.cut += drop;
        }
    }

    /// The output, its last [`MAX_CAPTURED_LOG_BYTES`] after a marker line when cut.
    fn finish(mut self) -> Vec<u8> {
        if self.buf.len() > MAX_CAPTURED_LOG_BYTES {
            let drop = self.buf.len() - MAX_CAPTURED_LOG_BYTES;
            self.buf.drain(..drop);
            self.cut += drop;
        }
        if self.cut == 0 {
            return self.buf;
        }
        let mut out = format!("[... {} earlier bytes cut ...]\n", self.cut).into_bytes();
        out.extend_from_slice(&self.buf);
        out
    }
}

type LogLabel = Arc<Mutex<LogState>>;

/// What a worker process is started for.
struct Launch<'a> {
    runtime: Runtime,
    interpreter: &'a Path,
    work_dir: &'a Path,
    /// `namespace/name`, for log prefixes.
    function: Arc<str>,
}

/// A warm interpreter process and its protocol pipes.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Reused request buffer: no per-request allocation for the frame.
    frame: Vec<u8>,
    /// Reused header-line buffer.
    line: Vec<u8>,
    label: LogLabel,
    scratch: Option<PathBuf>,
}

impl Worker {
    /// Starts a worker running `bootstrap` and waits until it reports ready (or `start_timeout` passes).
    pub async fn start(
        cfg: &Config,
        bootstrap: &Path,
        start_timeout: Duration,
    ) -> Result<Worker, WorkerError> {
        let dir = cfg.work_dir.as_os_str();
        let mut cmd = Command::new(&cfg.interpreter);
        match cfg.runtime {
            // -B: no .pyc files; -s: no user site-packages (a read-only home anyway).
            Runtime::Python3 => cmd.args(["-B", "-s"]).arg(bootstrap).arg(dir),
            Runtime::Node => cmd.arg(bootstrap).arg(dir),
            Runtime::Shell => cmd.arg(bootstrap).arg(dir),
        };
        match cfg.runtime {
            Runtime::Python3 | Runtime::Node => {
                cmd.args([&cfg.module, &cfg.function, &cfg.function_name]);
                cmd.arg(cfg.memory_mb.to_string());
            }
            Runtime::Shell => {
                cmd.arg(cfg.work_dir.join(cfg.code_file_name()))
                    .arg(&cfg.interpreter);
            }
        }
        cmd.envs(cfg.env.iter().map(|(k, v)| (k, v)));
        let launch = Launch {
            runtime: cfg.runtime,
            interpreter: &cfg.interpreter,
            work_dir: &cfg.work_dir,
            function: Arc::from(cfg.function_name.as_str()),
        };
        Worker::spawn(cmd, &launch, start_timeout).await
    }

    /// Starts a generic worker (a pool agent's): the interpreter runs its bootstrap up to the
    /// point where it needs the function, says ready, and waits for [`Worker::load`].
    pub async fn start_generic(
        runtime: Runtime,
        interpreter: &Path,
        work_dir: &Path,
        bootstrap: &Path,
        start_timeout: Duration,
    ) -> Result<Worker, WorkerError> {
        let mut cmd = Command::new(interpreter);
        if runtime == Runtime::Python3 {
            cmd.args(["-B", "-s"]);
        }
        cmd.arg(bootstrap).arg(work_dir).arg("--generic");
        if runtime == Runtime::Shell {
            cmd.arg(interpreter);
        }
        let launch = Launch {
            runtime,
            interpreter,
            work_dir,
            function: Arc::from("-"),
        };
        Worker::spawn(cmd, &launch, start_timeout).await
    }

    async fn spawn(
        mut cmd: Command,
        launch: &Launch<'_>,
        start_timeout: Duration,
    ) -> Result<Worker, WorkerError> {
        cmd.current_dir(launch.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills the scripts a shell worker started too.
            .process_group(0)
            .kill_on_drop(true);
        let spawn_err = |source| WorkerError::Spawn {
            runtime: launch.runtime,
            interpreter: launch.interpreter.to_path_buf(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(spawn_err(std::io::Error::other("missing stdio pipe")));
        };
        let label: LogLabel = Arc::new(Mutex::new(LogState {
            function: launch.function.clone(),
            label: Arc::from("init"),
            capture: None,
        }));
        tokio::spawn(forward_stderr(stderr, label.clone()));
        let scratch =
            (launch.runtime == Runtime::Shell).then(|| launch.work_dir.join(format!("run.{pid}")));
        let mut worker = Worker {
            child,
            pid,
            stdin,
            stdout: BufReader::with_capacity(64 << 10, stdout),
            frame: Vec::with_capacity(4096),
            line: Vec::with_capacity(64),
            label,
            scratch,
        };
        match worker.expect_ready(start_timeout).await {
            Ok(()) => Ok(worker),
            Err(e) => {
                worker.kill().await;
                Err(e)
            }
        }
    }

    /// Reads the `ready` frame within `within`.
    async fn expect_ready(&mut self, within: Duration) -> Result<(), WorkerError> {
        match tokio::time::timeout(within, self.read_header(0)).await {
            Ok(Ok(Header::Ready)) => Ok(()),
            Ok(Ok(other)) => {
                Err(FrameError::BadHeader(format!("expected ready, got {other:?}")).into())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WorkerError::StartTimeout(within.as_millis())),
        }
    }

    /// Specialises a generic worker: sends the `load` frame (see [`crate::frame`]) and waits
    /// until the worker imported the function and said ready again. The caller kills the
    /// worker when this fails.
    pub async fn load(
        &mut self,
        function: &str,
        payload: &[u8],
        within: Duration,
    ) -> Result<(), WorkerError> {
        if let Ok(mut state) = self.label.lock() {
            state.function = Arc::from(function);
        }
        frame::encode_load(&mut self.frame, payload);
        if let Err(e) = self.stdin.write_all(&self.frame).await {
            return Err(self.exited_or(e.into()));
        }
        self.expect_ready(within).await
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one event and reads the reply. Cancel-safe only in the sense that a cancelled call leaves
    /// the worker mid-frame: the caller must then [`kill`](Worker::kill) it.
    /// With `capture`, what the worker writes to stderr during this call is kept too, for
    /// [`Worker::take_logs`].
    pub async fn call(
        &mut self,
        id: &Arc<str>,
        remaining_ms: u64,
        event: &[u8],
        capture: bool,
    ) -> Result<Reply, WorkerError> {
        let mut ended = None;
        if let Ok(mut state) = self.label.lock() {
            state.label = id.clone();
            state.capture = capture.then(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                ended = Some(rx);
                Capture {
                    ended: Some(tx),
                    ..Default::default()
                }
            });
        }
        let reply = self.exchange(id, remaining_ms, event).await;
        if let (Ok(_), Some(rx)) = (&reply, ended) {
            // The reply came on stdout; its output may still be in the stderr pipe.
            let _ = tokio::time::timeout(CAPTURE_SETTLE, rx).await;
        }
        reply
    }

    /// The output captured during the last call (see [`Worker::call`]), if it was captured.
    pub fn take_logs(&self) -> Option<Vec<u8>> {
        let mut state = self.label.lock().ok()?;
        state.capture.take().map(Capture::finish)
    }

    async fn exchange(
        &mut self,
        id: &Arc<str>,
        remaining_ms: u64,
        event: &[u8],
    ) -> Result<Reply, WorkerError> {
        frame::encode_request(&mut self.frame, id, remaining_ms, event);
        if let Err(e) = self.stdin.write_all(&self.frame).await {
            return Err(self.exited_or(e.into()));
        }
        let header = self.read_header(MAX_RESULT_BYTES).await?;
        let mut payload = vec![0u8; header.len()];
        if let Err(e) = self.stdout.read_exact(&mut payload).await {
            return Err(self.exited_or(e.into()));
        }
        Ok(match header {
            Header::Ok { .. } => Reply::Ok(payload.into()),
            Header::Error { .. } => Reply::Error(payload.into()),
            Header::Exit { code, .. } => Reply::Exit {
                code,
                tail: payload.into(),
            },
            Header::Ready => return Err(FrameError::BadHeader("unexpected ready".into()).into()),
        })
    }

    async fn read_header(&mut self, limit: usize) -> Result<Header, WorkerError> {
        self.line.clear();
        let n = match self.stdout.read_until(b'\n', &mut self.line).await {
            Ok(n) => n,
            Err(e) => return Err(self.exited_or(e.into())),
        };
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Err(self.exited_or(WorkerError::Exited("closed its protocol pipe".into())));
        }
        Ok(frame::parse_header(&self.line, limit)?)
    }

    /// A pipe error usually means the process died: report its exit status when it has one.
    fn exited_or(&mut self, e: WorkerError) -> WorkerError {
        match self.child.try_wait() {
            Ok(Some(status)) => WorkerError::Exited(status.to_string()),
            _ => e,
        }
    }

    /// Kills the worker's whole process group and reaps it.
    pub async fn kill(mut self) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // The group may already be gone (ESRCH): nothing left to kill then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(dir) = self.scratch.take() {
            // A few small files on a tmpfs: cheap enough to remove inline.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Copies a worker's stderr (the function's logs) to the agent's, one line at a time, each prefixed with
/// the function and the invocation that was running.
async fn forward_stderr(stderr: tokio::process::ChildStderr, label: LogLabel) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // The end marker, possibly after output that did not end its line.
        let (text, end) = match line.strip_suffix(END_OF_INVOCATION) {
            Some(text) => (text, true),
            None => (&line[..], false),
        };
        let (function, id) = match label.lock() {
            Ok(mut state) => {
                let capture = state.capture.as_mut().filter(|c| c.ended.is_some());
                if let Some(c) = capture {
                    c.push(text);
                    if end && let Some(tx) = c.ended.take() {
                        let _ = tx.send(());
                    }
                }
                (state.function.clone(), state.label.clone())
            }
            Err(_) => (Arc::from("?"), Arc::from("?")),
        };
        if text.is_empty() {
            continue;
        }
        out.clear();
        out.extend_from_slice(format!("[{function} {id}] ").as_bytes());
        out.extend_from_slice(text);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        // One write per line keeps lines of concurrent workers whole.
        let _ = std::io::stderr().lock().write_all(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_keeps_the_last_bytes_and_says_what_it_cut() {
        let mut c = Capture::default();
        c.push(b"short\n");
        assert_eq!(c.finish(), b"short\n");

        let mut c = Capture::default();
        let line = vec![b'x'; 1000];
        for _ in 0..100 {
            c.push(&line);
        }
        c.push(b"last\n");
        // Bounded while it grows, not only at the end.
        assert!(c.buf.len() <= 2 * MAX_CAPTURED_LOG_BYTES);
        let out = c.finish();
        let text = String::from_utf8(out).expect("utf-8");
        let cut = 100 * 1000 + 5 - MAX_CAPTURED_LOG_BYTES;
        assert!(
            text.starts_with(&format!("[... {cut} earlier bytes cut ...]\n")),
            "{}",
            &text[..60]
        );
        assert!(text.ends_with("last\n"));
        assert_eq!(
            text.len() - text.find('\n').unwrap() - 1,
            MAX_CAPTURED_LOG_BYTES
        );
    }
}
