// Helpers for the browser test: run `padlock up` on free ports and read its
// banner, start Debian's Chromium through playwright-core, compute TOTP
// codes with oathtool (the "phone"), read a QR code with zbarimg, and act
// as support: a support user provisioned on the server, its own session on
// the gateway's HTTP API, and SupportService calls over gRPC (Node's http2).

import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = path.join(REPO_ROOT, 'tests', 'artifacts', 'browser');

/** Seeding hashes three passwords (argon2id) on a debug build. */
const BANNER_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 40_000;
const LAST_LINE = 'Stop with Ctrl-C';

/** Where the binaries are: $PADLOCK_BIN_DIR, else $CARGO_TARGET_DIR/debug, else target/debug. */
export function binDir() {
  if (process.env.PADLOCK_BIN_DIR) return path.resolve(process.env.PADLOCK_BIN_DIR);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR)
    : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug');
}

/** Parses what the banner tells a person: the URL to open, auth's address and the demo passwords. */
export function parseBanner(text) {
  const open = text.match(/^Open (http:\/\/\S+) and sign in as tina \/ (\S+)$/m);
  if (!open) throw new Error(`the banner says no URL to open:\n${redact(text)}`);
  const auth = text.match(/^\s+padlock-auth\s+(\S+:\d+)$/m);
  if (!auth) throw new Error(`the banner names no padlock-auth address:\n${redact(text)}`);
  const passwords = {};
  for (const user of ['ops', 'tina', 'dev']) {
    const m = text.match(new RegExp(`^\\s+${user}\\s+(\\S+)\\s`, 'm'));
    if (m) passwords[user] = m[1];
  }
  if (passwords.tina !== open[2]) throw new Error('the banner names two passwords for tina');
  return { url: open[1], auth: auth[1], passwords };
}

/** Hides the demo passwords in text that may end up in a failure message. */
function redact(text) {
  return text.replace(/^(\s+(?:ops|tina|dev)\s+)\S+/gm, '$1[password]')
    .replace(/(sign in as tina \/ )\S+/g, '$1[password]')
    .replace(/("password":")[^"]*/g, '$1[password]');
}

/**
 * `padlock up` on free ports with a fresh data directory. Its standard error
 * (the services' logs) goes to `logPath`.
 */
export class PadlockUp {
  constructor(logPath) {
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'padlock-browser-'));
    this.logPath = logPath;
    this.exited = null;
    const binary = path.join(binDir(), 'padlock');
    if (!fs.existsSync(binary)) {
      throw new Error(`${binary} not found: run \`cargo build --bins\` or set PADLOCK_BIN_DIR`);
    }
    const log = fs.openSync(logPath, 'w');
    this.proc = spawn(binary, [
      'up', '--data-dir', path.join(this.dataDir, 'data'),
      '--auth-listen', '127.0.0.1:0',
      '--deploy-listen', '127.0.0.1:0',
      '--gateway-listen', '127.0.0.1:0',
    ], { stdio: ['ignore', 'pipe', log] });
    fs.closeSync(log);
    this.done = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    // If the test runner itself goes away, do not leave padlock running.
    this.onExit = () => { if (!this.exited) this.proc.kill('SIGTERM'); };
    process.on('exit', this.onExit);
  }

  /** Waits for the banner's last line; returns {url, passwords}. */
  async banner() {
    const lines = [];
    const rl = readline.createInterface({ input: this.proc.stdout });
    const complete = new Promise((resolve) => {
      rl.on('line', (line) => {
        lines.push(line);
        if (line.startsWith(LAST_LINE)) resolve(true);
      });
      rl.on('close', () => resolve(false));
    });
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(false), BANNER_TIMEOUT_MS); });
    const ok = await Promise.race([complete, timeout]);
    clearTimeout(timer);
    if (!ok) {
      const why = this.exited ? `exited (${JSON.stringify(this.exited)})` : `printed no full banner within ${BANNER_TIMEOUT_MS / 1000} s`;
      throw new Error(`padlock up ${why}; stdout:\n${redact(lines.join('\n'))}\nlog tail:\n${this.logTail()}`);
    }
    return parseBanner(lines.join('\n'));
  }

  logTail(n = 30) {
    try {
      return redact(fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n'));
    } catch {
      return '(no log)';
    }
  }

  /** SIGTERM, then SIGKILL if it hangs; removes the data directory. Returns the exit. */
  async stop() {
    if (!this.exited) {
      this.proc.kill('SIGTERM');
      let timer;
      const hung = new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS); });
      if ((await Promise.race([this.done, hung])) === null) {
        this.proc.kill('SIGKILL');
        await this.done;
        this.exited.killed = true;
      }
      clearTimeout(timer);
    }
    process.off('exit', this.onExit);
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    return this.exited;
  }
}

/**
 * `padlock-auth users add` on the running demo's auth data, the way an
 * operator adds a user on the server (roles such as support are only
 * granted so); the password goes on standard input.
 */
export function addUser(up, username, roles, password) {
  const args = ['--data-dir', path.join(up.dataDir, 'data', 'auth'), 'users', 'add', '--username', username];
  for (const role of roles) args.push('--role', role);
  const env = { ...process.env };
  delete env.DATABASE_URL;
  execFileSync(path.join(binDir(), 'padlock-auth'), args, {
    input: `${password}\n`, env, stdio: ['pipe', 'ignore', 'pipe'],
  });
}

/** A password nobody types: 24 letters and digits. */
export function randomPassword() {
  return crypto.randomBytes(18).toString('base64').replace(/[^A-Za-z0-9]/g, 'x');
}

/**
 * Someone using the gateway's HTTP API outside the browser, with a cookie
 * jar of their own (docs/http.md: JSON bodies, the CSRF header on writes).
 */
export class ApiClient {
  constructor(baseUrl) {
    this.baseUrl = baseUrl;
    this.cookies = new Map();
  }

  async call(method, route, json) {
    const headers = { 'X-Padlock-CSRF': '1' };
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    if (this.cookies.size) headers.Cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(new URL(route, this.baseUrl), {
      method, headers, body: json === undefined ? undefined : JSON.stringify(json),
    });
    for (const cookie of res.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    const text = await res.text();
    // Only the status and the error reason: a body may hold secrets.
    if (!res.ok) throw new Error(`${method} ${route}: HTTP ${res.status} ${text.match(/"error":"\w+"/)?.[0] ?? ''}`);
    return text ? JSON.parse(text) : null;
  }

  /** The current access token (the `padlock_access` cookie). */
  accessToken() {
    return this.cookies.get('padlock_access');
  }
}

/** A protobuf message of string fields only: {fieldNumber: value}. */
function encodeStrings(fields) {
  const parts = [];
  const varint = (n) => {
    const out = [];
    for (; n > 0x7f; n >>>= 7) out.push((n & 0x7f) | 0x80);
    out.push(n);
    return Buffer.from(out);
  };
  for (const [number, value] of Object.entries(fields)) {
    const bytes = Buffer.from(value, 'utf8');
    parts.push(varint((Number(number) << 3) | 2), varint(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

/**
 * One unary gRPC call to `addr` (host:port, plaintext HTTP/2) with a bearer
 * token, its request a message of string fields. Resolves with the status
 * code (0 is OK) and message; the response body is not decoded.
 */
export function grpcCall(addr, method, fields, token) {
  const message = encodeStrings(fields);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return new Promise((resolve, reject) => {
    const client = http2.connect(`http://${addr}`);
    client.on('error', reject);
    const req = client.request({
      ':method': 'POST',
      ':path': `/${method}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${token}`,
    });
    let headers = {};
    req.on('response', (h) => { headers = h; });
    req.on('trailers', (t) => { headers = { ...headers, ...t }; });
    req.on('data', () => {});
    req.on('error', (err) => { client.close(); reject(err); });
    req.on('end', () => {
      client.close();
      resolve({ code: Number(headers['grpc-status']), message: decodeURIComponent(headers['grpc-message'] ?? '') });
    });
    req.end(frame);
  });
}

/** Debian's Chromium (TOOLS.md); playwright cannot download browsers here. */
export const CHROMIUM = process.env.PADLOCK_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A browser with a fresh profile; close() also removes the profile. */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: apt-get install chromium (tests/run-all.sh does), or set PADLOCK_CHROMIUM`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'padlock-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 860 },
    timezoneId: 'UTC',
    locale: 'en-GB',
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** The 6-digit code an authenticator app shows now for `secret` (base32). */
export function totp(secret, at = null) {
  const args = ['--totp', '-b', secret];
  if (at !== null) args.push(`--now=@${at}`);
  return execFileSync('oathtool', args, { encoding: 'utf8' }).trim();
}

/** The text of a QR code in a PNG, or null when zbarimg is not installed. */
export function readQr(pngPath) {
  try {
    execFileSync('zbarimg', ['--version'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  // zbarimg's stderr only complains that there is no D-Bus here.
  return execFileSync('zbarimg', ['--quiet', '--raw', pngPath], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}
