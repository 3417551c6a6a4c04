// Verifies one completion webhook the way a receiver would: with the
// standardwebhooks npm package (Standard Webhooks' own library), not with
// sluice's code. Run by tests/integration/test_http.c.
//
// Usage: node webhook_verify.js MODULES DELIVERY [CLOCK_OFFSET_S]
//
//   MODULES         the node_modules directory that holds standardwebhooks
//                   (scripts/dev installs it into BUILD/node/node_modules)
//   DELIVERY        a JSON file with one try as http_server.py recorded it:
//                   {"body_b64": the raw body in base64, "headers": {...}}
//   CLOCK_OFFSET_S  seconds to move this process's clock (Date.now) ahead
//                   of the real one, to check the replay window; default 0
//
// The secret is SLUICE_WEBHOOK_SECRET of this process's environment, as
// given to the worker (whsec_...). Prints one line and exits:
//   0  "ok"                     the library accepted the delivery
//   1  "rejected: MESSAGE"      the library threw WebhookVerificationError
//   2  "error: MESSAGE"         anything else (no package, bad arguments)
"use strict";

const fs = require("fs");
const path = require("path");

function fail(code, msg) {
  process.stdout.write(msg + "\n");
  process.exit(code);
}

const [modules, deliveryPath, offsetArg] = process.argv.slice(2);
if (!modules || !deliveryPath) {
  fail(2, "error: usage: node webhook_verify.js MODULES DELIVERY [CLOCK_OFFSET_S]");
}
const offsetS = offsetArg === undefined ? 0 : Number(offsetArg);
if (!Number.isFinite(offsetS)) {
  fail(2, "error: CLOCK_OFFSET_S must be a number of seconds, got " + offsetArg);
}

let lib;
try {
  lib = require(path.join(modules, "standardwebhooks"));
} catch (e) {
  fail(2, "error: cannot load standardwebhooks from " + modules + " (" + e.message.split("\n")[0] +
          "); scripts/dev build installs it");
}

const secret = process.env.SLUICE_WEBHOOK_SECRET;
if (!secret) {
  fail(2, "error: SLUICE_WEBHOOK_SECRET is not set");
}

let delivery;
try {
  delivery = JSON.parse(fs.readFileSync(deliveryPath, "utf8"));
} catch (e) {
  fail(2, "error: cannot read " + deliveryPath + ": " + e.message);
}
const payload = Buffer.from(delivery.body_b64 || "", "base64");

if (offsetS !== 0) {
  const realNow = Date.now;
  Date.now = () => realNow() + offsetS * 1000;
}

try {
  new lib.Webhook(secret).verify(payload, delivery.headers || {});
} catch (e) {
  if (e instanceof lib.WebhookVerificationError) {
    fail(1, "rejected: " + e.message);
  }
  fail(2, "error: " + e.message);
}
fail(0, "ok");
