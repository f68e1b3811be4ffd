// Runs M-Lab's ndt7 test (download, then upload) with the @m-lab/ndt7 client and
// reports progress and the result in plain numbers.
import ndt7 from "@m-lab/ndt7";

// ndt7 tests last about 10 s each on M-Lab's servers; progress is time over that.
const EXPECTED_SECONDS = 10;

/** Rounds to `digits` decimals (what the page shows and the survey stores). */
export function round(value, digits) {
  if (typeof value !== "number" || !Number.isFinite(value)) return null;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Mbps from an ndt7 AppInfo: bytes over µs, times 8. */
function appInfoMbps(appInfo) {
  if (!appInfo || !(appInfo.ElapsedTime > 0)) return null;
  return (appInfo.NumBytes * 8) / appInfo.ElapsedTime;
}

/** ws:// for a locate service on http:// (a local one), else wss:// as M-Lab's. */
export function wsProtocol(locateUrl) {
  return new URL(locateUrl, window.location.href).protocol === "http:" ? "ws" : "wss";
}

/**
 * Runs the test. `onProgress({phase, mbps, fraction})` gets the phase ("locate",
 * "download", "upload"), the current speed and the share of the test done (0 to 1).
 * Resolves to {downloadMbps, uploadMbps, minRttMs, server, downloadUuid, uploadUuid};
 * rejects with a SpeedTestError.
 */
export async function runSpeedTest({ locateUrl, acceptedDataPolicy, clientVersion }, onProgress) {
  if (acceptedDataPolicy !== true) {
    throw new SpeedTestError("policy", "M-Lab's data policy must be accepted before the test runs");
  }
  const here = window.location.href;
  const config = {
    userAcceptedDataPolicy: true,
    loadbalancer: new URL(locateUrl, here).href,
    protocol: wsProtocol(locateUrl),
    downloadworkerfile: new URL("ndt7-download-worker.js", here).href,
    uploadworkerfile: new URL("ndt7-upload-worker.js", here).href,
    metadata: { client_name: "piecewise", client_version: clientVersion || "0" },
  };
  const seen = { server: null, downloadUuid: null, uploadUuid: null };
  const errors = [];
  let download = null;
  let upload = null;

  const progress = (phase, mbps, seconds, offset) => {
    const fraction = offset + Math.min(seconds / EXPECTED_SECONDS, 1) / 2;
    onProgress({ phase, mbps, fraction });
  };

  let code;
  try {
    code = await ndt7.test(config, {
      error: (err) => errors.push(typeof err === "string" ? err : err?.message || String(err)),
      serverDiscovery: () => onProgress({ phase: "locate", mbps: null, fraction: 0 }),
      serverChosen: (choice) => {
        const where = [choice?.location?.city, choice?.location?.country].filter(Boolean);
        seen.server = choice?.machine
          ? `${choice.machine}${where.length ? ` (${where.join(", ")})` : ""}`
          : null;
      },
      downloadStart: () => progress("download", null, 0, 0),
      downloadMeasurement: ({ Source, Data }) => {
        if (Source === "server") {
          seen.downloadUuid ||= Data?.ConnectionInfo?.UUID || null;
        } else {
          progress("download", Data.MeanClientMbps, Data.ElapsedTime, 0);
        }
      },
      downloadComplete: (data) => {
        download = data;
        onProgress({ phase: "download", mbps: null, fraction: 0.5 });
      },
      uploadStart: () => progress("upload", null, 0, 0.5),
      uploadMeasurement: ({ Source, Data }) => {
        if (Source === "server") {
          seen.uploadUuid ||= Data?.ConnectionInfo?.UUID || null;
          const mbps = appInfoMbps(Data?.AppInfo);
          if (mbps !== null) progress("upload", mbps, Data.AppInfo.ElapsedTime / 1e6, 0.5);
        }
      },
      uploadComplete: (data) => {
        upload = data;
        onProgress({ phase: "upload", mbps: null, fraction: 1 });
      },
    });
  } catch (err) {
    // The client throws where the locate service answers something unexpected (a 429, no
    // servers): its message is for developers.
    errors.push(err?.message || String(err));
    code = 1;
  }

  // Download speed as the client saw it (M-Lab's own clients do the same), upload
  // speed as the server counted it; the minimum RTT from the download's TCP_INFO.
  const downloadMbps =
    download?.LastClientMeasurement?.MeanClientMbps ??
    appInfoMbps(download?.LastServerMeasurement?.AppInfo);
  const uploadMbps =
    appInfoMbps(upload?.LastServerMeasurement?.AppInfo) ??
    upload?.LastClientMeasurement?.MeanClientMbps;
  const minRtt = download?.LastServerMeasurement?.TCPInfo?.MinRTT;
  if (code !== 0 || errors.length || downloadMbps == null || uploadMbps == null) {
    const detail = errors[0] || "no measurement came back";
    // What went wrong, as a kind the page says in its language; the client's own words
    // (English, for developers) stay in `detail`.
    let kind = "no_result";
    if (!seen.server) kind = "no_server";
    else if (detail === "error") kind = "unreachable";
    throw new SpeedTestError(kind, detail);
  }
  return {
    downloadMbps: round(downloadMbps, 2),
    uploadMbps: round(uploadMbps, 2),
    minRttMs: typeof minRtt === "number" ? round(minRtt / 1000, 3) : null,
    server: seen.server,
    downloadUuid: seen.downloadUuid,
    uploadUuid: seen.uploadUuid,
  };
}

/** A test that did not finish: `kind` is "no_server" (M-Lab's locate service found
 * none, or answered something else), "unreachable" (the server could not be reached or
 * closed the connection) or "no_result"; `detail` is the client's own message. */
export class SpeedTestError extends Error {
  constructor(kind, detail) {
    super(`The speed test failed (${kind}): ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}
