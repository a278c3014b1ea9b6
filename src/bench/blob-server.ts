/**
 * The end-to-end benchmark's bulk server: every HTTP request gets `--bytes` bytes (default
 * 1 MiB), so a run measures throughput rather than requests. The bench starts one in each lab
 * real server's namespace, next to the lab's own realserver-app, and the lab's teardown stops it.
 *
 *   node dist/bench/blob-server.js --port 8090 [--bytes 1048576]
 *
 * Prints `ready` once listening.
 */
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8090' },
    bytes: { type: 'string', default: String(1 << 20) },
  },
});
const body = Buffer.alloc(Number(values.bytes), 0x78);
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60_000;
server.listen({ port: Number(values.port), host: '0.0.0.0', backlog: 4096 }, () => process.stdout.write('ready\n'));
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
