// The list of a layer's areas for a period, by name, for the picker beside the map:
// from the API's statistics of the period (cells and suppressed areas alike), asked once
// per layer and period.
import { language } from "../common/i18n.js";

export class AreaLists {
  /** `fetchStats(layer, period)`: the API's statistics document of a layer's period. */
  constructor(fetchStats) {
    this.fetchStats = fetchStats;
    this.lists = new Map();
  }

  /** The areas of `layer` in `period`, `{ id, name }` sorted by name; null while an
   * earlier call still loads them. A failed load throws and is forgotten, so that the
   * next call asks again. */
  async load(layer, period) {
    const key = `${layer}/${period}`;
    if (this.lists.has(key)) return this.lists.get(key);
    this.lists.set(key, null);
    try {
      const doc = await this.fetchStats(layer, period);
      const seen = new Map();
      for (const c of [...(doc.cells || []), ...(doc.suppressed || [])]) seen.set(c.area, c.name || c.area);
      const list = [...seen].map(([id, name]) => ({ id, name })).sort((a, b) => a.name.localeCompare(b.name, language(), { numeric: true }));
      this.lists.set(key, list);
      return list;
    } catch (err) {
      this.lists.delete(key);
      throw err;
    }
  }

  /** Whether the areas of `layer` in `period` were asked for (loaded or loading). */
  has(layer, period) {
    return this.lists.has(`${layer}/${period}`);
  }

  /** The areas loaded for `layer` in `period` (undefined or null when not yet). */
  get(layer, period) {
    return this.lists.get(`${layer}/${period}`);
  }
}
