'use strict';
// The errors the sluice client throws. Every one is a SluiceError; those
// that come from the server keep its message word for word (`message`) and
// its code (`code`: SLUICE_ITEM, NOPERM, ...), so nothing of the cause is lost.

class SluiceError extends Error {
  constructor(message, code) {
    super(message);
    this.name = this.constructor.name;
    this.code = code === undefined ? null : code;
  }
}

// An item was refused; nothing of its chunk was written. `index` is its
// index in the batch (from 0), `id` its id if it has one, `field` the field
// at fault (null when it is not valid JSON or not an object), `reason`
// what is wrong.
class ItemError extends SluiceError {
  constructor(message, index, id, field, reason) {
    super(message, 'SLUICE_ITEM');
    this.index = index;
    this.id = id;
    this.field = field;
    this.reason = reason;
    this.batch = null;
  }
}

class LibraryError extends SluiceError {}

// The library is not loaded and the client was told not to load it.
class LibraryMissingError extends LibraryError {
  constructor(needed) {
    super(`the sluice function library is not loaded in this Redis (this client needs v${needed}): ` +
          'run `sluice library load`, or let the client load it');
    this.needed = needed;
  }
}

// Another version of the library is loaded; neither is replaced.
class LibraryVersionError extends LibraryError {
  constructor(loaded, needed) {
    super(`library v${loaded} is loaded, this client needs v${needed}: use the client of the fleet's sluice ` +
          'version, or have an operator run `sluice library load` of this one');
    this.loaded = loaded;
    this.needed = needed;
  }
}

// The library is missing and this Redis user may not load it.
class LibraryPermissionError extends LibraryError {
  constructor(needed, serverMessage) {
    super(`the sluice function library is not loaded in this Redis, and this Redis user may not load it ` +
          `(${serverMessage}): ask the operator to run \`sluice library load\` (v${needed})`, 'NOPERM');
    this.needed = needed;
  }
}

// No such batch in the queue (a wrong queue, or its retention ran out).
class BatchNotFoundError extends SluiceError {
  constructor(batch, queue) {
    super(`no batch ${batch} in queue ${queue} (wrong queue, or it expired)`, 'SLUICE_NOTFOUND');
    this.batch = batch;
    this.queue = queue;
  }
}

// The batch's state does not allow the call (pausing an ended batch).
class BatchStateError extends SluiceError {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

class BatchCancelledError extends SluiceError {}
class RedisFullError extends SluiceError {}
class ProtocolError extends SluiceError {}

const ITEM = /^SLUICE_ITEM item index (\d+)(?: \(id ("(?:[^"\\]|\\.)*")\))?: ([\s\S]*)$/;
const FIELD = /^field "([^"]+)": ([\s\S]*)$/;

// The SluiceError for an error reply of a sluice function.
function fromReply(msg, batch, queue) {
  const m = ITEM.exec(msg);
  if (m) {
    const f = FIELD.exec(m[3]);
    return new ItemError(msg, Number(m[1]), m[2] ? JSON.parse(m[2]) : null, f ? f[1] : null, f ? f[2] : m[3]);
  }
  const code = msg.split(' ', 1)[0];
  if (code === 'SLUICE_NOTFOUND') return new BatchNotFoundError(batch, queue);
  if (code === 'SLUICE_CANCELLED') return new BatchCancelledError(msg, code);
  if (code === 'OOM') return new RedisFullError(msg, code);
  if (['SLUICE_ARGS', 'SLUICE_ORDER', 'SLUICE_WHOLE'].includes(code)) return new ProtocolError(msg, code);
  return new SluiceError(msg, /^[A-Z_]+$/.test(code) ? code : null);
}

module.exports = {
  SluiceError, ItemError, LibraryError, LibraryMissingError, LibraryVersionError, LibraryPermissionError,
  BatchNotFoundError, BatchStateError, BatchCancelledError, RedisFullError, ProtocolError, fromReply,
};
