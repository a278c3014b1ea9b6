/**
 * The daemon's Prometheus metrics. Counters are read from the pinned maps on every scrape (with
 * the functions `status` and `stats` use), so they are the data plane's own numbers and keep
 * counting across daemon restarts and reloads; health-check results and the daemon's own
 * activity come from the daemon's memory.
 *
 *   xdpvs_service_{connections,packets,bytes}_total{service,vip,port,protocol}
 *   xdpvs_backend_{connections,packets,bytes}_total{service,backend}
 *   xdpvs_backend_{active,inactive}_connections, _up, _state{state}, _weight, _effective_weight, _info{mac}
 *   xdpvs_healthcheck_total{service,backend,type,result}, xdpvs_healthcheck_duration_seconds (histogram)
 *   xdpvs_program_info{interface,id,mode}, xdpvs_program_attached, xdpvs_program_loaded_timestamp_seconds
 *   xdpvs_connection_table_entries, xdpvs_connection_table_max_entries
 *   xdpvs_totals_packets_total{verdict=forwarded|passed|dropped_fragment|dropped_no_backend|dropped_other}
 *   xdpvs_daemon_* (applies, reloads, start time, config file), xdpvs_scrape_error
 */
import { MAPS } from '../abi.js';
import {
  countConnections,
  isAttached,
  loadedServices,
  openPinnedMaps,
  readBackendCounters,
  readBackendMacs,
  readTotals,
  statsReport,
  type BackendState,
  type StatsBackend,
  type StatsService,
} from '../runtime/read.js';
import { requireState, stateConfig } from '../runtime/state.js';
import { Histogram, type HistogramSample, type Labels, type MetricFamily, type Sample } from './exposition.js';

// ---------------------------------------------------------------------------------------------
// what a scrape reads

/** A backend as `stats --json` has it, with its flows as `status` counts them. */
export interface BackendSnapshot extends StatsBackend {
  activeConnections: number;
  inactiveConnections: number;
}

export interface ServiceSnapshot extends Pick<StatsService, 'name' | 'vip' | 'port' | 'protocol'> {
  backends: BackendSnapshot[];
}

export interface DataPlaneSnapshot {
  iface: string;
  programId: number;
  mode: 'native' | 'generic';
  attached: boolean;
  loadedAt: string;
  services: ServiceSnapshot[];
  totals: { forwarded: number; passed: number; droppedFragment: number; droppedNoBackend: number; droppedOther: number };
  connTable: { entries: number; maxEntries: number };
}

/** One read of everything the pinned maps and the state say about an interface. */
export function readDataPlane(iface: string): DataPlaneSnapshot {
  const state = requireState(iface);
  const config = stateConfig(state);
  const { maps, close } = openPinnedMaps(state, [MAPS.backends, MAPS.backendStats, MAPS.totals, MAPS.conns]);
  try {
    const services = loadedServices(state, config, readBackendMacs(maps.backends, loadedServices(state, config)));
    const counters = readBackendCounters(maps.backend_stats, services.flatMap((s) => s.backends.map((b) => b.index)));
    const { report, drops } = statsReport(iface, services, counters, readTotals(maps.totals));
    const entries = maps.conns.entries();
    // process.hrtime is CLOCK_MONOTONIC on Linux, the clock of bpf_ktime_get_coarse_ns
    const conns = countConnections(entries, process.hrtime.bigint(), config.timeouts, services);
    return {
      iface,
      programId: state.progId,
      mode: state.mode,
      attached: isAttached(state),
      loadedAt: state.loadedAt,
      services: report.services.map((s, i) => ({
        name: s.name,
        vip: s.vip,
        port: s.port,
        protocol: s.protocol,
        backends: s.backends.map((b, j) => {
          const c = conns.get(services[i]!.backends[j]!.index);
          return { ...b, activeConnections: c?.active ?? 0, inactiveConnections: c?.inactive ?? 0 };
        }),
      })),
      totals: {
        forwarded: report.totals.forwarded,
        passed: report.totals.passed,
        droppedFragment: drops.fragment,
        droppedNoBackend: drops.noBackend,
        droppedOther: drops.other,
      },
      connTable: { entries: entries.length, maxEntries: maps.conns.info().maxEntries },
    };
  } finally {
    close();
  }
}

// ---------------------------------------------------------------------------------------------
// what the daemon knows

/** Seconds: from a local connect (well under a millisecond) to a timeout of several seconds. */
export const HEALTHCHECK_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface HealthCheckStats {
  service: string;
  backend: string;
  type: 'tcp' | 'http';
  success: number;
  failure: number;
  duration: Histogram;
}

export interface DaemonStats {
  file: string;
  /** sha256 of the services file as last applied */
  configSha256: string;
  startTime: number;
  applies: { success: number; failure: number };
  /** unix seconds of the last apply that succeeded */
  lastApplySuccess: number;
  reloads: { success: number; failure: number };
  lastReloadSuccessful: boolean;
  macChanges: number;
}

// ---------------------------------------------------------------------------------------------
// families

const counter = (name: string, help: string, samples: Sample[]): MetricFamily => ({ name, help, type: 'counter', samples });
const gauge = (name: string, help: string, samples: Sample[]): MetricFamily => ({ name, help, type: 'gauge', samples });

export const BACKEND_STATES: readonly BackendState[] = ['up', 'down', 'draining'];

/**
 * Every family, in a fixed order. `dp` is undefined when the data plane could not be read
 * (nothing loaded, pins gone): the daemon's own metrics are still served, with
 * `xdpvs_scrape_error 1`.
 */
export function buildFamilies(dp: DataPlaneSnapshot | undefined, health: readonly HealthCheckStats[], daemon?: DaemonStats): MetricFamily[] {
  const services = dp?.services ?? [];
  const svcLabels = (s: ServiceSnapshot): Labels => ({ service: s.name, vip: s.vip, port: String(s.port), protocol: s.protocol });
  const perService = (value: (s: ServiceSnapshot) => number): Sample[] => services.map((s) => ({ labels: svcLabels(s), value: value(s) }));
  const sum = (s: ServiceSnapshot, k: 'connections' | 'packets' | 'bytes') => s.backends.reduce((n, b) => n + b[k], 0);
  const backends = services.flatMap((s) => s.backends.map((b) => ({ s, b, labels: { service: s.name, backend: b.ip } as Labels })));
  const perBackend = (value: (b: BackendSnapshot) => number): Sample[] => backends.map(({ b, labels }) => ({ labels, value: value(b) }));
  const ifaceLabels: Labels = dp ? { interface: dp.iface } : {};

  const families: MetricFamily[] = [
    counter('xdpvs_service_connections_total', 'New flows scheduled to the service (IPVS "Conns").', perService((s) => sum(s, 'connections'))),
    counter('xdpvs_service_packets_total', 'Packets forwarded for the service: client to real server only, the director never sees replies in DR mode.', perService((s) => sum(s, 'packets'))),
    counter('xdpvs_service_bytes_total', 'Bytes forwarded for the service, whole frames from the Ethernet header.', perService((s) => sum(s, 'bytes'))),
    counter('xdpvs_backend_connections_total', 'New flows scheduled to the real server.', perBackend((b) => b.connections)),
    counter('xdpvs_backend_packets_total', 'Packets forwarded to the real server.', perBackend((b) => b.packets)),
    counter('xdpvs_backend_bytes_total', 'Bytes forwarded to the real server, whole frames.', perBackend((b) => b.bytes)),
    gauge('xdpvs_backend_active_connections', 'TCP flows in the connection table without FIN/RST, within the idle timeout (IPVS ActiveConn).', perBackend((b) => b.activeConnections)),
    gauge('xdpvs_backend_inactive_connections', 'TCP flows after FIN/RST and UDP flows in the connection table, within their timeouts (IPVS InActConn).', perBackend((b) => b.inactiveConnections)),
    gauge('xdpvs_backend_up', '1 unless a health check holds the real server down.', perBackend((b) => (b.state === 'down' ? 0 : 1))),
    gauge(
      'xdpvs_backend_state',
      'The real server\'s state: 1 for the current one of up, down (failed health check), draining (weight 0).',
      backends.flatMap(({ b, labels }) => BACKEND_STATES.map((state) => ({ labels: { ...labels, state }, value: b.state === state ? 1 : 0 }))),
    ),
    gauge('xdpvs_backend_weight', 'The real server\'s weight in the services file.', perBackend((b) => b.weight)),
    gauge('xdpvs_backend_effective_weight', 'The weight the scheduler uses: the file\'s, 0 while a health check holds it down.', perBackend((b) => (b.state === 'down' ? 0 : b.weight))),
    gauge('xdpvs_backend_info', 'The MAC address the data plane rewrites frames to for the real server.', backends.map(({ b, labels }) => ({ labels: { ...labels, mac: b.mac }, value: 1 }))),
    counter(
      'xdpvs_healthcheck_total',
      'Health checks of the real server run by this daemon, by result.',
      health.flatMap((h) =>
        (['success', 'failure'] as const).map((result) => ({ labels: { service: h.service, backend: h.backend, type: h.type, result }, value: h[result] })),
      ),
    ),
    {
      name: 'xdpvs_healthcheck_duration_seconds',
      help: 'Time each health check took, to its answer or its timeout.',
      type: 'histogram',
      samples: health.map(
        (h): HistogramSample => ({
          labels: { service: h.service, backend: h.backend, type: h.type },
          bounds: h.duration.bounds,
          counts: h.duration.counts,
          sum: h.duration.sum,
          count: h.duration.count,
        }),
      ),
    },
    gauge('xdpvs_program_info', 'The XDP program attached by xdpvs: its id and attach mode.', dp ? [{ labels: { interface: dp.iface, id: String(dp.programId), mode: dp.mode }, value: 1 }] : []),
    gauge('xdpvs_program_attached', '1 when the recorded program is the one attached to the interface.', dp ? [{ labels: ifaceLabels, value: dp.attached ? 1 : 0 }] : []),
    gauge('xdpvs_program_loaded_timestamp_seconds', 'When the running program was loaded, in unix seconds.', dp ? [{ labels: ifaceLabels, value: Date.parse(dp.loadedAt) / 1000 }] : []),
    gauge('xdpvs_connection_table_entries', 'Entries in the connection table (an LRU hash; expired ones stay until evicted or reused).', dp ? [{ labels: ifaceLabels, value: dp.connTable.entries }] : []),
    gauge('xdpvs_connection_table_max_entries', 'Size of the connection table.', dp ? [{ labels: ifaceLabels, value: dp.connTable.maxEntries }] : []),
    counter(
      'xdpvs_totals_packets_total',
      'Every frame the program decided on, by verdict: forwarded to a real server, passed to the kernel (not for a service), or dropped and why.',
      dp
        ? (
            [
              ['forwarded', dp.totals.forwarded],
              ['passed', dp.totals.passed],
              ['dropped_fragment', dp.totals.droppedFragment],
              ['dropped_no_backend', dp.totals.droppedNoBackend],
              ['dropped_other', dp.totals.droppedOther],
            ] as const
          ).map(([verdict, value]) => ({ labels: { ...ifaceLabels, verdict }, value }))
        : [],
    ),
  ];
  if (daemon) {
    families.push(
      gauge('xdpvs_daemon_start_time_seconds', 'When the daemon started, in unix seconds.', [{ labels: {}, value: daemon.startTime }]),
      gauge('xdpvs_daemon_config_info', 'The services file the daemon runs, with the sha256 of the content last applied.', [{ labels: { file: daemon.file, sha256: daemon.configSha256 }, value: 1 }]),
      counter('xdpvs_daemon_applies_total', 'Applies of services and health verdicts to the data plane, by result.', [
        { labels: { result: 'success' }, value: daemon.applies.success },
        { labels: { result: 'failure' }, value: daemon.applies.failure },
      ]),
      gauge('xdpvs_daemon_last_apply_success_timestamp_seconds', 'When an apply last succeeded, in unix seconds.', [{ labels: {}, value: daemon.lastApplySuccess }]),
      counter('xdpvs_daemon_config_reloads_total', 'Reloads of the services file (on change or SIGHUP), by result.', [
        { labels: { result: 'success' }, value: daemon.reloads.success },
        { labels: { result: 'failure' }, value: daemon.reloads.failure },
      ]),
      gauge('xdpvs_daemon_config_last_reload_successful', '1 unless the last reload failed (an invalid file keeps the running services).', [
        { labels: {}, value: daemon.lastReloadSuccessful ? 1 : 0 },
      ]),
      counter('xdpvs_daemon_mac_changes_total', 'Real server MAC addresses that changed in the neighbour table and were re-applied.', [{ labels: {}, value: daemon.macChanges }]),
    );
  }
  families.push(gauge('xdpvs_scrape_error', '1 when the data plane could not be read for this scrape.', [{ labels: {}, value: dp ? 0 : 1 }]));
  return families;
}
