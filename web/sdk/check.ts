// Compiled by `npm run typecheck` (tsc --noEmit): the seed's usage, typed.
import { init, CocmdError, StageStatus, type Meeting, type StageRequest } from './cocmd.js';

async function webinar(authToken: string): Promise<void> {
  const meeting: Meeting = await init({ authToken, baseURI: 'http://localhost:8080' });
  await meeting.join();
  meeting.stage.on('stageStatusUpdate', ({ status }) => {
    if (status === StageStatus.ACCEPTED_TO_JOIN_STAGE) void meeting.stage.join();
  });
  meeting.stage.on('peerStageStatusUpdate', ({ participant, status }) => console.log(participant.name, status));
  meeting.stage.on('newStageRequest', ({ count }) => console.log(count, 'pending'));
  await meeting.stage.requestAccess();
  await meeting.stage.cancelRequestAccess();
  const requests: StageRequest[] = await meeting.stage.getAccessRequests();
  try {
    await meeting.stage.grantAccess(requests.map((r) => r.userId));
    await meeting.stage.denyAccess(['someone']);
    await meeting.stage.kick('someone');
  } catch (e) {
    if (e instanceof CocmdError && e.code === 'PERMISSION_DENIED') console.log(e.results?.length);
  }
  await meeting.stage.leave();
  if (meeting.self.canPublish) await meeting.self.enableVideo({ width: 640 });
  await meeting.self.enableMedia({ audio: true });
  for (const p of meeting.participants.onStage()) {
    const video = document.createElement('video');
    video.srcObject = p.stream;
  }
  meeting.participants.on('mediaUpdate', ({ participant }) => console.log(participant.userId));
  await meeting.leave();
}
void webinar;
