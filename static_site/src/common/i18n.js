// The pages' languages: message catalogues (src/i18n/*.json, every key in each; the
// build fails otherwise), the language from the URL (`?lang=es`) or else the browser's,
// and numbers, plurals and dates formatted for it by `Intl`.
import en from "../i18n/en.json";
import es from "../i18n/es.json";
import { h } from "./dom.js";

export const CATALOGUES = { en, es };
export const LANGUAGE_NAMES = { en: "English", es: "Español" };
let current = "en";

/** The language asked in the URL, else the first of the browser's we have, else English. */
export function chooseLanguage(search = window.location.search, preferred = navigator.languages) {
  const asked = new URLSearchParams(search).get("lang");
  if (asked && Object.hasOwn(CATALOGUES, asked)) return asked;
  for (const tag of preferred || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (Object.hasOwn(CATALOGUES, base)) return base;
  }
  return "en";
}

export function setLanguage(lang) {
  current = Object.hasOwn(CATALOGUES, lang) ? lang : "en";
  document.documentElement.lang = current;
  return current;
}

export function language() {
  return current;
}

/** A message with `{name}` filled from `params`. */
export function t(key, params = {}) {
  const own = (catalogue) => (Object.hasOwn(catalogue, key) ? catalogue[key] : undefined);
  const text = own(CATALOGUES[current]) ?? own(CATALOGUES.en);
  if (text === undefined) throw new Error(`no message "${key}"`);
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** A message that depends on a count: `key.one`, `key.other` (by the language's rules). */
export function tPlural(key, n, params = {}) {
  const form = new Intl.PluralRules(current).select(n);
  const catalogue = CATALOGUES[current];
  const chosen = Object.hasOwn(catalogue, `${key}.${form}`) ? `${key}.${form}` : `${key}.other`;
  return t(chosen, { n: formatNumber(n), ...params });
}

/** One `Intl` formatter (`Kind`) per language and options, kept in `cache`: building
 * one costs more than formatting with it. */
function formatter(cache, Kind, options) {
  const key = `${current}|${JSON.stringify(options)}`;
  let format = cache.get(key);
  if (!format) cache.set(key, (format = new Kind(current, options)));
  return format;
}

const numberFormats = new Map();
/** A number written for the language (`Intl.NumberFormat`'s `options`). */
export function formatNumber(n, options = {}) {
  return formatter(numberFormats, Intl.NumberFormat, options).format(n);
}

const dateFormats = new Map();
/** A date (UTC) written for the language (`Intl.DateTimeFormat`'s `options`). */
export function formatDate(date, options = {}) {
  return formatter(dateFormats, Intl.DateTimeFormat, { timeZone: "UTC", ...options }).format(date);
}

/** A page of the site in the language the URL asked for: `href` with its `?lang=`
 * (only when the URL names one; a browser's own choice is made again there). */
export function withLanguage(href) {
  const asked = new URLSearchParams(window.location.search).get("lang");
  if (!asked || !Object.hasOwn(CATALOGUES, asked)) return href;
  const url = new URL(href, window.location.href);
  url.searchParams.set("lang", asked);
  return url.origin === window.location.origin ? `${url.pathname}${url.search}${url.hash}` : url.href;
}

/** Keeps the language of the URL in the page's links to the site's other pages
 * (those marked `data-keep-lang`). */
export function keepLanguage(root = document) {
  for (const a of root.querySelectorAll("a[data-keep-lang]")) a.setAttribute("href", withLanguage(a.getAttribute("href")));
}

/** The hour as people say it: 19 → "7 pm" / "7 p. m.", 0 → "midnight". */
export function clockText(hour) {
  if (hour === 0) return t("clock.midnight");
  if (hour === 12) return t("clock.noon");
  return hour < 12 ? t("clock.am", { h: hour }) : t("clock.pm", { h: hour - 12 });
}

/** Fills the page's marked elements: `data-i18n` (text), `data-i18n-html` (the
 * catalogue's own markup), `data-i18n-attr` (`attr:key;attr:key`). */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-html]")) el.innerHTML = t(el.dataset.i18nHtml);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
}

/** The languages as links, the page's own marked as current: following one reloads the
 * page in it, kept in the URL (`?lang=`). (A select that reloaded on `change` went to
 * the next language at the first arrow key, before a keyboard user could choose.) */
export function languageMenu(nav) {
  // The page's state lives in its URL (the map's hash changes as it is used): each
  // link points at the URL as it is when the link is followed.
  const hrefFor = (code) => {
    const url = new URL(window.location.href);
    url.searchParams.set("lang", code);
    return url.href;
  };
  nav.replaceChildren(
    ...Object.entries(LANGUAGE_NAMES).map(([code, name]) => {
      if (code === current) return h("span", { lang: code, "aria-current": "true" }, name);
      const link = h("a", { href: hrefFor(code), lang: code, hreflang: code }, name);
      const refresh = () => link.setAttribute("href", hrefFor(code));
      for (const event of ["focus", "pointerenter", "mousedown", "touchstart"]) {
        link.addEventListener(event, refresh, { passive: true });
      }
      link.addEventListener("click", refresh);
      return link;
    }),
  );
}

/** An operator's name for something (the project, a layer, a use case) in the page's
 * language: its `translations` (config), else its own name (or label). */
export function nameOf(entry) {
  return entry?.translations?.[current] || entry?.name || entry?.label || "";
}

/** A form definition's text in the current language (its `translations`, else as is). */
export function localized(def) {
  const text = def.translations?.[current];
  return text || {};
}
