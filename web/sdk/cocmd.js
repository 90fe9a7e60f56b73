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
//
// Types: cocmd.d.ts. This file names them in JSDoc and `npm run typecheck`
// checks it against them (checkJs). Public objects are camelCase, the wire
// snake_case; private state is in # fields only.

/** @typedef {import('./cocmd.js').ErrorCode} ErrorCode */
/** @typedef {import('./cocmd.js').BatchResult} BatchResult */
/** @typedef {import('./cocmd.js').StageRequest} StageRequest */
/** @typedef {import('./cocmd.js').StageStatusValue} StageStatusValue */
/** @typedef {import('./cocmd.js').Permissions} Permissions */
/** @typedef {import('./cocmd.js').MeetingInfo} MeetingInfo */
/** @typedef {import('./cocmd.js').Transport} Transport */
/** @typedef {import('./cocmd.js').StageEvents} StageEvents */
/** @typedef {import('./cocmd.js').SelfEvents} SelfEvents */
/** @typedef {import('./cocmd.js').ParticipantsEvents} ParticipantsEvents */
/** @typedef {import('./cocmd.js').MeetingEvents} MeetingEvents */
/** @typedef {import('./cocmd.js').CocmdError} CocmdErrorAPI */
/** @typedef {import('./cocmd.js').Participant} ParticipantAPI */
/** @typedef {import('./cocmd.js').Participants} ParticipantsAPI */
/** @typedef {import('./cocmd.js').Stage} StageAPI */
/** @typedef {import('./cocmd.js').Self} SelfAPI */
/** @typedef {import('./cocmd.js').Meeting} MeetingAPI */
/**
 * @template E
 * @typedef {import('./cocmd.js').Emitter<E>} EmitterAPI
 */
/** @typedef {{warn: (...args: unknown[]) => void, error: (...args: unknown[]) => void}} Logger */
/** @typedef {'new' | 'connected' | 'reconnecting' | 'closed'} ConnectionState */

/**
 * A participant as the wire describes it (docs/protocol.md).
 * @typedef {{id: string, user_id: string, name: string, preset?: string, stage_status: StageStatusValue, connected?: boolean}} WireParticipant
 */
/** @typedef {{participant_id: string, user_id: string, name: string, requested_at: string}} WireRequest */
/** @typedef {{type: string, id?: number, seq?: number, event?: string, data?: any, error?: {code: ErrorCode, message: string}}} WireMessage */

/**
 * The error every rejected promise of the SDK carries.
 * @implements {CocmdErrorAPI}
 */
export class CocmdError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} [message]
   * @param {BatchResult[]} [results]
   */
  constructor(code, message, results) {
    super(message || code);
    this.name = 'CocmdError';
    /** One of the spec's codes: PERMISSION_DENIED, INVALID_STAGE_STATUS, … */
    this.code = code;
    /** For grantAccess, denyAccess and kick: the result of each user id. */
    this.results = results;
  }
}

/** The stage statuses. */
export const StageStatus = Object.freeze(/** @type {const} */ ({
  OFF_STAGE: 'OFF_STAGE',
  REQUESTED_TO_JOIN_STAGE: 'REQUESTED_TO_JOIN_STAGE',
  ACCEPTED_TO_JOIN_STAGE: 'ACCEPTED_TO_JOIN_STAGE',
  ON_STAGE: 'ON_STAGE',
}));

/** @type {Logger} */
const silent = { warn() {}, error() {} };

/**
 * emit calls target's handlers of event. It lives outside the classes so
 * that only this module can emit: the emitters' handlers are # fields.
 * @type {<E extends object, K extends keyof E>(target: Emitter<E>, event: K, payload: E[K]) => void}
 */
let emit;

/**
 * A minimal event emitter: on, off, once. A handler that throws is reported
 * to the log.
 * @template {object} Events
 * @implements {EmitterAPI<Events>}
 */
class Emitter {
  /** @type {Map<keyof Events, Set<(payload: any) => void>>} */
  #handlers = new Map();
  #log;
  /** @param {Logger} log */
  constructor(log) { this.#log = log; }
  /**
   * @template {keyof Events} E
   * @param {E} event
   * @param {(payload: Events[E]) => void} fn
   * @returns {this}
   */
  on(event, fn) {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, set = new Set());
    set.add(fn);
    return this;
  }
  /**
   * @template {keyof Events} E
   * @param {E} event
   * @param {(payload: Events[E]) => void} fn
   * @returns {this}
   */
  off(event, fn) {
    this.#handlers.get(event)?.delete(fn);
    return this;
  }
  /**
   * @template {keyof Events} E
   * @param {E} event
   * @param {(payload: Events[E]) => void} fn
   * @returns {this}
   */
  once(event, fn) {
    /** @param {Events[E]} payload */
    const w = (payload) => { this.off(event, w); fn(payload); };
    return this.on(event, w);
  }
  static {
    emit = (target, event, payload) => {
      for (const fn of [...(target.#handlers.get(event) || [])]) {
        try { fn(payload); } catch (e) { target.#log.error(`cocmd: a handler of ${String(event)} threw`, e); }
      }
    };
  }
}

/**
 * Checks the token and returns a meeting, not yet joined. The SDK logs
 * nothing of its own accord: pass a logger (console, say) to see its
 * warnings.
 * @type {typeof import('./cocmd.js').init}
 */
export const init = async function init({ authToken, baseURI, logger, refreshToken, callTimeout = 10000, iceTransportPolicy = 'all', transport = {} }) {
  if (!authToken) throw new CocmdError('UNAUTHENTICATED', 'an authToken is required');
  const base = new URL(baseURI || globalThis.location?.origin || 'http://localhost:8080');
  const t = {
    WebSocket: transport.WebSocket || globalThis.WebSocket,
    fetch: transport.fetch || globalThis.fetch.bind(globalThis),
    RTCPeerConnection: transport.RTCPeerConnection || globalThis.RTCPeerConnection,
  };
  const info = await checkToken(t.fetch, base, authToken);
  return new Meeting({ base, token: authToken, meetingId: info.meeting_id, log: logger || silent, refreshToken, callTimeout, iceTransportPolicy, transport: t });
};

/**
 * GET /v1/token: whether the token admits anyone, and why not.
 * @param {typeof fetch} fetch
 * @param {URL} base
 * @param {string} token
 * @returns {Promise<{meeting_id: string}>}
 */
async function checkToken(fetch, base, token) {
  let res;
  try {
    res = await fetch(new URL('/v1/token', base), { headers: { Authorization: `Bearer ${token}` } });
  } catch (e) {
    throw new CocmdError('UNAVAILABLE', `cannot reach the server at ${base.origin}: ${e instanceof Error ? e.message : e}`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new CocmdError(body.error?.code || 'INTERNAL', body.error?.message || `HTTP ${res.status}`);
  return body;
}

/**
 * @param {any} w the wire's permissions
 * @returns {Permissions}
 */
function toPermissions(w = {}) {
  const m = w.media || {};
  return {
    stageEnabled: !!w.stage_enabled, stageAccess: w.stage_access || 'NOT_ALLOWED',
    acceptStageRequests: !!w.accept_stage_requests, kickParticipant: !!w.kick_participant,
    media: { audio: !!m.audio, video: !!m.video, screenshare: !!m.screenshare },
    hiddenParticipant: !!w.hidden_participant,
  };
}

/**
 * @param {any} w the wire's meeting
 * @returns {MeetingInfo}
 */
function toMeetingInfo(w) {
  return { id: w.id, title: w.title, type: w.type, maxOnStage: w.max_on_stage || 0, stageRequestTtl: w.stage_request_ttl || 0 };
}

/**
 * @param {WireRequest} r
 * @returns {StageRequest}
 */
function toRequest(r) {
  return { participantId: r.participant_id, userId: r.user_id, name: r.name, requestedAt: new Date(r.requested_at) };
}

/**
 * @param {StageRequest[]} a
 * @param {StageRequest[]} b
 */
function sameRequests(a, b) {
  return a.length === b.length && a.every((r, i) => r.participantId === b[i].participantId && +r.requestedAt === +b[i].requestedAt);
}

/**
 * A participant as this client knows it.
 * @implements {ParticipantAPI}
 */
class Participant {
  /** @param {WireParticipant} p */
  constructor(p) {
    this.id = p.id;
    this.userId = p.user_id;
    this.name = p.name;
    this.preset = p.preset || '';
    /** @type {StageStatusValue} */
    this.stageStatus = p.stage_status;
    this.connected = !!p.connected;
    /**
     * The participant's media as received: a MediaStream for a <video>, or null.
     * @type {MediaStream | null}
     */
    this.stream = null;
    /**
     * The screen the participant shares, for a <video>, or null.
     * @type {MediaStream | null}
     */
    this.screenStream = null;
    /** Whether the participant speaks now (media.activeSpeaker). */
    this.speaking = false;
  }
}

/**
 * Brings p up to date with what the wire says of it.
 * @param {Participant} p
 * @param {WireParticipant} w
 */
function updateParticipant(p, w) {
  p.userId = w.user_id; p.name = w.name; p.preset = w.preset || p.preset;
  p.stageStatus = w.stage_status;
  if (w.connected !== undefined) p.connected = w.connected;
}

/**
 * The meeting's participants, kept current.
 * @extends {Emitter<ParticipantsEvents>}
 * @implements {ParticipantsAPI}
 */
class Participants extends Emitter {
  #setSize;
  /**
   * @param {Logger} log
   * @param {(trackId: string, width: number, height: number) => Promise<unknown>} setSize tells the server a track's displayed size
   */
  constructor(log, setSize) {
    super(log);
    this.#setSize = setSize;
    /** @type {Map<string, Participant>} by participant id, self excluded */
    this.joined = new Map();
    /**
     * Pending stage requests, oldest first (hosts only).
     * @type {StageRequest[]}
     */
    this.requests = [];
    /** How many participants are connected. */
    this.count = 0;
    /**
     * The active speaker: the loudest who speaks, held for a second against
     * others; the last one while nobody speaks; null before anyone spoke.
     * @type {Participant | null}
     */
    this.activeSpeaker = null;
  }
  /** Everyone known, self excluded. */
  all() { return [...this.joined.values()]; }
  /** The participants on stage, self excluded. */
  onStage() { return this.all().filter((p) => p.stageStatus === StageStatus.ON_STAGE); }
  /** The connected participants off stage (hosts see everyone; others only who is on stage or invited). */
  viewers() { return this.all().filter((p) => p.stageStatus !== StageStatus.ON_STAGE && p.connected); }
  /** @param {string} userId the participant with this user id */
  byUserId(userId) { return this.all().find((p) => p.userId === userId); }

  /**
   * Shows participant's media in video, and keeps the server told the size
   * it is displayed at: of a simulcast camera it then sends the smallest
   * layer at least that large, and no video at all while the element is
   * hidden, off screen or in a background tab. Returns a function that
   * stops watching the element.
   * @param {Participant} participant
   * @param {HTMLVideoElement} video
   * @param {'camera' | 'screenshare'} [source] which of its videos: the camera's (with its microphone), or the screen
   * @returns {() => void}
   */
  attach(participant, video, source = 'camera') {
    const stream = () => (source === 'screenshare' ? participant.screenStream : participant.stream);
    /** @type {MediaStreamTrack | null} */
    let sentTrack = null;
    let sentSize = '';
    let onScreen = true;
    const update = () => {
      const st = stream();
      if (video.srcObject !== st) video.srcObject = st;
      const track = st?.getVideoTracks()[0] || null;
      if (!track) { sentTrack = null; return; }
      const dpr = globalThis.devicePixelRatio || 1;
      const shown = onScreen && !globalThis.document?.hidden && video.isConnected && video.clientWidth > 0;
      // Rounded up to 16 pixels: a resize by a few pixels says nothing new.
      const q = (/** @type {number} */ n) => Math.ceil(n * dpr / 16) * 16;
      const size = shown ? `${q(video.clientWidth)}x${q(video.clientHeight)}` : '0x0';
      if (track === sentTrack && size === sentSize) return;
      sentTrack = track; sentSize = size;
      const [w, h] = size.split('x').map(Number);
      this.#setSize(track.id, w, h).catch(() => { sentTrack = null; });
    };
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const later = () => { clearTimeout(timer); timer = setTimeout(update, 100); };
    const resize = typeof ResizeObserver === 'function' ? new ResizeObserver(later) : null;
    resize?.observe(video);
    const seen = typeof IntersectionObserver === 'function'
      ? new IntersectionObserver((entries) => { onScreen = entries.some((e) => e.isIntersecting); later(); }) : null;
    seen?.observe(video);
    const onMedia = (/** @type {{participant: Participant}} */ e) => { if (e.participant === participant) later(); };
    this.on('mediaUpdate', onMedia);
    globalThis.document?.addEventListener('visibilitychange', later);
    update();
    return () => {
      resize?.disconnect();
      seen?.disconnect();
      this.off('mediaUpdate', onMedia);
      globalThis.document?.removeEventListener('visibilitychange', later);
      clearTimeout(timer);
    };
  }
}

/** @typedef {(method: string, params?: object) => Promise<any>} Call */

/**
 * meeting.stage: the seed's eight methods, the status and the stage events.
 * @extends {Emitter<StageEvents>}
 * @implements {StageAPI}
 */
class Stage extends Emitter {
  #call; #self;
  /**
   * @param {Logger} log
   * @param {Call} call
   * @param {Self} self
   */
  constructor(log, call, self) { super(log); this.#call = call; this.#self = self; }
  /** This participant's stage status. */
  get status() { return this.#self.stageStatus; }
  /** The pending requests, oldest first (needs accept_stage_requests). */
  async getAccessRequests() {
    const r = await this.#call('stage.getAccessRequests');
    return /** @type {WireRequest[]} */ (r.requests).map(toRequest);
  }
  /** Ask to join the stage. */
  async requestAccess() { await this.#call('stage.requestAccess'); }
  /** Withdraw the pending request. */
  async cancelRequestAccess() { await this.#call('stage.cancelRequestAccess'); }
  /** @param {string | string[]} userIds accept their requests, or invite them (needs accept_stage_requests) */
  grantAccess(userIds) { return this.#batch('stage.grantAccess', userIds); }
  /** @param {string | string[]} userIds reject their requests, or withdraw their invitations (needs accept_stage_requests) */
  denyAccess(userIds) { return this.#batch('stage.denyAccess', userIds); }
  /** Join the stage: ACCEPTED_TO_JOIN_STAGE, or stage_access ALLOWED. */
  async join() { await this.#call('stage.join'); }
  /** Leave the stage (or decline an invitation); the server stops this participant's tracks. */
  async leave() { await this.#call('stage.leave'); }
  /** @param {string | string[]} userIds take them off the stage (needs kick_participant) */
  kick(userIds) { return this.#batch('stage.kick', userIds); }
  /**
   * @param {string} method
   * @param {string | string[]} userIds
   * @returns {Promise<BatchResult[]>}
   */
  async #batch(method, userIds) {
    const ids = typeof userIds === 'string' ? [userIds] : [...userIds];
    const r = await this.#call(method, { user_ids: ids });
    /** @type {BatchResult[]} */
    const results = r.results.map((/** @type {{user_id: string, error?: {code: ErrorCode, message: string}}} */ x) =>
      ({ userId: x.user_id, error: x.error ? new CocmdError(x.error.code, x.error.message) : null }));
    const failed = results.filter((x) => x.error);
    if (failed.length) {
      throw new CocmdError(/** @type {CocmdError} */ (failed[0].error).code, failed.map((x) => `${x.userId}: ${x.error?.message}`).join('; '), results);
    }
    return results;
  }
}

/**
 * meeting.self: this participant, its permissions and its media.
 * @extends {Emitter<SelfEvents>}
 * @implements {SelfAPI}
 */
class Self extends Emitter {
  #info; #media;
  /**
   * @param {Logger} log
   * @param {() => MeetingInfo} info the meeting's settings, as now
   * @param {() => Media} media
   */
  constructor(log, info, media) {
    super(log);
    this.#info = info;
    this.#media = media;
    this.id = ''; this.userId = ''; this.name = ''; this.preset = '';
    /** Whether this participant speaks now, as the server hears it. */
    this.speaking = false;
    /** @type {StageStatusValue} */
    this.stageStatus = StageStatus.OFF_STAGE;
    /** @type {Permissions} */
    this.permissions = toPermissions();
    /**
     * The local camera and microphone tracks while enabled, else null.
     * @type {MediaStreamTrack | null}
     */
    this.videoTrack = null;
    /** @type {MediaStreamTrack | null} */
    this.audioTrack = null;
    /**
     * The screen being shared, while it is, else null.
     * @type {MediaStreamTrack | null}
     */
    this.screenShareTrack = null;
  }
  get videoEnabled() { return !!this.videoTrack; }
  get audioEnabled() { return !!this.audioTrack; }
  get screenShareEnabled() { return !!this.screenShareTrack; }
  /** Whether this participant may publish now (on stage, or no stage at all). */
  get canPublish() {
    const p = this.permissions;
    if (this.#info().type !== 'WEBINAR' || !p.stageEnabled) return !p.hiddenParticipant;
    return this.stageStatus === StageStatus.ON_STAGE;
  }
  /** @param {boolean | MediaTrackConstraints} [constraints] turn the camera on and publish it; only on stage */
  enableVideo(constraints = true) { return this.#media().enable({ video: constraints }); }
  /** Turn the camera off. */
  disableVideo() { return this.#media().disable('video'); }
  /** @param {boolean | MediaTrackConstraints} [constraints] turn the microphone on and publish it; only on stage */
  enableAudio(constraints = true) { return this.#media().enable({ audio: constraints }); }
  /**
   * Turn on the camera and the microphone together, as the preset allows
   * (one prompt, one publication); only on stage.
   * @param {{audio?: boolean | MediaTrackConstraints, video?: boolean | MediaTrackConstraints}} [kinds]
   */
  enableMedia({ audio = true, video = true } = {}) {
    const p = this.permissions.media;
    return this.#media().enable({ audio: p.audio && audio, video: p.video && video });
  }
  /** Turn the microphone off. */
  disableAudio() { return this.#media().disable('audio'); }
  /** Share a screen (the browser asks which), as the screenshare source; only on stage, if the preset allows it. */
  enableScreenShare() { return this.#media().enableScreen(); }
  /** Stop sharing the screen (also when the user stops it from the browser). */
  disableScreenShare() { return this.#media().disable('screen'); }
}

/**
 * @typedef {object} MeetingOptions
 * @property {URL} base
 * @property {string} token
 * @property {string} meetingId
 * @property {Logger} log
 * @property {(() => Promise<string>) | undefined} refreshToken
 * @property {number} callTimeout
 * @property {RTCIceTransportPolicy} iceTransportPolicy
 * @property {Required<Pick<Transport, 'WebSocket' | 'fetch'>> & Pick<Transport, 'RTCPeerConnection'>} transport
 */

/**
 * The browser's ICE servers from the server's (welcome, auth.refresh).
 * @param {{ice_servers?: {urls: string[], username?: string, credential?: string}[]} | undefined} media
 * @returns {RTCIceServer[]}
 */
function iceServersOf(media) {
  return (media?.ice_servers || []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
}

/**
 * A meeting: join() connects it.
 * @extends {Emitter<MeetingEvents>}
 * @implements {MeetingAPI}
 */
class Meeting extends Emitter {
  #o; #token; #refreshed = false; #log;
  /** @type {Media} */
  #media;
  /** @type {WebSocket | null} */
  #ws = null;
  #nextId = 0;
  /** @type {Map<number, {resolve: (data: any) => void, reject: (e: CocmdError) => void}>} */
  #pending = new Map();
  #closed = false;
  /** @type {Promise<this> | null} */
  #connected = null;
  #backoff = 250;
  #everConnected = false;
  /** @type {RTCIceServer[]} TURN servers, renewed with the token */
  #iceServers = [];

  /** @param {MeetingOptions} o */
  constructor(o) {
    super(o.log);
    this.#o = o;
    this.#token = o.token;
    this.#log = o.log;
    this.id = o.meetingId;
    /**
     * The meeting: id, title, type, maxOnStage, stageRequestTtl.
     * @type {MeetingInfo}
     */
    this.info = { id: o.meetingId };
    const call = /** @type {Call} */ ((method, params) => this.#call(method, params));
    this.self = new Self(o.log, () => this.info, () => this.#media);
    this.stage = new Stage(o.log, call, this.self);
    this.participants = new Participants(o.log, (trackId, width, height) => call('media.setTrackSize', { track_id: trackId, width, height }));
    /** @type {ConnectionState} */
    this.connectionState = 'new';
    const rtcConfig = () => ({ iceServers: this.#iceServers, iceTransportPolicy: o.iceTransportPolicy });
    this.#media = new Media({ call, self: this.self, participants: this.participants, log: o.log, RTCPeerConnection: o.transport.RTCPeerConnection, rtcConfig });
  }

  /**
   * Connects; resolves once the first snapshot of the meeting has arrived.
   * @returns {Promise<this>}
   */
  join() {
    if (!this.#connected) this.#connected = new Promise((resolve, reject) => this.#connect(resolve, reject));
    return this.#connected;
  }

  /** Leaves the meeting: the server lets this participant go at once. */
  async leave() {
    this.#closed = true;
    this.#media.close();
    if (this.#ws) this.#ws.close(1000, 'bye');
    this.#setState('closed');
  }

  /** @param {ConnectionState} s */
  #setState(s) {
    if (this.connectionState === s) return;
    this.connectionState = s;
    emit(this, 'connectionUpdate', { state: s });
  }

  /**
   * @param {((m: this) => void) | null} resolve
   * @param {((e: CocmdError) => void) | null} reject
   */
  #connect(resolve, reject) {
    const u = new URL('/v1/realtime', this.#o.base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // A browser's WebSocket cannot set headers: the token goes as a
    // subprotocol entry, never in the URL (access logs, Referer).
    const ws = new this.#o.transport.WebSocket(u, ['cocmd.v1', `cocmd.token.${this.#token}`]);
    let welcomed = false;
    ws.onmessage = (ev) => {
      /** @type {WireMessage} */
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
        if (msg.data.media) this.#iceServers = iceServersOf(msg.data.media);
        this.#setState('connected');
        this.#media.connected();
        resolve?.(this);
        resolve = reject = null;
      } else if (msg.type === 'response') {
        const p = this.#pending.get(msg.id || 0);
        if (!p) return;
        this.#pending.delete(msg.id || 0);
        if (msg.error) p.reject(new CocmdError(msg.error.code, msg.error.message));
        else p.resolve(msg.data);
      } else if (msg.type === 'event' && msg.event) {
        this.#event(msg.event, msg.data);
      }
    };
    ws.onclose = (ev) => {
      if (this.#ws === ws) this.#ws = null;
      for (const p of this.#pending.values()) p.reject(new CocmdError('CONNECTION_LOST', 'the connection was lost during the call'));
      this.#pending.clear();
      this.#media.disconnected();
      /** @type {ErrorCode | undefined} */
      const final = (/** @type {Record<number, ErrorCode>} */ ({ 4001: 'REPLACED', 4003: 'REMOVED', 4004: 'MEETING_ENDED' }))[ev.code];
      if (this.#closed || final) {
        this.#closed = true;
        this.#setState('closed');
        emit(this, 'closed', { code: final || 'CLOSED', reason: ev.reason });
        reject?.(new CocmdError(final || 'CLOSED', ev.reason || 'closed'));
        return;
      }
      if (!welcomed) {
        // Refused, or the server is away: the token check says which. A
        // token that is no longer valid (expired, removed, meeting ended)
        // is final, unless a fresh one can be had; anything else is retried.
        checkToken(this.#o.transport.fetch, this.#o.base, this.#token)
          .then(() => this.#retry(resolve, reject))
          .catch(async (/** @type {CocmdError} */ e) => {
            if (e.code !== 'UNAUTHENTICATED' && this.#everConnected) { this.#retry(resolve, reject); return; }
            if (e.code === 'UNAUTHENTICATED' && this.#o.refreshToken && !this.#refreshed) {
              // Once per outage: a fresh token that is refused too is final.
              try {
                this.#token = await this.#o.refreshToken();
                this.#refreshed = true;
                this.#retry(resolve, reject);
                return;
              } catch (re) { this.#log.warn('cocmd: refreshing the token failed', re); }
            }
            this.#closed = true;
            this.#setState('closed');
            emit(this, 'closed', { code: e.code, reason: e.message });
            reject?.(e);
          });
        return;
      }
      this.#retry(resolve, reject);
    };
  }

  /**
   * @param {((m: this) => void) | null} resolve
   * @param {((e: CocmdError) => void) | null} reject
   */
  #retry(resolve, reject) {
    this.#setState('reconnecting');
    const delay = this.#backoff / 2 + Math.random() * this.#backoff / 2;
    this.#backoff = Math.min(this.#backoff * 2, 5000);
    setTimeout(() => { if (!this.#closed) this.#connect(resolve, reject); }, delay);
  }

  /**
   * Takes the welcome's snapshot as the view; after a reconnect, tells what
   * changed while away as events (marked missed).
   * @param {any} w
   * @param {boolean} reconnect
   */
  #adopt(w, reconnect) {
    const oldStatus = this.self.stageStatus;
    const old = new Map([...this.participants.joined].map(([id, p]) => [id, p.stageStatus]));
    const oldRequests = this.participants.requests;
    this.info = toMeetingInfo(w.meeting);
    const s = w.self;
    Object.assign(this.self, { id: s.id, userId: s.user_id, name: s.name, preset: s.preset, stageStatus: s.stage_status, permissions: toPermissions(s.permissions) });
    /** @type {WireParticipant[]} */
    const parts = (w.participants || []).filter((/** @type {WireParticipant} */ p) => p.id !== s.id);
    const seen = new Set(parts.map((p) => p.id));
    /** @type {Participant[]} */
    const vanished = [];
    for (const [id, p] of this.participants.joined) {
      if (!seen.has(id)) { vanished.push(p); this.participants.joined.delete(id); }
    }
    for (const p of parts) this.#participant(p);
    this.participants.requests = (w.requests || []).map(toRequest);
    this.participants.count = w.participant_count;
    if (!reconnect) return;
    // In both SDKs: reconnected first, then what changed while away, in
    // the welcome's order, then who vanished from the view (by id), then
    // the pending list (hosts, if it changed).
    emit(this, 'reconnected', { resumed: w.resumed });
    if (oldStatus !== this.self.stageStatus) {
      emit(this.stage, 'stageStatusUpdate', { status: this.self.stageStatus, oldStatus, missed: true });
    }
    for (const w of parts) {
      const p = /** @type {Participant} */ (this.participants.joined.get(w.id));
      const was = old.get(p.id) || StageStatus.OFF_STAGE;
      if (was !== p.stageStatus) emit(this.stage, 'peerStageStatusUpdate', { participant: p, status: p.stageStatus, oldStatus: was, missed: true });
    }
    vanished.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const p of vanished) {
      const was = p.stageStatus;
      p.stageStatus = StageStatus.OFF_STAGE; p.connected = false;
      if (was !== StageStatus.OFF_STAGE) emit(this.stage, 'peerStageStatusUpdate', { participant: p, status: StageStatus.OFF_STAGE, oldStatus: was, missed: true });
    }
    if (this.self.permissions.acceptStageRequests && !sameRequests(oldRequests, this.participants.requests)) {
      emit(this.stage, 'stageAccessRequestUpdate', { requests: this.participants.requests, missed: true });
    }
    emit(this.participants, 'update', undefined);
  }

  /**
   * The known participant p describes, brought up to date, or a new one.
   * @param {WireParticipant} p
   */
  #participant(p) {
    let x = this.participants.joined.get(p.id);
    if (x) updateParticipant(x, p);
    else { x = new Participant(p); this.participants.joined.set(p.id, x); }
    return x;
  }

  /** Hands the live connection a fresh token before its own expires. */
  async #refresh() {
    if (!this.#o.refreshToken) return;
    try {
      const token = await this.#o.refreshToken();
      const r = await this.#call('auth.refresh', { token });
      this.#token = token;
      if (r?.media) {
        this.#iceServers = iceServersOf(r.media); // for the next ICE restart
        this.#media.setIceServers();
      }
    } catch (e) {
      this.#log.warn('cocmd: refreshing the token failed', e);
    }
  }

  /**
   * Applies one event to the view, then emits it: a handler always reads a
   * current view.
   * @param {string} name
   * @param {any} d
   */
  #event(name, d) {
    if (name.startsWith('media.')) { this.#media.event(name, d); return; }
    switch (name) {
      case 'tokenExpiring':
        this.#refresh();
        return;
      case 'stageStatusUpdate': {
        const oldStatus = this.self.stageStatus;
        this.self.stageStatus = d.new;
        emit(this.stage, name, { status: d.new, oldStatus, reason: d.reason });
        this.#media.statusChanged();
        return;
      }
      case 'peerStageStatusUpdate': {
        const p = this.#participant(d.participant);
        emit(this.stage, name, { participant: p, status: d.new, oldStatus: d.old, reason: d.reason });
        emit(this.participants, 'update', undefined);
        return;
      }
      case 'stageAccessRequestUpdate':
        this.participants.requests = d.requests.map(toRequest);
        emit(this.stage, name, { requests: this.participants.requests });
        emit(this.participants, 'update', undefined);
        return;
      case 'newStageRequest':
        emit(this.stage, name, { count: d.count, request: toRequest(d.request) });
        return;
      case 'stageRequestRejected':
        emit(this.stage, name, { reason: d.reason });
        return;
      case 'stageRequestApproved':
      case 'removedFromStage':
        emit(this.stage, name, {});
        return;
      case 'participantJoined': {
        const p = this.#participant(d);
        emit(this, name, p);
        emit(this.participants, 'update', undefined);
        return;
      }
      case 'participantLeft': {
        // The view first: someone off stage is gone from it; someone on
        // stage (or invited) keeps its place, not connected, as a welcome
        // would show it. Then the event.
        const p = this.participants.joined.get(d.id);
        if (p && p.stageStatus !== StageStatus.OFF_STAGE) p.connected = false;
        else this.participants.joined.delete(d.id);
        emit(this, name, p || { id: d.id, userId: d.user_id });
        emit(this.participants, 'update', undefined);
        return;
      }
      case 'participantCount':
        this.participants.count = d.count;
        emit(this.participants, 'update', undefined);
        return;
      case 'permissionsUpdate': {
        const permissions = toPermissions(d.permissions);
        this.self.preset = d.preset;
        this.self.permissions = permissions;
        emit(this.self, name, { preset: d.preset, permissions });
        return;
      }
      case 'meetingUpdate':
        this.info = toMeetingInfo(d);
        emit(this, name, this.info);
        return;
    }
  }

  /** The subscriber connection's inbound-rtp statistics (RTCStats), for debugging and tests. */
  getMediaStats() { return this.#media.stats(); }

  /**
   * Sends a request; resolves with its result. While the meeting is
   * reconnecting, the call waits for the connection up to the call timeout
   * (init's callTimeout, 10 s), then rejects with UNAVAILABLE, as the Go
   * SDK does.
   * @param {string} method
   * @param {object} [params]
   * @returns {Promise<any>}
   */
  async #call(method, params) {
    const ws = await this.#open();
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      ws.send(JSON.stringify(params === undefined ? { id, method } : { id, method, params }));
    });
  }

  /**
   * Resolves with the open WebSocket, waiting for a reconnect in progress.
   * @returns {Promise<WebSocket>}
   */
  #open() {
    const OPEN = 1;
    const ready = () => this.#ws !== null && this.#ws.readyState === OPEN;
    if (ready()) return Promise.resolve(/** @type {WebSocket} */ (this.#ws));
    if (this.#closed || !this.#everConnected) {
      return Promise.reject(new CocmdError(this.#closed ? 'CLOSED' : 'CONNECTION_LOST', 'not connected'));
    }
    return new Promise((resolve, reject) => {
      /** @param {boolean} ok */
      const done = (ok) => {
        clearTimeout(timer);
        this.off('connectionUpdate', onState);
        if (ok) resolve(/** @type {WebSocket} */ (this.#ws));
        else reject(new CocmdError(this.#closed ? 'CLOSED' : 'UNAVAILABLE', this.#closed ? 'the meeting was closed' : 'not connected in time'));
      };
      const onState = () => {
        if (ready()) done(true);
        else if (this.#closed) done(false);
      };
      const timer = setTimeout(() => done(false), this.#o.callTimeout);
      this.on('connectionUpdate', onState);
    });
  }
}

/**
 * @typedef {object} MediaDeps
 * @property {Call} call
 * @property {Self} self
 * @property {Participants} participants
 * @property {Logger} log
 * @property {typeof RTCPeerConnection | undefined} RTCPeerConnection absent: no media
 * @property {() => RTCConfiguration} rtcConfig a new connection's configuration
 */

/**
 * The simulcast layers a camera track is sent as: three (a quarter, half
 * and full size) from 960 pixels wide, two from 480, else one; the server
 * sends each viewer the one that suits it. Undefined: one encoding.
 * @param {MediaStreamTrack} track
 * @returns {RTCRtpEncodingParameters[] | undefined}
 */
function simulcastEncodings(track) {
  if (track.kind !== 'video') return undefined;
  const width = track.getSettings?.().width || 0;
  if (width >= 960) {
    return [{ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }, { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'f', maxBitrate: 1_500_000 }];
  }
  if (width >= 480) return [{ rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 150_000 }, { rid: 'h', maxBitrate: 600_000 }];
  return undefined;
}

/** How long an ICE connection may stay disconnected before it restarts (ms). */
const restartAfter = 2000;

/** @typedef {{mid: string, track_id?: string, participant_id: string, user_id: string, kind: 'audio' | 'video', source?: string}} WireTrack */

/** The WebRTC side: subscriber and publisher connections. */
class Media {
  #d;
  /** @type {RTCPeerConnection | null} */
  #sub = null;
  /** @type {RTCPeerConnection | null} */
  #pub = null;
  /** @type {Map<string, WireTrack>} by mid */
  #tracks = new Map();
  /** @type {{audio: MediaStreamTrack | null, video: MediaStreamTrack | null, screen: MediaStreamTrack | null}} */
  #wanted = { audio: null, video: null, screen: null };
  /** @type {Promise<void>} */
  #publishing = Promise.resolve();
  /** @type {Record<string, string>} the publisher's sources, by mid */
  #pubSources = {};
  /** @type {Record<string, string[]>} */
  #layersWanted = {};
  #layersChain = Promise.resolve();

  /** Sets which simulcast layers of source's track are encoded: the latest wanted.
   * @param {string} source */
  async #applyLayers(source) {
    const want = this.#layersWanted[source];
    const tr = this.#pub?.getTransceivers().find((t) => t.mid && this.#pubSources[t.mid] === source);
    if (!tr || !want) return;
    const params = tr.sender.getParameters();
    let changed = false;
    for (const e of params.encodings || []) {
      if (e.rid && e.active !== want.includes(e.rid)) {
        e.active = want.includes(e.rid);
        changed = true;
      }
    }
    if (!changed) return;
    try {
      await tr.sender.setParameters(params);
    } catch (e) {
      this.#d.log.warn('cocmd: pausing or resuming simulcast layers', e);
    }
  }
  /** @param {MediaDeps} d */
  constructor(d) { this.#d = d; }

  /** Hands both connections the latest ICE servers, for their next restart. */
  setIceServers() {
    for (const pc of [this.#pub, this.#sub]) {
      if (!pc) continue;
      try { pc.setConfiguration({ ...pc.getConfiguration(), ...this.#d.rtcConfig() }); } catch (e) { this.#d.log.warn('cocmd: updating the ICE servers', e); }
    }
  }

  /**
   * Restarts pc's ICE when it loses its path: at once when it failed, after
   * restartAfter when it is still disconnected then.
   * @param {RTCPeerConnection} pc
   * @param {() => boolean} current whether pc is still in use
   * @param {() => Promise<void>} restart
   */
  #watchIce(pc, current, restart) {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const go = () => {
      timer = undefined;
      if (!current() || !['disconnected', 'failed'].includes(pc.iceConnectionState)) return;
      restart().catch((e) => this.#d.log.warn('cocmd: restarting ICE', e));
    };
    pc.addEventListener('iceconnectionstatechange', () => {
      if (pc.iceConnectionState === 'failed') { clearTimeout(timer); go(); }
      else if (pc.iceConnectionState === 'disconnected' && !timer) timer = setTimeout(go, restartAfter);
    });
  }

  connected() {
    if (!this.#d.RTCPeerConnection) return; // no WebRTC here: the stage only
    this.#subscribe();
    if (this.#wanted.audio || this.#wanted.video) this.#republish();
  }

  disconnected() {
    this.#closeSub();
    if (this.#pub) { this.#pub.close(); this.#pub = null; }
  }

  close() {
    this.disconnected();
    this.#stopLocal('audio');
    this.#stopLocal('video');
    this.#stopLocal('screen');
  }

  statusChanged() {
    if (this.#d.self.canPublish) return;
    this.#stopLocal('audio');
    this.#stopLocal('video');
    this.#stopLocal('screen');
    if (this.#pub) { this.#pub.close(); this.#pub = null; }
  }

  /** @param {'audio' | 'video' | 'screen'} kind */
  #stopLocal(kind) {
    const self = this.#d.self;
    const t = kind === 'audio' ? self.audioTrack : kind === 'video' ? self.videoTrack : self.screenShareTrack;
    if (t) {
      t.stop();
      if (kind === 'audio') self.audioTrack = null;
      else if (kind === 'video') self.videoTrack = null;
      else self.screenShareTrack = null;
      emit(self, 'mediaUpdate', kind === 'screen' ? { kind: 'video', source: 'screenshare', enabled: false } : { kind, enabled: false });
    }
    this.#wanted[kind] = null;
  }

  async enableScreen() {
    const self = this.#d.self;
    if (!this.#d.RTCPeerConnection) throw new CocmdError('UNAVAILABLE', 'this environment has no WebRTC');
    if (!self.canPublish) throw new CocmdError('INVALID_STAGE_STATUS', 'only participants on the stage publish media');
    if (!self.permissions.media.screenshare) throw new CocmdError('PERMISSION_DENIED', 'the preset does not allow sharing a screen');
    if (self.screenShareTrack) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) throw new CocmdError('UNAVAILABLE', 'no screen was shared');
    track.contentHint = 'detail';
    // Stopped from the browser's own "Stop sharing": as disableScreenShare.
    track.addEventListener('ended', () => { if (this.#wanted.screen === track) this.disable('screen'); });
    self.screenShareTrack = track;
    this.#wanted.screen = track;
    emit(self, 'mediaUpdate', { kind: 'video', source: 'screenshare', enabled: true, track });
    await this.#republish();
  }

  /** @param {{audio?: boolean | MediaTrackConstraints, video?: boolean | MediaTrackConstraints}} wanted */
  async enable(wanted) {
    const self = this.#d.self;
    if (!this.#d.RTCPeerConnection) throw new CocmdError('UNAVAILABLE', 'this environment has no WebRTC');
    if (!self.canPublish) throw new CocmdError('INVALID_STAGE_STATUS', 'only participants on the stage publish media');
    /** @type {MediaStreamConstraints} */
    const ask = {};
    for (const kind of /** @type {const} */ (['audio', 'video'])) {
      if (!wanted[kind]) continue;
      if (!self.permissions.media[kind]) {
        throw new CocmdError('PERMISSION_DENIED', `the preset does not allow ${kind === 'audio' ? 'a microphone' : 'a camera'}`);
      }
      if (!(kind === 'audio' ? self.audioTrack : self.videoTrack)) {
        // A camera asked for without constraints: 720p, the size simulcast
        // makes three layers of.
        ask[kind] = kind === 'video' && wanted[kind] === true ? { width: { ideal: 1280 }, height: { ideal: 720 } } : wanted[kind];
      }
    }
    if (!Object.keys(ask).length) return;
    const stream = await navigator.mediaDevices.getUserMedia(ask);
    for (const track of stream.getTracks()) {
      const kind = track.kind === 'audio' ? 'audio' : 'video';
      if (kind === 'audio') self.audioTrack = track; else self.videoTrack = track;
      this.#wanted[kind] = track;
      emit(self, 'mediaUpdate', { kind, enabled: true, track });
    }
    await this.#republish();
  }

  /** @param {'audio' | 'video' | 'screen'} kind */
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
    const { call, self } = this.#d;
    if (this.#pub) {
      this.#pub.close();
      this.#pub = null;
      await call('media.unpublish').catch(() => {});
    }
    const tracks = [this.#wanted.audio, this.#wanted.video, this.#wanted.screen].filter((t) => t !== null);
    const screen = this.#wanted.screen;
    const PC = this.#d.RTCPeerConnection;
    if (!tracks.length || !self.canPublish || !PC) return;
    const pc = new PC(this.#d.rtcConfig());
    this.#pub = pc;
    /** @type {Record<string, string>} */
    const sources = {};
    this.#pubSources = sources;
    // A lost path: a new offer that restarts ICE, same tracks and sources.
    this.#watchIce(pc, () => this.#pub === pc, async () => {
      pc.setConfiguration({ ...pc.getConfiguration(), ...this.#d.rtcConfig() });
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      const ans = await call('media.publish', { sdp: pc.localDescription?.sdp, sources: this.#pubSources });
      if (this.#pub === pc) await pc.setRemoteDescription({ type: 'answer', sdp: ans.sdp });
    });
    const trs = tracks.map((t) => pc.addTransceiver(t, { direction: 'sendonly', sendEncodings: t === screen ? undefined : simulcastEncodings(t) }));
    pc.onicecandidate = (e) => {
      if (e.candidate && this.#pub === pc) call('media.candidate', { target: 'publisher', candidate: e.candidate.toJSON() }).catch(() => {});
    };
    await pc.setLocalDescription(await pc.createOffer());
    trs.forEach((tr, i) => { if (tr.mid) sources[tr.mid] = tracks[i] === screen ? 'screenshare' : tracks[i].kind === 'audio' ? 'microphone' : 'camera'; });
    try {
      const ans = await call('media.publish', { sdp: pc.localDescription?.sdp, sources });
      if (this.#pub !== pc) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: ans.sdp });
    } catch (e) {
      if (this.#pub === pc) { pc.close(); this.#pub = null; }
      throw e;
    }
  }

  #subscribe() {
    const { call, participants, log } = this.#d;
    const PC = /** @type {typeof RTCPeerConnection} */ (this.#d.RTCPeerConnection);
    this.#closeSub();
    const pc = new PC(this.#d.rtcConfig());
    this.#sub = pc;
    // A lost path: the server offers anew, restarting ICE.
    this.#watchIce(pc, () => this.#sub === pc, async () => {
      pc.setConfiguration({ ...pc.getConfiguration(), ...this.#d.rtcConfig() });
      await call('media.restartIce');
    });
    pc.onicecandidate = (e) => {
      if (e.candidate && this.#sub === pc) call('media.candidate', { target: 'subscriber', candidate: e.candidate.toJSON() }).catch(() => {});
    };
    pc.ontrack = (e) => {
      const d = this.#tracks.get(e.transceiver.mid || '');
      const pid = d?.participant_id || e.streams[0]?.id;
      let p = participants.joined.get(pid);
      if (!p && d) {
        p = new Participant({ id: pid, user_id: d.user_id, name: d.user_id, stage_status: StageStatus.ON_STAGE, connected: true });
        participants.joined.set(pid, p);
      }
      if (!p) return;
      if (d?.source === 'screenshare') {
        p.screenStream = new MediaStream([e.track]);
      } else {
        if (!p.stream) p.stream = new MediaStream();
        for (const t of p.stream.getTracks()) if (t.kind === e.track.kind) p.stream.removeTrack(t);
        p.stream.addTrack(e.track);
      }
      emit(participants, 'mediaUpdate', { participant: p, kind: e.track.kind === 'audio' ? 'audio' : 'video', source: d?.source });
    };
    call('media.subscribe').catch((e) => log.warn('cocmd: subscribing', e));
  }

  #closeSub() {
    if (!this.#sub) return;
    this.#sub.close();
    this.#sub = null;
    this.#tracks.clear();
    for (const p of this.#d.participants.joined.values()) {
      if (p.stream || p.screenStream) { p.stream = null; p.screenStream = null; emit(this.#d.participants, 'mediaUpdate', { participant: p }); }
    }
  }

  /**
   * @param {string} name
   * @param {any} d
   */
  async event(name, d) {
    const { call, self, participants, log } = this.#d;
    if (name === 'media.trackEnded') {
      // Ended: out of its participant's stream now, before the offer
      // without it comes.
      for (const [mid, t] of this.#tracks) {
        if (t.track_id !== d.track_id) continue;
        this.#tracks.delete(mid);
        const p = participants.joined.get(t.participant_id);
        if (!p) return;
        if (t.source === 'screenshare') p.screenStream = null;
        else if (p.stream) {
          for (const tr of this.#sub?.getTransceivers() || []) {
            if (tr.mid === mid && tr.receiver.track) p.stream.removeTrack(tr.receiver.track);
          }
          if (!p.stream.getTracks().length) p.stream = null;
        }
        emit(participants, 'mediaUpdate', { participant: p, kind: t.kind, source: t.source, removed: true });
      }
      return;
    }
    if (name === 'media.layers') {
      // Dynacast: encode only the layers someone receives. Changes are
      // applied one at a time, each the latest wanted for its source: a
      // setParameters started before the last one settled would be
      // refused, and the encoder left as it was.
      this.#layersWanted[d.source] = d.active || [];
      this.#layersChain = this.#layersChain.then(() => this.#applyLayers(d.source));
      return;
    }
    if (name === 'media.activeSpeaker') {
      /** @type {string[]} */
      const ids = d.speaking || [];
      for (const p of participants.joined.values()) p.speaking = ids.includes(p.id);
      self.speaking = ids.includes(self.id);
      participants.activeSpeaker = participants.joined.get(d.participant_id) || null;
      emit(participants, 'activeSpeaker', {
        participant: participants.activeSpeaker,
        self: d.participant_id !== '' && d.participant_id === self.id,
        speaking: ids.map((id) => participants.joined.get(id)).filter((p) => p !== undefined),
      });
      return;
    }
    if (name === 'media.stopped') {
      if (!d.sources?.length || d.reason !== 'permissions') {
        this.#stopLocal('audio');
        this.#stopLocal('video');
        this.#stopLocal('screen');
        if (this.#pub) { this.#pub.close(); this.#pub = null; }
      } else {
        const kinds = /** @type {Record<string, 'audio' | 'video' | 'screen'>} */ ({ microphone: 'audio', camera: 'video', screenshare: 'screen' });
        for (const src of d.sources) if (kinds[src]) this.#stopLocal(kinds[src]);
      }
      emit(self, 'publishingStopped', { reason: d.reason, sources: d.sources || [] });
      return;
    }
    if (name !== 'media.offer' || !this.#sub) return;
    const pc = this.#sub;
    /** @type {Map<string, WireTrack>} */
    const now = new Map(d.tracks.map((/** @type {WireTrack} */ t) => [t.mid, t]));
    // Tracks gone from the offer: take them out of their participants' streams.
    for (const [mid, t] of this.#tracks) {
      if (now.has(mid)) continue;
      const p = participants.joined.get(t.participant_id);
      if (p && t.source === 'screenshare') {
        p.screenStream = null;
        emit(participants, 'mediaUpdate', { participant: p, kind: t.kind, source: t.source, removed: true });
      } else if (p?.stream) {
        for (const tr of pc.getTransceivers()) {
          if (tr.mid === mid && tr.receiver.track) p.stream.removeTrack(tr.receiver.track);
        }
        if (!p.stream.getTracks().length) p.stream = null;
        emit(participants, 'mediaUpdate', { participant: p, kind: t.kind, source: t.source, removed: true });
      }
    }
    this.#tracks = now;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      if (this.#sub !== pc) return;
      await call('media.answer', { sdp: pc.localDescription?.sdp });
    } catch (e) {
      log.warn('cocmd: answering the media offer', e);
    }
  }

  /**
   * The subscriber connection's inbound statistics, for tests and debugging.
   * @returns {Promise<RTCStats[]>}
   */
  async stats() {
    if (!this.#sub) return [];
    /** @type {RTCStats[]} */
    const out = [];
    (await this.#sub.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') out.push(s); });
    return out;
  }
}
