// cocmd browser SDK: the stage of a cocmd meeting, and its media.
//
//   import { init } from '/sdk/cocmd.js';
//   const meeting = await init({ authToken, baseURI });
//   await meeting.join();
//   meeting.stage.on('stageStatusUpdate', ({ status }) => …);
//   await meeting.stage.requestAccess();
//
// It speaks the realtime protocol of docs/protocol.md over one WebSocket,
// and WebRTC with the server's SFU: a subscriber connection that receives
// everyone on stage, and a publisher connection for this participant's
// camera and microphone while it is on stage. It reconnects by itself.
// Types: cocmd.d.ts.

/** The error every rejected promise of the SDK carries. */
export class CocmdError extends Error {
  constructor(code, message, results) {
    super(message || code);
    this.name = 'CocmdError';
    /** One of the spec's codes: PERMISSION_DENIED, INVALID_STAGE_STATUS, … */
    this.code = code;
    /** For grantAccess, denyAccess and kick: the result of each user id. */
    if (results) this.results = results;
  }
}

/** The stage statuses. */
export const StageStatus = Object.freeze({
  OFF_STAGE: 'OFF_STAGE',
  REQUESTED_TO_JOIN_STAGE: 'REQUESTED_TO_JOIN_STAGE',
  ACCEPTED_TO_JOIN_STAGE: 'ACCEPTED_TO_JOIN_STAGE',
  ON_STAGE: 'ON_STAGE',
});

const silent = { warn() {}, error() {} };

/** A minimal event emitter: on, off, once. A handler that throws is reported to log. */
class Emitter {
  #handlers = new Map();
  #log;
  constructor(log = silent) { this.#log = log; }
  on(event, fn) {
    if (!this.#handlers.has(event)) this.#handlers.set(event, new Set());
    this.#handlers.get(event).add(fn);
    return this;
  }
  off(event, fn) {
    this.#handlers.get(event)?.delete(fn);
    return this;
  }
  once(event, fn) {
    const w = (...a) => { this.off(event, w); fn(...a); };
    return this.on(event, w);
  }
  emit(event, ...args) {
    for (const fn of [...(this.#handlers.get(event) || [])]) {
      try { fn(...args); } catch (e) { this.#log.error(`cocmd: a handler of ${event} threw`, e); }
    }
  }
}

const STAGE_EVENTS = new Set(['stageStatusUpdate', 'stageRequestApproved', 'stageRequestRejected',
  'removedFromStage', 'newStageRequest', 'stageAccessRequestUpdate', 'peerStageStatusUpdate']);

/**
 * Checks the token and returns a meeting, not yet joined. The SDK logs
 * nothing of its own accord: pass a logger (console, say) to see its
 * warnings.
 * @param {{authToken: string, baseURI?: string, logger?: {warn: Function, error: Function}, refreshToken?: () => Promise<string>, callTimeout?: number}} options
 */
export async function init({ authToken, baseURI, logger, refreshToken, callTimeout = 10000 } = {}) {
  if (!authToken) throw new CocmdError('UNAUTHENTICATED', 'an authToken is required');
  const base = new URL(baseURI || globalThis.location?.origin || 'http://localhost:8080');
  let res;
  try {
    res = await fetch(new URL('/v1/token', base), { headers: { Authorization: `Bearer ${authToken}` } });
  } catch (e) {
    throw new CocmdError('UNAVAILABLE', `cannot reach the server at ${base.origin}: ${e.message}`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new CocmdError(body.error?.code || 'INTERNAL', body.error?.message || `HTTP ${res.status}`);
  }
  return new Meeting(base, authToken, body, logger || silent, refreshToken, callTimeout);
}

/** A participant as this client knows it. */
class Participant {
  constructor(p) {
    this.id = p.id;
    this.userId = p.user_id;
    this.name = p.name;
    this.preset = p.preset;
    this.stageStatus = p.stage_status;
    this.connected = p.connected;
    /** The participant's media as received: a MediaStream for a <video>, or null. */
    this.stream = null;
  }
  _update(p) {
    this.userId = p.user_id; this.name = p.name; this.preset = p.preset;
    this.stageStatus = p.stage_status;
    if (p.connected !== undefined) this.connected = p.connected;
  }
}

/** The meeting's participants, kept current. */
class Participants extends Emitter {
  constructor(log) {
    super(log);
    /** @type {Map<string, Participant>} by participant id, self excluded */
    this.joined = new Map();
    /** Pending stage requests, oldest first (hosts only). */
    this.requests = [];
    /** How many participants are connected. */
    this.count = 0;
  }
  /** Everyone known, self excluded. */
  all() { return [...this.joined.values()]; }
  /** The participants on stage, self excluded. */
  onStage() { return this.all().filter((p) => p.stageStatus === StageStatus.ON_STAGE); }
  /** The connected participants off stage (hosts see everyone; others only who is on stage or invited). */
  viewers() { return this.all().filter((p) => p.stageStatus !== StageStatus.ON_STAGE && p.connected); }
  /** The participant with a user id. */
  byUserId(userId) { return this.all().find((p) => p.userId === userId); }
}

/** meeting.stage: the seed's eight methods, the status and the stage events. */
class Stage extends Emitter {
  #m;
  constructor(m) { super(m._log); this.#m = m; }
  /** This participant's stage status. */
  get status() { return this.#m.self.stageStatus; }
  /** The pending requests, oldest first (needs accept_stage_requests). */
  async getAccessRequests() {
    const r = await this.#m._call('stage.getAccessRequests');
    return r.requests.map(toRequest);
  }
  /** Ask to join the stage. */
  async requestAccess() { await this.#m._call('stage.requestAccess'); }
  /** Withdraw the pending request. */
  async cancelRequestAccess() { await this.#m._call('stage.cancelRequestAccess'); }
  /** Accept requests, or invite participants directly (needs accept_stage_requests). */
  grantAccess(userIds) { return this.#batch('stage.grantAccess', userIds); }
  /** Reject requests, or withdraw invitations (needs accept_stage_requests). */
  denyAccess(userIds) { return this.#batch('stage.denyAccess', userIds); }
  /** Join the stage: ACCEPTED_TO_JOIN_STAGE, or stage_access ALLOWED. */
  async join() { await this.#m._call('stage.join'); }
  /** Leave the stage (or decline an invitation); the server stops this participant's tracks. */
  async leave() { await this.#m._call('stage.leave'); }
  /** Take participants off the stage (needs kick_participant). */
  kick(userIds) { return this.#batch('stage.kick', userIds); }
  async #batch(method, userIds) {
    const ids = typeof userIds === 'string' ? [userIds] : [...userIds];
    const r = await this.#m._call(method, { user_ids: ids });
    const results = r.results.map((x) => ({ userId: x.user_id, error: x.error ? new CocmdError(x.error.code, x.error.message) : null }));
    const failed = results.filter((x) => x.error);
    if (failed.length) {
      throw new CocmdError(failed[0].error.code, failed.map((x) => `${x.userId}: ${x.error.message}`).join('; '), results);
    }
    return results;
  }
}

function sameRequests(a, b) {
  return a.length === b.length && a.every((r, i) => r.participantId === b[i].participantId && +r.requestedAt === +b[i].requestedAt);
}

function toRequest(r) {
  return { participantId: r.participant_id, userId: r.user_id, name: r.name, requestedAt: new Date(r.requested_at) };
}

/** meeting.self: this participant, its permissions and its media. */
class Self extends Emitter {
  #m;
  constructor(m) {
    super(m._log);
    this.#m = m;
    this.id = ''; this.userId = ''; this.name = ''; this.preset = '';
    this.stageStatus = StageStatus.OFF_STAGE;
    this.permissions = {};
    /** The local camera and microphone tracks while enabled, else null. */
    this.videoTrack = null;
    this.audioTrack = null;
  }
  get videoEnabled() { return !!this.videoTrack; }
  get audioEnabled() { return !!this.audioTrack; }
  /** Whether this participant may publish now (on stage, or no stage at all). */
  get canPublish() {
    const p = this.permissions;
    if (this.#m.info.type !== 'WEBINAR' || !p.stage_enabled) return !p.hidden_participant;
    return this.stageStatus === StageStatus.ON_STAGE;
  }
  /** Turn the camera on and publish it; only on stage. */
  enableVideo(constraints = true) { return this.#m._media.enable({ video: constraints }); }
  /** Turn the camera off. */
  disableVideo() { return this.#m._media.disable('video'); }
  /** Turn the microphone on and publish it; only on stage. */
  enableAudio(constraints = true) { return this.#m._media.enable({ audio: constraints }); }
  /**
   * Turn on the camera and the microphone together, as the preset allows
   * (one prompt, one publication); only on stage.
   */
  enableMedia({ audio = true, video = true } = {}) {
    const p = this.permissions.media || {};
    return this.#m._media.enable({ audio: p.audio && audio, video: p.video && video });
  }
  /** Turn the microphone off. */
  disableAudio() { return this.#m._media.disable('audio'); }
}

/** A joined meeting. */
class Meeting extends Emitter {
  #base; #token; #refreshToken; #refreshed = false; #callTimeout; #ws = null; #nextId = 0; #pending = new Map(); #closed = false;
  #connected = null; #backoff = 250; #everConnected = false;
  constructor(base, token, info, log, refreshToken, callTimeout) {
    super(log);
    /** Where the SDK's warnings go (init's logger). */
    this._log = log;
    this.#base = base;
    this.#token = token;
    this.#refreshToken = refreshToken;
    this.#callTimeout = callTimeout;
    this.id = info.meeting_id;
    /** The meeting: id, title, type, max_on_stage, stage_request_ttl. */
    this.info = { id: info.meeting_id };
    this.stage = new Stage(this);
    this.self = new Self(this);
    this.participants = new Participants(log);
    /** 'new', 'connected', 'reconnecting' or 'closed'. */
    this.connectionState = 'new';
    this._media = new Media(this);
  }

  /** Connects and resolves once the meeting's state has arrived. */
  join() {
    if (this.#connected) return this.#connected;
    this.#connected = new Promise((resolve, reject) => this.#connect(resolve, reject));
    return this.#connected;
  }

  /** Leaves the meeting: the server lets this participant go at once. */
  async leave() {
    this.#closed = true;
    this._media.close();
    if (this.#ws) this.#ws.close(1000, 'bye');
    this.#setState('closed');
  }

  #setState(s) {
    if (this.connectionState === s) return;
    this.connectionState = s;
    this.emit('connectionUpdate', { state: s });
  }

  #connect(resolve, reject) {
    const u = new URL('/v1/realtime', this.#base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // A browser's WebSocket cannot set headers: the token goes as a
    // subprotocol entry, never in the URL (access logs, Referer).
    const ws = new WebSocket(u, ['cocmd.v1', `cocmd.token.${this.#token}`]);
    let welcomed = false;
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === 'welcome') {
        welcomed = true;
        this.#refreshed = false;
        this.#ws = ws;
        this.#backoff = 250;
        const reconnect = this.#everConnected;
        this.#everConnected = true;
        this.#adopt(msg.data, reconnect);
        this.#setState('connected');
        this._media.connected();
        resolve?.(this);
        resolve = reject = null;
      } else if (msg.type === 'response') {
        const p = this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id);
        if (msg.error) p.reject(new CocmdError(msg.error.code, msg.error.message));
        else p.resolve(msg.data);
      } else if (msg.type === 'event') {
        this.#event(msg.event, msg.data);
      }
    };
    ws.onclose = (ev) => {
      if (this.#ws === ws) this.#ws = null;
      for (const p of this.#pending.values()) p.reject(new CocmdError('CONNECTION_LOST', 'the connection was lost during the call'));
      this.#pending.clear();
      this._media.disconnected();
      const final = { 4001: 'REPLACED', 4003: 'REMOVED', 4004: 'MEETING_ENDED' }[ev.code];
      if (this.#closed || final) {
        this.#closed = true;
        this.#setState('closed');
        this.emit('closed', { code: final || 'CLOSED', reason: ev.reason });
        reject?.(new CocmdError(final || 'CLOSED', ev.reason || 'closed'));
        return;
      }
      if (!welcomed) {
        // Refused, or the server is away: the token check says which. A
        // token that is no longer valid (expired, removed, meeting ended)
        // is final; anything else is retried.
        init({ authToken: this.#token, baseURI: this.#base.href, logger: this._log })
          .then(() => this.#retry(resolve, reject))
          .catch(async (e) => {
            if (e.code !== 'UNAUTHENTICATED' && this.#everConnected) { this.#retry(resolve, reject); return; }
            if (e.code === 'UNAUTHENTICATED' && this.#refreshToken && !this.#refreshed) {
              // Once per outage: a fresh token that is refused too is final.
              try {
                this.#token = await this.#refreshToken();
                this.#refreshed = true;
                this.#retry(resolve, reject);
                return;
              } catch (re) { this._log.warn('cocmd: refreshing the token failed', re); }
            }
            this.#closed = true;
            this.#setState('closed');
            this.emit('closed', { code: e.code, reason: e.message });
            reject?.(e);
          });
        return;
      }
      this.#retry(resolve, reject);
    };
  }

  #retry(resolve, reject) {
    this.#setState('reconnecting');
    const delay = this.#backoff / 2 + Math.random() * this.#backoff / 2;
    this.#backoff = Math.min(this.#backoff * 2, 5000);
    setTimeout(() => { if (!this.#closed) this.#connect(resolve, reject); }, delay);
  }

  #adopt(w, reconnect) {
    const oldStatus = this.self.stageStatus;
    const old = new Map([...this.participants.joined].map(([id, p]) => [id, p.stageStatus]));
    this.info = w.meeting;
    const s = w.self;
    Object.assign(this.self, { id: s.id, userId: s.user_id, name: s.name, preset: s.preset, stageStatus: s.stage_status, permissions: s.permissions });
    const seen = new Set();
    for (const p of w.participants || []) {
      if (p.id === s.id) continue;
      seen.add(p.id);
      const known = this.participants.joined.get(p.id);
      if (known) known._update(p); else this.participants.joined.set(p.id, new Participant(p));
    }
    for (const [id, p] of this.participants.joined) {
      if (!seen.has(id)) { p.stageStatus = StageStatus.OFF_STAGE; p.connected = false; this.participants.joined.delete(id); }
    }
    const oldRequests = this.participants.requests;
    this.participants.requests = (w.requests || []).map(toRequest);
    this.participants.count = w.participant_count;
    if (!reconnect) return;
    // What changed while away, as events.
    if (oldStatus !== this.self.stageStatus) {
      this.stage.emit('stageStatusUpdate', { status: this.self.stageStatus, oldStatus, missed: true });
    }
    for (const p of this.participants.joined.values()) {
      const was = old.get(p.id) || StageStatus.OFF_STAGE;
      if (was !== p.stageStatus) this.stage.emit('peerStageStatusUpdate', { participant: p, status: p.stageStatus, oldStatus: was, missed: true });
    }
    // Hosts only, and only if the pending list changed while away.
    if (this.self.permissions.accept_stage_requests && !sameRequests(oldRequests, this.participants.requests)) {
      this.stage.emit('stageAccessRequestUpdate', { requests: this.participants.requests, missed: true });
    }
    this.participants.emit('update');
    this.emit('reconnected', { resumed: w.resumed });
  }

  #participant(p) {
    let x = this.participants.joined.get(p.id);
    if (x) x._update(p); else { x = new Participant(p); this.participants.joined.set(p.id, x); }
    return x;
  }

  /** Hands the live connection a fresh token before its own expires. */
  async #refresh() {
    try {
      const token = await this.#refreshToken();
      await this._call('auth.refresh', { token });
      this.#token = token;
    } catch (e) {
      this._log.warn('cocmd: refreshing the token failed', e);
    }
  }

  #event(name, d) {
    if (name.startsWith('media.')) { this._media.event(name, d); return; }
    switch (name) {
      case 'tokenExpiring':
        if (this.#refreshToken) this.#refresh();
        return;
      case 'stageStatusUpdate': {
        const oldStatus = this.self.stageStatus;
        this.self.stageStatus = d.new;
        this.stage.emit(name, { status: d.new, oldStatus, reason: d.reason });
        this._media.statusChanged();
        return;
      }
      case 'peerStageStatusUpdate': {
        const p = this.#participant(d.participant);
        this.stage.emit(name, { participant: p, status: d.new, oldStatus: d.old, reason: d.reason });
        this.participants.emit('update');
        return;
      }
      case 'stageAccessRequestUpdate':
        this.participants.requests = d.requests.map(toRequest);
        this.stage.emit(name, { requests: this.participants.requests });
        this.participants.emit('update');
        return;
      case 'newStageRequest':
        this.stage.emit(name, { count: d.count, request: toRequest(d.request) });
        return;
      case 'stageRequestRejected':
        this.stage.emit(name, { reason: d.reason });
        return;
      case 'stageRequestApproved':
      case 'removedFromStage':
        this.stage.emit(name, {});
        return;
      case 'participantJoined': {
        const p = this.#participant(d);
        this.emit(name, p);
        this.participants.emit('update');
        return;
      }
      case 'participantLeft': {
        // The view first: someone off stage is gone from it; someone on
        // stage (or invited) keeps its place, not connected, as a welcome
        // would show it. Then the event.
        const p = this.participants.joined.get(d.id);
        if (p && p.stageStatus !== StageStatus.OFF_STAGE) p.connected = false;
        else this.participants.joined.delete(d.id);
        this.emit(name, p || { id: d.id, userId: d.user_id });
        this.participants.emit('update');
        return;
      }
      case 'participantCount':
        this.participants.count = d.count;
        this.participants.emit('update');
        return;
      case 'permissionsUpdate':
        this.self.preset = d.preset;
        this.self.permissions = d.permissions;
        this.self.emit('permissionsUpdate', d);
        return;
      case 'meetingUpdate':
        this.info = d;
        this.emit(name, d);
        return;
    }
  }

  /** The subscriber connection's inbound-rtp statistics (RTCStats), for debugging and tests. */
  getMediaStats() { return this._media.stats(); }

  /**
   * Sends a request; resolves with its result. While the meeting is
   * reconnecting, the call waits for the connection up to the call timeout
   * (init's callTimeout, 10 s), then rejects with UNAVAILABLE, as the Go
   * SDK does.
   */
  async _call(method, params) {
    const ws = await this.#open();
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      ws.send(JSON.stringify(params === undefined ? { id, method } : { id, method, params }));
    });
  }

  /** Resolves with the open WebSocket, waiting for a reconnect in progress. */
  #open() {
    const ready = () => this.#ws && this.#ws.readyState === WebSocket.OPEN;
    if (ready()) return Promise.resolve(this.#ws);
    if (this.#closed || !this.#everConnected) {
      return Promise.reject(new CocmdError(this.#closed ? 'CLOSED' : 'CONNECTION_LOST', 'not connected'));
    }
    return new Promise((resolve, reject) => {
      const done = (ok) => {
        clearTimeout(timer);
        this.off('connectionUpdate', onState);
        if (ok) resolve(this.#ws);
        else reject(new CocmdError(this.#closed ? 'CLOSED' : 'UNAVAILABLE', this.#closed ? 'the meeting was closed' : 'not connected in time'));
      };
      const onState = () => {
        if (ready()) done(true);
        else if (this.#closed) done(false);
      };
      const timer = setTimeout(() => done(false), this.#callTimeout);
      this.on('connectionUpdate', onState);
    });
  }
}

/** The WebRTC side: subscriber and publisher connections. */
class Media {
  #m; #sub = null; #pub = null; #tracks = new Map(); #wanted = { audio: null, video: null };
  #publishing = Promise.resolve();
  constructor(m) { this.#m = m; }

  connected() {
    this.#subscribe();
    if (this.#wanted.audio || this.#wanted.video) this.#republish();
  }

  disconnected() {
    this.#closeSub();
    if (this.#pub) { this.#pub.close(); this.#pub = null; }
  }

  close() {
    this.disconnected();
    for (const k of ['audio', 'video']) this.#stopLocal(k);
  }

  statusChanged() {
    if (!this.#m.self.canPublish) {
      for (const k of ['audio', 'video']) this.#stopLocal(k);
      if (this.#pub) { this.#pub.close(); this.#pub = null; }
    }
  }

  #stopLocal(kind) {
    const key = kind === 'audio' ? 'audioTrack' : 'videoTrack';
    const t = this.#m.self[key];
    if (t) { t.stop(); this.#m.self[key] = null; this.#m.self.emit('mediaUpdate', { kind, enabled: false }); }
    this.#wanted[kind] = null;
  }

  async enable(wanted) {
    const self = this.#m.self;
    if (!self.canPublish) throw new CocmdError('INVALID_STAGE_STATUS', 'only participants on the stage publish media');
    const ask = {};
    for (const kind of ['audio', 'video']) {
      if (!wanted[kind]) continue;
      if (!self.permissions.media?.[kind]) {
        throw new CocmdError('PERMISSION_DENIED', `the preset does not allow ${kind === 'audio' ? 'a microphone' : 'a camera'}`);
      }
      if (!self[kind === 'audio' ? 'audioTrack' : 'videoTrack']) ask[kind] = wanted[kind];
    }
    if (!Object.keys(ask).length) return;
    const stream = await navigator.mediaDevices.getUserMedia(ask);
    for (const track of stream.getTracks()) {
      self[track.kind === 'audio' ? 'audioTrack' : 'videoTrack'] = track;
      this.#wanted[track.kind] = track;
      self.emit('mediaUpdate', { kind: track.kind, enabled: true, track });
    }
    await this.#republish();
  }

  async disable(kind) {
    this.#stopLocal(kind);
    await this.#republish();
  }

  // Publishing is redone as a whole, one at a time: a new publisher
  // connection with the tracks wanted now.
  #republish() {
    this.#publishing = this.#publishing.catch(() => {}).then(() => this.#publish());
    return this.#publishing;
  }

  async #publish() {
    if (this.#pub) {
      this.#pub.close();
      this.#pub = null;
      await this.#m._call('media.unpublish').catch(() => {});
    }
    const tracks = ['audio', 'video'].map((k) => this.#wanted[k]).filter(Boolean);
    if (!tracks.length || !this.#m.self.canPublish) return;
    const pc = new RTCPeerConnection();
    this.#pub = pc;
    const sources = {};
    const trs = tracks.map((t) => pc.addTransceiver(t, { direction: 'sendonly' }));
    pc.onicecandidate = (e) => {
      if (e.candidate && this.#pub === pc) this.#m._call('media.candidate', { target: 'publisher', candidate: e.candidate.toJSON() }).catch(() => {});
    };
    await pc.setLocalDescription(await pc.createOffer());
    trs.forEach((tr, i) => { sources[tr.mid] = tracks[i].kind === 'audio' ? 'microphone' : 'camera'; });
    try {
      const ans = await this.#m._call('media.publish', { sdp: pc.localDescription.sdp, sources });
      if (this.#pub !== pc) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: ans.sdp });
    } catch (e) {
      if (this.#pub === pc) { pc.close(); this.#pub = null; }
      throw e;
    }
  }

  #subscribe() {
    this.#closeSub();
    const pc = new RTCPeerConnection();
    this.#sub = pc;
    pc.onicecandidate = (e) => {
      if (e.candidate && this.#sub === pc) this.#m._call('media.candidate', { target: 'subscriber', candidate: e.candidate.toJSON() }).catch(() => {});
    };
    pc.ontrack = (e) => {
      const d = this.#tracks.get(e.transceiver.mid);
      const pid = d?.participant_id || e.streams[0]?.id;
      let p = this.#m.participants.joined.get(pid);
      if (!p && d) {
        p = new Participant({ id: pid, user_id: d.user_id, name: d.user_id, stage_status: StageStatus.ON_STAGE, connected: true });
        this.#m.participants.joined.set(pid, p);
      }
      if (!p) return;
      if (!p.stream) p.stream = new MediaStream();
      for (const t of p.stream.getTracks()) if (t.kind === e.track.kind) p.stream.removeTrack(t);
      p.stream.addTrack(e.track);
      this.#m.participants.emit('mediaUpdate', { participant: p, kind: e.track.kind, source: d?.source });
    };
    this.#m._call('media.subscribe').catch((e) => this.#m._log.warn('cocmd: subscribing', e));
  }

  #closeSub() {
    if (!this.#sub) return;
    this.#sub.close();
    this.#sub = null;
    this.#tracks.clear();
    for (const p of this.#m.participants.joined.values()) {
      if (p.stream) { p.stream = null; this.#m.participants.emit('mediaUpdate', { participant: p }); }
    }
  }

  async event(name, d) {
    if (name === 'media.stopped') {
      if (!d.sources?.length || d.reason !== 'permissions') {
        for (const k of ['audio', 'video']) this.#stopLocal(k);
        if (this.#pub) { this.#pub.close(); this.#pub = null; }
      }
      this.#m.self.emit('publishingStopped', { reason: d.reason, sources: d.sources || [] });
      return;
    }
    if (name !== 'media.offer' || !this.#sub) return;
    const pc = this.#sub;
    const now = new Map(d.tracks.map((t) => [t.mid, t]));
    // Tracks gone from the offer: take them out of their participants' streams.
    for (const [mid, t] of this.#tracks) {
      if (now.has(mid)) continue;
      const p = this.#m.participants.joined.get(t.participant_id);
      if (p?.stream) {
        for (const tr of pc.getTransceivers()) {
          if (tr.mid === mid && tr.receiver.track) p.stream.removeTrack(tr.receiver.track);
        }
        if (!p.stream.getTracks().length) p.stream = null;
        this.#m.participants.emit('mediaUpdate', { participant: p, kind: t.kind, source: t.source, removed: true });
      }
    }
    this.#tracks = now;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      if (this.#sub !== pc) return;
      await this.#m._call('media.answer', { sdp: pc.localDescription.sdp });
    } catch (e) {
      this.#m._log.warn('cocmd: answering the media offer', e);
    }
  }

  /** The subscriber connection's inbound video statistics, for tests and debugging. */
  async stats() {
    if (!this.#sub) return [];
    const out = [];
    (await this.#sub.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') out.push(s); });
    return out;
  }
}
