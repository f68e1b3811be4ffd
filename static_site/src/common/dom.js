// Building DOM nodes: the one helper every page uses.

/** An element: `attrs` become attributes (`null`, `undefined` and `false` are left out,
 * `true` is an empty attribute; `text` sets the text, `dataset` the data- attributes);
 * `children` (nested arrays flattened; `null`, `undefined` and `false` skipped) are
 * appended as nodes or text. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** Whether `el` takes part in the layout (not `display: none`, itself or an ancestor):
 * what can take the keyboard's focus. */
export const isShown = (el) => el.getClientRects().length > 0;
