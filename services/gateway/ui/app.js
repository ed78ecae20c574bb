// padlock's web UI: sign in, apps, an app's Deploy and Permissions tabs, and
// the two-factor dialog that opens when an action carries a padlock.
//
// Plain JavaScript with no dependencies, served by padlock-gateway under a
// strict CSP (no inline scripts or styles). Every call goes to the gateway's
// /api/v1 (docs/api.md); the browser holds only HttpOnly cookies.
'use strict';

// ------------------------------------------------------------------ names

// Error reasons come from /reasons.js (the contract's ErrorReason, loaded
// first): compare `error` with `Reason.MFA_REQUIRED` and so on. NETWORK is
// the UI's own: no answer reached the browser.
if (typeof Reason === 'undefined') throw new Error('/reasons.js did not load: the UI needs Reason');
const NETWORK = 'NETWORK';

const ENVIRONMENTS = ['test', 'acceptance', 'production'];
const PERMISSIONS = ['transport', 'operate', 'backups', 'logs'];

const title = (word) => word ? word[0].toUpperCase() + word.slice(1) : '';

// ------------------------------------------------------------------ DOM

const $ = (selector) => document.querySelector(selector);

/** h('button', {class: 'x', onclick: f}, 'text', child) builds an element. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (['disabled', 'checked', 'hidden', 'value', 'required'].includes(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The padlock drawn on actions that need a second factor. */
function padlockIcon(what) {
  return h('span', {
    class: 'padlock',
    role: 'img',
    'aria-label': 'padlocked',
    title: `${what} needs your second factor (2FA)`,
    'data-testid': 'padlock',
  });
}

function show(el, visible) { el.hidden = !visible; }

// ------------------------------------------------------------------ time

const pad2 = (n) => String(n).padStart(2, '0');

/** "17:42", "tomorrow 01:10" or "3 Mar 09:00", in the browser's time zone. */
function clock(iso) {
  const t = new Date(iso);
  const hm = `${pad2(t.getHours())}:${pad2(t.getMinutes())}`;
  const today = new Date();
  const tomorrow = new Date(today.getFullYear(), today.getMonth(), today.getDate() + 1);
  if (t.toDateString() === today.toDateString()) return hm;
  if (t.toDateString() === tomorrow.toDateString()) return `tomorrow ${hm}`;
  return `${t.getDate()} ${t.toLocaleString('en', { month: 'short' })} ${hm}`;
}

/** 28800 -> "8 hours", 900 -> "15 minutes", 45 -> "45 seconds". */
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const plural = (n, unit) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (s < 60) return plural(s, 'second');
  if (s < 3600) return plural(Math.ceil(s / 60), 'minute');
  const hours = Math.floor(s / 3600);
  const minutes = Math.round((s % 3600) / 60);
  return minutes ? `${plural(hours, 'hour')} ${plural(minutes, 'minute')}` : plural(hours, 'hour');
}

/** "2FA valid until 17:42 (8 hours from verification)". */
function validUntil(mfaAt, mfaExpiresAt) {
  if (!mfaExpiresAt) return '';
  const span = mfaAt ? ` (${duration((Date.parse(mfaExpiresAt) - Date.parse(mfaAt)) / 1000)} from verification)` : '';
  return `2FA valid until ${clock(mfaExpiresAt)}${span}`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// ------------------------------------------------------------------ API

/**
 * One call to the gateway. Never throws: returns {ok, status, data, error,
 * message, retryAfter, stepUp}. Every non-GET call carries the CSRF header.
 */
async function api(method, path, { json, raw } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET' && method !== 'HEAD') init.headers['X-Padlock-CSRF'] = '1';
  if (raw !== undefined) {
    init.headers['Content-Type'] = 'application/octet-stream';
    init.body = raw;
  } else if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    return { ok: false, status: 0, data: {}, error: NETWORK, message: 'The server cannot be reached; check your connection and try again.' };
  }
  const text = await res.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { message: text }; }
  const result = { ok: res.ok, status: res.status, data };
  if (!res.ok) {
    result.error = data.error || `HTTP_${res.status}`;
    result.message = data.message || '';
    const retry = Number(res.headers.get('Retry-After') ?? data.retry_after);
    if (Number.isFinite(retry) && retry > 0) result.retryAfter = retry;
    // RFC 9470: the action needs a (fresher) second factor.
    const challenge = res.headers.get('WWW-Authenticate') || '';
    result.stepUp = res.status === 401 && challenge.includes('insufficient_user_authentication');
  }
  if (result.error === Reason.SESSION_INVALID) sessionEnded();
  return result;
}

const get = (path) => api('GET', path);
const post = (path, json) => api('POST', path, { json: json ?? {} });
const enc = encodeURIComponent;

// ------------------------------------------------------------------ state

const state = {
  me: null,         // GET /api/v1/me
  policy: [],       // GET /api/v1/policy/actions
  app: null,        // the open app
  members: [],
  tab: 'deploy',
};

function rule(action, environment) {
  return state.policy.find((r) => r.action === action && r.environment === environment);
}
const isPadlocked = (action, environment) => Boolean(rule(action, environment)?.padlock);

/**
 * Actions about the whole app, not one environment's nodes: a team change is
 * padlocked on every environment (it decides who reaches production), so it
 * must not draw a padlock on test's or acceptance's card.
 */
const APP_WIDE_ACTIONS = new Set(['change_team']);

// ------------------------------------------------------------------ messages

let flashTimer = 0;

/** A message under the header: kind 'ok' or 'error'; lines joined. */
function flash(kind, ...lines) {
  const el = $('#flash');
  clearTimeout(flashTimer);
  el.className = `flash ${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.replaceChildren(...lines.filter(Boolean).map((line, i) => h('span', { class: i ? 'detail' : 'headline', 'data-testid': i ? 'message-detail' : 'message-headline' }, line)));
  show(el, true);
}

function clearFlash() { show($('#flash'), false); }

/** What went wrong, in words a person can act on. */
function describe(res, ctx = {}) {
  const d = res.data || {};
  const contact = state.app ? state.app.technical_contact : 'the Technical Contact';
  switch (res.error) {
    case Reason.NODE_PERMISSION_MISSING: {
      const env = d.environment || ctx.environment;
      const perm = rule(d.action || ctx.action, env)?.permission;
      const what = perm ? `the ${title(perm)} permission` : 'the node permission';
      return `You don't have ${what} on ${env}; ask the Technical Contact (${contact}).`;
    }
    case Reason.TECHNICAL_CONTACT_REQUIRED:
      return `Only the Technical Contact (${contact}) may do that.`;
    case Reason.DEPLOY_ROLE_REQUIRED:
      return `Only team members with the Deploy role may do that; ask the Technical Contact (${contact}).`;
    case Reason.NOT_A_MEMBER:
      return `You are not on this app's team; ask the Technical Contact (${contact}).`;
    case Reason.PACKAGE_NOT_DEPLOYED_IN_SOURCE:
      return `${ctx.what || 'This package'} does not run on ${ctx.from || d.environment || 'the previous environment'}; a package moves test → acceptance → production.`;
    case Reason.PACKAGE_VERSION_EXISTS:
      return 'A package with this version was uploaded already; give the new one another version.';
    case Reason.MFA_REQUIRED:
    case Reason.MFA_EXPIRED:
      return 'Not done: this action needs your second factor (2FA).';
    case Reason.SESSION_INVALID:
      return 'Your session ended; sign in again.';
    case Reason.INVALID_ARGUMENT:
      if (Array.isArray(d.fields) && d.fields.length) return d.fields.map((f) => `${f.field}: ${f.description}`).join('; ');
      return d.message || 'Something in the request is not valid.';
    case NETWORK:
      return res.message;
    default:
      if (res.status === 503) return 'A padlock service is unavailable right now; try again in a moment.';
      if (res.status === 504) return 'A padlock service took too long to answer; try again.';
      if (res.status === 500) return 'Something went wrong on the server; try again, or ask support.';
      return d.message || `Refused (${res.error}).`;
  }
}

// ------------------------------------------------------------------ session

function sessionEnded() {
  if (!state.me) return;
  state.me = null;
  closeDialog(null);
  showSignIn('Your session ended; sign in again.');
}

function showView(id) {
  for (const view of ['#view-sign-in', '#view-apps', '#view-app']) show($(view), view === id);
}

function showSignIn(message) {
  show($('#session'), false);
  showView('#view-sign-in');
  clearFlash();
  const err = $('#sign-in-error');
  err.textContent = message || '';
  show(err, Boolean(message));
  $('#username').focus();
}

async function signIn(event) {
  event.preventDefault();
  const username = $('#username').value.trim();
  const password = $('#password').value;
  const err = $('#sign-in-error');
  if (!username || !password) {
    err.textContent = 'Enter your username and password.';
    show(err, true);
    return;
  }
  $('#sign-in').disabled = true;
  const res = await post('/api/v1/sessions', { username, password });
  $('#sign-in').disabled = false;
  if (!res.ok) {
    err.textContent = res.error === Reason.CREDENTIALS_INVALID
      ? 'That username and password do not match.'
      : describe(res);
    show(err, true);
    return;
  }
  $('#password').value = '';
  show(err, false);
  await start();
}

async function signOut() {
  await api('DELETE', '/api/v1/sessions/current');
  state.me = null;
  state.app = null;
  location.hash = '';
  showSignIn();
}

/** Reloads /me; draws who is signed in and how long their 2FA lasts. */
async function refreshMe() {
  const res = await get('/api/v1/me');
  if (!res.ok) return false;
  state.me = res.data;
  $('#whoami').textContent = state.me.user.username;
  show($('#session'), true);
  const status = $('#mfa-status');
  const valid = state.me.mfa_expires_at && Date.parse(state.me.mfa_expires_at) > Date.now();
  status.textContent = valid ? `2FA valid until ${clock(state.me.mfa_expires_at)}` : '';
  show(status, Boolean(valid));
  return true;
}

async function start() {
  if (!(await refreshMe())) {
    showSignIn();
    return;
  }
  const policy = await get('/api/v1/policy/actions');
  state.policy = policy.ok ? policy.data.actions : [];
  await route();
}

// ------------------------------------------------------------------ routing

/** #/apps, #/apps/ID/deploy, #/apps/ID/permissions */
async function route() {
  if (!state.me) return;
  clearFlash();
  const [, section, appId, tab] = location.hash.split('/');
  if (section === 'apps' && appId) {
    await showApp(decodeURIComponent(appId), tab === 'permissions' ? 'permissions' : 'deploy');
  } else {
    await showApps();
  }
}

// ------------------------------------------------------------------ apps

async function showApps() {
  state.app = null;
  showView('#view-apps');
  const list = $('#apps-list');
  list.replaceChildren(h('li', { class: 'muted' }, 'Loading…'));
  const res = await get('/api/v1/apps');
  if (!res.ok) {
    list.replaceChildren();
    flash('error', describe(res));
    return;
  }
  const apps = res.data.apps;
  if (!apps.length) {
    list.replaceChildren(h('li', { class: 'muted' }, 'You are on no app\'s team yet.'));
    return;
  }
  list.replaceChildren(...apps.map((app) => h('li', {},
    h('a', { class: 'app-link', href: `#/apps/${enc(app.id)}/deploy`, 'data-testid': `app-${app.name}` },
      h('span', { class: 'app-name' }, app.name),
      h('span', { class: 'muted' }, `Technical Contact: ${app.technical_contact}`)))));
}

async function showApp(appId, tab) {
  showView('#view-app');
  if (!state.app || state.app.id !== appId) {
    const res = await get(`/api/v1/apps/${enc(appId)}`);
    if (!res.ok) {
      flash('error', describe(res));
      return;
    }
    state.app = res.data.app;
    state.members = res.data.members;
  }
  const app = state.app;
  const isContact = app.technical_contact === state.me.user.username;
  if (tab === 'permissions' && !isContact) tab = 'deploy';
  state.tab = tab;
  $('#app-title').textContent = app.name;
  $('#app-contact').textContent = isContact
    ? 'You are the Technical Contact of this app.'
    : `Technical Contact: ${app.technical_contact}`;

  const tabs = [['deploy', 'Deploy']];
  if (isContact) tabs.push(['permissions', 'Permissions']);
  $('#app-tabs').replaceChildren(...tabs.map(([id, label]) => h('a', {
    id: `tab-${id}`,
    role: 'tab',
    class: 'tab',
    href: `#/apps/${enc(app.id)}/${id}`,
    'aria-selected': String(id === tab),
    'aria-controls': 'app-panel',
    'data-testid': `tab-${id}`,
  }, label)));
  $('#app-panel').setAttribute('aria-labelledby', `tab-${tab}`);
  if (tab === 'permissions') await drawPermissions();
  else await drawDeploy();
}

// ------------------------------------------------------------------ Deploy tab

async function drawDeploy() {
  const app = state.app;
  const [envs, packages, access] = await Promise.all([
    get(`/api/v1/apps/${enc(app.id)}/environments`),
    get(`/api/v1/apps/${enc(app.id)}/packages`),
    get(`/api/v1/apps/${enc(app.id)}/access?action=transport_package&environment=production`),
  ]);
  if (state.tab !== 'deploy' || state.app !== app) return;
  if (!envs.ok || !packages.ok) {
    flash('error', describe(envs.ok ? packages : envs));
    return;
  }
  const current = {};
  for (const env of envs.data.environments) current[env.environment] = env.current;

  $('#app-panel').replaceChildren(
    h('h2', {}, 'Environments'),
    h('div', { class: 'envs' }, envs.data.environments.map((env) => envCard(env, access))),
    h('h2', {}, 'Packages'),
    packagesTable(packages.data.packages, current),
    uploadForm(),
  );
}

function envCard(env, access) {
  const name = env.environment;
  const locked = state.policy.some((r) => r.environment === name && r.padlock && !APP_WIDE_ACTIONS.has(r.action));
  const cur = env.current;
  const runs = cur
    ? h('p', { class: 'runs', 'data-testid': `runs-${name}` },
      h('strong', {}, cur.package_version),
      h('span', { class: 'muted' }, cur.from_environment
        ? ` transported from ${cur.from_environment} by ${cur.deployed_by}, ${clock(cur.deployed_at)}`
        : ` deployed by ${cur.deployed_by}, ${clock(cur.deployed_at)}`))
    : h('p', { class: 'runs muted', 'data-testid': `runs-${name}` }, 'Nothing deployed');

  let hint = null;
  if (name === 'production' && access.ok && access.data.padlock) {
    const a = access.data;
    let text;
    if (a.allowed) text = `You may transport here; ${validUntil(null, a.mfa_expires_at)}.`;
    else if (a.reason === Reason.NODE_PERMISSION_MISSING) text = `You don't have the Transport permission here; ask the Technical Contact (${state.app.technical_contact}).`;
    else if (a.reason === Reason.MFA_EXPIRED) text = 'Your 2FA has expired: you will be asked for a code.';
    else text = 'Actions here ask for your second factor (2FA).';
    hint = h('p', { class: 'hint', 'data-testid': 'access-production' }, text);
  }

  const details = h('div', { class: 'node-details', 'data-testid': `node-details-${name}` });
  const detailsButton = actionButton({
    label: 'Node details',
    action: 'get_node_details',
    environment: name,
    testid: `node-details-button-${name}`,
    secondary: true,
    run: async () => {
      const res = await padlocked({ label: `Node details of ${name}`, action: 'get_node_details', environment: name },
        () => get(`/api/v1/apps/${enc(state.app.id)}/nodes/${name}`));
      if (res.cancelled) return;
      if (!res.ok) {
        flash('error', describe(res, { action: 'get_node_details', environment: name }));
        return;
      }
      const n = res.data;
      details.replaceChildren(h('dl', {},
        ...[['URL', n.url], ['Region', n.region], ['Plan', n.plan], ['License', n.license_id]]
          .filter(([, v]) => v).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
      flash('ok', `Node details of ${name}.`, res.steppedUp && validUntil(res.steppedUp.mfa_at, res.steppedUp.mfa_expires_at));
    },
  });

  return h('article', { class: `env env-${name}`, 'data-testid': `env-${name}` },
    h('header', {},
      h('h3', {}, locked ? padlockIcon(`Acting on ${name}`) : null, title(name)),
      h('span', { class: 'node muted', 'data-testid': `node-${name}`, title: 'Node' }, env.node_name)),
    runs, hint, detailsButton, details);
}

function packagesTable(packages, current) {
  if (!packages.length) return h('p', { class: 'muted' }, 'No packages yet: upload one below.');
  const runsOn = (pkg) => ENVIRONMENTS.filter((e) => current[e] && current[e].package_id === pkg.id);
  return h('table', { class: 'packages', 'data-testid': 'packages' },
    h('thead', {}, h('tr', {},
      ...['Version', 'Package', 'Runs on', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, packages.map((pkg) => h('tr', { 'data-testid': `package-${pkg.version}` },
      h('td', {}, h('strong', {}, pkg.version)),
      h('td', {},
        h('div', {}, pkg.file_name),
        h('div', { class: 'muted small' },
          `${bytes(pkg.size)} · `,
          h('code', { title: `SHA-256 ${pkg.sha256}` }, pkg.sha256.slice(0, 12)),
          ` · uploaded by ${pkg.uploaded_by}, ${clock(pkg.uploaded_at)}`)),
      h('td', {}, h('div', { class: 'badges' }, runsOn(pkg).map((e) => h('span', { class: `badge env-${e}` }, e)))),
      h('td', {}, h('div', { class: 'actions' }, packageActions(pkg)))))));
}

function packageActions(pkg) {
  const what = `${pkg.file_name.replace(/\.mda$/, '')}`;
  const moves = [
    { label: 'Deploy to Test', action: 'deploy_package', environment: 'test', id: `deploy-test-${pkg.version}`,
      call: () => post(`/api/v1/packages/${enc(pkg.id)}/deployments`, { environment: 'test' }),
      done: `Deployed ${what} to test.` },
    { label: 'Transport to Acceptance', action: 'transport_package', environment: 'acceptance', from: 'test',
      id: `transport-acceptance-${pkg.version}`,
      call: () => post(`/api/v1/packages/${enc(pkg.id)}/transports`, { from_environment: 'test', to_environment: 'acceptance' }),
      done: `Transported ${what} to acceptance.` },
    { label: 'Transport to Production', action: 'transport_package', environment: 'production', from: 'acceptance',
      id: `transport-production-${pkg.version}`,
      call: () => post(`/api/v1/packages/${enc(pkg.id)}/transports`, { from_environment: 'acceptance', to_environment: 'production' }),
      done: `Transported ${what} to production.` },
  ];
  return moves.map((m) => actionButton({
    label: m.label,
    action: m.action,
    environment: m.environment,
    testid: m.id,
    run: async () => {
      const res = await padlocked(m, m.call);
      if (res.cancelled) return;
      if (!res.ok) {
        flash('error', describe(res, { ...m, what }));
        await drawDeploy();
        return;
      }
      await refreshMe();
      const mfa = res.steppedUp || (isPadlocked(m.action, m.environment) && state.me);
      flash('ok', m.done, mfa && validUntil(mfa.mfa_at, mfa.mfa_expires_at));
      await drawDeploy();
    },
  }));
}

/** A button that runs `run` once at a time, with a padlock if the policy draws one. */
function actionButton({ label, action, environment, testid, run, secondary }) {
  const locked = isPadlocked(action, environment);
  const button = h('button', {
    type: 'button',
    class: `action${locked ? ' locked' : ''}${secondary ? ' secondary' : ''}`,
    'data-testid': testid,
    id: testid,
    'data-padlock': locked ? 'true' : 'false',
  }, locked ? padlockIcon(label) : null, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      clearFlash();
      await run();
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });
  return button;
}

function uploadForm() {
  const file = h('input', { id: 'upload-file', type: 'file', accept: '.mda', required: true });
  const version = h('input', { id: 'upload-version', required: true, placeholder: '1.0.1', autocomplete: 'off' });
  const submit = h('button', { type: 'submit', id: 'upload-submit' }, 'Upload');
  file.addEventListener('change', () => {
    // shop-1.2.3.mda -> 1.2.3
    const m = file.files[0] && file.files[0].name.match(/-(\d[\w.+-]*)\.mda$/i);
    if (m && !version.value) version.value = m[1];
  });
  const form = h('form', { class: 'upload', id: 'upload-form', 'aria-labelledby': 'upload-title' },
    h('h3', { id: 'upload-title' }, 'Upload a package'),
    h('div', { class: 'row' },
      h('div', {}, h('label', { for: 'upload-file' }, 'Package (.mda)'), file),
      h('div', {}, h('label', { for: 'upload-version' }, 'Version'), version),
      submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const f = file.files[0];
    if (!f || !version.value.trim()) {
      flash('error', 'Choose an .mda file and give it a version.');
      return;
    }
    submit.disabled = true;
    const res = await api('POST',
      `/api/v1/apps/${enc(state.app.id)}/packages?version=${enc(version.value.trim())}&file_name=${enc(f.name)}`,
      { raw: f });
    submit.disabled = false;
    if (!res.ok) {
      flash('error', describe(res));
      return;
    }
    flash('ok', `Uploaded ${res.data.file_name} (${bytes(res.data.size)}).`);
    await drawDeploy();
  });
  return form;
}

// ------------------------------------------------------------------ Permissions tab

async function drawPermissions() {
  const app = state.app;
  const [members, perms] = await Promise.all([
    get(`/api/v1/apps/${enc(app.id)}`),
    get(`/api/v1/apps/${enc(app.id)}/permissions`),
  ]);
  if (state.tab !== 'permissions' || state.app !== app) return;
  if (!members.ok || !perms.ok) {
    flash('error', describe(members.ok ? perms : members));
    return;
  }
  state.members = members.data.members;
  const deployers = state.members.filter((m) => m.role === 'deploy').map((m) => m.username);
  const held = {};  // held[env][user] = Set of permissions
  for (const env of ENVIRONMENTS) held[env] = {};
  for (const e of perms.data.entries) {
    if (held[e.environment]) held[e.environment][e.username] = new Set(e.permissions);
  }
  $('#app-panel').replaceChildren(
    h('p', { class: 'muted' },
      'Node permissions per environment. Only team members with the Deploy role can hold them; ',
      'as Technical Contact you hold all of them.'),
    deployers.length
      ? h('div', { class: 'grids' }, ENVIRONMENTS.map((env) => permissionGrid(env, deployers, held[env])))
      : h('p', { class: 'muted' }, 'No team member has the Deploy role yet.'),
  );
}

function permissionGrid(env, users, held) {
  const boxes = [];
  const rows = users.map((user) => h('tr', {},
    h('th', { scope: 'row' }, user),
    PERMISSIONS.map((perm) => {
      const box = h('input', {
        type: 'checkbox',
        checked: Boolean(held[user] && held[user].has(perm)),
        'aria-label': `${user}: ${title(perm)} on ${env}`,
        'data-testid': `perm-${env}-${user}-${perm}`,
      });
      boxes.push({ user, perm, box });
      return h('td', {}, box);
    })));

  const save = actionButton({
    label: `Save ${env}`,
    action: 'change_node_permissions',
    environment: env,
    testid: `save-permissions-${env}`,
    run: async () => {
      const changes = users.map((user) => {
        const had = held[user] || new Set();
        const mine = boxes.filter((b) => b.user === user);
        return {
          user,
          grant: mine.filter((b) => b.box.checked && !had.has(b.perm)).map((b) => b.perm),
          revoke: mine.filter((b) => !b.box.checked && had.has(b.perm)).map((b) => b.perm),
        };
      }).filter((c) => c.grant.length || c.revoke.length);
      if (!changes.length) {
        flash('ok', `Nothing changed on ${env}.`);
        return;
      }
      const what = { label: `Changing ${env} permissions`, action: 'change_node_permissions', environment: env };
      const done = [];
      let stepped = null;
      for (const c of changes) {
        for (const [kind, list] of [['grants', c.grant], ['revocations', c.revoke]]) {
          if (!list.length) continue;
          const res = await padlocked(what, () => post(`/api/v1/apps/${enc(state.app.id)}/permissions/${kind}`,
            { environment: env, username: c.user, permissions: list }));
          if (res.cancelled) return;
          if (!res.ok) {
            flash('error', describe(res, what), done.length ? `Saved before that: ${done.join('; ')}.` : '');
            await drawPermissions();
            return;
          }
          stepped = stepped || res.steppedUp;
          done.push(`${c.user} ${kind === 'grants' ? 'gets' : 'loses'} ${list.map(title).join(', ')}`);
        }
      }
      await refreshMe();
      const mfa = stepped || (isPadlocked(what.action, env) && state.me);
      // Redraw first, so the message appears with the grid as now saved.
      await drawPermissions();
      flash('ok', `Saved ${env} permissions: ${done.join('; ')}.`, mfa && validUntil(mfa.mfa_at, mfa.mfa_expires_at));
    },
  });

  return h('section', { class: 'grid', 'data-testid': `permissions-${env}`, 'aria-label': `${title(env)} permissions` },
    h('table', {},
      h('caption', {}, isPadlocked('change_node_permissions', env) ? padlockIcon(`Changing ${env} permissions`) : null, title(env)),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Member'),
        PERMISSIONS.map((p) => h('th', { scope: 'col' }, title(p))))),
      h('tbody', {}, rows)),
    save);
}

// ------------------------------------------------------------------ step-up

/**
 * Runs `call`; when the gateway answers that the action needs a (fresher)
 * second factor, opens the two-factor dialog and, once verified, runs the
 * call again. Returns the last response, with `steppedUp` set to the
 * verification ({mfa_at, mfa_expires_at, method}) if the dialog was used,
 * or {cancelled: true} if the person closed it.
 */
async function padlocked(what, call) {
  let res = await call();
  let steppedUp = null;
  for (let round = 0; round < 2 && res.stepUp; round++) {
    steppedUp = await twoFactor(what, res);
    if (!steppedUp) return { cancelled: true };
    res = await call();
  }
  res.steppedUp = steppedUp;
  return res;
}

let dialogDone = null;   // resolves the open dialog's promise
let cooldownTimer = 0;

function closeDialog(result) {
  clearInterval(cooldownTimer);
  const dialog = $('#twofa-dialog');
  if (dialog.open) dialog.close();
  const done = dialogDone;
  dialogDone = null;
  if (done) done(result);
}

/** Opens the dialog; resolves with the verification, or null if cancelled. */
function twoFactor(what, refusal) {
  const dialog = $('#twofa-dialog');
  const maxAge = refusal.data && Number(refusal.data.max_age);
  const lasts = maxAge ? ` It then stays valid for ${duration(maxAge)}.` : '';
  $('#twofa-intro').textContent = refusal.error === Reason.MFA_EXPIRED
    ? `Your 2FA authorization has expired. ${what.label} carries a padlock: enter a new code to go on.${lasts}`
    : `${what.label} carries a padlock: confirm it's you with your second factor.${lasts}`;
  dialogError('');
  $('#twofa-body').replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  dialog.dataset.state = 'loading';
  if (!dialog.open) dialog.showModal();
  const result = new Promise((resolve) => { dialogDone = resolve; });
  startTwoFactor();
  return result;
}

async function startTwoFactor() {
  const res = await get('/api/v1/me');
  if (!res.ok) {
    dialogError(describe(res));
    return;
  }
  const factor = res.data.factor || { method: 'none', state: 'none' };
  if (factor.state !== 'active' || factor.method === 'none') {
    stepChoose(factor.reset);
  } else if (factor.locked) {
    const until = factor.locked_until ? ` until ${clock(factor.locked_until)}` : '';
    setBody('locked', h('p', { 'data-testid': 'factor-locked' },
      `Your second factor is locked${until} after too many wrong codes. Try again later, or ask support to unlock it.`));
  } else if (factor.method === 'sms') {
    stepSmsVerify(factor);
  } else {
    stepCode({
      prompt: 'Enter the 6-digit code from your authenticator app.',
      submitLabel: 'Verify',
      submit: (code) => post('/api/v1/me/factor/verification', { code }),
      attemptsLeft: factor.attempts_left,
    });
  }
}

function setBody(step, ...children) {
  $('#twofa-dialog').dataset.state = step;
  $('#twofa-body').replaceChildren(...children.filter(Boolean));
}

function dialogError(text) {
  const el = $('#twofa-error');
  el.textContent = text;
  show(el, Boolean(text));
}

/**
 * No factor yet: choose one. TOTP is the recommended method (NIST SP 800-63B).
 * After a reset by support the user is told who reset it, when and why, so a
 * reset they did not ask for does not go unnoticed.
 */
function stepChoose(reset) {
  dialogError('');
  const notice = reset
    ? h('p', { class: 'notice', 'data-testid': 'factor-reset' },
      `Support (${reset.by || 'unknown'}) reset your second factor on ${clock(reset.at)}` +
      `${reset.ticket ? ` under ticket ${reset.ticket}` : ''}. If you did not ask for this, tell your security team.`)
    : null;
  setBody('choose',
    notice,
    h('p', {}, 'You have no second factor yet. Choose how you will confirm it\'s you; you cannot change this later without support.'),
    h('div', { class: 'choices' },
      h('button', { type: 'button', id: 'choose-totp', class: 'choice', onclick: startTotp },
        h('strong', {}, 'Use Google Authenticator (recommended)'),
        h('span', { class: 'muted' }, 'or another authenticator app on your phone')),
      h('button', { type: 'button', id: 'choose-sms', class: 'choice secondary', onclick: stepSmsPhone },
        h('strong', {}, 'Use SMS'),
        h('span', { class: 'muted' }, 'a code sent to your mobile number each time'))));
  $('#choose-totp').focus();
}

async function startTotp() {
  dialogError('');
  const res = await post('/api/v1/me/factor/totp');
  if (!res.ok) {
    dialogError(factorError(res));
    return;
  }
  const e = res.data;
  const grouped = e.secret.replace(/=+$/, '').match(/.{1,4}/g).join(' ');
  const code = codeForm({
    label: '6-digit code from the app',
    submitLabel: 'Confirm',
    submit: (c) => post('/api/v1/me/factor/confirmation', { enrollment_id: e.enrollment_id, code: c }),
  });
  setBody('totp-enroll',
    h('ol', { class: 'steps' },
      h('li', {}, 'Open Google Authenticator and scan this QR code:',
        h('img', { id: 'totp-qr', class: 'qr', src: e.qr_png, alt: 'QR code for your authenticator app', width: 180, height: 180 })),
      h('li', {}, 'Or choose "Enter a setup key" and type this key:',
        h('code', { id: 'totp-secret', class: 'secret', 'data-secret': e.secret, 'data-testid': 'totp-secret' }, grouped)),
      h('li', {}, 'Enter the code the app shows:', code)));
  code.querySelector('input').focus();
}

function stepSmsPhone() {
  dialogError('');
  const phone = h('input', { id: 'sms-phone', type: 'tel', autocomplete: 'tel', required: true, placeholder: '+31 6 12345678' });
  const form = h('form', { class: 'stack' },
    h('label', { for: 'sms-phone' }, 'Mobile number, international format'),
    phone,
    h('button', { type: 'submit', id: 'sms-send' }, 'Send code'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const number = phone.value.replace(/[\s()-]/g, '');
    if (!/^\+\d{6,15}$/.test(number)) {
      dialogError('Enter the number with its country code, e.g. +31612345678.');
      return;
    }
    form.querySelector('button').disabled = true;
    const res = await post('/api/v1/me/factor/sms', { phone_number: number });
    form.querySelector('button').disabled = false;
    if (!res.ok) {
      dialogError(factorError(res));
      return;
    }
    dialogError('');
    smsCodeStep(res.data, (code) => post('/api/v1/me/factor/confirmation', { enrollment_id: res.data.enrollment_id, code }), 'Confirm');
  });
  setBody('sms-phone',
    h('p', {}, 'We will send a 6-digit code to your phone by SMS. An authenticator app is safer if you have one.'),
    form,
    h('button', { type: 'button', class: 'link', onclick: stepChoose }, '← Back'));
  phone.focus();
}

function stepSmsVerify(factor) {
  const send = h('button', { type: 'button', id: 'sms-send' }, 'Send code');
  send.addEventListener('click', async () => {
    send.disabled = true;
    const res = await post('/api/v1/me/factor/sms/code');
    send.disabled = false;
    if (!res.ok) {
      dialogError(factorError(res));
      return;
    }
    dialogError('');
    smsCodeStep(res.data, (code) => post('/api/v1/me/factor/verification', { code }), 'Verify');
  });
  setBody('sms-verify',
    h('p', {}, `We will send a code by SMS to ${factor.masked_phone_number || 'your phone'}.`),
    send);
  send.focus();
}

/** The code field for SMS, with a resend button that waits out the cooldown. */
function smsCodeStep(sent, submit, submitLabel) {
  const resend = h('button', { type: 'button', id: 'sms-resend', class: 'secondary' }, 'Resend code');
  const note = h('p', { id: 'sms-sent', class: 'muted' }, `Code sent to ${sent.masked_phone_number}; it is valid for 5 minutes.`);
  const cooldown = (allowedAt) => {
    clearInterval(cooldownTimer);
    const tick = () => {
      const left = Math.ceil((Date.parse(allowedAt) - Date.now()) / 1000);
      resend.disabled = left > 0;
      resend.textContent = left > 0 ? `Resend code (${left} s)` : 'Resend code';
      if (left <= 0) clearInterval(cooldownTimer);
    };
    tick();
    cooldownTimer = setInterval(tick, 1000);
  };
  resend.addEventListener('click', async () => {
    resend.disabled = true;
    const res = await post('/api/v1/me/factor/sms/code');
    if (!res.ok) {
      dialogError(factorError(res));
      cooldown(new Date(Date.now() + (res.retryAfter || 0) * 1000).toISOString());
      return;
    }
    dialogError('');
    note.textContent = `New code sent to ${res.data.masked_phone_number}.`;
    cooldown(res.data.resend_allowed_at);
  });
  const form = codeForm({ label: '6-digit code from the SMS', submitLabel, submit, extra: resend });
  setBody('sms-code', note, form);
  cooldown(sent.resend_allowed_at);
  form.querySelector('input').focus();
}

function stepCode({ prompt, submitLabel, submit, attemptsLeft }) {
  const form = codeForm({ label: '6-digit code', submitLabel, submit });
  const hint = attemptsLeft !== undefined && attemptsLeft < 5
    ? h('p', { class: 'muted' }, `${attemptsLeft} attempt${attemptsLeft === 1 ? '' : 's'} left before the factor locks.`)
    : null;
  setBody('verify', h('p', {}, prompt), hint, form);
  form.querySelector('input').focus();
}

/** A 6-digit code field; on success closes the dialog with the verification. */
function codeForm({ label, submitLabel, submit, extra }) {
  const input = h('input', {
    id: 'twofa-code',
    name: 'code',
    inputmode: 'numeric',
    autocomplete: 'one-time-code',
    pattern: '[0-9]{6}',
    maxlength: '7',
    required: true,
    class: 'code',
  });
  const button = h('button', { type: 'submit', id: 'twofa-submit' }, submitLabel);
  const form = h('form', { class: 'code-form' },
    h('label', { for: 'twofa-code' }, label),
    h('div', { class: 'row' }, input, button, extra || null));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const code = input.value.replace(/\s/g, '');
    if (!/^\d{6}$/.test(code)) {
      dialogError('The code has 6 digits.');
      return;
    }
    button.disabled = true;
    const res = await submit(code);
    button.disabled = false;
    if (res.ok) {
      dialogError('');
      closeDialog(res.data);
      await refreshMe();
      return;
    }
    input.value = '';
    input.focus();
    dialogError(factorError(res));
    if (res.error === Reason.TOO_MANY_ATTEMPTS || res.error === Reason.FACTOR_LOCKED) {
      input.disabled = true;
      button.disabled = true;
    }
    if ([Reason.ENROLLMENT_EXPIRED, Reason.ENROLLMENT_NOT_FOUND, Reason.FACTOR_NOT_ENROLLED].includes(res.error)) {
      setTimeout(stepChoose, 0);
      // stepChoose clears the error; say why after it drew.
      setTimeout(() => dialogError(factorError(res)), 0);
    }
  });
  return form;
}

/** Errors of enrollment and verification, in words. */
function factorError(res) {
  const d = res.data || {};
  const wait = res.retryAfter ? duration(res.retryAfter) : 'a while';
  switch (res.error) {
    case Reason.CODE_INVALID: {
      const left = Number(d.attempts_left);
      const tries = Number.isFinite(left)
        ? ` ${left} attempt${left === 1 ? '' : 's'} left before the factor locks.`
        : '';
      return `Wrong code.${tries}`;
    }
    case Reason.CODE_REUSED:
      return 'That code was used already: wait for the next one (the app shows a new code every 30 seconds).';
    case Reason.TOO_MANY_ATTEMPTS:
      return `Too many wrong codes: try again in ${wait}, or ask support to unlock your factor.`;
    case Reason.FACTOR_LOCKED:
      return 'You already have a second factor, and only support can reset it: ask support.';
    case Reason.FACTOR_NOT_ENROLLED:
      return 'You have no second factor yet: choose one.';
    case Reason.ENROLLMENT_EXPIRED:
    case Reason.ENROLLMENT_NOT_FOUND:
      return 'This setup expired (it lasts 10 minutes): start again.';
    case Reason.CODE_EXPIRED:
      return 'That SMS code expired or none is waiting: send a new code.';
    case Reason.CODE_EXHAUSTED:
      return 'That SMS code was tried too often: send a new code.';
    case Reason.SMS_RESEND_TOO_SOON:
      return `Wait ${wait} before sending another code.`;
    case Reason.SMS_LIMIT_REACHED:
      return `Too many SMS were sent: try again in ${wait}, or use an authenticator app.`;
    case Reason.PHONE_NUMBER_INVALID:
      return 'That number cannot receive SMS: check it (international format, e.g. +31612345678).';
    case Reason.PHONE_NUMBER_UNSUBSCRIBED:
      return 'That number has opted out of SMS from us (it replied STOP); send START to re-subscribe, or use an authenticator app.';
    case Reason.PHONE_NUMBER_UNREACHABLE:
      return 'SMS cannot reach that number right now; try another one or an authenticator app.';
    case Reason.SMS_PROVIDER_MISCONFIGURED:
      return 'SMS is not set up on this server: use an authenticator app.';
    case Reason.SMS_REJECTED:
    case Reason.SMS_UNAVAILABLE:
      return 'The SMS could not be sent: try again in a moment, or use an authenticator app.';
    default:
      return describe(res);
  }
}

// ------------------------------------------------------------------ start

document.addEventListener('DOMContentLoaded', () => {
  $('#sign-in-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', signOut);
  $('#twofa-cancel').addEventListener('click', () => closeDialog(null));
  // Escape closes a <dialog> by itself: treat it as Cancel.
  // (A close that closeDialog caused itself finds nothing left to resolve.)
  $('#twofa-dialog').addEventListener('close', () => {
    if (!$('#twofa-dialog').open) closeDialog(null);
  });
  window.addEventListener('hashchange', route);
  start();
});
