/**
 * The daemon's log: one line per event, as text for people (`TIME LEVEL EVENT key=value ...`,
 * values quoted when they need it) or as JSON for machines (one object per line with `time`,
 * `level`, `event` and the event's fields). Lines go to stderr, which systemd sends to the
 * journal; a log that cannot be written never stops the daemon.
 */

export type LogFormat = 'text' | 'json';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];

export type LogValue = string | number | boolean | string[] | null | undefined;
export type LogFields = Record<string, LogValue>;

/** `key=value`, quoted as JSON when the value is empty or holds a space, quote, `=` or control. */
function textValue(v: Exclude<LogValue, undefined>): string {
  const s = Array.isArray(v) ? v.join('; ') : v === null ? 'null' : String(v);
  return s === '' || /[\s"=\\\x00-\x1f\x7f]/.test(s) ? JSON.stringify(s) : s;
}

/** One log line, without the newline. Fields that are undefined are left out. */
export function formatLogLine(format: LogFormat, time: Date, level: LogLevel, event: string, fields: LogFields = {}): string {
  const present = Object.entries(fields).filter((e): e is [string, Exclude<LogValue, undefined>] => e[1] !== undefined);
  if (format === 'json') {
    return JSON.stringify({ time: time.toISOString(), level, event, ...Object.fromEntries(present) });
  }
  return [time.toISOString(), level.padEnd(5), event, ...present.map(([k, v]) => `${k}=${textValue(v)}`)].join(' ');
}

export class Logger {
  constructor(
    readonly format: LogFormat,
    private readonly write: (line: string) => void = (line) => {
      try {
        process.stderr.write(line);
      } catch {
        // nowhere to log to: keep running
      }
    },
    private readonly now: () => Date = () => new Date(),
  ) {}

  log(level: LogLevel, event: string, fields: LogFields = {}): void {
    this.write(`${formatLogLine(this.format, this.now(), level, event, fields)}\n`);
  }

  info(event: string, fields?: LogFields): void {
    this.log('info', event, fields);
  }

  warn(event: string, fields?: LogFields): void {
    this.log('warn', event, fields);
  }

  error(event: string, fields?: LogFields): void {
    this.log('error', event, fields);
  }
}
