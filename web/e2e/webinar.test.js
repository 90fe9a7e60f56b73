// End-to-end tests of the demo app and the browser SDK in headless
// Chromium (Debian's chromium, driven by playwright-core), against a real
// `cocmd serve`. Run by the README's test command (scripts/test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { chromiumPath, chromiumArgs, freePort, eventually, framesDecoded } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const artifacts = join(here, 'artifacts');
const apiKey = 'ck_e2e_test_key_0123456789';


let server, base, port, dataDir, bin, browser;


function startServer() {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, ['serve', '-listen', `127.0.0.1:${port}`, '-data', dataDir, '-api-key', apiKey, '-dev', 'true', '-log-level', 'warn'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('cocmd serve did not start')), 30000);
    p.stdout.on('data', (d) => { if (String(d).includes('cocmd listening on')) { clearTimeout(timer); resolve(p); } });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`cocmd serve exited: ${code}`)); });
  });
}

function stopServer(p) {
  return new Promise((resolve) => { p.removeAllListeners('exit'); p.on('exit', resolve); p.kill('SIGTERM'); });
}

async function api(method, path, body) {
  const res = await fetch(base + path, { method, headers: { Authorization: `Bearer ${apiKey}` }, body: body && JSON.stringify(body) });
  const out = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(out)}`);
  return out;
}

before(async () => {
  assert.ok(chromiumPath, 'Chromium is not installed: install the Debian package chromium (the README\'s test command does)');
  mkdirSync(artifacts, { recursive: true });
  bin = process.env.COCMD_BIN;
  if (!bin) {
    bin = join(mkdtempSync(join(tmpdir(), 'cocmd-e2e-')), 'cocmd');
    execFileSync('go', ['build', '-o', bin, './cmd/cocmd'], { cwd: repo, stdio: 'inherit' });
  }
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  dataDir = mkdtempSync(join(tmpdir(), 'cocmd-e2e-data-'));
  server = await startServer();
  // The fake microphone plays a steady tone (Chromium's default beeps once a
  // second, which is not speech): the server hears whoever is on stage speak.
  const tone = join(mkdtempSync(join(tmpdir(), 'cocmd-e2e-tone-')), 'tone.wav');
  writeFileSync(tone, toneWAV(330, 1));
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: chromiumArgs(`--use-file-for-fake-audio-capture=${tone}`),
  });
});

// toneWAV is a 16-bit mono 48 kHz WAV of a sine at freq Hz, seconds long.
function toneWAV(freq, seconds) {
  const rate = 48000, n = rate * seconds;
  const b = Buffer.alloc(44 + n * 2);
  b.write('RIFF', 0); b.writeUInt32LE(36 + n * 2, 4); b.write('WAVE', 8);
  b.write('fmt ', 12); b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24); b.writeUInt32LE(rate * 2, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34);
  b.write('data', 36); b.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(Math.sin(2 * Math.PI * freq * i / rate) * 12000), 44 + i * 2);
  return b;
}

after(async () => {
  await browser?.close();
  if (server) await stopServer(server);
});

async function page(link, name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  // Every peer connection the SDK makes is kept, for its stats.
  await ctx.addInitScript(() => {
    const Orig = window.RTCPeerConnection;
    window.__pcs = [];
    window.RTCPeerConnection = class extends Orig {
      constructor(cfg) { super(cfg); window.__pcs.push(this); }
    };
  });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  p.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') console.error(`[${name}] ${m.type()}: ${m.text()}`); });
  await p.goto(link);
  return p;
}

const shot = (p, name) => p.screenshot({ path: join(artifacts, `${name}.png`) });

// axe-core, run in the page. It is evaluated through the DevTools protocol,
// which the page's Content-Security-Policy (no inline script) does not
// govern, so the app itself runs under its real policy.
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const a11yChecked = [];

// checkA11y fails the test on any serious or critical accessibility
// violation of the page as it is now (WCAG 2.x A and AA rules).
async function checkA11y(p, state) {
  const violations = await p.evaluate(async (src) => {
    if (!window.axe) (0, eval)(src);
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  }, axeSource);
  a11yChecked.push(state);
  assert.deepEqual(violations, [], `accessibility violations in "${state}":\n${violations.join('\n')}`);
}

// focusKey returns the data-key of the focused element, or its tag if it
// has none ('BODY' when focus was dropped to the page).
const focusKey = (p) => p.evaluate(() => document.activeElement?.dataset?.key || document.activeElement?.tagName);


// How much of a tile's picture is not black.
async function litShare(p, userId) {
  return p.evaluate((uid) => {
    const v = document.querySelector(`#stage .tile[data-user="${uid}"] video`);
    if (!v || !v.videoWidth) return 0;
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
    return lit / (d.length / 4);
  }, userId);
}


test('the webinar story in three browsers', async (t) => {
  const demo = await (await fetch(`${base}/v1/demo/webinars`, { method: 'POST' })).json();
  const [a, b, c] = demo.viewers; // Ada, Grace, Linus
  const host = await page(demo.host.link, 'host');
  const pa = await page(a.link, 'A');
  const pb = await page(b.link, 'B');
  for (const p of [host, pa, pb]) await p.getByRole('heading', { name: 'Stage' }).waitFor();
  await checkA11y(host, 'host, off stage');
  await checkA11y(pa, 'viewer, off stage');
  // The host opens the webinar on stage, with its camera.
  await host.getByRole('button', { name: 'Join the stage' }).click();
  await host.getByText('You are on stage.').waitFor();
  await checkA11y(host, 'host, on stage');

  await t.test('A requests, the host grants, A joins and B sees A', async () => {
    await pa.getByRole('button', { name: 'Request to join the stage' }).click();
    await pa.getByRole('button', { name: 'Cancel request' }).waitFor();
    await checkA11y(pa, 'viewer, requested');
    await host.locator(`#requests li[data-user="${a.user_id}"]`).waitFor();
    await checkA11y(host, 'host, a pending request');
    // By keyboard: the grant takes the request's row away, and focus
    // stays in the host's panel instead of dropping to the page.
    await host.getByRole('button', { name: `Grant ${a.name}` }).focus();
    await host.keyboard.press('Enter');
    await host.locator(`#requests li[data-user="${a.user_id}"]`).waitFor({ state: 'detached' });
    assert.notEqual(await focusKey(host), 'BODY', 'focus dropped to the page after a grant');
    assert.ok(await host.evaluate(() => document.querySelector('#requests').contains(document.activeElement)), 'focus left the requests after a grant');
    await pa.getByRole('button', { name: 'Decline' }).waitFor();
    await checkA11y(pa, 'viewer, invited');
    await pa.getByRole('button', { name: 'Join the stage' }).click();
    await pa.getByText('You are on stage.').waitFor();
    await pb.locator(`#stage .tile[data-user="${a.user_id}"] video`).waitFor();
    const first = await eventually('B decoding frames of A', async () => framesDecoded(pb, a.user_id));
    // Video flows: frames keep being decoded. Not a timed assertion: on a
    // loaded machine (1 of 5 runs with a core kept busy) B
    // received A's first keyframe (3 packets) and then nothing for ~1.5 s,
    // its other streams flowing; whether A's encoders or the server's
    // first layer choice stalls is not known yet.
    await eventually('B decoding more frames of A', async () => (await framesDecoded(pb, a.user_id)) > first + 10);
    const f1 = await framesDecoded(pb, a.user_id);
    await new Promise((r) => setTimeout(r, 1500));
    const f2 = await framesDecoded(pb, a.user_id);
    const lit = await eventually('a picture that is not black', async () => { const s = await litShare(pb, a.user_id); return s > 0.1 && s; });
    console.log(`B decoded ${f2 - f1} frames of A in 1.5 s; ${(lit * 100).toFixed(0)} % of the picture is lit`);
    assert.ok(await pb.locator(`#stage .tile[data-user="${a.user_id}"] video`).isVisible(), 'A\'s video is not shown at B');
    await pb.locator(`#stage .tile[data-user="${a.user_id}"] .avatar`).waitFor({ state: 'hidden' });
    // The fake microphone plays a tone: the server hears A speak from the
    // levels Chromium puts in its packets, and B's tile of A says so.
    await pb.locator(`#stage .tile[data-user="${a.user_id}"][data-speaking="true"]`).waitFor({ timeout: 15000 });
    assert.equal(await pb.evaluate((uid) => window.cocmd.meeting.participants.byUserId(uid)?.speaking, a.user_id), true);
    await host.locator(`#stage .tile[data-user="${a.user_id}"] video`).waitFor();
    await eventually('the host decoding A', async () => (await litShare(host, a.user_id)) > 0.1);
    // Simulcast and adaptive stream: A's browser sends its 720p camera as
    // simulcast layers; B's tile of A is small, so B gets a small layer;
    // hidden, it gets no video, shown again, video again.
    const metrics = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } })).text();
    const layers = Number(metrics.match(new RegExp(`cocmd_media_simulcast_layers\\{meeting="${demo.meeting_id}"\\} (\\d+)`))?.[1] || 0);
    assert.ok(layers >= 2, `simulcast layers received: ${layers}`);
    // B's tile of A made small: the smallest layer (a quarter of 720p);
    // large again: a larger one.
    const size = (width) => pb.evaluate(([uid, w]) => {
      const t = document.querySelector(`#stage .tile[data-user="${uid}"]`);
      t.style.width = w;
      const v = t.querySelector('video');
      return { tile: Math.round(v.clientWidth * devicePixelRatio), got: v.videoWidth };
    }, [a.user_id, width]);
    const small = await eventually('B receiving the small layer in a small tile', async () => { const r = await size('160px'); return r.got > 0 && r.got <= 320 && r; });
    const large = await eventually('B receiving a larger layer in a large tile', async () => { const r = await size(''); return r.got > small.got && r; });
    console.log(`A sends ${layers} simulcast layers (with the host's); B's tile of A at ${small.tile} px receives ${small.got} px, at ${large.tile} px ${large.got} px`);
    await pb.evaluate((uid) => { document.querySelector(`#stage .tile[data-user="${uid}"]`).style.display = 'none'; }, a.user_id);
    await new Promise((r) => setTimeout(r, 1500));
    const h1 = await framesDecoded(pb, a.user_id);
    await new Promise((r) => setTimeout(r, 1500));
    const h2 = await framesDecoded(pb, a.user_id);
    assert.ok(h2 - h1 <= 2, `a hidden tile decoded ${h2 - h1} frames in 1.5 s`);
    // Dynacast: hidden at the host too, nobody receives A's video, and
    // A's browser stops encoding it (told by the server, media.layers);
    // shown again, it encodes again.
    await host.evaluate((uid) => { document.querySelector(`#stage .tile[data-user="${uid}"]`).style.display = 'none'; }, a.user_id);
    const simulcastSent = () => pa.evaluate(async () => {
      let bytes = 0;
      const active = [];
      for (const pc of window.__pcs) {
        if (pc.connectionState === 'closed') continue;
        for (const s of (await pc.getStats()).values()) if (s.type === 'outbound-rtp' && s.kind === 'video' && s.rid) bytes += s.bytesSent;
        for (const snd of pc.getSenders()) for (const e of snd.getParameters().encodings || []) if (e.rid && e.active) active.push(e.rid);
      }
      return { bytes, active };
    });
    const paused = await eventually('A\'s layers paused once nobody receives them', async () => { const r = await simulcastSent(); return r.active.length === 0 && r; });
    await new Promise((r) => setTimeout(r, 1500));
    const later = await simulcastSent();
    assert.ok(later.bytes - paused.bytes < 5000, `A's browser sent ${later.bytes - paused.bytes} bytes of video in 1.5 s with every layer paused`);
    const pausedMetric = Number((await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } })).text())
      .match(new RegExp(`cocmd_media_simulcast_layers_paused\\{meeting="${demo.meeting_id}"\\} (\\d+)`))?.[1] || 0);
    assert.ok(pausedMetric >= 2, `paused layers in the metrics: ${pausedMetric}`);
    for (const p of [pb, host]) await p.evaluate((uid) => { document.querySelector(`#stage .tile[data-user="${uid}"]`).style.display = ''; }, a.user_id);
    await eventually('B decoding A again once shown', async () => (await framesDecoded(pb, a.user_id)) > h2 + 10);
    const resumed = await simulcastSent();
    assert.ok(resumed.active.length > 0, 'A encodes no layer after being shown again');
    console.log(`dynacast: every layer of A's paused with its video hidden everywhere (${later.bytes - paused.bytes} bytes sent in 1.5 s; ${pausedMetric} layers paused in the meeting), ${resumed.active.join(',')} active again once shown`);
    // The viewers' browsers send transport-wide feedback, from which
    // the server estimates their links.
    const fb = Number((await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } })).text())
      .match(new RegExp(`cocmd_media_twcc_feedback_total\\{meeting="${demo.meeting_id}"\\} (\\d+)`))?.[1] || 0);
    assert.ok(fb > 0, 'no transport-wide feedback from the browsers');
    await checkA11y(pa, 'viewer, on stage');
    await checkA11y(host, 'host, a viewer on stage');
    await shot(host, 'host-view');
    await shot(pb, 'viewer-view');
    // The README's picture is refreshed by scripts/refresh-screenshot, never by a test run.
    if (process.env.COCMD_REFRESH_SCREENSHOT) copyFileSync(join(artifacts, 'host-view.png'), join(repo, 'docs', 'host-view.png'));
  });

  await t.test('the host kicks A: B loses the tile, A is told', async () => {
    // Another participant's change while the host's focus is on a
    // control keeps it there.
    await host.getByRole('button', { name: 'Camera on' }).focus();
    await pb.getByRole('button', { name: 'Request to join the stage' }).click();
    await host.locator(`#requests li[data-user="${b.user_id}"]`).waitFor();
    assert.equal(await focusKey(host), 'camera', 'focus moved when another participant asked for the stage');
    await pb.getByRole('button', { name: 'Cancel request' }).click();
    await host.locator(`#requests li[data-user="${b.user_id}"]`).waitFor({ state: 'detached' });
    await pb.getByRole('button', { name: 'Request to join the stage' }).waitFor();
    await host.getByRole('button', { name: `Kick ${a.name} off the stage` }).click();
    await pb.locator(`#stage .tile[data-user="${a.user_id}"]`).waitFor({ state: 'detached' });
    await pa.getByText('You were removed from the stage.').first().waitFor();
    await pa.getByRole('button', { name: 'Request to join the stage' }).waitFor();
    await checkA11y(pa, 'viewer, removed from the stage');
    await shot(pa, 'viewer-removed');
  });

  await t.test('B requests and is denied, and sees so', async () => {
    await pb.getByRole('button', { name: 'Request to join the stage' }).click();
    await host.getByRole('button', { name: `Deny ${b.name}` }).click();
    await pb.getByText('Your request was declined.').first().waitFor();
    await checkA11y(pb, 'viewer, denied');
    await shot(pb, 'viewer-denied');
  });

  await t.test('a direct invite, accepted', async () => {
    await host.getByRole('button', { name: `Invite ${b.name} to the stage` }).click();
    await pb.getByRole('button', { name: 'Decline' }).waitFor();
    await pb.getByRole('button', { name: 'Join the stage' }).click();
    await pb.getByText('You are on stage.').waitFor();
    await host.locator(`#stage .tile[data-user="${b.user_id}"] video`).waitFor();
    await eventually('the host decoding B', async () => (await litShare(host, b.user_id)) > 0.1);
    // Camera off, by keyboard: the others see B's avatar, and B's focus
    // stays on the toggle; on again: B's video.
    await pb.getByRole('button', { name: 'Camera on' }).focus();
    await pb.keyboard.press('Enter');
    await pb.getByRole('button', { name: 'Camera off' }).waitFor();
    assert.equal(await focusKey(pb), 'camera', 'focus left the camera toggle');
    await checkA11y(pb, 'viewer on stage, camera off');
    await host.locator(`#stage .tile[data-user="${b.user_id}"] .avatar`).waitFor({ state: 'visible' });
    await pb.getByRole('button', { name: 'Camera off' }).click();
    await host.locator(`#stage .tile[data-user="${b.user_id}"] .avatar`).waitFor({ state: 'hidden' });
    await eventually('the host decoding B again', async () => (await litShare(host, b.user_id)) > 0.1);
    // Mic off: the others' tiles of B say muted; on again: they do not.
    await pb.getByRole('button', { name: 'Mic on' }).click();
    await pb.getByRole('button', { name: 'Mic off' }).waitFor();
    await host.locator(`#stage .tile[data-user="${b.user_id}"] .label`, { hasText: 'muted' }).waitFor();
    await pb.getByRole('button', { name: 'Mic off' }).click();
    await host.locator(`#stage .tile[data-user="${b.user_id}"] .label`, { hasText: 'muted' }).waitFor({ state: 'detached' });
    // Grid view: no tile larger than the others; speaker view again.
    await host.getByRole('button', { name: 'Grid view' }).click();
    assert.equal(await host.locator('#stage.grid-view .tile.active-speaker').count(), 0);
    await checkA11y(host, 'host, grid view');
    await host.getByRole('button', { name: 'Speaker view' }).click();
    // The host shares a screen (Chromium's fake one): B sees it large, first
    // on the stage, and it goes when the host stops.
    await host.getByRole('button', { name: 'Share screen' }).click();
    await host.getByRole('button', { name: 'Stop sharing' }).waitFor();
    const hostUID = demo.host.user_id;
    const screen = pb.locator(`#stage .tile.screen[data-user="${hostUID}:screen"]`);
    await screen.locator('video').waitFor();
    await eventually('B decoding the host\'s screen', async () => (await litShare(pb, `${hostUID}:screen`)) > 0.1);
    const layout = await pb.evaluate((uid) => {
      const tiles = [...document.querySelectorAll('#stage .tile')];
      const s = document.querySelector(`#stage .tile[data-user="${uid}:screen"]`);
      return { first: tiles[0] === s, wide: s.getBoundingClientRect().width >= Math.max(...tiles.map((t) => t.getBoundingClientRect().width)) };
    }, hostUID);
    assert.deepEqual(layout, { first: true, wide: true }, 'the screen share is not first and largest');
    await checkA11y(host, 'host, sharing a screen');
    await shot(pb, 'viewer-screen-share');
    await host.getByRole('button', { name: 'Stop sharing' }).click();
    await screen.waitFor({ state: 'detached' });
  });

  await t.test('a viewer calling host methods is refused, and is not offered them', async () => {
    const pc = await page(c.link, 'C');
    await pc.getByRole('heading', { name: 'Stage' }).waitFor();
    const codes = await pc.evaluate(async (uid) => {
      const st = window.cocmd.meeting.stage;
      const out = [];
      for (const call of [() => st.grantAccess([uid]), () => st.denyAccess([uid]), () => st.kick([uid]), () => st.getAccessRequests()]) {
        out.push(await call().then(() => 'OK', (e) => e.code));
      }
      return out;
    }, b.user_id);
    assert.deepEqual(codes, ['PERMISSION_DENIED', 'PERMISSION_DENIED', 'PERMISSION_DENIED', 'PERMISSION_DENIED']);
    assert.equal(await pc.locator('#requests, #viewers').count(), 0);
    assert.equal(await pc.getByRole('button', { name: /^(Kick|Grant|Deny|Invite)/ }).count(), 0);
    assert.equal(await pc.getByRole('button', { name: /off the stage/ }).count(), 0);
    await pc.context().close();
  });

  await t.test('the server restarts: the pages reconnect and show the same stage', async () => {
    await stopServer(server);
    await host.getByText('Reconnecting…').waitFor();
    await checkA11y(host, 'host, reconnecting');
    server = await startServer();
    for (const p of [host, pa, pb]) await p.locator('#conn', { hasText: 'Connected' }).waitFor({ timeout: 30000 });
    await pb.getByText('You are on stage.').waitFor();
    await host.locator(`#stage .tile[data-user="${b.user_id}"] video`).waitFor();
    await eventually('the host decoding B after the restart', async () => (await litShare(host, b.user_id)) > 0.1, 30000);
    await pa.getByRole('button', { name: 'Request to join the stage' }).waitFor();
    await shot(host, 'host-after-restart');
    await host.setViewportSize({ width: 390, height: 844 }); // a phone
    await checkA11y(host, 'host, phone width');
    await shot(host, 'host-narrow');
  });

  for (const p of [host, pa, pb]) await p.context().close();
});

test('the landing page makes a demo webinar', async () => {
  const p = await page(`${base}/`, 'landing');
  await p.getByRole('button', { name: 'Start a demo webinar' }).waitFor();
  await checkA11y(p, 'landing');
  await p.getByRole('button', { name: 'Start a demo webinar' }).click();
  await p.getByRole('list', { name: 'Join links' }).waitFor();
  assert.ok(await p.getByRole('link', { name: 'Open' }).count() >= 4);
  await checkA11y(p, 'landing, with join links');
  await shot(p, 'landing');
  await p.context().close();
});

test('a forged or expired token gets a readable message', async () => {
  const forged = await page(`${base}/join#token=v1.eyJtIjoieCJ9.AAAA`, 'forged');
  await forged.getByRole('heading', { name: 'Cannot join this meeting' }).waitFor();
  await forged.getByText('This link is invalid or has expired.').waitFor();
  await checkA11y(forged, 'cannot join');
  await shot(forged, 'forged-token');
  await forged.context().close();

  const m = await api('POST', '/v1/meetings', { title: 'Expiring', type: 'WEBINAR' });
  const p = await api('POST', `/v1/meetings/${m.id}/participants`, { name: 'Late', user_id: 'late', preset: 'webinar_viewer', token_ttl: 1 });
  await new Promise((r) => setTimeout(r, 2100));
  const expired = await page(`${base}/join#token=${p.token}`, 'expired');
  await expired.getByRole('heading', { name: 'Cannot join this meeting' }).waitFor();
  const text = await expired.locator('main').innerText();
  assert.match(text, /invalid or has expired/);
  assert.match(text, /expired/i);
  await expired.context().close();

  const none = await page(`${base}/join`, 'none');
  await none.getByRole('heading', { name: 'No token' }).waitFor();
  await checkA11y(none, 'no token');
  await none.context().close();
  console.log(`accessibility checked in ${a11yChecked.length} page states: ${a11yChecked.join('; ')}`);
});
