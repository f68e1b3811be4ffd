// The speed-test and survey page: M-Lab's data policy, the ndt7 test with live
// progress, its result, then the survey form prefilled with it, and thanks.
//
// `document.body.dataset.state` follows the page: loading, consent, running, result,
// error, survey, thanks.
import { fetchJson, loadConfig } from "../common/config.js";
import { chooseLanguage, clockText, keepLanguage, language, languageMenu, nameOf, setLanguage, t, tPlural, translatePage } from "../common/i18n.js";
import { SpeedTestError, runSpeedTest } from "./ndt7test.js";
import { DAYS_NEEDED, attachKey, eveningOf, eveningOfTime, forget, keepTest, loadRecord, placeOf, progress } from "./record.js";
import {
  clearErrors,
  collect,
  newKey,
  renderSurvey,
  showErrors,
  speedTestOptional,
  submit,
} from "./survey.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["consent", "running", "result", "error", "survey", "thanks"];
const PHASES = { locate: "speedtest.phase_locate", download: "speedtest.phase_download", upload: "speedtest.phase_upload" };
const number = (digits) =>
  new Intl.NumberFormat(language(), { minimumFractionDigits: 0, maximumFractionDigits: digits });
let mbpsFormat;
let msFormat;

const page = {
  config: null,
  formPromise: null,
  result: null,
  form: null,
  running: false,
  resultTime: null, // when the last test ended
  testFailed: false, // the last test did not finish
};

function setState(state, { showResult = false } = {}) {
  document.body.dataset.state = state;
  for (const view of VIEWS) {
    $(`${view}-view`).hidden = !(view === state || (view === "result" && showResult));
  }
  $("result-actions").hidden = state !== "result";
}

function pageError(message) {
  const el = $("page-error");
  el.textContent = message;
  el.hidden = false;
  setState("error");
  $("error-view").hidden = true;
}

// -- the test -----------------------------------------------------------------------

let lastPhase = null;

function showProgress({ phase, mbps, fraction }) {
  if (phase !== lastPhase) {
    lastPhase = phase;
    $("phase").textContent = PHASES[phase] ? t(PHASES[phase]) : "";
    $("current-direction").textContent =
      phase === "download" ? t("speedtest.current_download") : phase === "upload" ? t("speedtest.current_upload") : "";
    $("current-mbps").textContent = "–";
    for (const step of ["download", "upload"]) {
      const el = $(`step-${step}`);
      const done = step === "download" && phase === "upload";
      el.classList.toggle("done", done);
      if (step === phase) el.setAttribute("aria-current", "step");
      else el.removeAttribute("aria-current");
    }
  }
  if (typeof mbps === "number" && Number.isFinite(mbps)) {
    $("current-mbps").textContent = mbpsFormat.format(mbps);
  }
  const percent = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  const bar = $("progress");
  if (percent >= Number(bar.value)) {
    bar.value = percent;
    bar.textContent = `${percent}%`;
  }
}

function showResult(result) {
  const put = (id, text, value) => {
    const el = $(id);
    el.textContent = text;
    el.dataset.value = value ?? "";
  };
  put("result-download", mbpsFormat.format(result.downloadMbps), result.downloadMbps);
  put("result-upload", mbpsFormat.format(result.uploadMbps), result.uploadMbps);
  put(
    "result-rtt",
    result.minRttMs === null ? t("speedtest.not_measured") : msFormat.format(result.minRttMs),
    result.minRttMs,
  );
  put("result-server", result.server || t("speedtest.unknown"), result.server);
  put("result-download-uuid", result.downloadUuid || t("speedtest.none"), result.downloadUuid);
  put("result-upload-uuid", result.uploadUuid || t("speedtest.none"), result.uploadUuid);
}

async function startTest() {
  const accepted = $("accept-policy").checked;
  if (!accepted || page.running) return;
  page.running = true;
  lastPhase = null;
  $("progress").value = 0;
  $("current-mbps").textContent = "–";
  $("phase").textContent = t(PHASES.locate);
  setState("running");
  $("running-title").focus();
  try {
    const result = await runSpeedTest(
      {
        locateUrl: page.config.ndt7.locate_url,
        acceptedDataPolicy: accepted,
        clientVersion: page.config.generator?.split(" ")[1],
      },
      showProgress,
    );
    page.result = result;
    page.testFailed = false;
    page.resultTime = new Date();
    showResult(result);
    // A resident who keeps an evening record has every new test added to it.
    if (loadRecord() && result.downloadUuid) keepTest(result, page.resultTime, eveningOf(page.config));
    showRecord();
    $("phase").textContent = t("speedtest.phase_done");
    setState("result");
    $("result-view").focus();
  } catch (err) {
    // Said in the page's language; the test client's own words go to the console.
    page.testFailed = true;
    const kind = err instanceof SpeedTestError ? err.kind : "no_result";
    $("error-message").textContent = t(`speedtest.failed_${kind}`);
    console.warn(err);
    setState("error");
    $("error-view").focus();
  } finally {
    page.running = false;
  }
}

/** What the last test adds to an evening record, and how many evening tests on other
 * days would complete one (kept in this browser only, if the resident asks). */
function showRecord() {
  const evening = eveningOf(page.config);
  const hours = t("record.hours", { start: clockText(evening.start), end: clockText(evening.end) });
  const record = loadRecord();
  const thisOne = t(eveningOfTime(page.resultTime, evening).evening ? "record.evening" : "record.not_evening", { hours });
  let text;
  if (!record) {
    text = `${thisOne} ${t("record.invite", { days: DAYS_NEEDED })}`;
  } else {
    text = `${thisOne} ${recordText(record)}`;
  }
  $("keep-tests").checked = Boolean(record);
  $("keep-tests").disabled = !page.result?.downloadUuid && !record;
  $("evening-status").textContent = text;
  $("evening-record").hidden = false;
}

/** How far the kept record is, as the evidence will count it. */
function recordText(record) {
  const { days, needed } = progress(record);
  const kept = t("record.kept", { done: days, days: DAYS_NEEDED });
  return `${kept} ${needed ? tPlural("record.more", needed) : t("record.complete")}`;
}

function onKeepChange(ev) {
  if (ev.target.checked && page.result?.downloadUuid) keepTest(page.result, page.resultTime, eveningOf(page.config));
  else forget();
  showRecord();
}

// -- the survey ---------------------------------------------------------------------

function surveyStatus(message, isError = true) {
  const el = $("survey-status");
  el.textContent = message || "";
  el.hidden = !message;
  el.classList.toggle("error", Boolean(message) && isError);
}

async function openSurvey(result) {
  setState("survey", { showResult: Boolean(result) });
  const form = $("survey-form");
  if (page.form && page.form.result === result) {
    $("survey-title").focus();
    return;
  }
  form.hidden = true;
  $("survey-retry").hidden = true;
  surveyStatus(t("speedtest.survey_loading"), false);
  let definition;
  try {
    definition = await page.formPromise;
  } catch (err) {
    page.formPromise = loadForm(); // the button, or a later visit, tries again
    surveyStatus(t("speedtest.survey_failed", { error: err.message }));
    // Another try keeps the test's result (a reload would lose it).
    const retry = $("survey-retry");
    retry.hidden = false;
    retry.onclick = () => openSurvey(result);
    retry.focus();
    return;
  }
  if (!result && !speedTestOptional(definition)) {
    surveyStatus(t("speedtest.survey_needs_test"));
    return;
  }
  surveyStatus("");
  page.form = renderSurvey($("survey-fields"), definition, result, { testFailed: !result && page.testFailed });
  page.form.result = result;
  clearErrors(page.form, $("error-summary"), $("error-list"));
  form.hidden = false;
  $("survey-title").focus();
}

async function onSubmit(ev) {
  ev.preventDefault();
  const form = page.form;
  if (!form) return;
  const summary = $("error-summary");
  const list = $("error-list");
  surveyStatus("");
  const { body, errors } = collect(form);
  if (errors.length) {
    showErrors(form, summary, list, errors);
    return;
  }
  const button = $("submit-survey");
  button.disabled = true;
  $("survey-form").setAttribute("aria-busy", "true");
  const url = page.config.surveyBase.replace(/\/+$/, "");
  // A send again after a failure keeps its key (the survey stores a response once, if
  // the first one did arrive); answers changed since then are a response of their own,
  // which the first one's key would have dropped.
  const sent = JSON.stringify(body);
  if (form.sent !== undefined && form.sent !== sent) form.idempotencyKey = newKey();
  form.sent = sent;
  surveyStatus(t("speedtest.sending"), false);
  try {
    const answer = await submit(url, form, body);
    surveyStatus("");
    if (answer.ok) {
      // Kept only with an evening record.
      attachKey(form.result, form.idempotencyKey, {
        sentAt: new Date(),
        place:
          body.latitude === undefined
            ? null
            : placeOf(body.latitude, body.longitude, page.config.evidence_precision ?? 3),
        evening: eveningOf(page.config),
      });
      clearErrors(form, summary, list);
      // Only answers with a location count in the statistics by area (docs/survey.md).
      const thanks = t(body.latitude === undefined ? "speedtest.thanks_unlocated" : "speedtest.thanks");
      const repeat = answer.status === 200 && answer.answer?.stored === false;
      $("thanks-text").textContent = repeat ? `${t("speedtest.thanks_repeat")} ${thanks}` : thanks;
      const record = loadRecord();
      $("thanks-record").hidden = !record;
      if (record) $("thanks-record").textContent = recordText(record);
      setState("thanks");
      $("thanks-view").focus();
    } else if (answer.errors) {
      showErrors(form, summary, list, answer.errors);
    } else {
      clearErrors(form, summary, list);
      surveyStatus(answer.message);
    }
  } finally {
    button.disabled = false;
    $("survey-form").removeAttribute("aria-busy");
  }
}

function loadForm() {
  const promise = fetchJson(new URL("form", page.config.surveyBase), {
    headers: { Accept: "application/json" },
  });
  promise.catch(() => {}); // handled when the survey opens
  return promise;
}

// -- start --------------------------------------------------------------------------

async function main() {
  setLanguage(chooseLanguage());
  mbpsFormat = number(2);
  msFormat = number(3);
  translatePage();
  languageMenu($("lang"));
  keepLanguage();
  try {
    page.config = await loadConfig();
  } catch (err) {
    pageError(err.message);
    return;
  }
  const config = page.config;
  if (config.project?.name) {
    $("project-name").textContent = nameOf(config.project);
    document.title = t("speedtest.title", { project: nameOf(config.project) });
  }
  $("api-link").href = `${config.apiBase}openapi.json`;
  if (config.ndt7?.data_policy_url) $("policy-link").href = config.ndt7.data_policy_url;
  page.formPromise = loadForm();

  const accept = $("accept-policy");
  const start = $("start-test");
  const sync = () => {
    start.disabled = !accept.checked || !config.ndt7?.locate_url;
    $("start-hint").textContent = t(
      !config.ndt7?.locate_url ? "speedtest.hint_no_test" : accept.checked ? "speedtest.hint_ready" : "speedtest.hint_accept",
    );
  };
  accept.addEventListener("change", sync);
  sync();
  start.addEventListener("click", startTest);
  $("run-again").addEventListener("click", startTest);
  $("retry-test").addEventListener("click", startTest);
  $("skip-test").addEventListener("click", () => openSurvey(null));
  $("error-to-survey").addEventListener("click", () => openSurvey(null));
  $("to-survey").addEventListener("click", () => openSurvey(page.result));
  $("survey-form").addEventListener("submit", onSubmit);
  $("keep-tests").addEventListener("change", onKeepChange);
  setState("consent");
}

main();
