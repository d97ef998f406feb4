// The pages for people in a real browser (Debian's Chromium driven by playwright-core), against a
// real `doorstep serve` and a terminal phone (`doorstep device`), on today's date in a zone where
// it is midday now (so the test never runs near a day's end). The customer opens the e-mail's
// link, sees the code and the QR code; the QR code in a screenshot decodes (zbarimg) to a token the
// phone hands over with; the page then says "handed over to you" with the time; a delegate named
// on the page has a code that works at the door; an operator resets a locked parcel from the
// console and the phone receives the reset. Screenshots of both pages are written to $SHOTS.
//
//   node tests/browser/e2e.mjs   (run by scripts/browser-tests.sh, which sets the environment)
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import net from 'node:net';

const BIN = process.env.DOORSTEP_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SHOTS || 'target/browser';
const { chromium } = createRequire(join(process.env.PLAYWRIGHT_DIR, 'node_modules', '/'))('playwright-core');
mkdirSync(SHOTS, { recursive: true });

const step = (what) => console.log(`-- ${what}`);
const run = (args, opts = {}) => execFileSync(BIN, args, { encoding: 'utf8', ...opts });

// Today, in a zone where it is about midday now.
const utcHour = new Date().getUTCHours();
const ahead = 12 - utcHour; // hours the zone is ahead of UTC
const zone = ahead === 0 ? 'Etc/GMT' : ahead > 0 ? `Etc/GMT-${ahead}` : `Etc/GMT+${-ahead}`;
const date = new Date(Date.now() + ahead * 3600_000).toISOString().slice(0, 10);

const port = await new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const base = `http://127.0.0.1:${port}`;
const state = mkdtempSync(join(tmpdir(), 'doorstep-browser-'));
const phone = join(state, 'phone');
const key = run(['operator', 'add', '--state', state, '--name', 'browser test']).match(/dso_[0-9a-f_]+/)[0];
const server = spawn(BIN, ['serve', '--state', state, '--addr', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'inherit'] });
let browser;
try {
  for (let i = 0; ; i++) {
    try { await fetch(`${base}/openapi.json`); break; } catch (e) { if (i > 100) throw e; await new Promise((r) => setTimeout(r, 100)); }
  }
  const op = (path, body, type = 'application/json') => fetch(`${base}${path}`, {
    method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': type }, body,
  });
  step(`a day on route R1, ${date} in ${zone}`);
  const parcels = [1, 2, 3].map((i) => ({
    parcel_id: `P${i}`, barcode: `BC${i}`, route_id: 'R1', stop_id: `S${i}`, stop_sequence: i,
    delivery_date: date, time_zone: zone, declared_value_cents: 120000, category: 'electronics',
    customer_email: `customer${i}@example.test`, address_hint: `${i} Elm St`, recipient_hint: 'A. B.',
  }));
  assert.equal((await op('/v1/parcels', JSON.stringify(parcels))).status, 201);
  for (const p of parcels) assert.equal((await op(`/v1/parcels/${p.parcel_id}/departed`, '')).status, 200);
  const token = (await (await op('/v1/enrolment-tokens', JSON.stringify({ route_id: 'R1' }))).json()).token;
  // A refusal at the door ends with exit code 3 and still prints its outcome.
  const device = (...args) => {
    try {
      return JSON.parse(run(['device', ...args, '--dir', phone, '--dispatch', base, '--json']));
    } catch (e) {
      if (e.status === 3) return JSON.parse(e.stdout);
      throw e;
    }
  };
  device('enrol', '--token', token);
  device('sync', '--date', date);

  // The code e-mail of a parcel: its code and the link to its page.
  const email = (parcel) => {
    const outbox = join(state, 'outbox');
    const text = readdirSync(outbox).map((f) => readFileSync(join(outbox, f), 'utf8'))
      .find((t) => t.includes(`Parcel: ${parcel}\r\n`));
    return { code: text.match(/Delivery code: (\d{6})/)[1], link: text.match(/(http:\/\/\S+\/parcel\/\S+)/)[1] };
  };

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 412, height: 915 }, deviceScaleFactor: 2 });
  const page = await context.newPage();

  step('the customer opens the link from the e-mail: status, code digit by digit, QR code');
  const p1 = email('P1');
  const answer = await page.goto(p1.link);
  assert.equal(answer.status(), 200);
  const headers = answer.headers();
  assert.equal(headers['cache-control'], 'no-store');
  assert.match(headers['content-security-policy'], /default-src 'none'/);
  assert.equal(await page.textContent('#status'), 'Your parcel is on its way.');
  const shown = await page.textContent('.code');
  assert.equal(shown.replace(/\s/g, ''), p1.code);
  assert.match(await page.getAttribute('.code', 'aria-label'), new RegExp(p1.code.split('').join(' ')));
  await page.screenshot({ path: join(SHOTS, 'customer-page.png'), fullPage: true });
  const qrShot = join(SHOTS, 'qr.png');
  await page.locator('#qr').screenshot({ path: qrShot });
  const qrToken = execFileSync('zbarimg', ['--raw', '-q', qrShot], { encoding: 'utf8' }).trim();
  assert.ok(qrToken.length > 40, `a token from the QR code: ${qrToken}`);

  step('the phone scans the QR code and hands the parcel over; the page says so, with the time');
  assert.equal(device('verify', 'BC1', '--qr', qrToken).outcome, 'accepted');
  device('upload');
  await page.reload();
  assert.match(await page.textContent('#status'), new RegExp(`^Handed over to you, at ${date} \\d\\d:\\d\\d \\(${zone.replace('+', '\\+')}\\)\\.$`));

  step('script turned off: the page still shows the code and the QR code');
  const noScript = await browser.newContext({ javaScriptEnabled: false });
  const plain = await noScript.newPage();
  const p3 = email('P3');
  await plain.goto(p3.link);
  assert.equal((await plain.textContent('.code')).replace(/\s/g, ''), p3.code);
  assert.equal(await plain.locator('#qr svg').count(), 1);
  await noScript.close();

  step('the customer names a trusted person; that code works at the door');
  const p2 = email('P2');
  await page.goto(p2.link);
  await page.fill('input[name=label]', 'Neighbour Anna');
  await page.click('#trusted button:has-text("Give them a code")');
  const annaLabel = await page.getAttribute('#trusted li .code', 'aria-label');
  const anna = annaLabel.replace(/\D/g, '');
  assert.equal(anna.length, 6);
  assert.notEqual(anna, p2.code);
  device('sync', '--date', date);
  const byAnna = device('verify', 'BC2', anna);
  assert.equal(byAnna.outcome, 'accepted');
  assert.match(JSON.stringify(byAnna.holder), /Neighbour Anna/);

  step('five wrong codes lock P3; an operator resets it from the console');
  const wrong = p3.code.split('').map((d) => String((Number(d) + 5) % 10)).join('');
  let last;
  for (let i = 0; i < 5; i++) last = device('verify', 'BC3', wrong);
  assert.equal(last.outcome, 'locked');
  device('upload');
  const desk = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const console_ = await desk.newPage();
  await console_.goto(`${base}/console`);
  assert.match(console_.url(), /\/console\/login$/);
  await console_.fill('input[name=key]', key);
  await console_.click('button:has-text("Log in")');
  assert.match(await console_.textContent('h1'), /Operator console/);
  const row = console_.locator('tr', { has: console_.locator('a', { hasText: 'P3' }) });
  assert.match(await row.textContent(), /locked/);
  await console_.screenshot({ path: join(SHOTS, 'console.png'), fullPage: true });
  await console_.click('a:has-text("P3")');
  await console_.click('button:has-text("Reset attempts")');
  await console_.click('#confirm');
  assert.match(await console_.textContent('.status'), /on its way/);
  assert.match(await console_.textContent('body'), /reset/);
  const synced = device('sync', '--date', date);
  assert.equal(synced.applied.reduce((n, m) => n + m.reset, 0), 1);
  assert.equal(device('verify', 'BC3', p3.code).outcome, 'accepted');
  console.log('browser end-to-end: all passed');
} finally {
  if (browser) await browser.close();
  server.kill();
}
