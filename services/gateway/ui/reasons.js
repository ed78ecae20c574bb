// padlock's error reasons: the names of padlock.errors.v1.ErrorReason
// (proto/padlock/errors/v1/errors.proto), filled in by padlock-gateway from
// the generated enum and served as /reasons.js before app.js. The UI
// compares an answer's `error` with these, never with a string of its own:
// `Reason.MFA_REQUIRED === 'MFA_REQUIRED'`, and a name that is no reason
// throws instead of never matching.
'use strict';

const Reason = new Proxy(Object.freeze({
  /* REASONS */
}), {
  get(names, key) {
    if (typeof key === 'string' && !(key in names)) {
      throw new TypeError(`Reason.${key}: no such reason in errors.proto`);
    }
    return names[key];
  },
});
