// A visit counter front end for eon, in Node.js (no packages).
//
// eon starts it from recipe.toml with its port in $PORT and eon's REST
// address in $EON_REST_URL (with credentials: http://user:password@host);
// every visit is a row in an eon table.
//
//   GET /          count this visit, answer how many there were
//   GET /healthz   readiness and liveness
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');

// fetch() refuses URLs with credentials: they go in a header instead.
const REST_URL = new URL(process.env.EON_REST_URL || 'http://127.0.0.1:8080');
const AUTH = REST_URL.username
  ? { authorization: 'Basic ' + Buffer.from(`${decodeURIComponent(REST_URL.username)}:${decodeURIComponent(REST_URL.password)}`).toString('base64') }
  : {};
const REST = REST_URL.origin;
const INSTANCE = process.env.EON_INSTANCE || 'visits';

async function sql(statement, params = []) {
  const resp = await fetch(`${REST}/v1/sql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...AUTH },
    body: JSON.stringify({ sql: statement, params }),
  });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error.message);
  return body;
}

async function handle(req, res) {
  const reply = (status, text) => {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(text);
  };
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/healthz') return reply(200, 'ok\n');
  if (path !== '/' || req.method !== 'GET') return reply(404, 'not found\n');
  try {
    await sql('INSERT INTO visits (id, at_ms, instance) VALUES ($1, $2, $3)', [crypto.randomUUID(), Date.now(), INSTANCE]);
    const count = (await sql('SELECT count(*) FROM visits')).rows[0][0];
    reply(200, `visit number ${count}, served by ${INSTANCE} (node ${process.version})\n`);
  } catch (e) {
    reply(503, `eon: ${e.message}\n`);
  }
}

async function main() {
  for (let attempt = 0; attempt < 30; attempt++) {
    try {
      await sql('CREATE TABLE IF NOT EXISTS visits (id text PRIMARY KEY, at_ms bigint, instance text)');
      break;
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const server = http.createServer((req, res) => { handle(req, res); });
  server.listen(Number(process.env.PORT), '127.0.0.1');
  // SIGTERM (eon's stop signal, after draining): stop accepting, then exit.
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

main();
