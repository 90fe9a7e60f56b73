// The demo webinar app: a landing page that makes demo webinars (in
// development mode), and the meeting page for a participant token, built on
// the browser SDK alone.
import { init, StageStatus } from '/sdk/cocmd.js';

const $ = (sel) => document.querySelector(sel);
const main = $('#main');

/** h('button.btn', {onclick}, 'text', child…): a small element builder. */
function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/**
 * Replaces container's children, keeping keyboard focus: if a control in
 * it had focus, the control with the same data-key gets it back; if that
 * one is gone (the Grant button of a request just granted), the first
 * control left in the container, or the container itself. So a grant, a
 * toggle or someone else's change never drops focus to the page.
 */
function replaceKeepingFocus(container, children) {
  const active = document.activeElement;
  const had = active && active !== container && container.contains(active) ? active.dataset.key || '' : null;
  container.replaceChildren(...children);
  if (had === null || container.contains(document.activeElement)) return;
  const same = had && [...container.querySelectorAll('[data-key]')].find((el) => el.dataset.key === had && !el.disabled);
  (same || container.querySelector('button:not([disabled]), a[href]') || container).focus();
}

function toast(text, kind = '') {
  const t = h(`div.toast${kind ? '.' + kind : ''}`, { role: kind ? 'alert' : 'status' }, text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), 6000);
}

function explain(e) {
  switch (e?.code) {
    case 'UNAUTHENTICATED': return 'This link is invalid or has expired. Ask the host for a new one.';
    case 'PERMISSION_DENIED': return 'You are not allowed to do that.';
    case 'STAGE_FULL': return 'The stage is full.';
    case 'RATE_LIMITED': return 'Too many actions at once; try again in a moment.';
    default: return e?.message || String(e);
  }
}

// ---- Landing ----------------------------------------------------------

async function landing() {
  document.title = 'cocmd — webinars';
  const demo = await fetch('/v1/demo').then((r) => r.json()).catch(() => ({ enabled: false }));
  const out = h('div');
  const start = h('button.btn', { type: 'button', onclick: async () => {
    start.disabled = true;
    try {
      const res = await fetch('/v1/demo/webinars', { method: 'POST' });
      const w = await res.json();
      if (!res.ok) throw new Error(w.error?.message || res.statusText);
      out.replaceChildren(
        h('p', {}, 'Open the host link in one tab and viewer links in others (or other browsers).'),
        h('ul.links', { 'aria-label': 'Join links' },
          [w.host, ...w.viewers].map((p) => h('li', {},
            h('span.who', {}, p.name),
            h('span.role', {}, p.preset === 'webinar_host' ? 'Host' : 'Viewer'),
            h('a.btn.btn-small', { href: p.link, target: '_blank', rel: 'noopener', dataset: { user: p.user_id } }, 'Open'),
            h('button.btn.btn-ghost.btn-small', { type: 'button', onclick: () => navigator.clipboard?.writeText(p.link).then(() => toast('Link copied')) }, 'Copy link'),
          ))));
    } catch (e) {
      out.replaceChildren(h('p', { role: 'alert' }, `Could not create the webinar: ${e.message}`));
    } finally {
      start.disabled = false;
    }
  } }, 'Start a demo webinar');
  const tokenInput = h('input', { id: 'token', type: 'text', autocomplete: 'off', placeholder: 'v1.…', 'aria-label': 'Participant token' });
  main.replaceChildren(h('div.landing', {},
    h('section.card', {},
      h('h2', {}, 'Run a webinar'),
      h('p', {}, 'A few people on stage, everyone else watching. Viewers ask to join the stage; the host grants, denies, invites and removes.'),
      demo.enabled ? [start, out] : h('p.muted', {}, 'Demo webinars are made in development mode only (cocmd serve -dev). Your application creates meetings and participant tokens through the REST API.')),
    h('section.card', {},
      h('h2', {}, 'Join with a token'),
      h('form', { onsubmit: (e) => { e.preventDefault(); if (tokenInput.value.trim()) location.href = `/join#token=${encodeURIComponent(tokenInput.value.trim())}`; } },
        h('label', { for: 'token', class: 'muted' }, 'Participant token'),
        h('div.field', {}, tokenInput, h('button.btn', { type: 'submit' }, 'Join'))))));
}

// ---- The meeting ------------------------------------------------------

async function room(token) {
  main.replaceChildren(h('p.muted', { role: 'status' }, 'Joining…'));
  let meeting;
  try {
    meeting = await init({ authToken: token, logger: console });
    await meeting.join();
  } catch (e) {
    main.replaceChildren(h('section.card.error-card', { role: 'alert' },
      h('h2', {}, 'Cannot join this meeting'),
      h('p', {}, explain(e)),
      h('p.muted', {}, `(${e.code || 'ERROR'}: ${e.message})`),
      h('a.btn', { href: '/' }, 'Back to the start')));
    document.title = 'cocmd — cannot join';
    return;
  }
  window.cocmd = { meeting }; // for tests and the console
  new Room(meeting).start();
}

class Room {
  constructor(m) {
    this.m = m;
    this.tiles = new Map(); // participant id (or 'self') -> tile
    this.soundOn = false;
  }

  get isHost() { const p = this.m.self.permissions; return p.acceptStageRequests || p.kickParticipant; }

  start() {
    const m = this.m;
    document.title = `${m.info.title || 'Meeting'} — cocmd`;
    $('#meeting-title').textContent = m.info.title || '';
    this.stageGrid = h('div.grid', { id: 'stage', role: 'group', 'aria-label': 'People on stage', tabindex: '-1' });
    this.counts = h('span.counts', { 'aria-live': 'polite' });
    this.controls = h('div.controls', { id: 'controls', role: 'group', 'aria-label': 'Your stage controls', tabindex: '-1' });
    // Speaker view (the active speaker and screens large) or grid view
    // (every tile the same size).
    this.view = 'speaker';
    this.viewToggle = h('button.btn.btn-small.toggle', { type: 'button', dataset: { key: 'view' }, 'aria-pressed': 'false',
      onclick: () => { this.view = this.view === 'speaker' ? 'grid' : 'speaker'; this.render(); } }, 'Grid view');
    const stageCol = h('section', { 'aria-labelledby': 'stage-title' },
      h('div.stage-head', {}, h('h2', { id: 'stage-title' }, 'Stage'), this.counts, this.viewToggle),
      this.stageGrid, this.controls);
    const layout = h('div.room', {}, stageCol);
    if (this.isHost) {
      this.requests = h('ul.list', { id: 'requests', 'aria-labelledby': 'req-title', tabindex: '-1' });
      this.viewers = h('ul.list', { id: 'viewers', 'aria-labelledby': 'viewers-title', tabindex: '-1' });
      this.grantAll = h('button.btn.btn-small', { type: 'button', onclick: () => this.act(() => m.stage.grantAccess(m.participants.requests.map((r) => r.userId))) }, 'Grant all');
      layout.append(h('aside.side', { 'aria-label': 'Host controls' },
        h('section.panel', { 'aria-labelledby': 'req-title' }, h('h2', { id: 'req-title' }, h('span', { id: 'req-count' }, 'Requests'), this.grantAll), this.requests),
        h('section.panel', { 'aria-labelledby': 'viewers-title' }, h('h2', { id: 'viewers-title' }, 'Viewers'), this.viewers)));
    } else {
      layout.classList.add('no-side');
    }
    main.replaceChildren(layout);

    const sound = $('#sound');
    sound.hidden = false;
    sound.onclick = () => {
      this.soundOn = !this.soundOn;
      sound.textContent = this.soundOn ? 'Mute sound' : 'Turn on sound';
      for (const v of this.stageGrid.querySelectorAll('video.remote')) { v.muted = !this.soundOn; v.play().catch(() => {}); }
    };

    const render = () => this.render();
    m.participants.on('update', render).on('mediaUpdate', render).on('activeSpeaker', render);
    m.stage.on('stageStatusUpdate', ({ status, oldStatus }) => {
      if (status === StageStatus.ON_STAGE && oldStatus !== StageStatus.ON_STAGE) this.startMedia();
      render();
    });
    m.stage.on('peerStageStatusUpdate', render).on('stageAccessRequestUpdate', render);
    m.stage.on('stageRequestApproved', () => toast('You are invited to the stage. Join when you are ready.'));
    m.stage.on('stageRequestRejected', ({ reason }) => {
      toast(reason === 'expire' ? 'Your request to join the stage expired.' : 'Your request to join the stage was declined.', 'warn');
      this.notice = reason === 'expire' ? 'Your request expired.' : 'Your request was declined.';
      render();
    });
    m.stage.on('removedFromStage', () => {
      toast('A host removed you from the stage.', 'danger');
      this.notice = 'You were removed from the stage.';
      render();
    });
    m.stage.on('newStageRequest', ({ request }) => toast(`${request.name} asks to join the stage`));
    m.self.on('mediaUpdate', render).on('publishingStopped', render);
    m.on('participantJoined', render).on('participantLeft', render);
    m.on('connectionUpdate', ({ state }) => {
      const c = $('#conn');
      c.textContent = { connected: 'Connected', reconnecting: 'Reconnecting…', closed: 'Disconnected' }[state] || state;
      c.classList.toggle('bad', state !== 'connected');
      render();
    });
    m.on('closed', ({ code }) => {
      main.replaceChildren(h('section.card.error-card', { role: 'alert' }, h('h2', {}, 'You left the meeting'),
        h('p', {}, { REMOVED: 'You were removed from the meeting.', MEETING_ENDED: 'The meeting has ended.', REPLACED: 'You joined from another tab or device.', UNAUTHENTICATED: 'Your link is no longer valid. Ask the host for a new one.' }[code] || 'The connection was closed.')));
    });
    $('#conn').textContent = 'Connected';
    if (m.self.stageStatus === StageStatus.ON_STAGE) this.startMedia();
    render();
  }

  async startMedia() {
    const s = this.m.self;
    try {
      await s.enableMedia();
    } catch (e) {
      toast(`Camera or microphone: ${explain(e)}`, 'warn');
    }
    this.render();
  }

  async act(fn) {
    try { await fn(); } catch (e) { toast(explain(e), 'danger'); }
    this.render();
  }

  tile(key, name, stream, { self = false, userId, kick, speaking = false, active = false, participant = null, source = 'camera', muted = false } = {}) {
    let t = this.tiles.get(key);
    if (!t) {
      const video = h('video', { autoplay: true, playsinline: true, class: self ? 'local' : 'remote' });
      video.muted = self || !this.soundOn;
      const avatar = h('div.avatar', { 'aria-hidden': 'true' });
      const label = h('div.label');
      const actions = h('div.tile-actions');
      t = { el: h('article.tile', { dataset: { user: userId || '' }, 'aria-label': name }, video, avatar, label, actions), video, avatar, label, actions };
      if (self) t.el.classList.add('self');
      // A remote tile: the SDK keeps its video's stream, and tells the
      // server the size it is shown at (the layer it sends).
      if (participant) t.detach = this.m.participants.attach(participant, video, source);
      this.tiles.set(key, t);
    }
    if (t.video.srcObject !== stream) t.video.srcObject = stream;
    if (stream && t.video.paused) t.video.play().catch(() => {});
    const hasVideo = !!stream?.getVideoTracks().length;
    t.video.hidden = !hasVideo;
    t.avatar.hidden = hasVideo;
    t.avatar.textContent = (name || '?').slice(0, 1).toUpperCase();
    t.label.textContent = (self ? `${name} (you)` : name) + (muted ? ' · muted' : '');
    // Who speaks: a green frame; the active speaker large (speaker view).
    t.el.classList.toggle('speaking', speaking);
    t.el.classList.toggle('active-speaker', active);
    t.el.dataset.speaking = String(speaking);
    replaceKeepingFocus(t.actions, kick ? [h('button.btn.btn-danger.btn-small', { type: 'button', 'aria-label': `Kick ${name} off the stage`, dataset: { key: `kick:${userId}` }, onclick: kick }, 'Kick')] : []);
    return t.el;
  }

  render() {
    const m = this.m, s = m.self;
    // The stage.
    const onStage = m.participants.onStage();
    const els = [];
    const keep = new Set();
    if (s.stageStatus === StageStatus.ON_STAGE) {
      keep.add('self');
      const local = s.videoTrack ? (this.localStream ||= new MediaStream()) : null;
      if (local) { for (const t of local.getTracks()) if (t !== s.videoTrack) local.removeTrack(t); if (!local.getTracks().length) local.addTrack(s.videoTrack); }
      else this.localStream = null;
      els.push(this.tile('self', s.name, local, { self: true, userId: s.userId, speaking: s.speaking, muted: !s.audioEnabled }));
    }
    // Screen shares first, large: a screen is what everyone should read.
    if (s.screenShareTrack) {
      keep.add('self:screen');
      const local = (this.localScreen ||= new MediaStream());
      if (!local.getTracks().includes(s.screenShareTrack)) { for (const t of local.getTracks()) local.removeTrack(t); local.addTrack(s.screenShareTrack); }
      const t = this.tile('self:screen', `${s.name}'s screen`, local, { self: true, userId: `${s.userId}:screen` });
      t.classList.add('screen');
      els.unshift(t);
    } else this.localScreen = null;
    for (const p of onStage) {
      if (!p.screenStream) continue;
      keep.add(`${p.id}:screen`);
      const t = this.tile(`${p.id}:screen`, `${p.name}'s screen`, p.screenStream, { userId: `${p.userId}:screen`, participant: p, source: 'screenshare' });
      t.classList.add('screen');
      els.unshift(t);
    }
    const active = m.participants.activeSpeaker;
    for (const p of onStage) {
      keep.add(p.id);
      const kick = s.permissions.kickParticipant ? () => this.act(() => m.stage.kick([p.userId])) : null;
      // No audio track received: the participant's microphone is off.
      const muted = !!p.stream && !p.stream.getAudioTracks().length;
      els.push(this.tile(p.id, p.name, p.stream, { userId: p.userId, kick, speaking: p.speaking, active: this.view === 'speaker' && p === active && onStage.length > 1, participant: p, muted }));
    }
    for (const [k, t] of this.tiles) if (!keep.has(k)) { t.detach?.(); this.tiles.delete(k); }
    replaceKeepingFocus(this.stageGrid, els.length ? els : [h('div.empty', {}, 'Nobody is on stage yet.')]);
    this.stageGrid.classList.toggle('grid-view', this.view === 'grid');
    this.viewToggle.textContent = this.view === 'grid' ? 'Speaker view' : 'Grid view';
    this.viewToggle.setAttribute('aria-pressed', String(this.view === 'grid'));
    const n = onStage.length + (s.stageStatus === StageStatus.ON_STAGE ? 1 : 0);
    this.counts.textContent = `${n} on stage · ${m.participants.count} in the meeting`;

    // The host's panels.
    if (this.isHost) {
      const reqs = m.participants.requests;
      $('#req-count').textContent = `Requests (${reqs.length})`;
      this.grantAll.disabled = !reqs.length;
      replaceKeepingFocus(this.requests, reqs.length ? reqs.map((r) => h('li', { dataset: { user: r.userId } },
        h('span.name', {}, r.name),
        h('span.meta', {}, r.requestedAt.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })),
        h('button.btn.btn-ok.btn-small', { type: 'button', 'aria-label': `Grant ${r.name}`, dataset: { key: `grant:${r.userId}` }, onclick: () => this.act(() => m.stage.grantAccess([r.userId])) }, 'Grant'),
        h('button.btn.btn-ghost.btn-small', { type: 'button', 'aria-label': `Deny ${r.name}`, dataset: { key: `deny:${r.userId}` }, onclick: () => this.act(() => m.stage.denyAccess([r.userId])) }, 'Deny'),
      )) : [h('li.muted', {}, 'No pending requests.')]);
      const viewers = m.participants.viewers().filter((p) => p.stageStatus !== StageStatus.REQUESTED_TO_JOIN_STAGE);
      replaceKeepingFocus(this.viewers, viewers.length ? viewers.map((p) => h('li', { dataset: { user: p.userId } },
        h('span.name', {}, p.name),
        p.stageStatus === StageStatus.ACCEPTED_TO_JOIN_STAGE
          ? h('span.badge', {}, 'Invited')
          : h('button.btn.btn-ghost.btn-small', { type: 'button', 'aria-label': `Invite ${p.name} to the stage`, dataset: { key: `invite:${p.userId}` }, onclick: () => this.act(() => m.stage.grantAccess([p.userId])) }, 'Invite'),
      )) : [h('li.muted', {}, 'No viewers yet.')]);
    }

    // This participant's controls.
    const perms = s.permissions;
    const c = [];
    const st = s.stageStatus;
    const reconnecting = m.connectionState !== 'connected';
    if (!perms.stageEnabled || perms.stageAccess === 'NOT_ALLOWED') {
      c.push(h('span.status', {}, 'You are watching.'));
    } else if (st === StageStatus.ON_STAGE) {
      c.push(h('span.badge.live', {}, 'LIVE'), h('span.status', {}, 'You are on stage.'));
      if (perms.media.video) c.push(h('button.btn.toggle', { type: 'button', dataset: { key: 'camera' }, 'aria-pressed': String(s.videoEnabled), onclick: () => this.act(() => s.videoEnabled ? s.disableVideo() : s.enableVideo()) }, s.videoEnabled ? 'Camera on' : 'Camera off'));
      if (perms.media.audio) c.push(h('button.btn.toggle', { type: 'button', dataset: { key: 'mic' }, 'aria-pressed': String(s.audioEnabled), onclick: () => this.act(() => s.audioEnabled ? s.disableAudio() : s.enableAudio()) }, s.audioEnabled ? 'Mic on' : 'Mic off'));
      if (perms.media.screenshare && navigator.mediaDevices?.getDisplayMedia) c.push(h('button.btn.toggle', { type: 'button', dataset: { key: 'screen' }, 'aria-pressed': String(s.screenShareEnabled), onclick: () => this.act(() => s.screenShareEnabled ? s.disableScreenShare() : s.enableScreenShare()) }, s.screenShareEnabled ? 'Stop sharing' : 'Share screen'));
      c.push(h('button.btn.btn-danger', { type: 'button', dataset: { key: 'leave' }, onclick: () => this.act(() => m.stage.leave()) }, 'Leave the stage'));
    } else if (st === StageStatus.ACCEPTED_TO_JOIN_STAGE) {
      c.push(h('span.status', {}, 'You are invited to the stage.'),
        h('button.btn', { type: 'button', dataset: { key: 'join' }, onclick: () => this.act(() => m.stage.join()) }, 'Join the stage'),
        h('button.btn.btn-ghost', { type: 'button', dataset: { key: 'decline' }, onclick: () => this.act(() => m.stage.leave()) }, 'Decline'));
    } else if (st === StageStatus.REQUESTED_TO_JOIN_STAGE) {
      c.push(h('span.status', {}, 'Waiting for a host…'),
        h('button.btn.btn-ghost', { type: 'button', dataset: { key: 'cancel' }, onclick: () => this.act(() => m.stage.cancelRequestAccess()) }, 'Cancel request'));
    } else if (perms.stageAccess === 'ALLOWED') {
      if (this.notice) c.push(h('span.status', { role: 'status' }, this.notice));
      c.push(h('button.btn', { type: 'button', dataset: { key: 'join' }, onclick: () => { this.notice = null; this.act(() => m.stage.join()); } }, 'Join the stage'));
    } else {
      if (this.notice) c.push(h('span.status', { role: 'status', id: 'notice' }, this.notice));
      c.push(h('button.btn', { type: 'button', dataset: { key: 'request' }, onclick: () => { this.notice = null; this.act(() => m.stage.requestAccess()); } }, 'Request to join the stage'));
    }
    for (const b of c) if (b.tagName === 'BUTTON') b.disabled = reconnecting;
    replaceKeepingFocus(this.controls, c);
  }
}

// ---- Routing ----------------------------------------------------------

const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
if (location.pathname === '/join') {
  const token = params.get('token');
  if (token) room(token);
  else main.replaceChildren(h('section.card.error-card', { role: 'alert' }, h('h2', {}, 'No token'),
    h('p', {}, 'This page needs a participant token: open the link your host gave you.'), h('a.btn', { href: '/' }, 'Back to the start')));
} else {
  landing();
}
