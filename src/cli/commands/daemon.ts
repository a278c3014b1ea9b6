import { InvalidArgumentError, Option, type Command } from 'commander';
import type { XdpAttachMode } from '../../libbpf.js';
import { Daemon } from '../../daemon/daemon.js';
import { LOG_FORMATS, Logger, type LogFormat } from '../../daemon/log.js';
import { parseListenAddress, type ListenAddress } from '../../daemon/server.js';

function listenAddress(value: string): ListenAddress {
  try {
    return parseListenAddress(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function seconds(value: string): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError('not a number of seconds > 0');
  return n;
}

/** `xdpvs daemon`: the long-running director (src/daemon/daemon.ts). */
export function register(program: Command): void {
  program
    .command('daemon')
    .description(
      'apply the services and keep them running: health-check the real servers (down: weight 0, established flows stay), ' +
        're-resolve MACs, reload on file change or SIGHUP, serve Prometheus metrics; SIGTERM leaves the data plane forwarding',
    )
    .argument('<file>', 'services.json')
    .requiredOption('-i, --interface <iface>', "the director's interface")
    .option('--metrics <addr:port>', 'serve /metrics and /healthz there (e.g. 127.0.0.1:9469, [::]:9469, :9469)', listenAddress)
    .addOption(new Option('--mode <mode>', 'XDP attach mode').choices(['native', 'generic', 'auto']).default('native'))
    .addOption(new Option('--log-format <format>', 'one line per event, as text or as JSON objects').choices([...LOG_FORMATS]).default('text'))
    .option('--mac-interval <seconds>', 'how often to compare the backends\' MACs with the neighbour table', seconds, 30)
    .action(async (file: string, o: { interface: string; metrics?: ListenAddress; mode: XdpAttachMode; logFormat: LogFormat; macInterval: number }) => {
      const daemon = new Daemon({ file, iface: o.interface, mode: o.mode, metrics: o.metrics, logger: new Logger(o.logFormat), macInterval: o.macInterval });
      await daemon.run();
      // everything is closed; should a socket linger, it must not keep a stopped daemon alive
      setTimeout(() => process.exit(0), 2000).unref();
    });
}
