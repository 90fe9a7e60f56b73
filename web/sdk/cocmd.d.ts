// Type declarations of cocmd's browser SDK (cocmd.js). The implementation
// is checked against them: cocmd.js names these types in JSDoc (@implements,
// @type) and `npm run typecheck` compiles it with checkJs.
//
// Public objects are camelCase; the wire (docs/protocol.md) is snake_case.

/** The spec's error codes, and the SDK's own for the connection. */
export type ErrorCode =
  | 'STAGE_DISABLED' | 'PERMISSION_DENIED' | 'INVALID_STAGE_STATUS' | 'NO_REQUEST_TO_CANCEL'
  | 'NOT_FOUND' | 'STAGE_FULL' | 'BAD_REQUEST' | 'UNAUTHENTICATED' | 'RATE_LIMITED' | 'UNAVAILABLE' | 'INTERNAL'
  | 'CONNECTION_LOST' | 'REPLACED' | 'REMOVED' | 'MEETING_ENDED' | 'CLOSED';

/** The error every rejected promise of the SDK carries. */
export class CocmdError extends Error {
  constructor(code: ErrorCode, message?: string, results?: BatchResult[]);
  readonly code: ErrorCode;
  /** grantAccess, denyAccess and kick: the result of each user id. */
  readonly results?: BatchResult[];
}

export type StageStatusValue = 'OFF_STAGE' | 'REQUESTED_TO_JOIN_STAGE' | 'ACCEPTED_TO_JOIN_STAGE' | 'ON_STAGE';
export declare const StageStatus: { readonly [K in StageStatusValue]: K };

export interface InitOptions {
  /** A participant token from your back end (POST /v1/meetings/{id}/participants). */
  authToken: string;
  /** The server's address; default: the page's origin. */
  baseURI?: string;
  /** Where the SDK's warnings go (console, say); by default it logs nothing. */
  logger?: { warn(...args: unknown[]): void; error(...args: unknown[]): void };
  /**
   * Returns a fresh token of the same participant, from your back end. The SDK calls it
   * shortly before the token expires (the server says when) and when a reconnect is refused
   * for an expired token; without it, the meeting closes (UNAUTHENTICATED) when the token expires.
   */
  refreshToken?: () => Promise<string>;
  /**
   * How long (ms) a call made while the meeting is reconnecting waits for the connection before it
   * rejects with UNAVAILABLE; default 10000, as in the Go SDK.
   */
  callTimeout?: number;
  /**
   * Which paths media may take: 'relay' goes through the TURN servers the server names only
   * (hiding the client's addresses, or testing the relay); default 'all', where the browser
   * takes the best that works: UDP, then TCP, then TURN. A path lost mid-meeting restarts ICE
   * by itself.
   */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * What the SDK talks through; by default the page's own. Tests inject fakes, and a program
   * without WebRTC (Node, say) gets the stage without media.
   */
  transport?: Transport;
}

export interface Transport {
  WebSocket?: new (url: string | URL, protocols?: string | string[]) => WebSocket;
  fetch?: typeof fetch;
  /** Absent: no media (enableVideo and the others reject with UNAVAILABLE; no one's stream arrives). */
  RTCPeerConnection?: typeof RTCPeerConnection;
}

/** Checks the token and returns a meeting; call join() on it. */
export function init(options: InitOptions): Promise<Meeting>;

export interface BatchResult { userId: string; error: CocmdError | null }

export interface StageRequest { participantId: string; userId: string; name: string; requestedAt: Date }

export interface Permissions {
  stageEnabled: boolean;
  stageAccess: 'ALLOWED' | 'CAN_REQUEST' | 'NOT_ALLOWED';
  acceptStageRequests: boolean;
  kickParticipant: boolean;
  media: { audio: boolean; video: boolean; screenshare: boolean };
  hiddenParticipant: boolean;
}

export interface Emitter<Events> {
  on<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): this;
  off<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): this;
  once<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): this;
}

export interface Participant {
  readonly id: string;
  readonly userId: string;
  readonly name: string;
  readonly preset: string;
  readonly stageStatus: StageStatusValue;
  readonly connected: boolean;
  /** The participant's media as received, for a <video>; null when none. */
  readonly stream: MediaStream | null;
  /** The screen the participant shares, for a <video>; null when none. */
  readonly screenStream: MediaStream | null;
  /** Whether the participant speaks now (from the audio levels its browser sends). */
  readonly speaking: boolean;
}

export interface StageEvents {
  stageStatusUpdate: { status: StageStatusValue; oldStatus: StageStatusValue; reason?: string; missed?: boolean };
  stageRequestApproved: Record<string, never>;
  stageRequestRejected: { reason: 'deny' | 'expire' | string };
  removedFromStage: Record<string, never>;
  newStageRequest: { count: number; request: StageRequest };
  stageAccessRequestUpdate: { requests: StageRequest[]; missed?: boolean };
  peerStageStatusUpdate: { participant: Participant; status: StageStatusValue; oldStatus: StageStatusValue; reason?: string; missed?: boolean };
}

/** meeting.stage: the seed's eight methods. */
export interface Stage extends Emitter<StageEvents> {
  readonly status: StageStatusValue;
  getAccessRequests(): Promise<StageRequest[]>;
  requestAccess(): Promise<void>;
  cancelRequestAccess(): Promise<void>;
  grantAccess(userIds: string | string[]): Promise<BatchResult[]>;
  denyAccess(userIds: string | string[]): Promise<BatchResult[]>;
  join(): Promise<void>;
  leave(): Promise<void>;
  kick(userIds: string | string[]): Promise<BatchResult[]>;
}

export interface ParticipantsEvents {
  update: undefined;
  mediaUpdate: { participant: Participant; kind?: 'audio' | 'video'; source?: string; removed?: boolean };
  /**
   * Who speaks changed (at most four times a second): the active speaker (null when it is
   * this participant — then self is true — or before anyone spoke) and everyone else who speaks.
   */
  activeSpeaker: { participant: Participant | null; self: boolean; speaking: Participant[] };
}

export interface Participants extends Emitter<ParticipantsEvents> {
  readonly joined: ReadonlyMap<string, Participant>;
  /** Pending stage requests, oldest first (hosts). */
  readonly requests: StageRequest[];
  readonly count: number;
  /** The active speaker among the others; null when it is this participant, or before anyone spoke. */
  readonly activeSpeaker: Participant | null;
  all(): Participant[];
  onStage(): Participant[];
  viewers(): Participant[];
  byUserId(userId: string): Participant | undefined;
  /**
   * Shows a participant's media in a <video> (srcObject, kept up to date) and keeps the server
   * told the size it is displayed at: of a simulcast camera the server sends the smallest layer
   * at least that large, and no video while the element is hidden, off screen or in a background
   * tab. Returns a function that stops watching the element.
   */
  attach(participant: Participant, video: HTMLVideoElement, source?: 'camera' | 'screenshare'): () => void;
}

export interface SelfEvents {
  mediaUpdate: { kind: 'audio' | 'video'; enabled: boolean; track?: MediaStreamTrack; source?: 'screenshare' };
  publishingStopped: { reason: 'stage' | 'permissions' | 'failed' | string; sources: string[] };
  permissionsUpdate: { preset: string; permissions: Permissions };
}

export interface Self extends Emitter<SelfEvents> {
  readonly id: string;
  readonly userId: string;
  readonly name: string;
  readonly preset: string;
  readonly stageStatus: StageStatusValue;
  readonly permissions: Permissions;
  readonly videoTrack: MediaStreamTrack | null;
  readonly audioTrack: MediaStreamTrack | null;
  /** The screen being shared, while it is. */
  readonly screenShareTrack: MediaStreamTrack | null;
  readonly screenShareEnabled: boolean;
  readonly videoEnabled: boolean;
  readonly audioEnabled: boolean;
  readonly canPublish: boolean;
  /** Whether this participant speaks now, as the server hears it. */
  readonly speaking: boolean;
  enableVideo(constraints?: boolean | MediaTrackConstraints): Promise<void>;
  disableVideo(): Promise<void>;
  enableAudio(constraints?: boolean | MediaTrackConstraints): Promise<void>;
  disableAudio(): Promise<void>;
  /** Camera and microphone together, as the preset allows: one prompt, one publication. */
  enableMedia(kinds?: { audio?: boolean | MediaTrackConstraints; video?: boolean | MediaTrackConstraints }): Promise<void>;
  /** Share a screen (the browser asks which), as the screenshare source: only on stage, if the preset allows it. */
  enableScreenShare(): Promise<void>;
  /** Stop sharing (also done when the user stops it from the browser). */
  disableScreenShare(): Promise<void>;
}

export interface MeetingInfo {
  id: string;
  title?: string;
  type?: 'WEBINAR' | 'GROUP_CALL';
  /** 0 or absent: no limit. */
  maxOnStage?: number;
  /** Seconds; 0 or absent: requests never expire. */
  stageRequestTtl?: number;
}

export interface MeetingEvents {
  connectionUpdate: { state: 'new' | 'connected' | 'reconnecting' | 'closed' };
  reconnected: { resumed: boolean };
  closed: { code: ErrorCode; reason: string };
  participantJoined: Participant;
  participantLeft: Participant | { id: string; userId: string };
  meetingUpdate: MeetingInfo;
}

export interface Meeting extends Emitter<MeetingEvents> {
  readonly id: string;
  readonly info: MeetingInfo;
  readonly stage: Stage;
  readonly self: Self;
  readonly participants: Participants;
  readonly connectionState: 'new' | 'connected' | 'reconnecting' | 'closed';
  join(): Promise<Meeting>;
  leave(): Promise<void>;
  getMediaStats(): Promise<RTCStats[]>;
}
