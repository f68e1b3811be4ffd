// A number as a resident types it, in either convention: 1234.5, 1,234.5, 1.234,5,
// 1 234,5 or 65,50. A box of type "number" read "1.000" as 1 and "65,50" as 6550 in a
// Spanish page, without a word; here a value is read only when it means one thing.

// Spaces group thousands too (1 000 000, as French and the SI write them), by threes only.
const SPACE_GROUPED = /^([+-]?)(\d{1,3}(?: \d{3})+)(?:([.,])(\d+))?$/;

/**
 * `{value}` for text that reads as one number, `{value: undefined}` for an empty box,
 * `{error: "number"}` for text that is not a number, and `{error: "ambiguous"}` for one
 * mark followed by exactly three digits ("1.000", "2,500"), which is a thousand in one
 * convention and a fraction in the other.
 */
export function parseNumber(text) {
  const raw = String(text ?? "")
    .replace(/[\u00a0\u202f]/g, " ")
    .trim();
  if (raw === "") return { value: undefined };
  if (/\s/.test(raw)) {
    // "65 50" is no number (it was read as 6550): a space only between groups of three.
    const spaced = SPACE_GROUPED.exec(raw);
    if (!spaced) return { error: "number" };
    const [, sign, whole, , fraction] = spaced;
    return { value: Number(`${sign}${whole.replace(/ /g, "")}${fraction ? `.${fraction}` : ""}`) };
  }
  const match = /^([+-]?)(\d[\d.,]*)$/.exec(raw);
  if (!match || /[.,]$/.test(match[2])) return { error: "number" };
  const [, sign, body] = match;
  const marks = body.replace(/\d/g, "");
  let whole = body;
  let fraction = "";
  if (marks.length) {
    const last = marks[marks.length - 1];
    const other = last === "." ? "," : ".";
    const lastAt = body.lastIndexOf(last);
    if (marks.includes(other)) {
      // Both marks: the last one is the decimal mark, the other groups by threes.
      if (marks.indexOf(last) !== marks.length - 1) return { error: "number" };
      whole = body.slice(0, lastAt);
      fraction = body.slice(lastAt + 1);
      if (!grouped(whole, other)) return { error: "number" };
      whole = whole.split(other).join("");
    } else if (marks.length > 1) {
      // One mark, many times: it groups by threes (1.000.000).
      if (!grouped(body, last)) return { error: "number" };
      whole = body.split(last).join("");
    } else {
      whole = body.slice(0, lastAt);
      fraction = body.slice(lastAt + 1);
      // "1.000" or "12,500": a thousand, or a fraction? Not guessed (0.500 is clear).
      if (fraction.length === 3 && /^[1-9]\d{0,2}$/.test(whole)) return { error: "ambiguous" };
    }
  }
  const value = Number(`${sign}${whole}${fraction ? `.${fraction}` : ""}`);
  return Number.isFinite(value) ? { value } : { error: "number" };
}

/** Whether `text` is digits grouped by threes with `mark` (1.234.567). */
function grouped(text, mark) {
  const parts = text.split(mark);
  return /^\d{1,3}$/.test(parts[0]) && parts.slice(1).every((p) => /^\d{3}$/.test(p));
}
