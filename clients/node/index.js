'use strict';
// sluice: submit batches of jobs to a sluice queue and follow them.
//
//   const {Client} = require('sluice-client');
//   const c = new Client('redis://localhost:6379', {queue: 'default'});
//   const batch = await c.submit([{type: 'noop', payload: {}}], {name: 'demo'});
//   for await (const ev of c.events(batch)) console.log(ev.status, ev.done, '/', ev.total);
//   for await (const line of c.results(batch)) console.log(line.index, line.status);
//   await c.close();
//
// See README.md beside this file and docs/clients.md of sluice.

const {Client, newBatchId} = require('./lib/client');
const errors = require('./lib/errors');
const library = require('./lib/library');

module.exports = {Client, newBatchId, libraryVersion: library.version, ...errors};
delete module.exports.fromReply;
