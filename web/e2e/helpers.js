// What the browser tests share: the browser, ports, waiting, and what a
// page decodes. Not a test file itself (node --test runs *.test.js).
import { existsSync } from 'node:fs';
import net from 'node:net';

// Never skip: a missing browser fails the suite, saying what to install.
export const chromiumPath = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find(existsSync);

// chromiumArgs: fake camera and microphone (and screen), loopback WebRTC,
// no background noise; extra flags after.
export const chromiumArgs = (...extra) => ['--no-sandbox', '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extra];

// freePort is a TCP port free on loopback now.
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

// eventually returns fn's first truthy result, polling every 200 ms.
export async function eventually(what, fn, timeout = 20000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// framesDecoded of the video received from a participant (by user id), as
// the page's subscriber connection reports it.
export async function framesDecoded(p, userId) {
  return p.evaluate(async (uid) => {
    const track = window.cocmd.meeting.participants.byUserId(uid)?.stream?.getVideoTracks()[0];
    if (!track) return 0;
    const stats = await window.cocmd.meeting.getMediaStats();
    return stats.filter((s) => s.kind === 'video' && s.trackIdentifier === track.id).reduce((n, s) => n + (s.framesDecoded || 0), 0);
  }, userId);
}
