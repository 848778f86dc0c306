// The lambda-agent's node worker: loads the function's module once, then answers framed requests
// (see the agent's frame.rs) one at a time. argv: CODE_DIR FILE EXPORT FUNCTION_NAME MEMORY_MB
'use strict';
const fs = require('fs');
const path = require('path');
const { pathToFileURL } = require('url');

const [codeDir, file, exportName, functionName, memoryMb] = process.argv.slice(2);

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

async function main() {
  let fn = null;
  let initError = null;
  try {
    fn = await load();
  } catch (err) {
    console.error(err);
    const type = err && err.name === 'HandlerNotFound' ? 'HandlerNotFound' : 'ImportModuleError';
    initError = errorPayload(err, type, type === 'ImportModuleError' ? `cannot load module '${file}': ` : '');
  }
  let pending = Buffer.alloc(0);
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
  send('ready', Buffer.alloc(0));
}

main();
