'use strict';
// The sluice function library: check its version, load it when missing.
//
// The library text ships inside this package (library.lua and
// library.version, put there when the package is staged from a sluice
// build: cmake/stage_clients.cmake). The call sequence is the one of
// docs/PROTOCOL.md, section 4, which every client follows:
//
// 1. FCALL_RO sluice_v1_version 0. The needed version: done. Another
//    version: LibraryVersionError naming both; it is never replaced.
// 2. "Function not found": FUNCTION LOAD <text>, without REPLACE.
//    "already exists" means another client loaded it meanwhile: back to 1.
//    NOPERM: LibraryPermissionError (an operator runs `sluice library load`).

const fs = require('fs');
const path = require('path');
const {SluiceError, LibraryMissingError, LibraryPermissionError, LibraryVersionError} = require('./errors');

const ROOT = path.join(__dirname, '..');

function read(name) {
  const file = path.join(ROOT, name);
  try {
    return fs.readFileSync(file);
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
    throw new SluiceError(`${file} is missing: this is the client's source tree, not a staged package. ` +
                          'Build sluice (cmake --build BUILD) and use BUILD/clients/node');
  }
}

// The library text, as FUNCTION LOAD takes it (a Buffer).
function text() {
  return read('library.lua');
}

// The library version this client needs, e.g. '0.1.0+48abff88465a'.
function version() {
  return read('library.version').toString().trim();
}

// The version loaded in Redis, or null when none is.
async function loadedVersion(redis) {
  try {
    return String(await redis.call('FCALL_RO', 'sluice_v1_version', 0));
  } catch (e) {
    if (/Function not found/.test(e.message)) return null;
    throw e;
  }
}

// Makes sure Redis has the library this client needs; resolves to its
// version. With load false a missing library throws LibraryMissingError.
async function ensure(redis, load = true) {
  const needed = version();
  for (let i = 0; i < 2; i++) {
    const have = await loadedVersion(redis);
    if (have === needed) return have;
    if (have !== null) throw new LibraryVersionError(have, needed);
    if (!load) throw new LibraryMissingError(needed);
    try {
      await redis.call('FUNCTION', 'LOAD', text());
      return needed;
    } catch (e) {
      if (/^NOPERM/.test(e.message)) throw new LibraryPermissionError(needed, e.message);
      if (!/already exists/.test(e.message)) {
        throw new SluiceError(`Redis refused FUNCTION LOAD of the sluice library: ${e.message}`);
      }
    }
  }
  return ensure(redis, false);
}

module.exports = {text, version, loadedVersion, ensure};
