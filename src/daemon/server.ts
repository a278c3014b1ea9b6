/**
 * The daemon's HTTP endpoint (node:http): `/metrics` in the Prometheus text format, `/healthz`
 * for liveness probes (200 while the daemon runs and its program is attached, 503 otherwise).
 */
import http from 'node:http';
import net from 'node:net';
import { UserError } from '../errors.js';
import { CONTENT_TYPE } from './exposition.js';

export interface ListenAddress {
  /** undefined: every address */
  host: string | undefined;
  port: number;
}

/** `127.0.0.1:9469`, `[::1]:9469`, `localhost:9469`, `:9469` (every address). Throws a message. */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new Error(`"${text}" is not ADDRESS:PORT (e.g. 127.0.0.1:9469, [::1]:9469, :9469)`);
  }
  const host = m[1] ?? (m[2] === '' ? undefined : m[2]);
  if (m[1] !== undefined && net.isIPv6(m[1]) === false) throw new Error(`"${m[1]}" is not an IPv6 address`);
  return { host, port };
}

export const formatListenAddress = (a: ListenAddress): string => `${a.host === undefined ? '' : a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;

export interface Endpoints {
  metrics(): string;
  /** undefined when healthy, else why not */
  unhealthy(): string | undefined;
}

export class MetricsServer {
  private constructor(private readonly server: http.Server) {}

  static async listen(address: ListenAddress, endpoints: Endpoints): Promise<MetricsServer> {
    const server = http.createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (status: number, type: string, body: string, extra: http.OutgoingHttpHeaders = {}) => {
        res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n', { Allow: 'GET, HEAD' });
      try {
        if (path === '/metrics') return send(200, CONTENT_TYPE, endpoints.metrics());
        if (path === '/healthz') {
          const why = endpoints.unhealthy();
          return why === undefined ? send(200, 'text/plain', 'ok\n') : send(503, 'text/plain', `${why}\n`);
        }
        if (path === '/') return send(200, 'text/html', '<html><body><h1>xdpvs</h1><p><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a></p></body></html>\n');
        return send(404, 'text/plain', 'not found: try /metrics or /healthz\n');
      } catch (err) {
        return send(500, 'text/plain', `${(err as Error).message}\n`);
      }
    });
    server.keepAliveTimeout = 65_000; // longer than Prometheus's scrape interval: connections are reused
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new UserError(`cannot serve metrics on ${formatListenAddress(address)}: ${err.code ?? err.message}`, err.code === 'EADDRINUSE' ? ['another process listens there: choose another port with --metrics'] : [])),
      );
      server.listen({ host: address.host, port: address.port }, () => resolve());
    });
    return new MetricsServer(server);
  }

  /** The address actually bound (port 0 picks one). */
  address(): ListenAddress {
    const a = this.server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
