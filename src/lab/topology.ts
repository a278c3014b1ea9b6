/**
 * The lab's LVS-DR network on one machine: every name, address and MAC, as plain data.
 * Pure: nothing here touches the system. `lab.ts` builds what this describes.
 *
 *   <p>-client   eth0 10.200.0.2/24                       fd00:200::2/64
 *   <p>-director eth0 10.200.0.10/24 + VIPs /32           fd00:200::10/64 + VIP /128
 *   <p>-rsN      eth0 10.200.0.(10+N)/24, VIPs on lo      fd00:200::(10+N)/64, VIP on lo
 *   <p>-switch   br0 with one veth port per host: sw-client, sw-director, sw-rs1, ...
 *
 * The IPv6 host part repeats the IPv4 one in decimal digits (rs1 is 10.200.0.11 and
 * fd00:200::11), and every MAC is 02:00 followed by the host's IPv4 address in hex.
 */
import { UserError } from '../errors.js';

export const LAB_STATE_ROOT = '/run/xdpvs-lab';
export const DEFAULT_PREFIX = 'xdpvs';
export const DEFAULT_REAL_SERVERS = 3;
/** rs89 is 10.200.0.99; rs90 would take the first VIP. */
export const MAX_REAL_SERVERS = 89;

export const BRIDGE = 'br0';
/** Every host's end of its veth is called this inside its namespace. */
export const HOST_INTERFACE = 'eth0';

export const SUBNET_V4 = '10.200.0.0/24';
export const SUBNET_V6 = 'fd00:200::/64';
export const VIPS_V4: readonly string[] = ['10.200.0.100', '10.200.0.101'];
export const VIPS_V6: readonly string[] = ['fd00:200::100'];

/** What every real server's `realserver-app` answers on (both families, every address). */
export const TCP_PORTS: readonly number[] = [80, 8080];
export const UDP_PORTS: readonly number[] = [53];

const V4_BASE = '10.200.0.';
const V6_BASE = 'fd00:200::';
const CLIENT_HOST = 2;
const DIRECTOR_HOST = 10;

export type HostRole = 'client' | 'director' | `rs${number}`;

export interface LabHost {
  /** `client`, `director`, `rs1`, ...; also the name a real server answers with. */
  role: HostRole;
  namespace: string;
  /** The host's end of its veth, inside `namespace`. */
  interface: string;
  /** The other end, a port of the bridge inside the switch namespace. */
  switchPort: string;
  mac: string;
  ipv4: string;
  /** null when the lab was brought up without --ipv6. */
  ipv6: string | null;
}

export interface LabOptions {
  prefix: string;
  realServers: number;
  ipv6: boolean;
}

export interface LabTopology {
  prefix: string;
  ipv6: boolean;
  /** Where `lab up` keeps pid files, logs and lab.json. */
  stateDir: string;
  switch: { namespace: string; bridge: string; ports: string[] };
  client: LabHost;
  director: LabHost;
  realServers: LabHost[];
  subnets: { ipv4: string; ipv6: string | null };
  vips: { ipv4: string[]; ipv6: string[] };
  ports: { tcp: number[]; udp: number[] };
}

const PREFIX_RE = /^[a-z0-9][a-z0-9-]{0,39}$/;

/** Throws a UserError unless `prefix` can start the lab's namespace names. */
export function checkPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new UserError(
      `lab name ${JSON.stringify(prefix)} is not valid`,
      ['use 1-40 characters of a-z, 0-9 and "-", starting with a letter or digit'],
    );
  }
}

/** Throws a UserError unless `n` is a usable number of real servers. */
export function checkRealServers(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_REAL_SERVERS) {
    throw new UserError(`--real-servers must be a whole number from 1 to ${MAX_REAL_SERVERS}, got ${n}`);
  }
}

/** `02:00` followed by the four bytes of the IPv4 address: 10.200.0.11 -> 02:00:0a:c8:00:0b. */
export function macForIpv4(ipv4: string): string {
  const bytes = ipv4.split('.').map((b) => Number(b).toString(16).padStart(2, '0'));
  return ['02', '00', ...bytes].join(':');
}

function host(prefix: string, role: HostRole, hostPart: number, ipv6: boolean): LabHost {
  const ipv4 = `${V4_BASE}${hostPart}`;
  return {
    role,
    namespace: `${prefix}-${role}`,
    interface: HOST_INTERFACE,
    switchPort: `sw-${role}`,
    mac: macForIpv4(ipv4),
    ipv4,
    ipv6: ipv6 ? `${V6_BASE}${hostPart}` : null,
  };
}

/** Where `lab up` keeps the state of the lab `prefix`. */
export function stateDirFor(prefix: string): string {
  return `${LAB_STATE_ROOT}/${prefix}`;
}

/** The whole lab for these options (defaults: prefix "xdpvs", 3 real servers, IPv4 only). */
export function buildTopology(options: Partial<LabOptions> = {}): LabTopology {
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  const realServers = options.realServers ?? DEFAULT_REAL_SERVERS;
  const ipv6 = options.ipv6 ?? false;
  checkPrefix(prefix);
  checkRealServers(realServers);
  const client = host(prefix, 'client', CLIENT_HOST, ipv6);
  const director = host(prefix, 'director', DIRECTOR_HOST, ipv6);
  const rs = Array.from({ length: realServers }, (_, i) =>
    host(prefix, `rs${i + 1}`, DIRECTOR_HOST + i + 1, ipv6),
  );
  return {
    prefix,
    ipv6,
    stateDir: stateDirFor(prefix),
    switch: {
      namespace: `${prefix}-switch`,
      bridge: BRIDGE,
      ports: [client, director, ...rs].map((h) => h.switchPort),
    },
    client,
    director,
    realServers: rs,
    subnets: { ipv4: SUBNET_V4, ipv6: ipv6 ? SUBNET_V6 : null },
    vips: { ipv4: [...VIPS_V4], ipv6: ipv6 ? [...VIPS_V6] : [] },
    ports: { tcp: [...TCP_PORTS], udp: [...UDP_PORTS] },
  };
}

/** The options that build `topology`. */
export function optionsOf(topology: LabTopology): LabOptions {
  return { prefix: topology.prefix, realServers: topology.realServers.length, ipv6: topology.ipv6 };
}

/** Client, director, then the real servers. */
export function allHosts(topology: LabTopology): LabHost[] {
  return [topology.client, topology.director, ...topology.realServers];
}

/** Every namespace of the lab, the switch first. */
export function allNamespaces(topology: LabTopology): string[] {
  return [topology.switch.namespace, ...allHosts(topology).map((h) => h.namespace)];
}

/**
 * Whether `namespace` is one `lab up` with this prefix could have made (with any number of real
 * servers). Exact: prefix "xdpvs" does not claim "xdpvs-t42-client".
 */
export function isLabNamespace(prefix: string, namespace: string): boolean {
  if (!namespace.startsWith(`${prefix}-`)) return false;
  return /^(switch|client|director|rs[1-9][0-9]*)$/.test(namespace.slice(prefix.length + 1));
}

/** The namespace for `client`, `director`, `switch` or `rsN`, or undefined if the lab has no such role. */
export function namespaceForRole(topology: LabTopology, role: string): string | undefined {
  if (role === 'switch') return topology.switch.namespace;
  return allHosts(topology).find((h) => h.role === role)?.namespace;
}
