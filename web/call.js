// A minimal call page: Matrix OpenID token -> our token service -> livekit-client.
// URL parameters: hs (homeserver URL), token (Matrix access token), user, device, room
// (Matrix room ID), focus (token service URL), optional e2ee (shared key), name (room label),
// signal=v0 (LiveKit signalling v0, two peer connections, instead of livekit-client's v1),
// options=element-call (Element Call's room options: 720p camera sent as 180p/360p/720p
// simulcast, adaptive stream, dynacast; without it livekit-client's defaults with a 360p
// camera), publish=none (receive only). A token that may not publish (another homeserver's
// focus, in a multi-SFU call) only watches.
import {
  ExternalE2EEKeyProvider, Room, RoomEvent, Track, VideoPresets,
} from "livekit-client";

const params = new URLSearchParams(location.search);
const statusLine = document.getElementById("status");
const tiles = document.getElementById("tiles");
const leaveButton = document.getElementById("leave");

function setStatus(text, state = "ok") {
  statusLine.textContent = text;
  statusLine.dataset.state = state;
}

async function postJson(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${url}: ${response.status} ${data.errcode ?? ""} ${data.error ?? ""}`);
  }
  return data;
}

async function focusToken() {
  const hs = params.get("hs");
  const user = params.get("user");
  const openid = await postJson(
    `${hs}/_matrix/client/v3/user/${encodeURIComponent(user)}/openid/request_token`,
    {},
    { Authorization: `Bearer ${params.get("token")}` },
  );
  return postJson(`${params.get("focus")}/sfu/get`, {
    room: params.get("room"),
    openid_token: openid,
    device_id: params.get("device"),
  });
}

function tileFor(participant) {
  let tile = document.getElementById(`tile-${participant.sid}`);
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "tile";
    tile.id = `tile-${participant.sid}`;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = participant.identity.split(":").slice(0, 2).join(":");
    tile.append(label);
    tiles.append(tile);
  }
  return tile;
}

// As element-call:src/livekit/options.ts sets them.
const ELEMENT_CALL_OPTIONS = {
  adaptiveStream: true,
  dynacast: true,
  videoCaptureDefaults: { resolution: VideoPresets.h720.resolution },
  publishDefaults: {
    dtx: true,
    red: false,
    simulcast: true,
    videoSimulcastLayers: [VideoPresets.h180, VideoPresets.h360],
    videoCodec: "vp8",
    videoEncoding: VideoPresets.h720.encoding,
  },
};

async function createRoom() {
  const options = {
    ...(params.get("options") === "element-call"
      ? ELEMENT_CALL_OPTIONS
      // Light on CPU, for tests with several pages: a 360p camera, every layer received.
      : {
        adaptiveStream: false,
        dynacast: false,
        videoCaptureDefaults: { resolution: VideoPresets.h360.resolution },
      }),
    singlePeerConnection: params.get("signal") !== "v0",
  };
  const sharedKey = params.get("e2ee");
  if (!sharedKey) return new Room(options);
  const keyProvider = new ExternalE2EEKeyProvider();
  await keyProvider.setKey(sharedKey);
  const worker = new Worker(
    new URL("./node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs", import.meta.url),
    { type: "module" },
  );
  const room = new Room({ ...options, e2ee: { keyProvider, worker } });
  await room.setE2EEEnabled(true);
  return room;
}

async function start() {
  document.getElementById("room-name").textContent = params.get("name") ?? params.get("room");
  setStatus("Getting a token…");
  const { url, jwt } = await focusToken();
  const room = await createRoom();
  window.callRoom = room;
  room
    .on(RoomEvent.TrackSubscribed, (track, _publication, participant) => {
      const element = track.attach();
      element.dataset.kind = track.kind;
      tileFor(participant).prepend(element);
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()))
    .on(RoomEvent.ParticipantDisconnected, (participant) => {
      document.getElementById(`tile-${participant.sid}`)?.remove();
    })
    .on(RoomEvent.ActiveSpeakersChanged, (speakers) => {
      const active = new Set(speakers.map((p) => `tile-${p.sid}`));
      for (const tile of tiles.children) tile.classList.toggle("speaking", active.has(tile.id));
    })
    .on(RoomEvent.Disconnected, () => setStatus("Disconnected"));
  setStatus("Connecting…");
  await room.connect(url, jwt, { autoSubscribe: true });
  const mayPublish = room.localParticipant.permissions?.canPublish !== false;
  if (mayPublish && params.get("publish") !== "none") {
    await room.localParticipant.enableCameraAndMicrophone();
    const local = tileFor(room.localParticipant);
    const camera = room.localParticipant.getTrackPublication(Track.Source.Camera)?.track;
    if (camera) local.prepend(camera.attach());
  }
  leaveButton.disabled = false;
  leaveButton.onclick = () => room.disconnect();
  const role = mayPublish ? "Connected" : "Watching";
  setStatus(`${role} as ${room.localParticipant.identity}`);
}

// What tests read: per remote participant, decoded video frames and their size, received audio
// bytes and packets, and audio packets lost.
window.callState = async () => {
  const room = window.callRoom;
  if (!room) return { connected: false, remotes: {} };
  const remotes = {};
  for (const participant of room.remoteParticipants.values()) {
    const entry = {
      videoFrames: 0, audioBytes: 0, audioPackets: 0, audioPacketsLost: 0,
      speaking: participant.isSpeaking,
    };
    for (const publication of participant.trackPublications.values()) {
      const track = publication.track;
      if (!track) continue;
      if (track.kind === "video") {
        const element = track.attachedElements[0];
        entry.videoFrames = element?.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
        entry.videoWidth = element?.videoWidth ?? 0;
        entry.videoHeight = element?.videoHeight ?? 0;
        // Widths of the layers the server announces for it.
        entry.layers = publication.trackInfo?.layers?.map((layer) => layer.width) ?? [];
      } else if (track.kind === "audio") {
        const stats = await track.receiver?.getStats();
        stats?.forEach((report) => {
          if (report.type !== "inbound-rtp") return;
          entry.audioBytes = report.bytesReceived;
          entry.audioPackets = report.packetsReceived;
          entry.audioPacketsLost = report.packetsLost;
        });
      }
    }
    remotes[participant.identity] = entry;
  }
  // The camera's encodings being sent: frame width by RID (one "" without simulcast), and
  // whether each is active (dynacast turns off the ones nobody watches).
  const sending = {};
  const active = {};
  const camera = room.localParticipant.getTrackPublication(Track.Source.Camera)?.track;
  (await camera?.sender?.getStats())?.forEach((report) => {
    if (report.type !== "outbound-rtp") return;
    if (report.frameWidth) sending[report.rid ?? ""] = report.frameWidth;
    active[report.rid ?? ""] = report.active;
  });
  return {
    connected: room.state === "connected",
    identity: room.localParticipant.identity,
    sending,
    active,
    e2ee: room.isE2EEEnabled,
    remotes,
  };
};

start().catch((error) => {
  console.error(error);
  setStatus(`Error: ${error.message}`, "error");
});
