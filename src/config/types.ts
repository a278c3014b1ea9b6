/**
 * The domain model of services.json after validation: every default filled in, every address in
 * canonical form with its bytes alongside. Everything downstream (code generation, map filling,
 * health checks, metrics) works on these types, never on the raw JSON.
 */

export type Protocol = 'tcp' | 'udp';
export type Scheduler = 'maglev' | 'wrr' | 'rr' | 'sh' | 'lc' | 'wlc';
export type HealthCheckType = 'tcp' | 'http' | 'none';

export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp'];
export const SCHEDULERS: readonly Scheduler[] = ['maglev', 'wrr', 'rr', 'sh', 'lc', 'wlc'];
export const HEALTH_CHECK_TYPES: readonly HealthCheckType[] = ['tcp', 'http', 'none'];

export interface Vip {
  family: 4 | 6;
  /** canonical text form (`formatIp`) */
  address: string;
  /** 4 or 16 bytes, network order */
  bytes: Buffer;
}

export interface Backend {
  /** canonical text form (`formatIp`) */
  ip: string;
  family: 4 | 6;
  bytes: Buffer;
  /** 0-65535; 0 = drain (no new connections, existing ones stay) */
  weight: number;
  /** canonical lower-case colon form; absent = resolve by ARP/NDP */
  mac?: string;
}

export interface HealthCheck {
  type: HealthCheckType;
  /** always set for tcp/http; for `none` only if the file gave one */
  port?: number;
  /** http only, default "/" */
  path?: string;
  /** http only, default 200 */
  expectStatus?: number;
  /** seconds between checks */
  interval: number;
  /** seconds before one check counts as failed; <= interval */
  timeout: number;
  /** consecutive successes to mark a backend up */
  rise: number;
  /** consecutive failures to mark a backend down */
  fall: number;
}

export interface Service {
  name: string;
  vip: Vip;
  /** 0 = all ports of that VIP and protocol */
  port: number;
  protocol: Protocol;
  scheduler: Scheduler;
  /** seconds, 0 = no persistence (as `ipvsadm -p`) */
  persistence: number;
  /** prefix length clients are grouped by for persistence (as `ipvsadm -M`) */
  persistenceNetmask: number;
  backends: Backend[];
  healthCheck: HealthCheck;
}

/** Connection-table idle timeouts in seconds (as `ipvsadm --set tcp tcpfin udp`). */
export interface Timeouts {
  tcp: number;
  tcpFin: number;
  udp: number;
}

export interface ServicesConfig {
  services: Service[];
  timeouts: Timeouts;
  /** entries of the connection-tracking map */
  connTableSize: number;
  /** new flows the connection table records per second per CPU, at most (a SYN flood's reach) */
  connRecordRate: number;
}

export const DEFAULT_SCHEDULER: Scheduler = 'maglev';
export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({ tcp: 900, tcpFin: 120, udp: 300 });
export const DEFAULT_CONN_TABLE_SIZE = 1048576;
export const DEFAULT_CONN_RECORD_RATE = 250000;
export const MIN_CONN_TABLE_SIZE = 1024;
export const MAX_CONN_TABLE_SIZE = 16777216;
export const DEFAULT_HEALTH_CHECK = Object.freeze({ type: 'tcp', interval: 2, timeout: 1, rise: 2, fall: 3 } as const);
export const DEFAULT_HTTP_PATH = '/';
export const DEFAULT_HTTP_STATUS = 200;
export const MAX_SERVICE_NAME_LENGTH = 32;
export const MAX_SERVICES = 10000;
export const MAX_BACKENDS_TOTAL = 65536;
