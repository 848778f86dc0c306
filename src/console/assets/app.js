// The console's shell: sign-in, the header, and a hash router over the views. Each view is
// `mount(main, params) → cleanup`, and the cleanup stops its watches and timers.

import { session, events, call, paths, ApiError } from './api.js';
import { h, replace } from './dom.js';
import * as functions from './functions.js';
import * as fn from './function.js';
import * as form from './form.js';
import * as platform from './platform.js';

const main = document.getElementById('main');
const header = document.querySelector('header.top');
let cleanup = null;

const routes = [
  [/^#\/functions\/?$/, 'functions', () => functions.mount],
  [/^#\/functions\/new$/, 'functions', () => form.mount],
  [/^#\/functions\/([^/]+)\/edit$/, 'functions', () => form.mount],
  [/^#\/functions\/([^/]+)$/, 'functions', () => fn.mount],
  [/^#\/platform$/, 'platform', () => platform.mountPlatform],
  [/^#\/events$/, 'events', () => platform.mountEvents],
];

function signIn(message) {
  header.hidden = true;
  const key = h('input', { id: 'key', name: 'key', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'key-hint' });
  const ns = h('input', { id: 'signin-ns', name: 'namespace', value: session.namespace, autocomplete: 'off', spellcheck: 'false' });
  const err = h('p', { id: 'signin-error', class: 'field-error', role: 'alert' }, message || '');
  const f = h('form', { class: 'panel signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to the Lambda console'),
    h('div', { class: 'field' },
      h('label', { for: 'key' }, 'API key'),
      key,
      h('span', { id: 'key-hint', class: 'hint' }, 'Create one with ', h('code', {}, 'lambda apikey create NAME'),
        '. It is kept in this tab only (sessionStorage) and sent only in the Authorization header.')),
    h('div', { class: 'field' }, h('label', { for: 'signin-ns' }, 'Namespace'), ns),
    err,
    h('button', { type: 'submit' }, 'Sign in'));
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = key.value.trim();
    if (!value) { err.textContent = 'Enter an API key.'; key.focus(); return; }
    session.key = value;
    session.namespace = ns.value.trim() || 'default';
    const r = await call('GET', paths.functions(session.namespace)).catch((x) => ({ status: 0, text: String(x) }));
    if (r.status === 401) {
      session.key = null;
      err.textContent = 'The gateway refused this API key.';
      key.setAttribute('aria-invalid', 'true');
      key.focus();
      return;
    }
    if (r.status === 0) {
      session.key = null;
      err.textContent = `The gateway cannot be reached: ${r.text}`;
      return;
    }
    if (!location.hash || location.hash === '#/signin') location.hash = '#/functions';
    else route();
  });
  if (cleanup) { cleanup(); cleanup = null; }
  replace(main, f);
  key.focus();
}

events.onUnauthorized = () => {
  session.key = null;
  signIn('The API key was refused (revoked or expired): sign in again.');
};

async function route() {
  if (!session.key) { signIn(); return; }
  header.hidden = false;
  const hash = location.hash || '#/functions';
  const found = routes.map(([re, section, view]) => [hash.match(re), section, view]).find(([m]) => m);
  if (!found) { location.hash = '#/functions'; return; }
  const [m, section, view] = found;
  for (const a of header.querySelectorAll('nav a[data-section]')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.getElementById('ns-input').value = session.namespace;
  if (cleanup) { cleanup(); cleanup = null; }
  replace(main);
  const params = m.slice(1).map((x) => decodeURIComponent(x));
  try {
    cleanup = view()(main, { ns: session.namespace, params, hash }) || null;
  } catch (e) {
    replace(main, h('p', { class: 'errors', role: 'alert' }, e instanceof ApiError ? e.message : String(e)));
  }
  main.focus({ preventScroll: true });
}

document.getElementById('ns-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = document.getElementById('ns-input').value.trim();
  if (!v) return;
  session.namespace = v;
  if (/^#\/functions\/.+/.test(location.hash)) location.hash = '#/functions';
  else route();
});
document.getElementById('signout').addEventListener('click', () => {
  session.key = null;
  location.hash = '#/signin';
  signIn('Signed out.');
});
window.addEventListener('hashchange', route);
route();
