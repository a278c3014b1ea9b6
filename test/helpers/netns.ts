import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const repo = path.resolve(new URL('../..', import.meta.url).pathname);

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

export function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function must(cmd: string, args: string[]): void {
  const r = sh(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/**
 * A throw-away network namespace with a veth pair `xva` <-> `xvb`, both up, `xva` with 10.77.0.1/24,
 * and its own pin and state roots, so it can run beside a lab or another test. `xdpvs` runs
 * the CLI in the namespace (nsenter keeps /sys/fs/bpf visible, unlike `ip netns exec`; tap's
 * NODE_OPTIONS would break the child, so it is removed).
 */
export class TestNetns {
  readonly pinRoot: string;
  readonly runRoot: string;

  constructor(readonly name: string) {
    this.pinRoot = `/sys/fs/bpf/${name}`;
    this.runRoot = `/run/${name}`;
    this.destroy();
    must('ip', ['netns', 'add', name]);
    must('ip', ['-n', name, 'link', 'add', 'name', 'xva', 'type', 'veth', 'peer', 'name', 'xvb']);
    must('ip', ['-n', name, 'link', 'set', 'dev', 'xva', 'up']);
    must('ip', ['-n', name, 'link', 'set', 'dev', 'xvb', 'up']);
    must('ip', ['-n', name, 'addr', 'add', '10.77.0.1/24', 'dev', 'xva']);
  }

  ip(...args: string[]): Run {
    return sh('ip', ['-n', this.name, ...args]);
  }

  xdpvs(args: string[], env: Record<string, string> = {}): Run {
    const e = { ...process.env, XDPVS_PIN_ROOT: this.pinRoot, XDPVS_RUN_ROOT: this.runRoot, ...env };
    // tap adds its loader to NODE_OPTIONS of every child it sees spawned, so unset it in the child
    return sh('nsenter', [`--net=/run/netns/${this.name}`, 'env', '-u', 'NODE_OPTIONS', process.execPath, path.join(repo, 'bin/xdpvs'), ...args], e);
  }

  /** Removes the namespace (and with it the program) and the roots; safe to call twice. */
  destroy(): void {
    sh('ip', ['netns', 'del', this.name]);
    for (const d of [this.pinRoot, this.runRoot]) fs.rmSync(d, { recursive: true, force: true });
  }
}
