// padlock's web UI in headless Chromium, the way people use it.
//
// `padlock up` runs the real services on free ports with a fresh data
// directory; the test reads the URL and the demo passwords from its banner.
// tina (Technical Contact of Shop) signs in, sees the padlock on production,
// transports the seeded shop-1.0.0 from test to acceptance and then to
// production, which opens the two-factor dialog: she enrolls Google
// Authenticator by reading the key off the page (oathtool is her phone),
// and the transport goes through with "2FA valid until ...". She uploads a
// package and grants a production permission (padlocked, but her 2FA still
// counts). A team change, which the UI does not offer, is refused by the
// gateway with the answer that opens the two-factor dialog. Then dev, an
// external developer, signs in, has to enroll too, and is refused
// production for the missing Transport permission. Last, support (a user
// added on the server, stepped up with its own TOTP) resets dev's factor
// over gRPC, and dev's next padlocked action tells him who reset it.
//
// A screenshot of every step goes to tests/artifacts/browser/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  ARTIFACTS, ApiClient, PadlockUp, addUser, grpcCall, launchBrowser, randomPassword, readQr, totp,
} from './support.mjs';
import { REASON_NAMES, Reason } from './reasons.mjs';

const STEP_TIMEOUT_MS = 60_000;

let up;          // the running padlock up
let site;        // {url, passwords} from its banner
let browser;     // {context, close}
let page;
let shot = 0;
let tinaKey;     // tina's TOTP secret, as she typed it into her "phone"
let broken = false;  // a failed step makes the later ones skip
const problems = []; // page errors and CSP violations seen along the way

/** Saves NN-name.png: the whole page, or only the window while the modal dialog is open. */
async function screenshot(name) {
  shot += 1;
  const file = path.join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  const dialogOpen = await page.locator('dialog[open]').count();
  await page.screenshot({ path: file, fullPage: !dialogOpen });
  return file;
}

/** One step of the walk; after a failure the rest skip, with a screenshot of where it broke. */
function step(name, fn) {
  it(name, { timeout: STEP_TIMEOUT_MS }, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn(t);
    } catch (err) {
      broken = true;
      if (page) await screenshot(`FAILED-${name.replace(/\W+/g, '-').slice(0, 50)}`).catch(() => {});
      if (up) err.message += `\npadlock up log tail:\n${up.logTail()}`;
      throw err;
    }
  });
}

const byTestId = (id) => page.getByTestId(id);

async function signIn(username) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(site.passwords[username]);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await assertText('#whoami', username);
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const matches = (text, expected) => (expected instanceof RegExp ? expected.test(text) : text.includes(expected));

/** Waits until the element is visible and its text matches; returns the text. */
async function assertText(target, expected, timeoutMs = 15_000) {
  const locator = typeof target === 'string' ? page.locator(target) : target;
  await locator.waitFor({ state: 'visible', timeout: timeoutMs });
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = (await locator.textContent()) ?? '';
    if (matches(text, expected)) return text;
    await sleep(100);
  }
  return assert.fail(`expected ${expected} in ${JSON.stringify(text)}`);
}

/** The message under the header, once it says `pattern`. */
const waitForMessage = (pattern) => assertText(byTestId('message'), pattern);

async function openShop() {
  await byTestId('app-Shop').click();
  await byTestId('env-production').waitFor();
}

/** The dialog's enrollment with Google Authenticator, up to the code field; returns the key. */
async function enrollTotp(who) {
  const dialog = page.getByRole('dialog');
  await dialog.waitFor({ state: 'visible' });
  await assertText(dialog, 'carries a padlock');
  await screenshot(`${who}-2fa-choose`);
  await dialog.getByRole('button', { name: /Use Google Authenticator \(recommended\)/ }).click();

  const qr = dialog.getByRole('img', { name: /QR code/ });
  await qr.waitFor({ state: 'visible' });
  assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code image loads');
  const shown = await byTestId('totp-secret').textContent();
  const raw = await byTestId('totp-secret').getAttribute('data-secret');
  // A person types the grouped key without its spaces.
  const typed = shown.replace(/\s+/g, '');
  assert.match(shown, /^([A-Z2-7]{4} )+[A-Z2-7]{1,4}$/, `the key is shown in groups of four: ${shown.length} chars`);
  assert.equal(typed, raw.replace(/=+$/, ''), 'the grouped key is the secret');
  assert.ok(typed.length >= 32, 'a 160-bit secret is 32 base32 characters');
  await screenshot(`${who}-2fa-qr-and-key`);

  // A phone would scan it: the QR code holds the same key.
  const qrFile = path.join(ARTIFACTS, `${who}-qr.png`);
  await qr.screenshot({ path: qrFile });
  const uri = readQr(qrFile);
  if (uri === null) {
    console.log('# zbarimg not installed: the QR code is not read back');
  } else {
    assert.match(uri, /^otpauth:\/\/totp\//, 'the QR code is an otpauth URI');
    assert.equal(new URL(uri).searchParams.get('secret'), typed, 'the QR code holds the key shown');
  }
  return typed;
}

async function enterCode(code) {
  await page.getByLabel(/6-digit code/).fill(code);
  await page.locator('#twofa-submit').click();
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) {
    if (f.endsWith('.png') || f.endsWith('.log')) fs.rmSync(path.join(ARTIFACTS, f));
  }
  up = new PadlockUp(path.join(ARTIFACTS, 'padlock-up.log'));
  site = await up.banner();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Chromium logs every 4xx fetch as "Failed to load resource"; the UI
    // expects those (401 step-up, 403). Anything else is a problem, CSP
    // refusals ("Refused to ...") above all.
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${msg.text()}`);
    }
  });
});

after(async () => {
  if (browser) await browser.close();
  if (up) {
    const exit = await up.stop();
    assert.ok(exit && exit.code === 0 && !exit.killed, `padlock up stops cleanly on SIGTERM (${JSON.stringify(exit)})`);
  }
});

describe('the web UI, as tina and dev use it', { timeout: 15 * 60_000 }, () => {
  step('the banner says which URL to open, and it shows a sign-in form', async () => {
    assert.match(site.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.ok(!site.url.endsWith(':0/'), 'the banner shows the real port');
    const res = await page.goto(site.url);
    assert.equal(res.status(), 200);
    const csp = res.headers()['content-security-policy'] || '';
    assert.match(csp, /default-src 'self'/, 'the page is served under the strict CSP');
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    // The UI's reasons (/reasons.js, from the gateway's generated enum) are
    // the contract's, and a misspelt one throws.
    const inPage = await page.evaluate(() => {
      let misspelt;
      try { misspelt = Reason.MFA_REQUIRD; } catch (err) { misspelt = err.name; }
      return { names: Object.keys(Reason), frozen: Object.isFrozen(Reason), misspelt };
    });
    assert.deepEqual(inPage, { names: [...REASON_NAMES], frozen: true, misspelt: 'TypeError' });
    await screenshot('sign-in');
  });

  step('a wrong password is refused in words', async () => {
    await page.getByLabel('Username').fill('tina');
    await page.getByLabel('Password').fill('not-her-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await assertText('#sign-in-error', 'do not match');
  });

  step('tina signs in and sees her apps', async () => {
    await signIn('tina');
    await assertText(byTestId('app-Shop'), 'Technical Contact: tina');
    await screenshot('tina-apps');
  });

  step("Shop's Deploy tab shows the environments, the package and the padlock on production", async () => {
    await openShop();
    for (const env of ['test', 'acceptance', 'production']) {
      const card = byTestId(`env-${env}`);
      await card.waitFor();
      assert.ok((await byTestId(`node-${env}`).textContent()).trim(), `${env} names its node`);
    }
    const padlockOn = (env) => byTestId(`env-${env}`).locator('header').getByTestId('padlock').count();
    assert.equal(await padlockOn('production'), 1, 'production carries a padlock');
    assert.equal(await padlockOn('test'), 0, 'test carries none');
    assert.equal(await padlockOn('acceptance'), 0, 'acceptance carries none');
    assert.equal(await byTestId('node-details-button-production').getAttribute('data-padlock'), 'true',
      "production's node details are padlocked");
    await assertText(byTestId('runs-test'), '1.0.0');
    await assertText(byTestId('runs-production'), 'Nothing deployed');
    const toProduction = byTestId('transport-production-1.0.0');
    assert.equal(await toProduction.getAttribute('data-padlock'), 'true', 'Transport to Production is padlocked');
    assert.equal(await toProduction.getByTestId('padlock').count(), 1);
    assert.equal(await byTestId('transport-acceptance-1.0.0').getAttribute('data-padlock'), 'false');
    assert.equal(await byTestId('deploy-test-1.0.0').getAttribute('data-padlock'), 'false');
    await assertText(byTestId('access-production'), 'second factor');
    await screenshot('tina-deploy-tab');
  });

  step('tina transports shop-1.0.0 from test to acceptance without a second factor', async () => {
    await byTestId('transport-acceptance-1.0.0').click();
    await waitForMessage(/Transported shop-1\.0\.0 to acceptance/);
    assert.ok(!(await page.getByRole('dialog').isVisible()), 'no 2FA dialog for acceptance');
    await assertText(byTestId('runs-acceptance'), '1.0.0');
    await screenshot('tina-on-acceptance');
  });

  step('a team change needs her second factor: the gateway answers so that the dialog would open', async () => {
    // The UI has no team page; its session calls the route the way its
    // padlocked actions do, and gets what makes the dialog open (a 401 with
    // insufficient_user_authentication), not a plain refusal.
    const answer = await page.evaluate(async () => {
      const apps = await (await fetch('/api/v1/apps')).json();
      const shop = apps.apps.find((a) => a.name === 'Shop');
      const res = await fetch(`/api/v1/apps/${encodeURIComponent(shop.id)}/members`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Padlock-CSRF': '1' },
        body: JSON.stringify({ username: 'erin', role: 'member' }),
      });
      return { status: res.status, challenge: res.headers.get('WWW-Authenticate'), body: await res.json() };
    });
    assert.equal(answer.status, 401, JSON.stringify(answer.body));
    assert.match(answer.challenge ?? '', /insufficient_user_authentication/);
    assert.equal(answer.body.error, Reason.MFA_REQUIRED);
    assert.equal(answer.body.action, 'change_team');
  });

  step('Transport to Production asks tina to enroll a second factor; Google Authenticator, then the transport succeeds', async () => {
    await byTestId('transport-production-1.0.0').click();
    tinaKey = await enrollTotp('tina');
    await enterCode(totp(tinaKey));
    const text = await waitForMessage(/Transported shop-1\.0\.0 to production/);
    assert.ok(!(await page.getByRole('dialog').isVisible()), 'the dialog closed');
    assert.match(text, /2FA valid until (tomorrow )?\d\d:\d\d \(8 hours from verification\)/);
    await assertText(byTestId('runs-production'), '1.0.0');
    await assertText(byTestId('mfa-status'), /2FA valid until/);
    await screenshot('tina-transported-to-production');
    // Reading production's node details carries a padlock too: no dialog now.
    await byTestId('node-details-button-production').click();
    await assertText(byTestId('node-details-production'), 'URL');
    await waitForMessage(/Node details of production/);
  });

  step('tina uploads shop-1.1.0.mda and deploys it to test', async () => {
    await page.locator('#upload-file').setInputFiles({
      name: 'shop-1.1.0.mda',
      mimeType: 'application/octet-stream',
      buffer: Buffer.from('padlock browser test archive\n'.repeat(300)),
    });
    assert.equal(await page.getByLabel('Version').inputValue(), '1.1.0', 'the version comes from the file name');
    await page.getByRole('button', { name: 'Upload' }).click();
    await waitForMessage(/Uploaded shop-1\.1\.0\.mda/);
    await byTestId('deploy-test-1.1.0').click();
    await waitForMessage(/Deployed shop-1\.1\.0 to test/);
    await assertText(byTestId('runs-test'), '1.1.0');
    await screenshot('tina-uploaded-and-deployed');
  });

  step('when her 2FA has expired the dialog opens again; a lockout is explained; then a code from her app renews it', async () => {
    // Eight hours and a 15-minute lockout do not fit in a test: the gateway's
    // answers for them (docs/http.md) are played to the page for the first two
    // transports to production; everything else goes to the real services.
    await byTestId('transport-acceptance-1.1.0').click();
    await waitForMessage(/Transported shop-1\.1\.0 to acceptance/);
    let expiredAnswers = 2;
    await page.route('**/api/v1/packages/*/transports', (route) => {
      if (expiredAnswers > 0 && route.request().postDataJSON().to_environment === 'production') {
        expiredAnswers -= 1;
        return route.fulfill({
          status: 401,
          headers: {
            'WWW-Authenticate': 'Bearer error="insufficient_user_authentication", error_description="second factor too old", max_age=28800',
            'Content-Type': 'application/json',
          },
          body: JSON.stringify({ error: Reason.MFA_EXPIRED, message: 'second factor too old', max_age: 28800, action: 'transport_package', environment: 'production' }),
        });
      }
      return route.continue();
    });
    await page.route('**/api/v1/me/factor/verification', (route) => route.fulfill({
      status: 429,
      headers: { 'Retry-After': '900', 'Content-Type': 'application/json' },
      body: JSON.stringify({ error: Reason.TOO_MANY_ATTEMPTS, message: 'locked', retry_after: 900 }),
    }), { times: 1 });

    await byTestId('transport-production-1.1.0').click();
    const dialog = page.getByRole('dialog');
    await assertText(dialog, 'has expired');
    assert.equal(await page.getByRole('button', { name: /Use Google Authenticator/ }).count(), 0,
      'an enrolled user is asked for a code, not to enroll again');
    await enterCode('123456');
    await assertText(byTestId('twofa-error'), 'Too many wrong codes: try again in 15 minutes');
    assert.ok(await page.getByLabel(/6-digit code/).isDisabled(), 'no more codes while locked');
    await screenshot('tina-2fa-locked-out');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await assertText(byTestId('runs-production'), '1.0.0');

    await byTestId('transport-production-1.1.0').click();
    await assertText(dialog, 'has expired');
    // The code of the next 30 s step: the one she enrolled with was used.
    await enterCode(totp(tinaKey, Math.floor(Date.now() / 1000) + 30));
    const text = await waitForMessage(/Transported shop-1\.1\.0 to production/);
    assert.match(text, /2FA valid until (tomorrow )?\d\d:\d\d \(8 hours from verification\)/);
    await assertText(byTestId('runs-production'), '1.1.0');
    assert.equal(expiredAnswers, 0);
    await page.unrouteAll();
    await screenshot('tina-renewed-2fa');
  });

  step("tina's Permissions tab grants dev Logs on production; padlocked, but her 2FA still counts", async () => {
    await byTestId('tab-permissions').click();
    const grid = byTestId('permissions-production');
    await grid.waitFor();
    assert.equal(await grid.locator('caption').getByTestId('padlock').count(), 1, 'production permissions carry a padlock');
    assert.equal(await byTestId('save-permissions-production').getAttribute('data-padlock'), 'true');
    assert.equal(await byTestId('save-permissions-test').getAttribute('data-padlock'), 'false');
    assert.ok(await byTestId('perm-test-dev-transport').isChecked(), 'dev has Transport on test (seeded)');
    assert.ok(!(await byTestId('perm-production-dev-transport').isChecked()), 'dev has nothing on production');
    await byTestId('perm-production-dev-logs').check();
    await byTestId('save-permissions-production').click();
    const text = await waitForMessage(/Saved production permissions: dev gets Logs/);
    assert.match(text, /2FA valid until/);
    assert.ok(!(await page.getByRole('dialog').isVisible()), 'no dialog while 2FA is valid');
    await screenshot('tina-permissions-saved');
    await page.reload();
    await byTestId('perm-production-dev-logs').waitFor();
    assert.ok(await byTestId('perm-production-dev-logs').isChecked(), 'the grant is kept');
    assert.ok(!(await byTestId('perm-production-dev-transport').isChecked()));

    // A revocation, and the grant back, on test (no padlock there).
    await byTestId('perm-test-dev-transport').uncheck();
    await byTestId('save-permissions-test').click();
    await waitForMessage(/Saved test permissions: dev loses Transport/);
    assert.ok(!(await byTestId('perm-test-dev-transport').isChecked()));
    await byTestId('perm-test-dev-transport').check();
    await byTestId('save-permissions-test').click();
    await waitForMessage(/Saved test permissions: dev gets Transport/);
    assert.ok(await byTestId('perm-test-dev-transport').isChecked());
  });

  step('tina signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await screenshot('signed-out');
  });

  step('dev signs in; Shop has no Permissions tab for him', async () => {
    await signIn('dev');
    await openShop();
    assert.equal(await byTestId('tab-permissions').count(), 0);
    await assertText(byTestId('access-production'), 'second factor');
    await screenshot('dev-deploy-tab');
  });

  step('dev tries Transport to Production: enrolls 2FA (a wrong code first), then is refused for the missing permission', async () => {
    await byTestId('transport-production-1.1.0').click();
    // SMS first: padlock up configures no SMS provider, and the dialog says so.
    const dialog = page.getByRole('dialog');
    await dialog.getByRole('button', { name: /Use SMS/ }).click();
    await page.getByLabel(/Mobile number/).fill('+31 6 12345678');
    await dialog.getByRole('button', { name: 'Send code' }).click();
    await assertText(byTestId('twofa-error'), 'SMS is not set up on this server');
    await screenshot('dev-2fa-sms-unavailable');
    await dialog.getByRole('button', { name: /Back/ }).click();
    const key = await enrollTotp('dev');
    const right = totp(key);
    const wrong = right.replace(/\d/g, (d) => String((Number(d) + 5) % 10));
    await enterCode(wrong);
    await assertText(byTestId('twofa-error'), /Wrong code\. \d attempts? left/);
    await screenshot('dev-2fa-wrong-code');
    await enterCode(right);
    const text = await waitForMessage(/permission/);
    assert.equal(
      text.trim(),
      "You don't have the Transport permission on production; ask the Technical Contact (tina).",
    );
    assert.ok(!(await page.getByRole('dialog').isVisible()), 'the dialog closed');
    await assertText(byTestId('runs-production'), 'by tina');
    await assertText(byTestId('access-production'), "You don't have the Transport permission here");
    await screenshot('dev-refused-on-production');
  });

  step("support resets dev's factor; his next padlocked action says who reset it, under which ticket", async () => {
    // sam gets the support role on the server (support cannot mint support),
    // signs in and steps up with TOTP of his own: support calls need it.
    const samPassword = randomPassword();
    addUser(up, 'sam', ['support'], samPassword);
    const sam = new ApiClient(site.url);
    await sam.call('POST', '/api/v1/sessions', { username: 'sam', password: samPassword });
    const started = await sam.call('POST', '/api/v1/me/factor/totp', {});
    await sam.call('POST', '/api/v1/me/factor/confirmation', {
      enrollment_id: started.enrollment_id,
      code: totp(started.secret.replace(/=+$/, '')),
    });
    const reset = await grpcCall(site.auth, 'padlock.auth.v1.SupportService/ResetFactor', {
      1: 'dev', 2: 'CHG0012345', 3: 'Standard change: Reset Google authenticator',
    }, sam.accessToken());
    assert.equal(reset.code, 0, `ResetFactor: ${reset.code} ${reset.message}`);

    // Tokens already issued keep their mfa_at until they expire; a new
    // session has none, so the transport asks for a second factor.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await signIn('dev');
    await openShop();
    await byTestId('transport-production-1.1.0').click();
    const dialog = page.getByRole('dialog');
    await assertText(byTestId('factor-reset'), /^Support \(sam\) reset your second factor on .+ under ticket CHG0012345\./);
    assert.equal(await dialog.getByRole('button', { name: /Use Google Authenticator/ }).count(), 1,
      'he may enroll again, with either method');
    await screenshot('dev-2fa-after-reset');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
  });

  step('no page errors and no CSP violations along the way', async () => {
    assert.deepEqual(problems, []);
  });
});
