// The SDK conformance script (conformance/sdk.json, format in
// conformance/README.md) replayed against the browser SDK, in Node: a fake
// WebSocket and fetch are injected through init({transport}), and there is
// no WebRTC, so the SDK runs its stage without media. The Go SDK replays the
// same script (client/conformance_test.go).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { init } from '../sdk/cocmd.js';

const here = dirname(fileURLToPath(import.meta.url));
const doc = JSON.parse(readFileSync(join(here, '..', '..', 'conformance', 'sdk.json'), 'utf8'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeout = 5000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A fake server following a script, and the fake WebSocket it hands the SDK. */
class Server {
  refuse = false;
  conns = []; // connections not yet welcomed
  conn = null;
  seq = 0;

  transport() {
    const server = this;
    class FakeWebSocket {
      constructor(url, protocols) {
        this.url = String(url);
        this.protocols = [].concat(protocols || []);
        this.readyState = 0;
        this.reqs = [];
        this.closedWith = null;
        if (server.refuse) {
          setTimeout(() => { this.readyState = 3; this.onclose?.({ code: 1006, reason: '' }); }, 0);
          return;
        }
        server.conns.push(this);
      }
      send(data) { this.reqs.push(JSON.parse(data)); }
      close(code = 1000, reason = '') {
        if (this.readyState === 3) return;
        this.closedWith = code;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason }), 0);
      }
      deliver(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
    }
    return {
      WebSocket: FakeWebSocket,
      fetch: async () => ({ ok: true, status: 200, json: async () => ({ meeting_id: 'mtg_1', participant_id: 'prt_me', expires_at: '2026-12-01T00:00:00Z' }) }),
    };
  }

  async welcome(s) {
    this.conn = await until('the SDK to connect', () => this.conns.shift());
    if (s.token) assert.ok(this.conn.protocols.includes(`cocmd.token.${s.token}`), `connected with ${this.conn.protocols}, want token ${s.token}`);
    assert.ok(this.conn.protocols.includes('cocmd.v1'));
    this.conn.readyState = 1;
    this.conn.deliver({ type: 'welcome', seq: ++this.seq, data: s.welcome });
  }

  send(events) {
    for (const e of events || []) this.conn.deliver({ type: 'event', seq: ++this.seq, event: e.event, data: e.data });
  }

  async serve(s) {
    const conn = this.conn;
    const q = await until(`request ${s.request.method}`, () => conn.reqs.shift());
    assert.equal(q.method, s.request.method);
    assert.deepEqual(q.params, s.request.params, `params of ${q.method}`);
    this.send(s.send);
    const r = s.response || {};
    conn.deliver(r.error ? { type: 'response', id: q.id, error: r.error } : { type: 'response', id: q.id, data: r.data ?? {} });
  }
}

/** The SDK's events, in the script's canonical form. */
function collect(m) {
  const out = [];
  const missed = (c, p) => { if (p.missed) c.missed = true; return c; };
  const st = m.stage;
  st.on('stageStatusUpdate', (p) => out.push(missed({ name: 'stageStatusUpdate', status: p.status, oldStatus: p.oldStatus }, p)));
  st.on('peerStageStatusUpdate', (p) => out.push(missed({ name: 'peerStageStatusUpdate', userId: p.participant.userId, status: p.status, oldStatus: p.oldStatus }, p)));
  st.on('stageRequestApproved', () => out.push({ name: 'stageRequestApproved' }));
  st.on('removedFromStage', () => out.push({ name: 'removedFromStage' }));
  st.on('stageRequestRejected', (p) => out.push({ name: 'stageRequestRejected', reason: p.reason }));
  st.on('newStageRequest', (p) => out.push({ name: 'newStageRequest', count: p.count, userId: p.request.userId }));
  st.on('stageAccessRequestUpdate', (p) => out.push(missed({ name: 'stageAccessRequestUpdate', userIds: p.requests.map((r) => r.userId) }, p)));
  m.on('participantJoined', (p) => out.push({ name: 'participantJoined', userId: p.userId }));
  m.on('participantLeft', (p) => out.push({ name: 'participantLeft', userId: p.userId }));
  m.on('meetingUpdate', (p) => out.push({ name: 'meetingUpdate', title: p.title }));
  m.on('reconnected', (p) => out.push({ name: 'reconnected', resumed: p.resumed }));
  m.on('closed', (p) => out.push({ name: 'closed', code: p.code }));
  m.on('connectionUpdate', ({ state }) => { if (state === 'reconnecting') out.push({ name: 'disconnected' }); });
  m.self.on('publishingStopped', (p) => out.push({ name: 'publishingStopped', reason: p.reason, sources: p.sources }));
  m.self.on('permissionsUpdate', (p) => out.push({ name: 'permissionsUpdate', preset: p.preset, acceptStageRequests: p.permissions.acceptStageRequests }));
  return out;
}

function view(m, want) {
  const parts = {};
  for (const p of m.participants.joined.values()) parts[p.userId] = { status: p.stageStatus, connected: p.connected };
  const all = {
    status: m.self.stageStatus, preset: m.self.preset, title: m.info.title, count: m.participants.count,
    requests: m.participants.requests.map((r) => r.userId), participants: parts,
  };
  return Object.fromEntries(Object.keys(want).map((k) => [k, all[k]]));
}

function startCall(m, s) {
  const st = m.stage;
  switch (s.call) {
    case 'getAccessRequests': return st.getAccessRequests().then((r) => ({ userIds: r.map((x) => x.userId) }));
    case 'requestAccess': return st.requestAccess();
    case 'cancelRequestAccess': return st.cancelRequestAccess();
    case 'join': return st.join();
    case 'leave': return st.leave();
    case 'grantAccess': return st.grantAccess(s.args);
    case 'denyAccess': return st.denyAccess(s.args);
    case 'kick': return st.kick(s.args);
    case 'leaveMeeting': return m.leave();
    default: throw new Error(`the browser SDK's replay has no call ${s.call}`);
  }
}

for (const [name, steps] of Object.entries(doc.scripts)) {
  test(`conformance: ${name}`, async () => {
    const server = new Server();
    const meeting = await init({ authToken: doc.token, baseURI: 'http://cocmd.test', transport: server.transport(),
      callTimeout: doc.callTimeoutMs, refreshToken: async () => doc.refreshToken });
    const events = collect(meeting);
    let joining = null;
    let left = false;
    for (const [i, s] of steps.entries()) {
      const where = `step ${i} (${s.do})`;
      switch (s.do) {
        case 'welcome':
          if (!joining) joining = meeting.join();
          await server.welcome(s);
          await joining;
          break;
        case 'send':
          server.send(s.send);
          break;
        case 'call': {
          if (s.call === 'leaveMeeting') left = true;
          const p = startCall(meeting, s);
          if (s.request) await server.serve(s);
          let got;
          try {
            const r = await p;
            got = r && r.userIds ? r : 'ok';
          } catch (e) {
            got = e.results ? { error: e.code, failed: e.results.filter((x) => x.error).map((x) => x.userId) } : { error: e.code };
          }
          assert.deepEqual(got, s.result, `${where}: ${s.call}`);
          break;
        }
        case 'expectRequest':
          await server.serve(s);
          break;
        case 'events': {
          await until(`${s.events.length} events`, () => events.length >= s.events.length).catch(() => {});
          const got = events.splice(0, s.events.length);
          assert.deepEqual(got, s.events, `${where}: events`);
          break;
        }
        case 'view':
          await until('the view', () => { try { assert.deepEqual(view(meeting, s.view), s.view); return true; } catch { return false; } })
            .catch(() => assert.deepEqual(view(meeting, s.view), s.view, `${where}: view`));
          break;
        case 'drop': {
          const c = server.conn;
          c.readyState = 3;
          c.onclose?.({ code: 1006, reason: '' });
          break;
        }
        case 'close': {
          const c = server.conn;
          c.readyState = 3;
          c.onclose?.({ code: s.code, reason: s.reason });
          break;
        }
        case 'refuse': server.refuse = true; break;
        case 'accept': server.refuse = false; break;
        case 'expectClose':
          await until('the SDK to close the connection', () => server.conn.closedWith !== null);
          assert.equal(server.conn.closedWith, s.code, `${where}: close code`);
          break;
        default:
          assert.fail(`${where}: the browser SDK's replay cannot execute ${s.do}`);
      }
    }
    if (!left) {
      await sleep(100);
      assert.deepEqual(events, [], 'events the script does not expect');
    }
    await meeting.leave();
  });
}
