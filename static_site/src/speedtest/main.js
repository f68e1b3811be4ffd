// The speed-test and survey page: M-Lab's data policy, the ndt7 test with live
// progress, its result, then the survey form prefilled with it, and thanks.
//
// `document.body.dataset.state` follows the page: loading, consent, running, result,
// error, survey, thanks.
import { fetchJson, loadConfig } from "../common/config.js";
import { clock } from "../map/metrics.js";
import { runSpeedTest } from "./ndt7test.js";
import { DAYS_NEEDED, attachKey, eveningHours, eveningOf, forget, keepTest, loadRecord, localTime, progress } from "./record.js";
import {
  clearErrors,
  collect,
  renderSurvey,
  showErrors,
  speedTestOptional,
  submit,
} from "./survey.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["consent", "running", "result", "error", "survey", "thanks"];
const PHASES = {
  locate: "Finding a nearby test server…",
  download: "Measuring your download speed…",
  upload: "Measuring your upload speed…",
};
const number = (digits) =>
  new Intl.NumberFormat(undefined, { minimumFractionDigits: 0, maximumFractionDigits: digits });
const mbpsFormat = number(2);
const msFormat = number(3);

const page = {
  config: null,
  formPromise: null,
  result: null,
  form: null,
  running: false,
  resultTime: null, // when the last test ended
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
    $("phase").textContent = PHASES[phase] || "";
    $("current-direction").textContent =
      phase === "download" ? "download" : phase === "upload" ? "upload" : "";
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
    result.minRttMs === null ? "not measured" : msFormat.format(result.minRttMs),
    result.minRttMs,
  );
  put("result-server", result.server || "unknown", result.server);
  put("result-download-uuid", result.downloadUuid || "none", result.downloadUuid);
  put("result-upload-uuid", result.uploadUuid || "none", result.uploadUuid);
}

async function startTest() {
  const accepted = $("accept-policy").checked;
  if (!accepted || page.running) return;
  page.running = true;
  lastPhase = null;
  $("progress").value = 0;
  $("current-mbps").textContent = "–";
  $("phase").textContent = PHASES.locate;
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
    page.resultTime = new Date();
    showResult(result);
    // A resident who keeps an evening record has every new test added to it.
    if (loadRecord() && result.downloadUuid) keepTest(result, page.resultTime, eveningOf(page.config));
    showRecord();
    $("phase").textContent = "The test is done.";
    setState("result");
    $("result-view").focus();
  } catch (err) {
    $("error-message").textContent = err.message;
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
  const hours = `${clock(evening.start)} to ${clock(evening.end)}`;
  const isEvening = eveningHours(evening).includes(localTime(page.resultTime, evening).hour);
  const record = loadRecord();
  const thisOne = isEvening ? `This test was in the evening (${hours}).` : `This test was not in the evening (${hours}).`;
  let text;
  if (!record) {
    text = `${thisOne} Tests in the evening on ${DAYS_NEEDED} different days make a record that can back a challenge of what a provider says it delivers. Keep your tests in this browser to build one.`;
  } else {
    const { days, needed } = progress(record);
    const more = needed === 1 ? "1 more evening test" : `${needed} more evening tests`;
    text = `${thisOne} Your kept tests: evening tests on ${days} of the ${DAYS_NEEDED} different days a record needs. ${needed ? `${more} on other days would complete it.` : "Your evening record is complete."}`;
  }
  $("keep-tests").checked = Boolean(record);
  $("keep-tests").disabled = !page.result?.downloadUuid && !record;
  $("evening-status").textContent = text;
  $("evening-record").hidden = false;
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
  surveyStatus("Loading the survey…", false);
  let definition;
  try {
    definition = await page.formPromise;
  } catch (err) {
    page.formPromise = loadForm(); // a later visit tries again
    surveyStatus(`The survey could not be loaded (${err.message}). Please try again later.`);
    return;
  }
  if (!result && !speedTestOptional(definition)) {
    surveyStatus("This survey needs a speed test result: please run the test first.");
    return;
  }
  surveyStatus("");
  page.form = renderSurvey($("survey-fields"), definition, result);
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
  try {
    const answer = await submit(url, form, body);
    if (answer.ok) {
      attachKey(form.result, form.idempotencyKey); // kept only with an evening record
      clearErrors(form, summary, list);
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
  try {
    page.config = await loadConfig();
  } catch (err) {
    pageError(err.message);
    return;
  }
  const config = page.config;
  if (config.project?.name) {
    $("project-name").textContent = config.project.name;
    document.title = `Speed test & survey · ${config.project.name}`;
  }
  $("api-link").href = `${config.apiBase}openapi.json`;
  if (config.ndt7?.data_policy_url) $("policy-link").href = config.ndt7.data_policy_url;
  page.formPromise = loadForm();

  const accept = $("accept-policy");
  const start = $("start-test");
  const sync = () => {
    start.disabled = !accept.checked || !config.ndt7?.locate_url;
    $("start-hint").textContent = !config.ndt7?.locate_url
      ? "The speed test is not set up on this site; you can still answer the survey."
      : accept.checked
        ? "Ready: the test takes about 20 seconds."
        : "The test starts once you accept the data policy.";
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
