// A viewer whose network lets nothing through but TLS watches the stage
// over TURN/TLS: headless Chromium against a `cocmd serve` with HTTPS, the
// viewer's peer connections forced onto relay candidates and the `turns:`
// URL only. Chromium verifies the TURN server's certificate: the tests' CA
// (web/e2e/testcert) is trusted in an NSS store of the test's own HOME
// (certutil, Debian's libnss3-tools). Run by the README's test command.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { chromiumPath, chromiumArgs, freePort, eventually, framesDecoded } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const artifacts = join(here, 'artifacts');

let server, base, port, browser, home;


before(async () => {
  // Never skip: what is missing fails the suite, saying what to install.
  assert.ok(chromiumPath, 'Chromium is not installed: install the Debian package chromium (the README\'s test command does)');
  assert.ok(['/usr/bin/certutil', '/bin/certutil'].some(existsSync), 'certutil is missing: install the Debian package libnss3-tools (the README\'s test command does)');
  mkdirSync(artifacts, { recursive: true });
  let bin = process.env.COCMD_BIN;
  if (!bin) {
    bin = join(mkdtempSync(join(tmpdir(), 'cocmd-e2e-')), 'cocmd');
    execFileSync('go', ['build', '-o', bin, './cmd/cocmd'], { cwd: repo, stdio: 'inherit' });
  }
  const certs = mkdtempSync(join(tmpdir(), 'cocmd-e2e-certs-'));
  execFileSync('go', ['run', './web/e2e/testcert', '-dir', certs], { cwd: repo, stdio: 'inherit' });
  home = mkdtempSync(join(tmpdir(), 'cocmd-e2e-home-'));
  const nss = `sql:${join(home, '.pki', 'nssdb')}`;
  mkdirSync(join(home, '.pki', 'nssdb'), { recursive: true });
  execFileSync('certutil', ['-d', nss, '-N', '--empty-password']);
  execFileSync('certutil', ['-d', nss, '-A', '-n', 'cocmd-e2e', '-t', 'C,,', '-i', join(certs, 'ca.pem')]);

  port = await freePort();
  base = `https://127.0.0.1:${port}`;
  const data = mkdtempSync(join(tmpdir(), 'cocmd-e2e-data-'));
  server = await new Promise((resolve, reject) => {
    const p = spawn(bin, ['serve', '-listen', `127.0.0.1:${port}`, '-data', data, '-api-key', 'ck_e2e_turn_key_0123456789',
      '-dev', 'true', '-tls-cert', join(certs, 'cert.pem'), '-tls-key', join(certs, 'key.pem'), '-log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('cocmd serve did not start')), 30000);
    p.stdout.on('data', (d) => { if (String(d).includes('cocmd listening on')) { clearTimeout(timer); resolve(p); } });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`cocmd serve exited: ${code}`)); });
  });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    env: { ...process.env, HOME: home },
    args: chromiumArgs(),
  });
});

after(async () => {
  await browser?.close();
  if (server) await new Promise((resolve) => { server.removeAllListeners('exit'); server.on('exit', resolve); server.kill('SIGTERM'); });
});

// page opens link in a new browser context. relayOnly forces the page's
// peer connections onto the server's turns: URL, at turnsPort if given (a
// proxy's).
async function page(link, name, relayOnly, turnsPort) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  if (relayOnly) {
    // The firewall, as the page sees it: relay candidates only, through
    // the server's turns: URL only (with the credentials the SDK got from
    // the server). Every peer connection the SDK makes is kept for stats.
    await ctx.addInitScript((viaPort) => {
      const Orig = window.RTCPeerConnection;
      const via = (u) => (viaPort ? u.replace(/:\d+\?/, `:${viaPort}?`) : u);
      const only = (cfg = {}) => ({
        ...cfg,
        iceTransportPolicy: 'relay',
        iceServers: (cfg.iceServers || []).map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => u.startsWith('turns:')).map(via) }))
          .filter((s) => s.urls.length),
      });
      window.__pcs = [];
      window.__iceServers = [];
      window.RTCPeerConnection = class extends Orig {
        constructor(cfg) {
          super(only(cfg));
          window.__pcs.push(this);
          window.__iceServers.push(only(cfg).iceServers);
        }
        setConfiguration(cfg) { return super.setConfiguration(only(cfg)); }
      };
    }, turnsPort || 0);
  }
  const p = await ctx.newPage();
  p.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  p.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') console.error(`[${name}] ${m.type()}: ${m.text()}`); });
  await p.goto(link);
  return p;
}



// The local candidates of the selected pairs of the page's connected peer
// connections: type and relay protocol.
async function selectedPaths(p) {
  return p.evaluate(async () => {
    const out = [];
    for (const pc of window.__pcs) {
      if (pc.connectionState !== 'connected') continue;
      const stats = [...(await pc.getStats()).values()];
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport && stats.find((s) => s.id === transport.selectedCandidatePairId);
      const local = pair && stats.find((s) => s.id === pair.localCandidateId);
      if (local) out.push(`${local.candidateType}/${local.relayProtocol || local.protocol}`);
    }
    return out;
  });
}

test('a viewer that can reach TURN over TLS only watches the stage', async () => {
  const host = await page(`${base}/`, 'host');
  const demo = await host.evaluate(async () => (await fetch('/v1/demo/webinars', { method: 'POST' })).json());
  await host.goto(demo.host.link);
  const viewer = await page(demo.viewers[0].link, 'viewer', true);
  for (const p of [host, viewer]) await p.getByRole('heading', { name: 'Stage' }).waitFor();
  await host.getByRole('button', { name: 'Join the stage' }).click();
  await host.getByText('You are on stage.').waitFor();

  const uid = demo.host.user_id;
  await viewer.locator(`#stage .tile[data-user="${uid}"] video`).waitFor();
  const f1 = await eventually('the viewer decoding the host over TURN/TLS', async () => framesDecoded(viewer, uid));
  await new Promise((r) => setTimeout(r, 1500));
  const f2 = await framesDecoded(viewer, uid);
  assert.ok(f2 > f1, `frames decoded did not grow: ${f1} then ${f2}`);

  const servers = await viewer.evaluate(() => window.__iceServers);
  assert.ok(servers.length > 0 && servers.every((s) => s.length === 1 && s[0].urls.length === 1
    && s[0].urls[0] === `turns:127.0.0.1:${new URL(base).port}?transport=tcp` && /^\d+:/.test(s[0].username) && s[0].credential),
  `the SDK did not pass the server's turns: server and credentials on: ${JSON.stringify(servers)}`);
  const paths = await selectedPaths(viewer);
  assert.ok(paths.length > 0 && paths.every((x) => x === 'relay/tls'), `the viewer's media took ${JSON.stringify(paths)}, want relay/tls only`);
  console.log(`over TURN/TLS: the viewer decoded ${f2 - f1} frames of the host in 1.5 s; paths ${paths.join(', ')}`);
  await viewer.screenshot({ path: join(artifacts, 'viewer-turn-tls.png') });
  for (const p of [host, viewer]) await p.context().close();
});

// A TCP proxy to the server's port that can cut every connection it carries.
async function cutProxy() {
  const conns = new Set();
  const srv = net.createServer((c) => {
    const up = net.connect(port, '127.0.0.1');
    const end = () => { c.destroy(); up.destroy(); conns.delete(c); conns.delete(up); };
    for (const s of [c, up]) { conns.add(s); s.on('error', end); s.on('close', end); }
    c.pipe(up);
    up.pipe(c);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: srv.address().port,
    cut() { const n = conns.size; for (const s of [...conns]) s.destroy(); return n; },
    close() { this.cut(); return new Promise((r) => srv.close(r)); },
  };
}

test('a viewer whose TURN/TLS path dies restarts ICE and watches on, without reconnecting', async () => {
  const proxy = await cutProxy();
  const host = await page(`${base}/`, 'host');
  const demo = await host.evaluate(async () => (await fetch('/v1/demo/webinars', { method: 'POST' })).json());
  await host.goto(demo.host.link);
  const viewer = await page(demo.viewers[0].link, 'viewer', true, proxy.port);
  for (const p of [host, viewer]) await p.getByRole('heading', { name: 'Stage' }).waitFor();
  await viewer.evaluate(() => {
    window.__states = [];
    window.cocmd.meeting.on('connectionUpdate', (e) => window.__states.push(e.state));
  });
  await host.getByRole('button', { name: 'Join the stage' }).click();
  await host.getByText('You are on stage.').waitFor();
  const uid = demo.host.user_id;
  await eventually('the viewer decoding the host through the proxy', async () => (await framesDecoded(viewer, uid)) > 10);

  const cut = proxy.cut();
  assert.ok(cut > 0, 'the viewer\'s media did not go through the proxy');
  const atCut = await framesDecoded(viewer, uid);
  // Decoded frames stall, ICE restarts (2 s after disconnected), a new
  // TURN/TLS allocation through the proxy, and they grow again.
  const resumed = await eventually('frames decoded again after the cut', async () => {
    const f = await framesDecoded(viewer, uid);
    return f > atCut + 30 && f;
  }, 45000);
  const states = await viewer.evaluate(() => window.__states);
  assert.deepEqual(states, [], `the realtime connection changed state (${states}): ICE should restart on its own`);
  const paths = await selectedPaths(viewer);
  assert.ok(paths.length > 0 && paths.every((x) => x === 'relay/tls'), `after the restart the media took ${JSON.stringify(paths)}`);
  console.log(`ICE restart: ${resumed - atCut} frames decoded after cutting ${cut} TCP connections; paths ${paths.join(', ')}`);
  for (const p of [host, viewer]) await p.context().close();
  await proxy.close();
});
