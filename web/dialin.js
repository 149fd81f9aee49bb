// A legacy Matrix 1:1 call (MSC2746) placed with matrix-js-sdk's MatrixCall, as Element Web
// places one, to a room's dial-in ghost. Bundled by `npm run build` into build/dialin.js.
// URL parameters: hs (homeserver URL), token (Matrix access token), user, device,
// room (the direct chat with the ghost), optional video=1 for a video call.
import { ClientEvent, CallEvent, createClient, createNewMatrixCall } from "matrix-js-sdk";

const params = new URLSearchParams(location.search);
const remoteMedia = document.getElementById("remote");
const statusLine = document.getElementById("status");
const page = { phase: "starting", error: null };
let call = null;

function setPhase(phase, error = null) {
  page.phase = phase;
  page.error = error;
  statusLine.textContent = error ? `${phase}: ${error}` : phase;
}

function prepared(client) {
  return new Promise((resolve, reject) => {
    client.on(ClientEvent.Sync, (state, _previous, data) => {
      if (state === "PREPARED") resolve();
      else if (state === "ERROR") reject(data?.error ?? new Error("sync failed"));
    });
  });
}

function showRemote() {
  const feed = call.getRemoteFeeds().find((f) => f.purpose === "m.usermedia");
  if (feed && remoteMedia.srcObject !== feed.stream) {
    remoteMedia.srcObject = feed.stream;
  }
}

async function inboundRtp() {
  const found = {};
  if (!call?.peerConn) return found;
  (await call.peerConn.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp") {
      found[report.kind] = {
        bytes: report.bytesReceived ?? 0,
        framesDecoded: report.framesDecoded ?? 0,
        audioEnergy: report.totalAudioEnergy ?? 0,
      };
    }
  });
  return found;
}

// What the test reads: the call's state, the remote stream and what arrives on it.
window.dialinState = async () => {
  const stream = remoteMedia.srcObject;
  return {
    phase: page.phase,
    error: page.error,
    callState: call?.state ?? null,
    hangupReason: call?.hangupReason ?? null,
    remoteAudioTracks: stream ? stream.getAudioTracks().length : 0,
    remoteVideoTracks: stream ? stream.getVideoTracks().length : 0,
    playing: Boolean(stream) && !remoteMedia.paused && remoteMedia.currentTime > 0,
    videoWidth: remoteMedia.videoWidth,
    videoHeight: remoteMedia.videoHeight,
    inbound: await inboundRtp(),
  };
};

window.hangUp = () => call?.hangup("user_hangup", false);

async function main() {
  const client = createClient({
    baseUrl: params.get("hs"),
    accessToken: params.get("token"),
    userId: params.get("user"),
    deviceId: params.get("device"),
    // No STUN or TURN: the bridge is on loopback, and the homeserver offers no TURN server.
    fallbackICEServerAllowed: false,
    forceTURN: false,
  });
  const synced = prepared(client);
  await client.startClient({ initialSyncLimit: 1 });
  await synced;
  const roomId = params.get("room");
  if (!client.getRoom(roomId)) throw new Error(`not in ${roomId}`);

  call = createNewMatrixCall(client, roomId);
  if (!call) throw new Error("this browser cannot place Matrix calls");
  call.on(CallEvent.Error, (error) => setPhase("error", error.message));
  call.on(CallEvent.FeedsChanged, showRemote);
  call.on(CallEvent.State, (state) => setPhase(state));
  call.on(CallEvent.Hangup, () => setPhase("ended", call.hangupReason));
  if (params.get("video") === "1") await call.placeVideoCall();
  else await call.placeVoiceCall();
}

main().catch((error) => setPhase("failed", error.message ?? String(error)));
