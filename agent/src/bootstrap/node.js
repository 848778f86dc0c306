// The lambda-agent's node worker: loads the function's module once, then answers framed requests
// (see the agent's frame.rs) one at a time. argv: CODE_DIR FILE EXPORT FUNCTION_NAME MEMORY_MB, or
// CODE_DIR --generic for a pool agent's generic worker: node starts, says ready, and learns its
// function (and its environment) from one `load` frame before loading it.
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

const argv = process.argv.slice(2);
const codeDir = argv[0];
const generic = argv[1] === '--generic';
let [file, exportName, functionName, memoryMb] = generic ? [] : argv.slice(1);

// The protocol owns the stdout pipe: user output (console.log, process.stdout.write) goes to stderr.
const protoWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb);

// Written to stderr before each reply: the agent ends the invocation's captured output there.
// (Writes to a pipe are synchronous on Linux, so it follows everything the function wrote.)
const END_OF_INVOCATION = '\x1f\x1flambda-invocation-end\n';

function send(kind, payload) {
  if (kind !== 'ready') process.stderr.write(END_OF_INVOCATION);
  protoWrite(Buffer.concat([Buffer.from(`${kind} ${payload.length}\n`), payload]));
}

function errorPayload(err, typeOverride, prefix) {
  const isError = err instanceof Error;
  const type = typeOverride || (isError ? err.name || err.constructor.name : 'Error');
  let message = isError ? err.message : typeof err === 'string' ? err : JSON.stringify(err);
  if (prefix) message = `${prefix}${isError ? `${err.name}: ` : ''}${message}`;
  let stack = isError && typeof err.stack === 'string'
    ? err.stack.split('\n').slice(1).map((l) => l.trim()).filter((l) => l.length > 0)
    : [];
  // Frames from here down are the bootstrap's, not the function's.
  const cut = stack.findIndex((l) => l.includes(__filename));
  if (cut >= 0) stack = stack.slice(0, cut);
  return Buffer.from(JSON.stringify({ errorType: type, errorMessage: String(message), stackTrace: stack }));
}

async function load() {
  const source = path.join(codeDir, `${file}.js`);
  let mod;
  try {
    mod = require(source);
  } catch (err) {
    // An ES module (`export const handler = ...`): load it as .mjs instead.
    const esm = err && (err.code === 'ERR_REQUIRE_ESM' ||
      (err instanceof SyntaxError && /\b(import|export)\b/.test(err.message)));
    if (!esm) throw err;
    const mjs = path.join(codeDir, `${file}.mjs`);
    fs.copyFileSync(source, mjs);
    mod = await import(pathToFileURL(mjs).href);
  }
  let fn = mod && mod[exportName];
  if (typeof fn !== 'function' && mod && mod.default) fn = mod.default[exportName];
  if (typeof fn !== 'function') {
    const e = new Error(`module '${file}' has no exported function '${exportName}'`);
    e.name = 'HandlerNotFound';
    throw e;
  }
  return fn;
}

function invoke(fn, event, context) {
  if (fn.length >= 3) {
    // Callback-style handler: (event, context, callback).
    return new Promise((resolve, reject) => {
      const maybe = fn(event, context, (err, result) => (err ? reject(err) : resolve(result)));
      if (maybe && typeof maybe.then === 'function') maybe.then(resolve, reject);
    });
  }
  return fn(event, context);
}

async function handle(fn, initError, id, remainingMs, body) {
  if (initError) return send('error', initError);
  const deadline = Date.now() + remainingMs;
  const context = {
    invocationId: id,
    awsRequestId: id,
    functionName,
    memoryLimitInMB: Number(memoryMb),
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  let result;
  try {
    result = await invoke(fn, JSON.parse(body.toString('utf8')), context);
  } catch (err) {
    console.error(err);
    return send('error', errorPayload(err));
  }
  let json;
  try {
    json = JSON.stringify(result === undefined ? null : result);
  } catch (err) {
    return send('error', errorPayload(err, 'ResultNotSerializable', 'the handler\'s result is not JSON: '));
  }
  send('ok', Buffer.from(json === undefined ? 'null' : json));
}

// A generic worker's `load` frame: resolves with its JSON and whatever followed it on stdin.
function readLoadFrame() {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(10);
      if (nl < 0) return;
      const [kind, len] = buf.subarray(0, nl).toString('latin1').split(' ');
      if (kind !== 'load') {
        process.stderr.write(`generic worker: expected a load frame, got ${kind}\n`);
        process.exit(1);
      }
      const end = nl + 1 + Number(len);
      if (buf.length < end) return;
      process.stdin.off('data', onData);
      process.stdin.pause();
      resolve({ spec: JSON.parse(buf.subarray(nl + 1, end).toString('utf8')), rest: buf.subarray(end) });
    };
    process.stdin.on('data', onData);
    process.stdin.on('end', () => process.exit(0));
  });
}

async function main() {
  let fn = null;
  let initError = null;
  let pending = Buffer.alloc(0);
  if (generic) {
    send('ready', Buffer.alloc(0));
    const { spec, rest } = await readLoadFrame();
    ({ module: file, function: exportName, functionName } = spec);
    memoryMb = String(spec.memoryMb);
    // The function's environment, as a dedicated container would have had it from the start.
    Object.assign(process.env, spec.env || {});
    pending = rest;
  }
  try {
    fn = await load();
  } catch (err) {
    console.error(err);
    const type = err && err.name === 'HandlerNotFound' ? 'HandlerNotFound' : 'ImportModuleError';
    initError = errorPayload(err, type, type === 'ImportModuleError' ? `cannot load module '${file}': ` : '');
  }
  let busy = false;
  async function pump() {
    if (busy) return;
    busy = true;
    for (;;) {
      const nl = pending.indexOf(10);
      if (nl < 0) break;
      const [id, remaining, len] = pending.subarray(0, nl).toString('latin1').split(' ');
      const end = nl + 1 + Number(len);
      if (pending.length < end) break;
      const body = pending.subarray(nl + 1, end);
      pending = pending.subarray(end);
      await handle(fn, initError, id, Number(remaining), body);
    }
    busy = false;
  }
  process.stdin.on('data', (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    pump();
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  send('ready', Buffer.alloc(0));
  pump();
}

main();
