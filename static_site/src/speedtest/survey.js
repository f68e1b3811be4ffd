// The survey form, rendered from its definition (`GET {surveyBase}form`), and its
// submission (`POST` to the survey's URL as JSON) with per-field errors from a 400.

import { formatNumber as formatIn, language as lang, localized, t, tPlural } from "../common/i18n.js";
import { h } from "../common/dom.js";
import { parseNumber } from "./numbers.js";

let uid = 0;

function requiredMark(required) {
  return required
    ? [" ", h("span", { class: "required", "aria-hidden": "true", text: "*" })]
    : [];
}

function formatNumber(n) {
  return formatIn(n, { maximumFractionDigits: 6 });
}

// Numbers a resident may copy into a box: no thousands separator, which one convention
// reads as the other's decimal mark.
function plainNumber(n) {
  return formatIn(n, { maximumFractionDigits: 6, useGrouping: false });
}

/** A question's label and unit in the page's language (the config's translations). */
function questionLabel(def) {
  return localized(def).label || def.label;
}

function unitOf(def) {
  return localized(def).unit || def.unit;
}

/** A choice's text in the page's language; the value sent stays the choice. */
function choiceText(def, choice) {
  return localized(def).choices?.[choice] || (choice === "other" ? t("survey.other") : choice);
}

function rangeHint(def) {
  const unit = unitOf(def) ? ` ${unitOf(def)}` : "";
  const params = { min: plainNumber(def.minimum), max: plainNumber(def.maximum), unit };
  return t(def.integer ? "survey.range_whole" : "survey.range", params);
}

/**
 * One answer of the form: its DOM, the element to focus on an error, where the error
 * goes, and how to read its value (undefined: not answered, left out of the post).
 */
class Question {
  constructor(name, root, focusTarget, describedElements) {
    this.name = name;
    this.root = root;
    this.focusTarget = focusTarget;
    this.described = describedElements;
    this.errorEl = h("p", { class: "field-error", id: `${name}-error`, hidden: true });
    this.baseDescribedBy = new Map(
      describedElements.map((el) => [el, el.getAttribute("aria-describedby") || ""]),
    );
  }

  setError(message) {
    this.errorEl.textContent = message ? t("survey.error", { message }) : "";
    this.errorEl.hidden = !message;
    this.root.classList.toggle("has-error", Boolean(message));
    for (const el of this.described) {
      const base = this.baseDescribedBy.get(el);
      const ids = message ? `${this.errorEl.id} ${base}`.trim() : base;
      if (ids) el.setAttribute("aria-describedby", ids);
      else el.removeAttribute("aria-describedby");
      if (el.matches("input, select, textarea, [role=radiogroup]")) {
        if (message) el.setAttribute("aria-invalid", "true");
        else el.removeAttribute("aria-invalid");
      }
    }
  }
}

function inputId(name) {
  uid += 1;
  return `q-${name}-${uid}`;
}

function hintEl(id, text) {
  return text ? h("p", { class: "hint", id, text }) : null;
}

function numberQuestion(def) {
  const id = inputId(def.name);
  const hintId = `${id}-hint`;
  // Text, read by parseNumber: a box of type "number" took "65,50" as 6550 and "1.000"
  // as 1 on a Spanish page (the browser's reading), without a word.
  const input = h("input", {
    type: "text",
    id,
    name: def.name,
    inputmode: def.integer ? "numeric" : "decimal",
    autocomplete: "off",
    required: def.required,
    "aria-describedby": hintId,
  });
  const root = h(
    "div",
    { class: "field" },
    h("label", { for: id }, questionLabel(def), requiredMark(def.required)),
    hintEl(hintId, rangeHint(def)),
    h("div", { class: "with-unit" }, input, unitOf(def) ? h("span", { class: "unit", text: unitOf(def) }) : null),
  );
  const q = new Question(def.name, root, input, [input]);
  root.insertBefore(q.errorEl, root.querySelector(".with-unit"));
  q.required = def.required;
  q.read = () => {
    const { value, error } = parseNumber(input.value);
    if (error === "ambiguous") {
      const text = input.value.trim();
      const [thousands, decimal] = [text.replace(/[.,]/, ""), text.replace(/[.,]/, ".")];
      return {
        error: t("survey.ambiguous_number", {
          text,
          a: plainNumber(Number(thousands)),
          b: plainNumber(Number(decimal)),
        }),
      };
    }
    if (error) return { error: t("survey.enter_number") };
    // What the survey would refuse, said before a post (each post counts against the
    // rate limit, which a household or a library shares).
    if (value !== undefined) {
      if (def.integer && !Number.isInteger(value)) return { error: t("survey.whole_number") };
      if (def.minimum != null && value < def.minimum) return { error: t("survey.at_least", { n: plainNumber(def.minimum) }) };
      if (def.maximum != null && value > def.maximum) return { error: t("survey.at_most", { n: plainNumber(def.maximum) }) };
    }
    return { value };
  };
  q.set = (value) => {
    input.value = value ?? "";
  };
  return [q];
}

function textQuestion(def) {
  const id = inputId(def.name);
  const hintId = `${id}-hint`;
  const long = def.max_length > 200;
  const input = h(long ? "textarea" : "input", {
    type: long ? null : "text",
    id,
    name: def.name,
    rows: long ? 4 : null,
    maxlength: def.max_length,
    required: def.required,
    "aria-describedby": hintId,
  });
  const root = h(
    "div",
    { class: "field" },
    h("label", { for: id }, questionLabel(def), requiredMark(def.required)),
    hintEl(hintId, t("survey.at_most_chars", { n: formatNumber(def.max_length) })),
  );
  const q = new Question(def.name, root, input, [input]);
  q.required = def.required;
  root.append(q.errorEl, input);
  q.read = () => ({ value: input.value === "" ? undefined : input.value });
  return [q];
}

/** A group of radio buttons or checkboxes in a fieldset with its legend. A group of
 * radio buttons is a radiogroup, which says whether an answer is required (the "*" is
 * for eyes only); `required` on the buttons would call them invalid before any answer. */
function optionGroup(def, type, options) {
  const legendId = inputId(`${def.name}-legend`);
  const radios = type === "radio";
  const fieldset = h(
    "fieldset",
    {
      class: `field group${options.length > 4 ? " many" : ""}`,
      role: radios ? "radiogroup" : null,
      "aria-labelledby": radios ? legendId : null,
      "aria-required": radios && def.required ? "true" : null,
    },
    h("legend", { id: legendId }, questionLabel(def), requiredMark(def.required)),
  );
  const inputs = options.map(([value, label]) => {
    const id = inputId(def.name);
    const input = h("input", { type, id, name: def.name, value });
    fieldset.append(h("div", { class: "option" }, input, h("label", { for: id, text: label })));
    return input;
  });
  return { fieldset, inputs };
}

function choiceQuestion(def) {
  const options = def.choices.map((c) => [c, choiceText(def, c)]);
  if (def.other) options.push(["other", choiceText(def, "other")]);
  const { fieldset, inputs } = optionGroup(def, "radio", options);
  const q = new Question(def.name, fieldset, inputs[0], [fieldset]);
  q.required = def.required;
  fieldset.insertBefore(q.errorEl, fieldset.querySelector(".option"));
  q.read = () => ({ value: inputs.find((i) => i.checked)?.value });
  const questions = [q];
  if (def.other) {
    const id = inputId(def.other_field);
    const otherInput = h("input", {
      type: "text",
      id,
      name: def.other_field,
      maxlength: def.max_length,
    });
    const otherRoot = h(
      "div",
      { class: "field other", hidden: true },
      h("label", { for: id }, t("survey.name_it"), h("span", { class: "visually-hidden", text: ` (${questionLabel(def)})` })),
    );
    const other = new Question(def.other_field, otherRoot, otherInput, [otherInput]);
    otherRoot.append(other.errorEl, otherInput);
    fieldset.append(otherRoot);
    const sync = () => {
      otherRoot.hidden = inputs.find((i) => i.checked)?.value !== "other";
    };
    for (const input of inputs) input.addEventListener("change", sync);
    other.read = () => {
      if (otherRoot.hidden || otherInput.value === "") return { value: undefined };
      return { value: otherInput.value };
    };
    other.showFor = () => {
      otherRoot.hidden = false;
    };
    questions.push(other);
  }
  return questions;
}

function multiChoiceQuestion(def) {
  const { fieldset, inputs } = optionGroup(def, "checkbox", def.choices.map((c) => [c, choiceText(def, c)]));
  fieldset.insertBefore(h("p", { class: "hint", text: t("survey.any_that_apply") }), fieldset.querySelector(".option"));
  const q = new Question(def.name, fieldset, inputs[0], [fieldset]);
  q.required = def.required;
  fieldset.insertBefore(q.errorEl, fieldset.querySelector(".option"));
  q.read = () => {
    const values = inputs.filter((i) => i.checked).map((i) => i.value);
    return { value: values.length ? values : undefined };
  };
  return [q];
}

function yesNoQuestion(def) {
  const { fieldset, inputs } = optionGroup(def, "radio", [["true", t("survey.yes")], ["false", t("survey.no")]]);
  fieldset.classList.add("inline");
  const q = new Question(def.name, fieldset, inputs[0], [fieldset]);
  q.required = def.required;
  fieldset.insertBefore(q.errorEl, fieldset.querySelector(".option"));
  q.read = () => {
    const checked = inputs.find((i) => i.checked);
    return { value: checked ? checked.value === "true" : undefined };
  };
  return [q];
}

const RENDERERS = {
  choice: choiceQuestion,
  multi_choice: multiChoiceQuestion,
  number: numberQuestion,
  text: textQuestion,
  yes_no: yesNoQuestion,
};

/** The consent checkbox (required, must be true). */
function consentQuestion(def) {
  const id = inputId(def.name);
  // aria-required, not required: a required box is announced invalid before it is
  // touched (the form is checked on sending, and the survey checks it again).
  const input = h("input", { type: "checkbox", id, name: def.name, "aria-required": "true" });
  const root = h(
    "div",
    { class: "field consent" },
    h("div", { class: "check" }, input, h("label", { for: id }, def.translations?.[lang()] || def.text, requiredMark(true))),
  );
  const q = new Question(def.name, root, input, [input]);
  root.insertBefore(q.errorEl, root.firstChild);
  q.read = () => (input.checked ? { value: true } : { error: t("survey.consent_friendly") });
  q.friendly = () => t("survey.consent_friendly");
  q.summaryLabel = t("survey.consent_label");
  return q;
}

/** The location block: filled only when the person presses the button. */
function locationBlock(defs) {
  const names = defs.map((d) => d.name);
  const status = h("p", { class: "hint", id: inputId("location-status"), role: "status" });
  const share = h("button", { type: "button", class: "secondary", "aria-describedby": status.id }, t("survey.share_location"));
  const clear = h("button", { type: "button", class: "secondary", hidden: true }, t("survey.remove_location"));
  const fieldset = h(
    "fieldset",
    { class: "field group location" },
    h("legend", { text: t("survey.location_legend") }),
    h("p", { class: "hint", text: t("survey.location_hint") }),
  );
  const q = new Question("latitude", fieldset, share, [fieldset]);
  fieldset.append(q.errorEl, h("div", { class: "actions" }, share, clear), status);
  let position = null;
  const show = () => {
    clear.hidden = position === null;
    if (!position) {
      status.textContent = "";
      return;
    }
    const where = { lat: position.latitude.toFixed(4), lon: position.longitude.toFixed(4) };
    status.textContent =
      position.accuracy_m != null
        ? t("survey.location_shared_within", { ...where, m: formatNumber(Math.round(position.accuracy_m)) })
        : t("survey.location_shared", where);
  };
  share.addEventListener("click", () => {
    if (!("geolocation" in navigator)) {
      status.textContent = t("survey.location_unsupported");
      return;
    }
    status.textContent = t("survey.location_asking");
    share.disabled = true;
    navigator.geolocation.getCurrentPosition(
      (pos) => {
        share.disabled = false;
        const { latitude, longitude, accuracy } = pos.coords;
        position = {
          latitude: Math.round(latitude * 1e5) / 1e5,
          longitude: Math.round(longitude * 1e5) / 1e5,
          accuracy_m: Number.isFinite(accuracy) ? Math.min(Math.round(accuracy), 1e7) : null,
        };
        q.setError("");
        show();
      },
      (err) => {
        share.disabled = false;
        status.textContent =
          err.code === err.PERMISSION_DENIED ? t("survey.location_refused") : t("survey.location_failed");
      },
      { enableHighAccuracy: false, timeout: 20000, maximumAge: 600000 },
    );
  });
  clear.addEventListener("click", () => {
    position = null;
    show();
    share.focus();
  });
  // All three names read from the one position, so each maps to this block's errors.
  const questions = names.map((name) => {
    const part = Object.create(q);
    part.name = name;
    part.read = () => ({ value: position ? position[name] ?? undefined : undefined });
    return part;
  });
  return { root: fieldset, questions };
}

/** The speed test's result, shown read-only: filled by the test, or empty (skipped, or
 * `failed`). */
function speedTestBlock(defs, result, labels, failed) {
  const fieldset = h(
    "fieldset",
    { class: "field group speed" },
    h("legend", { text: t("survey.result_legend") }),
  );
  const questions = [];
  if (!result) {
    fieldset.append(
      h("p", {
        class: "hint",
        id: "no-speed-test",
        text: t(failed ? "survey.no_result" : "survey.skipped"),
      }),
    );
  }
  const values = result
    ? {
        download_mbps: result.downloadMbps,
        upload_mbps: result.uploadMbps,
        min_rtt_ms: result.minRttMs,
        download_uuid: result.downloadUuid,
        upload_uuid: result.uploadUuid,
      }
    : {};
  const grid = h("div", { class: "speed-grid" });
  for (const def of defs) {
    const value = values[def.name];
    if (value === null || value === undefined) continue;
    const id = inputId(def.name);
    // Shown as the result card shows it (120,43 on a Spanish page), sent as measured.
    const input = h("input", {
      type: "text",
      id,
      name: def.name,
      readonly: true,
      value: def.unit ? plainNumber(value) : String(value),
      class: def.unit ? null : "id",
    });
    const label = labels[def.name] ? t(labels[def.name]) : def.label || def.name;
    const root = h(
      "div",
      { class: "field" },
      h("label", { for: id, text: def.unit ? `${label} (${def.unit})` : label }),
    );
    const q = new Question(def.name, root, input, [input]);
    root.append(q.errorEl, input);
    q.read = () => ({ value });
    questions.push(q);
    grid.append(root);
  }
  if (result) fieldset.append(grid);
  return { root: fieldset, questions };
}

const SPEED_LABELS = {
  download_mbps: "speedtest.download",
  upload_mbps: "speedtest.upload",
  min_rtt_ms: "survey.min_rtt",
  download_uuid: "speedtest.download_id",
  upload_uuid: "speedtest.upload_id",
};

/** Whether the form lets a response come without a speed test result. */
export function speedTestOptional(definition) {
  return !(definition.speed_test || []).some((f) => f.required);
}

/**
 * Renders the form into `container`; returns {questions, honeypot} for submit().
 */
export function renderSurvey(container, definition, result, { testFailed = false } = {}) {
  container.replaceChildren();
  const questions = [];
  const fields = h("div", { class: "questions" });
  for (const def of definition.fields || []) {
    const render = RENDERERS[def.type];
    if (!render) continue;
    const qs = render(def);
    fields.append(qs[0].root);
    questions.push(...qs);
  }
  container.append(fields);
  if (definition.speed_test?.length) {
    const block = speedTestBlock(definition.speed_test, result, SPEED_LABELS, testFailed);
    container.append(block.root);
    questions.push(...block.questions);
  }
  if (definition.location?.length) {
    const block = locationBlock(definition.location);
    container.append(block.root);
    questions.push(...block.questions);
  }
  // The honeypot: people never see it (hidden from eyes and screen readers alike).
  let honeypot = null;
  if (definition.honeypot) {
    honeypot = h("input", {
      type: "text",
      name: definition.honeypot,
      id: inputId(definition.honeypot),
      tabindex: "-1",
      autocomplete: "off",
    });
    container.append(
      h("div", { class: "hp", "aria-hidden": "true" }, h("label", { for: honeypot.id, text: t("survey.website") }), honeypot),
    );
  }
  if (definition.consent) {
    const consent = consentQuestion(definition.consent);
    container.append(consent.root);
    questions.push(consent);
  }
  return { questions, honeypot, idempotencyKey: newKey() };
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The answers as the survey expects them, or {errors} found before posting: what the
 * survey would refuse of each answer alone (required, a number's range, consent); the
 * survey checks everything again. */
export function collect(form) {
  const body = {};
  const errors = [];
  for (const q of form.questions) {
    const { value, error } = q.read();
    if (error) errors.push({ parameter: q.name, message: error });
    else if (value !== undefined) body[q.name] = value;
    else if (q.required) errors.push({ parameter: q.name, message: t("survey.required") });
  }
  if (form.honeypot?.value) body[form.honeypot.name] = form.honeypot.value;
  return { body, errors };
}

export function waitText(seconds) {
  if (!(seconds > 0)) return t("survey.wait.while");
  if (seconds < 90) return tPlural("survey.wait.second", Math.ceil(seconds));
  if (seconds < 5400) return tPlural("survey.wait.minute", Math.ceil(seconds / 60));
  return tPlural("survey.wait.hour", Math.ceil(seconds / 3600));
}

/**
 * Posts the answers. Resolves to {ok: true, answer, status} after 200/201/202, or {errors: [...]}
 * after a 400, or {message} for anything else (429/503 say when to retry).
 */
export async function submit(url, form, body, { timeoutMs = 30000 } = {}) {
  let response;
  // A connection that hangs ends as a failed send (the key makes a retry safe).
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "Idempotency-Key": form.idempotencyKey,
      },
      body: JSON.stringify(body),
      signal: abort.signal,
    });
  } catch {
    return { message: t("survey.send_failed") };
  } finally {
    clearTimeout(timer);
  }
  let answer;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (response.ok) return { ok: true, answer, status: response.status };
  const retryAfter = Number(response.headers.get("Retry-After"));
  const err = answer?.error || {};
  switch (response.status) {
    case 400:
      return {
        errors: err.errors?.length
          ? err.errors
          : [{ parameter: err.parameter || "body", message: err.message || "invalid" }],
      };
    case 429:
      return {
        message: t("survey.too_many", { wait: waitText(retryAfter) }),
      };
    case 503:
      return {
        message: t("survey.unavailable", { wait: waitText(retryAfter) }),
      };
    case 413:
      return { message: t("survey.too_long") };
    default:
      return {
        message: t("survey.send_error", { error: err.message || `HTTP ${response.status}` }),
      };
  }
}

// The survey's messages (pydantic's) in plainer words; others are shown as they come.
const PLAIN = [
  [/^Field required$/, () => t("survey.required")],
  [/^Input should be less than or equal to (.+)$/, (m) => t("survey.at_most", { n: m[1] })],
  [/^Input should be greater than or equal to (.+)$/, (m) => t("survey.at_least", { n: m[1] })],
  [/^Input should be a valid integer/, () => t("survey.whole_number")],
  [/^Input should be a valid number/, () => t("survey.enter_number")],
  [/^String should have at most (\d+) characters?$/, (m) => t("survey.use_at_most", { n: m[1] })],
  [/^Input should be '/, () => t("survey.choose_listed")],
  [/^name the \w+ when choosing "other"$/, () => t("survey.name_other")],
];

export function plainMessage(message) {
  for (const [pattern, say] of PLAIN) {
    const m = pattern.exec(message);
    if (m) return say(m);
  }
  return message;
}

/**
 * Shows errors next to their fields and in the summary (links to each field), and
 * moves the focus to the summary. Errors for names not on the page go in the summary.
 */
export function showErrors(form, summary, list, errors) {
  const byName = new Map();
  for (const q of form.questions) {
    if (!byName.has(q.name)) byName.set(q.name, q);
  }
  for (const q of form.questions) q.setError("");
  list.replaceChildren();
  const shown = new Set();
  for (const error of errors) {
    const q = byName.get(error.parameter);
    const message = q?.friendly ? q.friendly() : plainMessage(String(error.message));
    if (q) {
      q.showFor?.();
      if (shown.has(q.errorEl)) continue;
      shown.add(q.errorEl);
      q.setError(message);
      const target = q.focusTarget;
      const link = h("a", { href: `#${target.id}` }, `${labelOf(q)}: ${message}`);
      link.addEventListener("click", (ev) => {
        ev.preventDefault();
        target.focus();
        target.scrollIntoView({ block: "center" });
      });
      list.append(h("li", {}, link));
    } else {
      list.append(h("li", { text: `${error.parameter}: ${error.message}` }));
    }
  }
  summary.hidden = errors.length === 0;
  if (errors.length) summary.focus();
}

export function clearErrors(form, summary, list) {
  for (const q of form.questions) q.setError("");
  list.replaceChildren();
  summary.hidden = true;
}

function labelOf(q) {
  if (q.summaryLabel) return q.summaryLabel;
  const legend = q.root.querySelector("legend");
  const label = legend || q.root.querySelector("label");
  return (label?.textContent || q.name).replace(/\s*\*$/, "").trim();
}
