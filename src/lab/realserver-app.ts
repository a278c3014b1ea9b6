/**
 * The tiny server each lab real server runs, so a client can tell which one answered:
 *   - HTTP/1.1 on each --tcp port (default 80 and 8080): any request gets `200` and the body `<name>\n`;
 *   - UDP on each --udp port (default 53): every datagram is answered with `<name>\n`.
 * Both families, every address of the namespace, including the VIPs on `lo`.
 *
 * UDP replies must leave from the address the datagram was sent to (the VIP), or a connected
 * client drops them. Node has no IP_PKTINFO, so next to a wildcard socket there is one socket per
 * local address (the kernel delivers to the most specific one), and addresses added later (a
 * VIP put on `lo` after start) are picked up by a rescan every two seconds.
 *
 *   node dist/lab/realserver-app.js --name rs1 [--lab xdpvs] [--tcp 80,8080] [--udp 53]
 *
 * Prints one line `ready ...` once everything listens; SIGTERM/SIGINT stop it.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';

interface AppOptions {
  name: string;
  tcp: number[];
  udp: number[];
}

function parsePorts(text: string, flag: string): number[] {
  if (text.trim() === '') return [];
  return text.split(',').map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`${flag}: ${JSON.stringify(p)} is not a port`);
    return n;
  });
}

function parseOptions(argv: string[]): AppOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string' },
      lab: { type: 'string' }, // only so `ps` and `lab down` can tell whose process this is
      tcp: { type: 'string', default: '80,8080' },
      udp: { type: 'string', default: '53' },
    },
  });
  if (!values.name) throw new Error('--name is required');
  return { name: values.name, tcp: parsePorts(values.tcp, '--tcp'), udp: parsePorts(values.udp, '--udp') };
}

/** Resolves once listening; resolves to null when the family is unavailable (no IPv6). */
function listenHttp(server: http.Server, port: number, host: string): Promise<AddressInfo | null> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (host === '::' && (err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL')) resolve(null);
      else reject(err);
    };
    server.once('error', onError);
    server.listen({ port, host, ipv6Only: host === '::' }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

function startHttp(name: string, port: number, host: string): Promise<AddressInfo | null> {
  const body = `${name}\n`;
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
      'X-Real-Server': name,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return listenHttp(server, port, host);
}

/** One UDP socket per (address, port); keys are `address|port`. */
const udpSockets = new Map<string, dgram.Socket>();

function bindUdp(name: string, address: string, port: number): Promise<boolean> {
  const key = `${address}|${port}`;
  if (udpSockets.has(key)) return Promise.resolve(true);
  const v6 = address.includes(':');
  const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', reuseAddr: true, ipv6Only: v6 });
  const reply = Buffer.from(`${name}\n`);
  socket.on('message', (_msg, peer) => {
    socket.send(reply, peer.port, peer.address);
  });
  udpSockets.set(key, socket);
  return new Promise((resolve) => {
    socket.once('error', () => {
      // the address went away, or the family is unavailable: try again at the next rescan
      udpSockets.delete(key);
      socket.close();
      resolve(false);
    });
    socket.bind({ address, port }, () => {
      socket.removeAllListeners('error');
      socket.on('error', (err) => process.stderr.write(`udp ${address}:${port}: ${err.message}\n`));
      resolve(true);
    });
  });
}

/** Every address of the namespace a client can send to (link-local IPv6 needs a scope: skipped). */
function localAddresses(): string[] {
  const out: string[] = [];
  for (const infos of Object.values(os.networkInterfaces())) {
    for (const info of infos ?? []) {
      if (info.family === 'IPv6' && info.address.toLowerCase().startsWith('fe80:')) continue;
      out.push(info.address);
    }
  }
  return out;
}

async function bindAllUdp(name: string, ports: number[]): Promise<void> {
  const addresses = ['0.0.0.0', '::', ...localAddresses()];
  await Promise.all(ports.flatMap((port) => addresses.map((a) => bindUdp(name, a, port))));
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const listening: string[] = [];
  for (const port of opts.tcp) {
    for (const host of ['0.0.0.0', '::']) {
      const addr = await startHttp(opts.name, port, host);
      if (addr) listening.push(`tcp ${host === '::' ? '[::]' : host}:${port}`);
    }
  }
  await bindAllUdp(opts.name, opts.udp);
  const rescan = setInterval(() => {
    bindAllUdp(opts.name, opts.udp).catch((err) => process.stderr.write(`rescan: ${(err as Error).message}\n`));
  }, 2000);
  for (const key of udpSockets.keys()) {
    const [address, port] = key.split('|');
    listening.push(`udp ${address!.includes(':') ? `[${address}]` : address}:${port}`);
  }
  const stop = () => {
    clearInterval(rescan);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`ready ${opts.name} pid ${process.pid}: ${listening.join(', ')}\n`);
}

main().catch((err) => {
  process.stderr.write(`realserver-app: ${(err as Error).message}\n`);
  process.exit(1);
});
