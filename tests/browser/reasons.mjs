// padlock's error reasons, read from the contract itself
// (proto/padlock/errors/v1/errors.proto) like tests/e2e/reasons.py, so a
// test names a reason the services really give: `Reason.MFA_REQUIRED ===
// 'MFA_REQUIRED'`, and a misspelt one throws instead of never matching.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PROTO = fileURLToPath(new URL('../../proto/padlock/errors/v1/errors.proto', import.meta.url));

/** The reasons' names, in the contract's order. */
export const REASON_NAMES = Object.freeze(
  [...fs.readFileSync(PROTO, 'utf8').matchAll(/^\s+([A-Z][A-Z0-9_]*)\s*=\s*\d+;/gm)]
    .map((m) => m[1])
    .filter((name) => name !== 'ERROR_REASON_UNSPECIFIED'),
);
if (REASON_NAMES.length < 10) throw new Error(`too few reasons parsed from ${PROTO}`);

export const Reason = new Proxy(Object.freeze(Object.fromEntries(REASON_NAMES.map((n) => [n, n]))), {
  get(names, key) {
    if (typeof key === 'string' && !(key in names)) {
      throw new TypeError(`Reason.${key}: no such reason in ${path.basename(PROTO)}`);
    }
    return names[key];
  },
});
