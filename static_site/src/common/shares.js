// Which directions a threshold or use case of index.json's `thresholds` holds to a
// limit: its twin is piecewise.core.config.ShareRule.applies (tests/test_site_state.py
// holds them equal).

/** Whether `u` holds tests of `direction` to any limit (a download to `download`,
 * `rtt_ms` and `loss`; an upload to `upload` and `rtt_ms`); one that holds them to none
 * has no share in that direction (null in its cells). */
export function holdsDirection(u, direction) {
  return u[direction] != null || u.rtt_ms != null || (direction === "download" && u.loss != null);
}
