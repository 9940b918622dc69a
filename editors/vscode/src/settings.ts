// Pure mapping from VS Code's `dgls.*` settings to what the server and its process need.
// No `vscode` import here, so `npm test` runs it under plain node.

/** The keys the server reads from its "dgls" settings section (see dgls/options.py). */
const STRING_KEYS = [
  'model', 'device', 'dtype', 'logLevel', 'quantize', 'infillLayout', 'engineUrl', 'engineApiKeyEnv',
] as const;
const NUMBER_KEYS = [
  'maxSpanTokens', 'steps', 'debounceMs', 'deadlineMs', 'commandDeadlineMs', 'threads', 'engineTimeout',
] as const;
const BOOLEAN_KEYS = ['engineAllowHttp'] as const;
export const SERVER_KEYS = [...STRING_KEYS, ...NUMBER_KEYS, ...BOOLEAN_KEYS] as const;

export type ServerKey = (typeof SERVER_KEYS)[number];
export type ServerSettings = Partial<Record<ServerKey, string | number | boolean | null>>;

/** Read access to a configuration section; `vscode.WorkspaceConfiguration` fits. */
export interface SettingsReader {
  get<T>(key: string): T | undefined;
}

/**
 * The server's settings section: only the keys it knows, each with its type; unset or
 * mistyped values are sent as null (the server then uses its default). Client-side keys
 * such as `server.path` stay out.
 */
export function serverSettings(config: SettingsReader): ServerSettings {
  const out: ServerSettings = {};
  for (const key of STRING_KEYS) {
    const value = config.get<unknown>(key);
    out[key] = typeof value === 'string' && value.trim() !== '' ? value.trim() : null;
  }
  for (const key of NUMBER_KEYS) {
    const value = config.get<unknown>(key);
    out[key] = typeof value === 'number' && Number.isFinite(value) ? value : null;
  }
  for (const key of BOOLEAN_KEYS) {
    const value = config.get<unknown>(key);
    out[key] = typeof value === 'boolean' ? value : null;
  }
  return out;
}

export interface ServerLaunch {
  command: string;
  args: string[];
}

/** How to start the server: `<path> serve <extra args>`; `path` defaults to `dgls` on PATH. */
export function serverLaunch(config: SettingsReader): ServerLaunch {
  const path = config.get<string>('server.path');
  const extra = config.get<unknown>('server.args');
  const args = Array.isArray(extra) ? extra.filter((a): a is string => typeof a === 'string') : [];
  return {
    command: typeof path === 'string' && path.trim() !== '' ? path.trim() : 'dgls',
    args: ['serve', ...args],
  };
}
