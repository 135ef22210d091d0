// What the Node scripts share: reading the environment their shell script sets, and a deadline
// for SDK calls (a hang must fail the case, not the whole run).
'use strict';

const path = require('path');

// The value of an environment variable the calling script needs; exits 2 when it is missing.
function env(name) {
  const value = process.env[name];
  if (!value) {
    const script = path.basename(process.argv[1] || 'this script');
    console.error(`error: ${name} is not set (run ${script} through its scripts/*.sh)`);
    process.exit(2);
  }
  return value;
}

// `promise`, or a rejection after `ms` milliseconds naming `what`.
function withTimeout(promise, ms, what = 'call') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

module.exports = { env, withTimeout };
