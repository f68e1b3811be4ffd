// A resident's evening record, kept in this browser only and only when they ask: each
// test's time, speeds and M-Lab IDs (and the survey's idempotency key once answered),
// so that tests taken in the evening hours on different days can back a challenge of a
// provider's coverage (the BEAD rules ask for three; docs/survey.md, Evidence).
// Nothing here is sent anywhere.

const KEY = "piecewise.evening-record";
export const DAYS_NEEDED = 3;
const DEFAULT_EVENING = { start: 19, end: 23, timezone: null };

/** The evening of the site's config (`evening`), else 7 to 11 pm in the browser's zone. */
export function eveningOf(config) {
  return config?.evening || DEFAULT_EVENING;
}

/** The local hours of the evening, wrapping at midnight (22 to 2: 22, 23, 0, 1). */
export function eveningHours(evening) {
  const hours = [];
  const end = Number(evening.end);
  for (let h = Number(evening.start), n = 0; h !== end && n < 24; h = (h + 1) % 24, n++) hours.push(h);
  return hours;
}

/** Whether a moment falls in the evening hours, and the day its evening counts for. */
export function eveningOfTime(when, evening) {
  const { date, hour } = localTime(when, evening);
  const isEvening = eveningHours(evening).includes(hour);
  return { evening: isEvening, date: isEvening ? eveningDate(date, hour, evening) : date };
}

/** The day an evening test counts for: an evening that runs past midnight (22 to 2)
 * counts its small hours for the day it began (as `piecewise survey evidence` does). */
export function eveningDate(date, hour, evening) {
  const hours = eveningHours(evening);
  if (hours.length && hours[hours.length - 1] < hours[0] && hour <= hours[hours.length - 1]) {
    const day = new Date(`${date}T00:00:00Z`);
    day.setUTCDate(day.getUTCDate() - 1);
    return day.toISOString().slice(0, 10);
  }
  return date;
}

/** A time's local date (YYYY-MM-DD) and hour in the evening's time zone. */
export function localTime(when, evening) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: evening.timezone || undefined,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    hourCycle: "h23",
  }).formatToParts(when);
  const get = (type) => parts.find((p) => p.type === type)?.value;
  return { date: `${get("year")}-${get("month")}-${get("day")}`, hour: Number(get("hour")) };
}

function read(storage) {
  try {
    if (!storage) return null;
    const record = JSON.parse(storage.getItem(KEY) || "null");
    return record && Array.isArray(record.tests) ? record : null;
  } catch {
    return null;
  }
}

/** The kept record ({tests}), or null when the resident keeps none. */
export function loadRecord(storage = safeStorage()) {
  return read(storage);
}

/** Starts keeping (with the resident's consent), or adds a test to the kept record. */
export function keepTest(result, when, evening, storage = safeStorage()) {
  // A browser that keeps nothing (private mode, a full store) keeps no record: said so
  // by the checkbox staying unticked, never by a failed page.
  const record = read(storage) || { tests: [] };
  if (!record.tests.some((t) => t.download_uuid && t.download_uuid === result.downloadUuid)) {
    const moment = eveningOfTime(when, evening);
    record.tests.push({
      time: when.toISOString(),
      local_date: moment.date,
      evening: moment.evening,
      download_mbps: result.downloadMbps,
      upload_mbps: result.uploadMbps,
      download_uuid: result.downloadUuid || null,
      upload_uuid: result.uploadUuid || null,
      idempotency_key: null,
    });
  }
  try {
    storage.setItem(KEY, JSON.stringify(record));
  } catch {
    return null;
  }
  return record;
}

/** Notes the survey answer sent with a kept test: its idempotency key, when it was
 * sent and whether with a location. The evidence of a record is made from such answers
 * only, their evening told by when they were received (`piecewise survey evidence`). */
export function attachKey(result, key, { sentAt, place, evening }, storage = safeStorage()) {
  const record = read(storage);
  const test = record?.tests.find((t) => t.download_uuid && t.download_uuid === result?.downloadUuid);
  if (!test) return;
  const moment = eveningOfTime(sentAt, evening);
  test.idempotency_key = key;
  test.sent_at = sentAt.toISOString();
  test.located = Boolean(place);
  test.place = place || null; // [latitude, longitude] rounded as the evidence rounds them
  test.sent_evening = moment.evening;
  test.sent_date = moment.date;
  try {
    storage.setItem(KEY, JSON.stringify(record));
  } catch {
    // the record stays as it was
  }
}

export function forget(storage = safeStorage()) {
  try {
    storage?.removeItem(KEY);
  } catch {
    // nothing was kept
  }
}

/** The browser's localStorage, or null where reading it throws (blocked storage). */
function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/** The days a record holds, as `piecewise survey evidence` will count them: a kept test
 * sent with the survey and a location, in the evening hours when it was sent (a test
 * kept but never sent is in no one's evidence); and how many more would complete it. */
export function progress(record) {
  const counted = (record?.tests || []).filter(
    (t) => t.download_uuid && t.idempotency_key && t.located && t.sent_evening,
  );
  // The evidence holds a record per place (the location rounded): the best place's days.
  const byPlace = new Map();
  for (const t of counted) {
    const place = JSON.stringify(t.place ?? null);
    if (!byPlace.has(place)) byPlace.set(place, new Set());
    byPlace.get(place).add(t.sent_date);
  }
  const days = Math.max(0, ...[...byPlace.values()].map((d) => d.size));
  return { days, needed: Math.max(0, DAYS_NEEDED - days) };
}

/** A location rounded to `precision` decimals, as `piecewise survey evidence` groups
 * places (Python's round: halves to even are rare enough here to ignore). */
export function placeOf(latitude, longitude, precision = 3) {
  const factor = 10 ** precision;
  return [Math.round(latitude * factor) / factor, Math.round(longitude * factor) / factor];
}
