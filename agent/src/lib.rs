//! # lambda-agent — the runtime agent inside every function container
//!
//! A small static binary (`/usr/local/bin/lambda-agent`, the ENTRYPOINT of the `lambda/runtime-*` images)
//! that serves one function over HTTP and keeps warm worker processes for it: one long-lived interpreter
//! per worker, never a process per request (the shell runtime forks the user's script per event inside its
//! warm shell). It enforces the function's time and payload limits and reports health.
//!
//! ## Configuration (environment)
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `LAMBDA_RUNTIME` | `python3`, `node` or `shell` (required) | — |
//! | `LAMBDA_HANDLER` | python3: `module.function`; node: `file.export`; unused for shell | `main.handler` / `index.handler` |
//! | `LAMBDA_CODE` | the function's code file (a read-only Swarm config) | `/var/lambda/code` |
//! | `LAMBDA_TIMEOUT_MS` | invocation time limit, 1..=900000 | `30000` |
//! | `LAMBDA_MAX_PAYLOAD_BYTES` | largest event body | `1048576` |
//! | `LAMBDA_CONCURRENCY` | warm workers = invocations at once, 1..=256 | `1` |
//! | `LAMBDA_PORT` | HTTP port (all interfaces) | `8080` |
//! | `LAMBDA_FUNCTION` | `namespace/name`, for the context and log prefixes | `default/function` |
//! | `LAMBDA_MEMORY_MB` | memory limit, for the context only | `128` |
//! | `LAMBDA_WORK_DIR` | writable dir for the code copy and bootstraps (a tmpfs) | `/tmp/lambda` |
//! | `LAMBDA_PYTHON`, `LAMBDA_NODE`, `LAMBDA_SHELL` | interpreter of the runtime | `python3`, `node`, `/bin/sh` |
//!
//! An invalid or missing setting prints `lambda-agent: invalid configuration: …` on stderr and exits 2;
//! an unreadable code file or an interpreter that cannot start exits 1 with the reason. Either way the
//! Swarm task fails with that message. The code is copied to `LAMBDA_WORK_DIR` as `<module>.py`,
//! `<file>.js` (`.mjs` too for an ES module) or `handler.sh`, because the root file system is read-only.
//!
//! ## HTTP contract
//!
//! HTTP/1.1 with keep-alive (callers should pool connections).
//!
//! `POST /invoke` — the request body is the event (JSON, at most `LAMBDA_MAX_PAYLOAD_BYTES`).
//! Optional request headers:
//! - `X-Lambda-Invocation-Id`: 1–128 of `[A-Za-z0-9._:-]`; generated (32 hex digits) when absent.
//! - `X-Lambda-Deadline-Ms`: how many ms the caller will still wait; the invocation's deadline is
//!   `min(that, LAMBDA_TIMEOUT_MS)` and covers the wait for a free worker too.
//!
//! - `X-Lambda-Log-Type: Tail`: also return what the function wrote (stdout and stderr) during this
//!   invocation, base64 in `X-Lambda-Log-Result` (its last 16 KiB, after a `[... N earlier bytes
//!   cut ...]` line when there was more). Output a function's background work writes after it
//!   returned is not its own and may land in the next invocation's.
//!
//! Every response carries `X-Lambda-Invocation-Id`, `X-Lambda-Duration-Ms` (agent time, ms with 3
//! decimals), `X-Lambda-Status` and `Content-Type: application/json`:
//!
//! | status | `X-Lambda-Status` | body |
//! |---|---|---|
//! | 200 | `ok` | the function's result as JSON (`null` for none) |
//! | 502 | `error` | `{"errorType","errorMessage","stackTrace":[..]}` — the function raised/threw (type = exception class), a shell script exited non-zero (`ExitStatus`, message = its last stderr lines), the module failed to load (`ImportModuleError`, `HandlerNotFound`), the result is not JSON (`ResultNotSerializable`), or the worker died mid-call (`WorkerExited`; it is replaced) |
//! | 504 | `timeout` | `{"errorType":"Timeout","errorMessage":"... exceeded N ms ..."}` — the function overran (its worker is killed and a fresh one started; later calls succeed) or no worker became free in time |
//! | 413 | `too-large` | `{"errorType":"PayloadTooLarge",..}`; at most limit+1 bytes are read (none when `Content-Length` says too much) |
//! | 400 | `invalid` | `InvalidEvent` (body not JSON), `InvalidInvocationId`, `InvalidDeadline`, `BadRequest` |
//!
//! When all workers are busy, an invocation waits (first come, first served) for one until its deadline.
//!
//! `GET /healthz` — `200 {"status":"ok","runtime":"python3","workers":N,"busy":M,"function":"ns/name"}` once every worker of
//! the start-up is warm (module imported) and while at least one worker lives; `503` with
//! `"status":"starting"` before. `lambda-agent healthcheck` GETs it on `127.0.0.1:$LAMBDA_PORT` and exits
//! 0 on 200, 1 otherwise: the images' Docker `HEALTHCHECK`, so Swarm marks a task running only when warm.
//!
//! `X-Lambda-Function: namespace/name` on `/invoke` names the function the caller means: an agent
//! serving another one answers `421 WrongFunction` (the gateway always sends it).
//!
//! ## Pool mode (`LAMBDA_POOL=1`)
//!
//! A generic agent of one runtime: `LAMBDA_POOL_WORKERS` interpreters (default 2) start without a
//! function and wait; `/healthz` says `"status":"idle","pool":true` once they are warm and `/invoke`
//! answers `503 NotSpecialised`. One `POST /specialize` with `Authorization: Bearer <the content
//! of LAMBDA_POOL_TOKEN_FILE>` (default `/var/lambda/pool-token`) makes it that function's agent
//! for good (code, handler, env, secrets written as 0400 files under `LAMBDA_SECRETS_DIR`, default
//! `/run/secrets`, a tmpfs that goes with the container; limits): the warm interpreters import the
//! function, the rest up to its concurrency start behind them. A second specialisation is `409`.
//! `POST /release` (same token) makes it finish its in-flight invocations and exit 0; so does
//! `idleExitMs` without an invocation. See `specialise.rs` for the body.
//!
//! Other paths answer 404, other methods 405. On SIGTERM the agent stops accepting connections, lets the
//! in-flight invocations finish (bounded by the timeout + 1 s), kills its workers and exits 0.
//!
//! ## Function interface per runtime
//!
//! - **python3**: `def handler(event, context)` in `<module>.py`; `context` has `invocation_id`
//!   (also `aws_request_id`), `function_name`, `memory_limit_in_mb`, `get_remaining_time_in_millis()`.
//!   The return value is serialised with `json.dumps`.
//! - **node**: `exports.handler = async (event, context) => ...` (CommonJS or ES module; sync, async or
//!   `(event, context, callback)`); `context` has `invocationId`, `awsRequestId`, `functionName`,
//!   `memoryLimitInMB`, `getRemainingTimeInMillis()`.
//! - **shell**: the script runs with `/bin/sh`, the event on stdin and `LAMBDA_INVOCATION_ID`,
//!   `LAMBDA_REMAINING_MS` in its environment; its stdout is the result (valid JSON as is, anything
//!   else as a JSON string, empty as `null`); a non-zero exit is an `ExitStatus` error.
//!
//! What a function prints (stdout and stderr) goes to the container log, each line prefixed with
//! `[<function> <invocation id>]`.
//!
//! ## Custom images (`runtime: image`)
//!
//! A custom image either builds on a runtime image (`FROM lambda/runtime-python3:<ver>`, adding
//! packages; the agent stays the ENTRYPOINT), copies `/usr/local/bin/lambda-agent` into its own root
//! file system, or serves this same HTTP contract itself on `$LAMBDA_PORT`. It must run as a non-root
//! user with a read-only root file system (only `/tmp` is writable). See `examples/custom-image/`.

#![forbid(unsafe_code)]

pub mod config;
pub mod frame;
pub mod healthcheck;
pub mod pool;
pub mod server;
pub mod specialise;
pub mod worker;
